"""Fault scripts: parsing, matching, and each fault kind over a real socket."""

from __future__ import annotations

import dataclasses
import time

import pytest

from live import LineClient, persona, serving
from mailprotocol.faults import FaultError, FaultScript, FaultTracker, rule_from_spec, rule_from_table


def with_faults(*specs: str, seed: int | None = None, tables=(), name: str = "rfc"):
    profile = persona(name)
    rules = [rule_from_table(t, i) for i, t in enumerate(tables)]
    rules += [rule_from_spec(spec, len(rules) + i) for i, spec in enumerate(specs)]
    return profile.with_faults(rules, seed)


# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, fields",
    [
        ("RCPT#2 452 4.5.3 Too many recipients", {"command": "RCPT", "nth": 2, "reply": ("452 4.5.3 Too many recipients",)}),
        ("MAIL%3 451 4.3.0 try later", {"command": "MAIL", "every": 3}),
        ("AUTH+2 421 bye", {"command": "AUTH", "after": 2}),
        ("pop3:RETR#1 -ERR [SYS/TEMP] disk on fire", {"protocol": "pop3", "command": "RETR"}),
        ("RETR -ERR nope", {"protocol": "pop3"}),
        ("QUIT drop", {"drop": True, "reply": ()}),
        ("NOOP delay=1.5", {"delay": 1.5}),
        ("data-end 554 5.7.1 DT:SPM", {"command": "DATA-END"}),
        ("CONNECT 554 No SMTP service here", {"command": "CONNECT"}),
    ],
)
def test_short_form(spec, fields):
    rule = rule_from_spec(spec, 0)
    for key, value in fields.items():
        assert getattr(rule, key) == value


@pytest.mark.parametrize(
    "spec, message",
    [
        ("RCPT", "must look like"),
        ("FROB#1 500 x", "unknown SMTP command 'FROB'"),
        ("RCPT#0 452 x", "nth must be a whole number >= 1"),
        ("RCPT#1 hello", "must start with a 3-digit code"),
        ("pop3:RETR#1 OK", r"must start with \+OK or -ERR"),
        ("NOOP delay=soon", "delay must be a number"),
    ],
)
def test_short_form_errors(spec, message):
    with pytest.raises(FaultError, match=message):
        rule_from_spec(spec, 0)


def test_table_errors():
    with pytest.raises(FaultError, match="unknown fault field"):
        rule_from_table({"command": "RCPT", "reply": "452 x", "when": 2}, 0)
    with pytest.raises(FaultError, match="needs a reply, a delay or drop"):
        rule_from_table({"command": "RCPT"}, 0)
    with pytest.raises(FaultError, match="not a valid regular expression"):
        rule_from_table({"command": "RCPT", "argument": "(", "reply": "452 x"}, 0)
    with pytest.raises(FaultError, match="probability must be between 0 and 1"):
        rule_from_table({"command": "RCPT", "probability": 2, "reply": "452 x"}, 0)


def test_occurrence_counting():
    script = FaultScript(
        (
            rule_from_spec("RCPT#2 452 second", 0),
            rule_from_spec("MAIL%2 451 every other", 1),
            rule_from_spec("NOOP+3 421 after three", 2),
        )
    )
    counter = script.new_counter()
    fired = lambda command: script.match(counter, "smtp", command) is not None  # noqa: E731
    assert [fired("RCPT") for _ in range(4)] == [False, True, False, False]
    assert [fired("MAIL") for _ in range(4)] == [False, True, False, True]
    assert [fired("NOOP") for _ in range(5)] == [False, False, False, True, True]


def test_probability_is_the_same_for_the_same_seed_and_for_each_new_session():
    script = FaultScript((rule_from_table({"command": "RCPT", "probability": 0.5, "reply": "451 x"}, 0),), seed=7)
    runs = []
    for _ in range(3):
        counter = script.new_counter()
        runs.append([script.match(counter, "smtp", "RCPT") is not None for _ in range(40)])
    assert runs[0] == runs[1] == runs[2]
    assert 5 < sum(runs[0]) < 35
    other = FaultScript(script.rules, seed=8)
    counter = other.new_counter()
    assert [other.match(counter, "smtp", "RCPT") is not None for _ in range(40)] != runs[0]


def test_tracker_account_and_recipients():
    """What the answers change: a login names the account, STARTTLS forgets it, MAIL starts the recipients."""
    script = FaultScript(
        (
            rule_from_table({"command": "NOOP", "account": "alice@example.com", "reply": "250 hello alice"}, 0),
            rule_from_table({"command": "DATA-END", "argument": "^bob@example.com alice@example.com$", "reply": "554 x"}, 1),
        )
    )
    tracker = FaultTracker(script, "smtp")
    assert tracker.command("NOOP", "") is None
    tracker.answered("AUTH", False, account="alice@example.com")  # a refusal changes nothing
    assert tracker.command("NOOP", "") is None
    tracker.answered("AUTH", True, account="alice@example.com")
    assert tracker.command("NOOP", "") is not None
    tracker.answered("STARTTLS", True)
    assert tracker.command("NOOP", "") is None
    tracker.answered("PASS", True, account="alice@example.com")  # every login verb of both protocols
    assert tracker.account == "alice@example.com"
    tracker.answered("STLS", True)
    assert tracker.account is None
    tracker.answered("MAIL", True)
    for key in ("bob@example.com", "alice@example.com", "bob@example.com"):
        tracker.answered("RCPT", True, recipient=key)
    tracker.answered("RCPT", False, recipient="carol@example.com")
    assert tracker.end_of_data() is not None  # each accepted recipient once, in the order accepted
    assert tracker.recipients == [] and tracker.end_of_data() is None


# --- over real sockets -------------------------------------------------------------------------


def client(servers, name="SMTP"):
    c = LineClient(servers.port_of(name))
    c.greeting = c.smtp_reply() if name == "SMTP" else c.pop3_reply()
    return c


def test_nth_rcpt_gets_the_scripted_reply_and_the_session_goes_on(tmp_path):
    with serving(with_faults("RCPT#2 452 4.5.3 Too many recipients"), tmp_path) as servers, client(servers) as c:
        c.smtp("EHLO x")
        c.smtp("MAIL FROM:<alice@example.com>")
        assert c.smtp("RCPT TO:<bob@example.com>") == ["250 2.1.5 Ok"]
        assert c.smtp("RCPT TO:<mrose@example.com>") == ["452 4.5.3 Too many recipients"]
        assert c.smtp("RCPT TO:<tim@example.com>") == ["250 2.1.5 Ok"]
        assert c.smtp("DATA")[0].startswith("354")
        c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        assert c.smtp_reply()[0].startswith("250")
    assert (tmp_path / "mailboxes" / "mrose@example.com" / "new").exists()
    assert not list((tmp_path / "mailboxes" / "mrose@example.com" / "new").iterdir())
    assert len(list((tmp_path / "mailboxes" / "tim@example.com" / "new").iterdir())) == 1


def test_every_and_after(tmp_path):
    with serving(with_faults("NOOP%2 250 2.0.0 every second", "NOOP+4 421 4.7.0 {host} enough"), tmp_path) as servers, client(servers) as c:
        replies = [c.smtp("NOOP")[0] for _ in range(5)]
        assert replies == [
            "250 2.0.0 Ok",
            "250 2.0.0 every second",
            "250 2.0.0 Ok",
            "250 2.0.0 every second",
            "421 4.7.0 mail.example.com enough",
        ]
        assert c.closed_by_server()


def test_multi_line_scripted_reply(tmp_path):
    table = {"command": "RCPT", "argument": "ghost@", "reply": ["550 5.1.1 The email account that you tried to reach does not exist.", "550 5.1.1 Please try double-checking the recipient's email address"]}
    with serving(with_faults(tables=[table]), tmp_path) as servers, client(servers) as c:
        c.smtp("EHLO x")
        c.smtp("MAIL FROM:<alice@example.com>")
        assert c.smtp("RCPT TO:<bob@example.com>") == ["250 2.1.5 Ok"]
        assert c.smtp("RCPT TO:<ghost@example.com>") == [
            "550-5.1.1 The email account that you tried to reach does not exist.",
            "550 5.1.1 Please try double-checking the recipient's email address",
        ]


def test_greeting_fault_554_and_drop(tmp_path):
    with serving(with_faults(tables=[{"command": "CONNECT", "nth": 1, "scope": "server", "reply": "554 5.3.2 No SMTP service here", "drop": True}]), tmp_path) as servers:
        with LineClient(servers.port_of("SMTP")) as c:
            assert c.smtp_reply() == ["554 5.3.2 No SMTP service here"]
            assert c.closed_by_server()
        with client(servers) as c:  # the second connection is served normally
            assert c.greeting == ["220 mail.example.com ESMTP Postfix"]


def test_end_of_data_fault_refuses_the_message(tmp_path):
    with serving(with_faults("DATA-END#1 554 5.7.1 DT:SPM spam detected"), tmp_path) as servers, client(servers) as c:
        c.smtp("EHLO x")
        for _ in range(2):
            c.smtp("MAIL FROM:<alice@example.com>")
            c.smtp("RCPT TO:<bob@example.com>")
            c.smtp("DATA")
            c.send(b"Subject: x\r\n\r\nbuy now\r\n.\r\n")
            c.reply = c.smtp_reply()
            if c.reply == ["554 5.7.1 DT:SPM spam detected"]:
                continue
            assert c.reply[0].startswith("250 2.0.0 Ok: queued as")
    assert len(list((tmp_path / "mailboxes" / "bob@example.com" / "new").iterdir())) == 1


def test_drop_without_reply(tmp_path):
    with serving(with_faults("MAIL#1 drop"), tmp_path) as servers, client(servers) as c:
        c.smtp("EHLO x")
        c.send("MAIL FROM:<alice@example.com>")
        assert c.closed_by_server()
        assert c.buffer == b""


def test_delay_then_normal_answer(tmp_path):
    with serving(with_faults("NOOP#1 delay=0.5"), tmp_path) as servers, client(servers) as c:
        start = time.monotonic()
        assert c.smtp("NOOP") == ["250 2.0.0 Ok"]
        assert time.monotonic() - start >= 0.5
        start = time.monotonic()
        c.smtp("NOOP")
        assert time.monotonic() - start < 0.5


def test_pop3_retr_fault(tmp_path):
    with serving(with_faults("pop3:RETR#1 -ERR [SYS/TEMP] try again later"), tmp_path) as servers:
        servers.servers.store.deliver(["bob@example.com"], b"Subject: a\r\n\r\na\r\n")
        with client(servers, "POP3") as c:
            c.pop3("USER bob@example.com")
            c.pop3("PASS bob-secret")
            assert c.pop3("RETR 1") == ["-ERR [SYS/TEMP] try again later"]
            assert c.pop3("RETR 1", multiline=True)[0] == "+OK 17 octets"


def test_account_and_client_filters(tmp_path):
    tables = [
        {"command": "MAIL", "account": "bob@example.com", "reply": "550 5.7.1 bob may not send"},
        {"command": "NOOP", "client": "10.0.0.0/8", "reply": "250 2.0.0 from the lab network"},
    ]
    from mailprotocol import codec as sasl

    with serving(with_faults(tables=tables), tmp_path) as servers, client(servers) as c:
        assert c.smtp("NOOP") == ["250 2.0.0 Ok"]
        c.smtp("EHLO x")
        c.smtp("AUTH PLAIN " + sasl.plain_payload("alice@example.com", "alice-secret"))
        assert c.smtp("MAIL FROM:<alice@example.com>") == ["250 2.1.0 Ok"]
    with serving(with_faults(tables=tables), tmp_path / "bob") as servers, client(servers) as c:
        c.smtp("EHLO x")
        c.smtp("AUTH PLAIN " + sasl.plain_payload("bob@example.com", "bob-secret"))
        assert c.smtp("MAIL FROM:<bob@example.com>") == ["550 5.7.1 bob may not send"]


def test_from_seconds(tmp_path):
    with serving(with_faults(tables=[{"command": "NOOP", "from_seconds": 0.5, "reply": "421 4.4.2 {host} too late"}]), tmp_path) as servers, client(servers) as c:
        assert c.smtp("NOOP") == ["250 2.0.0 Ok"]
        started = time.monotonic()
        replies = []
        while not replies or replies[-1] == ["250 2.0.0 Ok"]:  # NOOPs until the rule starts to fire
            replies.append(c.smtp("NOOP"))
            assert time.monotonic() - started < 5, "the rule never fired"
        assert replies[-1] == ["421 4.4.2 mail.example.com too late"]
        assert time.monotonic() - started >= 0.4  # not before its second (the first NOOP came at ~0 s)


def _chaos_session(tmp_path, seed: int) -> bytes:
    table = {"command": "RCPT", "probability": 0.4, "reply": "451 4.3.0 chaos"}
    transcript = b""
    with serving(with_faults(tables=[table], seed=seed), tmp_path) as servers, client(servers) as c:
        c.send("EHLO x")
        c.smtp_reply()
        c.send("MAIL FROM:<alice@example.com>")
        transcript += "\r\n".join(c.smtp_reply()).encode()
        for _ in range(30):
            c.send("RCPT TO:<bob@example.com>")
            transcript += b"\r\n" + "\r\n".join(c.smtp_reply()).encode()
    return transcript


def test_seeded_faults_replay_byte_for_byte(tmp_path):
    first = _chaos_session(tmp_path / "one", seed=42)
    second = _chaos_session(tmp_path / "two", seed=42)
    assert first == second
    assert b"451 4.3.0 chaos" in first and b"250 2.1.5 Ok" in first
    assert _chaos_session(tmp_path / "three", seed=43) != first


def test_profile_faults_and_lint_of_a_fault_that_does_not_fit(tmp_path):
    from mockservers.lint import lint_profile

    path = tmp_path / "bad.toml"
    path.write_text('extends = "rfc"\n\n[[faults]]\ncommand = "MAIL"\nreply = "354 go on"\n')
    problems = [str(p) for p in lint_profile(path)]
    assert any(p.startswith(f"{path}:5: fault #1: code 354 does not fit MAIL") for p in problems), problems
    good = tmp_path / "good.toml"
    good.write_text('extends = "rfc"\nseed = 5\n\n[[faults]]\ncommand = "RCPT"\nnth = 2\nreply = "452 4.5.3 Too many recipients"\n')
    assert lint_profile(good) == []
    from mockservers.profile import load_profile

    profile = load_profile(good)
    assert profile.seed == 5 and profile.faults[0].nth == 2 and profile.faults[0].source_line == 4
    assert dataclasses.replace(profile.faults[0]).describe() == "smtp:RCPT #2 -> 452 4.5.3 Too many recipients"


def test_validator_counts_faults_as_the_server_does(tmp_path):
    """The server feeds its tracker live, the validator replays the client's history into one: at
    every line the validator's predicted code must be the server's, through a login, STARTTLS
    (which forgets the account), refused and accepted recipients and two messages."""
    from mailprotocol import codec as sasl
    from mockservers.tls import client_ssl_context
    from simulator.engine.session import SMTPSession
    from simulator.engine.validate import predict

    tables = [
        {"command": "MAIL", "account": "alice@example.com", "nth": 2, "reply": "451 4.7.1 alice, once more"},
        {"command": "NOOP", "account": "alice@example.com", "reply": "250 2.0.0 hello alice"},
        {"command": "RCPT", "every": 3, "reply": "452 4.5.3 every third"},
        {"command": "DATA-END", "argument": "^bob@example.com$", "reply": "554 5.7.1 not for bob alone"},
        {"command": "DATA-END", "argument": "postmaster@example.com", "nth": 2, "reply": "451 4.3.0 second with postmaster"},
    ]
    profile = with_faults(tables=tables)
    message = ["Subject: x", "", "hello", "."]
    lines = [
        "EHLO x", "NOOP", "MAIL FROM:<alice@example.com>", "RCPT TO:<bob@example.com>", "RCPT TO:<nobody@example.com>",
        "RCPT TO:<BOB@example.com>", "DATA", *message,
        "AUTH PLAIN " + sasl.plain_payload("alice@example.com", "alice-secret"), "NOOP",
        "MAIL FROM:<alice@example.com>", "RSET", "MAIL FROM:<alice@example.com>", "MAIL FROM:<alice@example.com>",
        "RCPT TO:<Postmaster>", "RCPT TO:<bob@example.com>", "RCPT TO:<alice@example.com>", "RCPT TO:<bob@example.com>",
        "DATA", *message, "MAIL FROM:<alice@example.com>", "RCPT TO:<postmaster@example.com>", "DATA", *message,
        "STARTTLS", "EHLO x", "NOOP", "MAIL FROM:<alice@example.com>", "QUIT",
    ]
    outcomes = []
    with serving(profile, tmp_path) as servers, client(servers) as c:
        session = SMTPSession()
        session.received(c.greeting)
        for line in lines:
            in_text = session.data_mode
            predicted = predict(line, session, profile)
            session.sent(line)
            c.send(line)
            if in_text and line != ".":
                continue
            reply = c.smtp_reply()
            session.received(reply)
            actual = reply[-1][:3] if reply[-1][:1] in "45" else None
            outcomes.append((line, predicted, actual, reply[-1]))
            if session.tls_pending:
                c.sock = client_ssl_context(servers.servers.tls_files.ca_cert).wrap_socket(c.sock, server_hostname="localhost")
                session.tls_started()
    assert [o for o in outcomes if o[1] != o[2]] == []
    fired = [reply for _, _, _, reply in outcomes if "alice" in reply or "third" in reply or "bob alone" in reply or "postmaster" in reply]
    assert fired == [
        "452 4.5.3 every third", "554 5.7.1 not for bob alone", "250 2.0.0 hello alice", "451 4.7.1 alice, once more",
        "452 4.5.3 every third", "451 4.3.0 second with postmaster",
    ], outcomes
