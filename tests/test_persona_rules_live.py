"""Personas behave like the real servers they name, over real sockets (docs/sources.md).

- Postfix with smtpd_delay_reject = yes: a non-FQDN HELO is accepted and refused at RCPT TO.
- Postfix with strict_rfc821_envelopes = no accepts `MAIL FROM:a@b`; Gmail answers `555 5.5.2`.
- 8-bit text without BODY=8BITMIME: accepted by Postfix, noted by the textbook persona, refused
  when an instructor sets undeclared_8bit = "refuse".
Each case also asks the validator, which must predict the same reply text.
"""

from __future__ import annotations

import smtplib

import pytest

from live import LineClient, persona, serving
from simulator.engine.session import SMTPSession
from simulator.engine.validate import build_session, expected_reply
from waiting import wait_until

HELO_REFUSED = "504 5.5.2 <laptop>: Helo command rejected: need fully-qualified hostname"


def smtp_client(servers) -> LineClient:
    client = LineClient(servers.port_of("SMTP"))
    client.smtp_reply()
    return client


def predicted(profile, history: list[str], line: str) -> list[str]:
    session = build_session(history, profile=profile)
    assert isinstance(session, SMTPSession)
    return expected_reply(line, session, profile)


def test_postfix_refuses_a_non_fqdn_helo_at_rcpt_time(tmp_path):
    profile = persona("postfix")
    with serving(profile, tmp_path) as servers, smtp_client(servers) as c:
        assert c.smtp("EHLO laptop")[0] == "250-mail.example.com"
        assert c.smtp("MAIL FROM:<alice@example.com>") == ["250 2.1.0 Ok"]
        assert c.smtp("RCPT TO:<bob@example.com>") == [HELO_REFUSED]
        assert c.smtp("RCPT TO:<carol@example.com>") == [HELO_REFUSED]  # every RCPT of the session
        assert c.smtp("EHLO laptop.example.com")[0] == "250-mail.example.com"
        assert c.smtp("MAIL FROM:<alice@example.com>") == ["250 2.1.0 Ok"]
        assert c.smtp("RCPT TO:<bob@example.com>") == ["250 2.1.5 Ok"]
    history = ["EHLO laptop", "MAIL FROM:<alice@example.com>"]
    assert predicted(profile, history, "RCPT TO:<bob@example.com>") == [HELO_REFUSED]
    assert predicted(profile, [], "EHLO laptop")[0] == "250-mail.example.com"


def test_delay_reject_off_refuses_at_the_greeting(tmp_path):
    with serving(persona("postfix", delay_reject=False), tmp_path) as servers, smtp_client(servers) as c:
        assert c.smtp("EHLO laptop") == [HELO_REFUSED]


def test_smtplib_sees_the_delayed_refusal_as_a_recipient_refusal(tmp_path):
    with serving(persona("postfix"), tmp_path) as servers:
        with smtplib.SMTP("127.0.0.1", servers.port_of("SMTP"), local_hostname="laptop", timeout=10) as client:
            client.ehlo()
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                client.sendmail("alice@example.com", ["bob@example.com"], b"Subject: hi\r\n\r\nhi\r\n")
    assert refused.value.recipients["bob@example.com"][0] == 504


@pytest.mark.parametrize(
    "name, policies, expected",
    [
        ("postfix", {}, "250 2.1.0 Ok"),
        ("gmail", {"require_tls_for_mail": False, "require_auth_for_mail": False},
         "555 5.5.2 Syntax error. 5b1f17b1804b1-42f5d3ac7a1sm2617375e9.11 - gsmtp"),
        ("rfc", {}, "501 5.1.7 Bad sender address syntax"),
        ("sina", {}, "250 sender <learner@example.com> ok"),
    ],
)
def test_mail_from_without_angle_brackets(tmp_path, name, policies, expected):
    profile = persona(name, **policies)
    with serving(profile, tmp_path) as servers, smtp_client(servers) as c:
        c.smtp("EHLO client.example.com")
        assert c.smtp("MAIL FROM:learner@example.com") == [expected]
    assert predicted(profile, ["EHLO client.example.com"], "MAIL FROM:learner@example.com") == [expected]


def test_gmail_refuses_rcpt_to_without_angle_brackets(tmp_path):
    profile = persona("gmail", require_tls_for_mail=False, require_auth_for_mail=False)
    with serving(profile, tmp_path) as servers, smtp_client(servers) as c:
        c.smtp("EHLO client.example.com")
        c.smtp("MAIL FROM:<learner@gmail.com>")
        assert c.smtp("RCPT TO:friend@gmail.com")[0].startswith("555 5.5.2 Syntax error.")


EIGHT_BIT = "Subject: 你好\r\n\r\n中文正文\r\n.\r\n".encode()


@pytest.mark.parametrize(
    "name, policies, body, expected_start, delivered",
    [
        ("postfix", {}, "", "250 2.0.0 Ok: queued as ", True),
        ("rfc", {}, "", "250 2.0.0 Ok: queued as ", True),
        ("rfc", {}, " BODY=8BITMIME", "250 2.0.0 Ok: queued as ", True),
        ("rfc", {"undeclared_8bit": "refuse"}, "", "554 5.6.1 Error: 8-bit data without BODY=8BITMIME", False),
        ("rfc", {"undeclared_8bit": "refuse"}, " BODY=8BITMIME", "250 2.0.0 Ok: queued as ", True),
    ],
)
def test_undeclared_8bit_data(tmp_path, name, policies, body, expected_start, delivered):
    profile = persona(name, **policies)
    with serving(profile, tmp_path) as servers, smtp_client(servers) as c:
        c.smtp("EHLO client.example.com")
        assert c.smtp(f"MAIL FROM:<alice@example.com>{body}")[0].startswith("250")
        assert c.smtp("RCPT TO:<bob@example.com>")[0].startswith("250")
        assert c.smtp("DATA")[0].startswith("354")
        reply = c.smtp(EIGHT_BIT)
        assert reply[0].startswith(expected_start), reply
        noted = reply[0].startswith("250") and "RFC 6152" in reply[0]
        assert noted == (name == "rfc" and not body and delivered)
        assert (len(servers.servers.store.messages("bob@example.com")) == 1) == delivered
    history = ["EHLO client.example.com", f"MAIL FROM:<alice@example.com>{body}", "RCPT TO:<bob@example.com>", "DATA",
               "Subject: 你好", "", "中文正文"]
    prediction = predicted(profile, history, ".")
    assert prediction[0].startswith(expected_start)
    assert (prediction[0].startswith("250") and "RFC 6152" in prediction[0]) == noted


def _records(data_dir) -> list[dict]:
    """The transcript records of the only session, once its close record has been written."""
    import json

    def closed() -> list[dict]:
        files = sorted((data_dir / "transcripts").rglob("*.jsonl"))
        if files:
            records = [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]
            if records and records[-1].get("event") == "close":
                return records
        return []

    return wait_until(closed, what="the session's closed transcript")


@pytest.mark.parametrize("port_name, greeting_start, quit_line", [("SMTPS", "220 ", "QUIT"), ("POP3S", "+OK", "QUIT")])
def test_implicit_tls_sessions_are_marked_tls_like_starttls(tmp_path, port_name, greeting_start, quit_line):
    """RFC 8314: a session on 465/995 is in TLS from the first byte; log events and transcripts say so."""
    from mockservers.tls import client_ssl_context

    events = []
    with serving(persona("rfc"), tmp_path, smtps_port=0, pop3s_port=0) as servers:
        servers.subscribe(events.append)
        context = client_ssl_context(servers.servers.tls_files.ca_cert)
        with LineClient(servers.port_of(port_name), tls_context=context) as client:
            assert client.read_line().startswith(greeting_start)
            client.send(quit_line)
            client.read_line()
        records = _records(tmp_path)
    kinds = [r.get("event") for r in records if r.get("dir") == "e"]
    assert kinds[:2] == ["open", "tls"]
    tls = next(r for r in records if r.get("event") == "tls")
    assert tls["implicit"] is True
    first_server_line = next(i for i, r in enumerate(records) if r.get("dir") == "s")
    assert records.index(tls) < first_server_line
    assert any(getattr(e, "kind", None) == "tls" for e in events)
