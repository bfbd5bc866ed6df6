"""Every policy over a real socket: the exact reply, and that the session (or the next) goes on."""

from __future__ import annotations

import time

import pytest

from live import LineClient, persona, serving
from waiting import wait_until
from mailprotocol import codec as sasl
from mockservers.tls import client_ssl_context

PLAIN_ALICE = "AUTH PLAIN " + sasl.plain_payload("alice@example.com", "alice-secret")
PLAIN_QQ = "AUTH PLAIN " + sasl.plain_payload("learner@qq.com", "abcdefghijklmnop")


def smtp_client(servers) -> LineClient:
    client = LineClient(servers.port_of("SMTP"))
    client.smtp_reply()
    return client


def pop3_client(servers) -> LineClient:
    client = LineClient(servers.port_of("POP3"))
    client.pop3_reply()
    return client


def test_require_tls_for_auth_rfc_530_then_works_after_starttls(tmp_path):
    with serving(persona("rfc", require_tls_for_auth=True), tmp_path) as servers, smtp_client(servers) as c:
        c.smtp("EHLO x")
        assert c.smtp(PLAIN_ALICE) == ["530 5.7.0 Must issue a STARTTLS command first"]
        assert c.smtp("STARTTLS") == ["220 2.0.0 Ready to start TLS"]
        context = client_ssl_context(servers.servers.tls_files.ca_cert)
        c.sock = context.wrap_socket(c.sock, server_hostname="localhost")
        c.smtp("EHLO x")
        assert c.smtp(PLAIN_ALICE) == ["235 2.7.0 Authentication successful"]


def test_require_tls_for_auth_qq_text_then_disconnect(tmp_path):
    with serving(persona("qq", require_tls_for_auth=True), tmp_path) as servers, smtp_client(servers) as c:
        c.smtp("helo sis")
        assert c.smtp("auth login") == [
            "530 Login fail. A secure connection is requiered(such as ssl). More information at http://service.mail.qq.com/cgi-bin/help?id=28"
        ]
        assert c.closed_by_server()
    with serving(persona("qq", require_tls_for_auth=True), tmp_path / "again") as servers, pop3_client(servers) as c:
        assert c.pop3("USER learner@qq.com")[0].startswith("-ERR Login fail. A secure connection is requiered")
        assert c.closed_by_server()


def test_mechanisms_requiring_tls_538(tmp_path):
    with serving(persona("rfc", mechanisms_requiring_tls=("PLAIN", "LOGIN")), tmp_path) as servers, smtp_client(servers) as c:
        c.smtp("EHLO x")
        assert c.smtp(PLAIN_ALICE) == ["538 5.7.11 Encryption required for requested authentication mechanism"]
        challenge = c.smtp("AUTH CRAM-MD5")[0][4:]
        response = sasl.cram_md5_response("tim@example.com", "tanstaaftanstaaf", sasl.b64decode_strict(challenge))
        assert c.smtp(response) == ["235 2.7.0 Authentication successful"]


@pytest.mark.parametrize(
    "name, auth_line, sender, refused",
    [
        ("rfc", PLAIN_ALICE, "alice@example.com", "530 5.7.0 Authentication required"),
        ("qq", PLAIN_QQ, "learner@qq.com", "503 Error: need EHLO and AUTH first !"),
    ],
)
def test_require_auth_before_mail(tmp_path, name, auth_line, sender, refused):
    with serving(persona(name, require_auth_for_mail=True), tmp_path) as servers, smtp_client(servers) as c:
        c.smtp("EHLO x")
        assert c.smtp(f"MAIL FROM:<{sender}>") == [refused]
        assert c.smtp(auth_line)[0].startswith("235")
        assert c.smtp(f"MAIL FROM:<{sender}>")[0].startswith("250")


@pytest.mark.parametrize(
    "name, auth_line, other, refused",
    [
        ("rfc", PLAIN_ALICE, "bob@example.com", "553 5.7.1 <bob@example.com>: Sender address rejected: not owned by user alice@example.com"),
        ("qq", PLAIN_QQ, "friend@qq.com", "501 mail from address must be same as authorization user"),
    ],
)
def test_sender_must_equal_the_authenticated_user(tmp_path, name, auth_line, other, refused):
    with serving(persona(name, sender_must_match_auth=True), tmp_path) as servers, smtp_client(servers) as c:
        c.smtp("EHLO x")
        c.smtp(auth_line)
        assert c.smtp(f"MAIL FROM:<{other}>") == [refused]
        assert c.smtp("MAIL FROM:<{}>".format(auth_line and ("alice@example.com" if name == "rfc" else "learner@qq.com")))[0][:3] == "250"


def test_relay_rules(tmp_path):
    with serving(persona("rfc", relay="never"), tmp_path / "never") as servers, smtp_client(servers) as c:
        c.smtp("EHLO x")
        c.smtp(PLAIN_ALICE)
        c.smtp("MAIL FROM:<alice@example.com>")
        assert c.smtp("RCPT TO:<far@remote.test>") == ["554 5.7.1 <far@remote.test>: Relay access denied"]
    with serving(persona("rfc", relay="open"), tmp_path / "open") as servers, smtp_client(servers) as c:
        c.smtp("EHLO x")
        c.smtp("MAIL FROM:<anyone@anywhere.test>")
        assert c.smtp("RCPT TO:<far@remote.test>") == ["250 2.1.5 Ok"]
    import dataclasses

    relayed = dataclasses.replace(persona("rfc"), relay_domains=("partner.test",))
    with serving(relayed, tmp_path / "domains") as servers, smtp_client(servers) as c:
        c.smtp("EHLO x")
        c.smtp("MAIL FROM:<alice@example.com>")
        assert c.smtp("RCPT TO:<x@partner.test>") == ["250 2.1.5 Ok"]
        assert c.smtp("RCPT TO:<x@other.test>")[0].startswith("554 5.7.1")


def test_helo_must_be_fully_qualified(tmp_path):
    with serving(persona("rfc", helo_check="fqdn"), tmp_path) as servers, smtp_client(servers) as c:
        assert c.smtp("HELO sis") == ["504 5.5.2 <sis>: Helo command rejected: need fully-qualified hostname"]
        assert c.smtp("EHLO localhost")[0].startswith("504")
        assert c.smtp("EHLO [127.0.0.1]")[0] == "250-mail.example.com"
        assert c.smtp("HELO client.example.org") == ["250 mail.example.com"]


@pytest.mark.parametrize(
    "mode, line, expected",
    [
        ("252", "VRFY bob@example.com", "252 2.0.0 bob@example.com"),
        ("verify", "VRFY bob@example.com", "250 2.0.0 bob@example.com"),
        ("verify", "VRFY ghost@example.com", "550 5.1.1 <ghost@example.com>: Recipient address rejected: User unknown in local recipient table"),
        ("disabled", "VRFY bob@example.com", "502 5.5.1 VRFY command is disabled"),
    ],
)
def test_vrfy_modes(tmp_path, mode, line, expected):
    with serving(persona("rfc", vrfy=mode, expn=mode), tmp_path) as servers, smtp_client(servers) as c:
        assert c.smtp(line) == [expected]
        assert c.smtp("EXPN " + line.split()[1])[0][:3] == expected[:3]


def test_max_message_size_declared_and_actual(tmp_path):
    with serving(persona("rfc", max_message_size=2000), tmp_path) as servers, smtp_client(servers) as c:
        assert "250-SIZE 2000" in c.smtp("EHLO x")
        assert c.smtp("MAIL FROM:<alice@example.com> SIZE=2001") == ["552 5.3.4 Message size exceeds fixed limit"]
        c.smtp("MAIL FROM:<alice@example.com> SIZE=100")
        c.smtp("RCPT TO:<bob@example.com>")
        c.smtp("DATA")
        c.send(b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n.\r\n")
        assert c.smtp_reply() == ["552 5.3.4 Message size exceeds fixed limit"]
        assert c.smtp("NOOP") == ["250 2.0.0 Ok"]
    assert not list((tmp_path / "mailboxes" / "bob@example.com" / "new").iterdir())


def test_max_recipients(tmp_path):
    with serving(persona("rfc", max_recipients=2), tmp_path) as servers, smtp_client(servers) as c:
        c.smtp("EHLO x")
        c.smtp("MAIL FROM:<alice@example.com>")
        assert c.smtp("RCPT TO:<bob@example.com>")[0].startswith("250")
        assert c.smtp("RCPT TO:<mrose@example.com>")[0].startswith("250")
        assert c.smtp("RCPT TO:<tim@example.com>") == ["452 4.5.3 Error: too many recipients"]
        assert c.smtp("DATA")[0].startswith("354")


def test_idle_timeouts_per_protocol(tmp_path):
    with serving(persona("rfc", smtp_idle_timeout=0.4, pop3_idle_timeout=0.6), tmp_path) as servers:
        with smtp_client(servers) as c:
            assert c.smtp_reply() == ["421 4.4.2 mail.example.com Error: timeout exceeded"]
            assert c.closed_by_server()
        with pop3_client(servers) as c:
            start = time.monotonic()
            assert c.pop3_reply() == ["-ERR [SYS/TEMP] autologout: idle for too long"]
            assert time.monotonic() - start >= 0.4
            assert c.closed_by_server()
        with smtp_client(servers) as c:  # the next session is served
            assert c.smtp("NOOP") == ["250 2.0.0 Ok"]


def test_default_idle_timeouts_are_generous_for_humans():
    profile = persona("rfc")
    assert profile.policies.smtp_idle_timeout == 300 and profile.policies.pop3_idle_timeout == 600


def test_max_connections_total_and_per_client(tmp_path):
    with serving(persona("rfc", max_connections_per_client=2), tmp_path / "per") as servers:
        first, second = smtp_client(servers), smtp_client(servers)
        with LineClient(servers.port_of("SMTP")) as third:
            assert third.smtp_reply() == ["421 4.7.0 mail.example.com Error: too many connections from 127.0.0.1"]
            assert third.closed_by_server()
        first.smtp("QUIT")
        first.close()
        limits = servers.servers.context.limits
        wait_until(lambda: limits.held_by("127.0.0.1", "SMTP") < 2, what="the server to free the first connection's slot")
        with smtp_client(servers) as fourth:
            assert fourth.smtp("NOOP") == ["250 2.0.0 Ok"]
        second.close()
    with serving(persona("rfc", max_connections=1), tmp_path / "total") as servers:
        with pop3_client(servers):
            with LineClient(servers.port_of("POP3")) as refused:
                assert refused.pop3_reply() == ["-ERR [SYS/TEMP] too many connections, try again later"]


def test_hang_up_and_reconnect_at_once_is_served_at_a_per_client_cap_of_one(tmp_path):
    """Ctrl+R at `max_connections_per_client = 1`: the new connection may arrive before the server
    has read the old one's close; it is looked at again once that close could arrive, not refused."""
    with serving(persona("rfc", max_connections_per_client=1), tmp_path) as servers:
        for _ in range(20):  # the race is between two events in one reactor turn: try it many times
            old = smtp_client(servers)
            new = LineClient(servers.port_of("SMTP"))  # connects while `old` still holds the slot
            old.close()
            with new:
                assert new.smtp_reply() == ["220 mail.example.com ESMTP Postfix"]
                assert new.smtp("QUIT") == ["221 2.0.0 Bye"]
            wait_until(lambda: servers.servers.context.limits.held_by("127.0.0.1", "SMTP") == 0, what="the slot to be free")
        with smtp_client(servers):  # while a connection is held, a second one is still refused
            with LineClient(servers.port_of("SMTP")) as refused:
                assert refused.smtp_reply() == ["421 4.7.0 mail.example.com Error: too many connections from 127.0.0.1"]


def test_failed_auth_limit_disconnects_with_421(tmp_path):
    wrong = "AUTH PLAIN " + sasl.plain_payload("alice@example.com", "wrong")
    with serving(persona("rfc", max_auth_failures=2), tmp_path) as servers, smtp_client(servers) as c:
        c.smtp("EHLO x")
        assert c.smtp(wrong)[0].startswith("535")
        assert c.smtp(wrong) == ["535 5.7.8 Error: authentication failed: authentication failure"]
        assert c.smtp_reply() == ["421 4.7.0 mail.example.com Error: too many errors"]
        assert c.closed_by_server()


def test_failed_auth_limit_refuses_with_451_then_a_new_client_is_fine(tmp_path):
    wrong = "AUTH PLAIN " + sasl.plain_payload("alice@example.com", "wrong")
    with serving(persona("rfc", max_auth_failures=2, auth_failure_action="refuse"), tmp_path) as servers:
        with smtp_client(servers) as c:
            c.smtp("EHLO x")
            c.smtp(wrong)
            c.smtp(wrong)
            assert c.smtp(PLAIN_ALICE) == ["451 4.7.0 Error: too many failed authentications, try again later"]
        with smtp_client(servers) as c:  # the count is per client address: still refused
            c.smtp("EHLO x")
            assert c.smtp(PLAIN_ALICE)[0].startswith("451")
            assert c.smtp("NOOP") == ["250 2.0.0 Ok"]


def test_pop3_failed_auth_limit(tmp_path):
    with serving(persona("rfc", max_auth_failures=1), tmp_path) as servers, pop3_client(servers) as c:
        c.pop3("USER bob@example.com")
        assert c.pop3("PASS nope") == ["-ERR [AUTH] invalid password"]
        assert c.pop3_reply() == ["-ERR [AUTH] too many failed logins, closing"]
        assert c.closed_by_server()


class SteppedClock:
    """The reactor's time plus seconds the test adds: greylisting's wait passes without sleeping."""

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self.ahead = 0.0

    def seconds(self) -> float:
        return self.reactor.seconds() + self.ahead

    def callLater(self, *args, **kwargs):  # noqa: N802 - timers keep real seconds
        return self.reactor.callLater(*args, **kwargs)


def test_greylisting_first_attempt_450_then_accepted_after_the_delay(tmp_path):
    with serving(persona("rfc", greylist_delay=1.0), tmp_path) as servers:
        clock = servers.servers.context.clock = SteppedClock(servers.reactor)
        with smtp_client(servers) as c:
            c.smtp("EHLO x")
            c.smtp("MAIL FROM:<alice@example.com>")
            assert c.smtp("RCPT TO:<bob@example.com>") == [
                "450 4.2.0 <bob@example.com>: Recipient address rejected: Greylisted, try again in 1 seconds"
            ]
            assert c.smtp("RCPT TO:<bob@example.com>")[0].startswith("450")
            clock.ahead += 1.1  # the greylisting delay passes on the server's clock
            assert c.smtp("RCPT TO:<bob@example.com>") == ["250 2.1.5 Ok"]
            # another sender is a new triplet
            c.smtp("RSET")
            c.smtp("MAIL FROM:<mrose@example.com>")
            assert c.smtp("RCPT TO:<bob@example.com>")[0].startswith("450")


def test_tarpit_delays_every_reply(tmp_path):
    with serving(persona("rfc", tarpit_delay=0.3), tmp_path) as servers:
        start = time.monotonic()
        with smtp_client(servers) as c:
            greeted = time.monotonic()
            c.smtp("NOOP")
            c.smtp("NOOP")
            done = time.monotonic()
        assert greeted - start >= 0.3
        assert done - greeted >= 0.6


def test_pop3_login_delay(tmp_path):
    with serving(persona("rfc", login_delay=2.0), tmp_path) as servers:
        with pop3_client(servers) as c:
            c.pop3("USER bob@example.com")
            assert c.pop3("PASS bob-secret")[0].startswith("+OK")
            c.pop3("QUIT")
        with pop3_client(servers) as c:
            c.pop3("USER bob@example.com")
            assert c.pop3("PASS bob-secret") == ["-ERR [LOGIN-DELAY] wait 2 more seconds before logging in again"]
            assert c.pop3("STAT") == ["-ERR command not valid in this state"]


def test_pop3_expire_zero_deletes_retrieved_messages_at_quit(tmp_path):
    with serving(persona("rfc", expire_days=0), tmp_path) as servers:
        servers.servers.store.deliver(["bob@example.com"], b"Subject: one\r\n\r\n1\r\n")
        servers.servers.store.deliver(["bob@example.com"], b"Subject: two\r\n\r\n2\r\n")
        with pop3_client(servers) as c:
            c.pop3("USER bob@example.com")
            c.pop3("PASS bob-secret")
            c.pop3("RETR 1", multiline=True)
            assert c.pop3("QUIT") == ["+OK dewey POP3 server signing off (1 messages left)"]
        with pop3_client(servers) as c:
            c.pop3("USER bob@example.com")
            assert c.pop3("PASS bob-secret")[0].endswith("has 1 messages (19 octets)")


def test_implicit_tls_only(tmp_path):
    with serving(persona("rfc", implicit_tls_only=True), tmp_path) as servers:
        context = client_ssl_context(servers.servers.tls_files.ca_cert)
        with LineClient(servers.port_of("SMTPS"), tls_context=context) as c:
            assert c.smtp_reply() == ["220 mail.example.com ESMTP Postfix"]
            assert not any("STARTTLS" in line for line in c.smtp("EHLO x"))
        with LineClient(servers.port_of("POP3S"), tls_context=context) as c:
            assert c.pop3_reply()[0].startswith("+OK POP3 server ready")
        assert [item.name for item in servers.servers.listening] == ["SMTPS", "POP3S"]
