"""POP3 server behaviour through a fake transport: states, every command, response codes."""

from __future__ import annotations

import re

import pytest

from fakes import pop3
from mailprotocol import codec as sasl
from mockservers.store import MailStore

MESSAGE_1 = b"Subject: first\r\n\r\nline one\r\n.starts with a dot\r\nline three\r\n"
MESSAGE_2 = b"Subject: second\r\nFrom: alice@example.com\r\n\r\nhello\r\n"


@pytest.fixture
def store(tmp_path):
    store = MailStore(tmp_path)
    store.deliver(["bob@example.com"], MESSAGE_1)
    store.deliver(["bob@example.com"], MESSAGE_2)
    return store


def logged_in(tmp_path, store, profile="rfc"):
    h = pop3(tmp_path, profile, store=store)
    h.send("USER bob@example.com")
    assert h.send("PASS bob-secret")[0].startswith("+OK")
    return h


def test_greeting_carries_a_timestamp_unique_to_each_session(tmp_path, store):
    first, second = pop3(tmp_path, store=store), pop3(tmp_path, store=store)
    pattern = r"\+OK POP3 server ready (<[^>]+@mail\.example\.com>)"
    stamps = [re.fullmatch(pattern, h.greeting[0]).group(1) for h in (first, second)]
    assert stamps[0] != stamps[1]


def test_rfc_1939_dialogue(tmp_path, store):
    h = pop3(tmp_path, store=store)
    size1, size2 = len(MESSAGE_1), len(MESSAGE_2)
    total = size1 + size2
    assert h.send("USER bob@example.com") == ["+OK bob@example.com is a real hoopy frood"]
    assert h.send("PASS bob-secret") == [f"+OK bob@example.com's maildrop has 2 messages ({total} octets)"]
    assert h.send("STAT") == [f"+OK 2 {total}"]
    assert h.send("LIST") == [f"+OK 2 messages ({total} octets)", f"1 {size1}", f"2 {size2}", "."]
    assert h.send("LIST 2") == [f"+OK 2 {size2}"]
    assert h.send("LIST 3") == ["-ERR no such message, only 2 messages in maildrop"]
    assert h.send("RETR 1") == [
        f"+OK {size1} octets",
        "Subject: first",
        "",
        "line one",
        "..starts with a dot",
        "line three",
        ".",
    ]
    assert h.send("TOP 1 1") == ["+OK top of message follows", "Subject: first", "", "line one", "."]
    assert h.send("TOP 2 0") == ["+OK top of message follows", "Subject: second", "From: alice@example.com", "", "."]
    assert h.send("DELE 1") == ["+OK message 1 deleted"]
    assert h.send("DELE 1") == ["-ERR message 1 already deleted"]
    assert h.send("RETR 1") == ["-ERR message 1 already deleted"]
    assert h.send("STAT") == [f"+OK 1 {size2}"]
    assert h.send("LIST") == [f"+OK 1 messages ({size2} octets)", f"2 {size2}", "."]
    assert h.send("RSET") == [f"+OK maildrop has 2 messages ({total} octets)"]
    assert h.send("NOOP") == ["+OK"]
    assert h.send("DELE 2") == ["+OK message 2 deleted"]
    assert h.send("QUIT") == ["+OK dewey POP3 server signing off (1 messages left)"]
    assert h.closed
    remaining = store.messages("bob@example.com")
    assert [store.read("bob@example.com", m.uid) for m in remaining] == [MESSAGE_1]


def test_uidl_is_stable_across_sessions(tmp_path, store):
    h = logged_in(tmp_path, store)
    first = h.send("UIDL")
    assert first[0] == "+OK unique-id listing follows" and first[-1] == "."
    uid1 = first[1].split()[1]
    assert h.send("UIDL 1") == [f"+OK 1 {uid1}"]
    assert re.fullmatch(r"[\x21-\x7e]{1,70}", uid1)
    h.send("QUIT")
    again = logged_in(tmp_path, MailStore(tmp_path))
    assert again.send("UIDL") == first


def test_a_dropped_connection_deletes_nothing(tmp_path, store):
    h = logged_in(tmp_path, store)
    h.send("DELE 1")
    h.send("DELE 2")
    h.session.connectionLost(None)
    assert len(store.messages("bob@example.com")) == 2
    # and the maildrop lock was released
    assert logged_in(tmp_path, store).send("STAT")[0].startswith("+OK 2")


def test_one_session_per_maildrop(tmp_path, store):
    first = logged_in(tmp_path, store)
    second = pop3(tmp_path, store=store)
    second.send("USER bob@example.com")
    assert second.send("PASS bob-secret") == ["-ERR [IN-USE] maildrop already locked"]
    assert second.send("STAT") == ["-ERR command not valid in this state"]
    first.send("QUIT")
    second.send("USER bob@example.com")
    assert second.send("PASS bob-secret")[0].startswith("+OK")


@pytest.mark.parametrize(
    "lines, expected",
    [
        (["STAT"], "-ERR command not valid in this state"),
        (["RETR 1"], "-ERR command not valid in this state"),
        (["PASS x"], "-ERR [AUTH] send USER first"),
        (["USER"], "-ERR USER needs a mailbox name"),
        (["USER nobody@example.com"], "-ERR sorry, no mailbox for nobody@example.com here"),
        (["USER bob@example.com", "PASS wrong"], "-ERR [AUTH] invalid password"),
        (["XYZZY"], "-ERR unknown command"),
        (["APOP bob@example.com 123"], "-ERR APOP needs a name and a 32-digit digest"),
        (["APOP bob@example.com " + "0" * 32], "-ERR [AUTH] permission denied"),
        (["AUTH FOO"], "-ERR unsupported authentication mechanism FOO"),
        (["AUTH LOGIN", "*"], "-ERR authentication cancelled"),
        (["AUTH PLAIN", "%%%"], "-ERR cannot decode base64 response"),
        (["STLS x"], "-ERR STLS takes no argument"),
    ],
)
def test_authorization_state_errors(tmp_path, store, lines, expected):
    h = pop3(tmp_path, store=store)
    for line in lines[:-1]:
        h.send(line)
    assert h.send(lines[-1]) == [expected]
    assert h.send("CAPA")[0] == "+OK Capability list follows"


@pytest.mark.parametrize(
    "line, expected",
    [
        ("USER bob", "-ERR command not valid in this state"),
        ("STLS", "-ERR command not valid in this state"),
        ("LIST 0", "-ERR no such message, only 2 messages in maildrop"),
        ("LIST x", "-ERR invalid message number: x"),
        ("RETR", "-ERR invalid message number: "),
        ("RETR -1", "-ERR invalid message number: -1"),
        ("TOP 1", "-ERR TOP needs a message number and a line count"),
        ("TOP 9 1", "-ERR no such message, only 2 messages in maildrop"),
        ("DELE 99999999999", "-ERR invalid message number: 99999999999"),
        ("STAT 1", "-ERR STAT takes no argument"),
        ("FROB", "-ERR unknown command"),
    ],
)
def test_transaction_state_errors(tmp_path, store, line, expected):
    h = logged_in(tmp_path, store)
    assert h.send(line) == [expected]
    assert h.send("NOOP") == ["+OK"]


def test_apop_with_the_greeting_timestamp(tmp_path, store):
    store.deliver(["mrose@example.com"], MESSAGE_1)
    h = pop3(tmp_path, store=store)
    timestamp = re.search(r"<[^>]+>", h.greeting[0]).group(0)
    digest = sasl.apop_digest(timestamp, "tanstaaf")
    assert h.send(f"APOP mrose@example.com {digest}") == ["+OK maildrop locked and ready"]
    assert h.send("STAT") == [f"+OK 1 {len(MESSAGE_1)}"]


def test_apop_refused_when_the_persona_greeting_has_no_timestamp(tmp_path):
    h = pop3(tmp_path, "qq")
    assert h.greeting == ["+OK QQMail POP3 Server v1.0 Service Ready(QQMail v2.0)"]
    assert h.send("APOP learner@qq.com " + "a" * 32) == ["-ERR APOP not supported: no timestamp in the greeting"]


@pytest.mark.parametrize(
    "steps",
    [
        [("AUTH PLAIN " + sasl.plain_payload("bob@example.com", "bob-secret"), "+OK")],
        [("AUTH PLAIN", "+ "), (sasl.plain_payload("bob@example.com", "bob-secret"), "+OK")],
        [("AUTH LOGIN", "+ VXNlcm5hbWU6"), (sasl.b64encode_text("bob"), "+ UGFzc3dvcmQ6"), (sasl.b64encode_text("bob-secret"), "+OK")],
    ],
)
def test_sasl_logins(tmp_path, store, steps):
    h = pop3(tmp_path, store=store)
    for line, prefix in steps:
        assert h.send(line)[0].startswith(prefix), line
    assert h.session.state.phase == "TRANSACTION"


def test_sasl_cram_md5(tmp_path, store):
    h = pop3(tmp_path, store=store)
    (challenge_line,) = h.send("AUTH CRAM-MD5")
    challenge = sasl.b64decode_strict(challenge_line[2:])
    assert h.send(sasl.cram_md5_response("bob@example.com", "bob-secret", challenge)) == ["+OK maildrop locked and ready"]


def test_auth_without_argument_lists_mechanisms(tmp_path, store):
    h = pop3(tmp_path, store=store)
    assert h.send("AUTH") == ["+OK supported mechanisms follow", "PLAIN", "LOGIN", "CRAM-MD5", "."]


def test_capa_in_both_states(tmp_path, store):
    h = pop3(tmp_path, store=store)
    capa = h.send("CAPA")
    assert capa == [
        "+OK Capability list follows",
        "TOP",
        "USER",
        "UIDL",
        "SASL PLAIN LOGIN CRAM-MD5",
        "RESP-CODES",
        "PIPELINING",
        "STLS",
        "IMPLEMENTATION maillab textbook server",
        ".",
    ]
    h.send("USER bob@example.com")
    h.send("PASS bob-secret")
    after = h.send("CAPA")
    assert "STLS" not in after and "USER" not in after and "TOP" in after


def test_stls(tmp_path, store):
    h = pop3(tmp_path, store=store)
    assert h.raw(b"STLS\r\nUSER bob@example.com\r\n") == ["+OK Begin TLS negotiation"]
    assert h.transport.tls_started_with is h.context.tls_options
    assert h.send("STLS") == ["-ERR Command not permitted when TLS active"]
    assert "STLS" not in h.send("CAPA")


def test_pipelined_commands_answer_in_order(tmp_path, store):
    h = pop3(tmp_path, store=store)
    replies = h.raw(b"USER bob@example.com\r\nPASS bob-secret\r\nSTAT\r\nDELE 1\r\nNOOP\r\nQUIT\r\n")
    assert [r.split()[0] for r in replies] == ["+OK"] * 6


def test_qq_pop3_texts(tmp_path):
    store = MailStore(tmp_path)
    store.deliver(["learner@qq.com"], MESSAGE_1)
    h = pop3(tmp_path, "qq", store=store)
    assert h.send("USER learner@qq.com") == ["+OK"]
    assert h.send("PASS password123") == ["-ERR Please using authorized code to login."]
    h.send("USER learner@qq.com")
    assert h.send("PASS abcdefghijklmnop") == ["+OK"]
    assert h.send("LIST") == ["+OK", f"1 {len(MESSAGE_1)}", "."]
    assert h.send("QUIT") == ["+OK Bye"]


def test_overlong_lines_and_garbage(tmp_path, store):
    h = pop3(tmp_path, store=store)
    assert h.send("USER " + "x" * 300) == ["-ERR line too long"]
    assert h.raw(b"\xff\xfe\r\n") == ["-ERR invalid characters in command"]
    assert h.raw(b"USER bob@example.com\n") == ["+OK bob@example.com is a real hoopy frood"]


def test_idle_timeout_after_ten_minutes(tmp_path, store):
    h = pop3(tmp_path, store=store)
    h.clock.advance(599)
    assert not h.closed
    h.clock.advance(2)
    assert h.take() == ["-ERR [SYS/TEMP] autologout: idle for too long"]
    assert h.closed


def test_secrets_never_reach_the_transcript(tmp_path, store):
    h = pop3(tmp_path, store=store)
    h.send("USER bob@example.com")
    h.send("PASS bob-secret")
    h.send("QUIT")
    text = h.session.transcript.path.read_text()
    assert "bob-secret" not in text and "PASS ***" in text
