"""Python's own mail clients (smtplib, poplib) and byte-exact raw sessions against `maillab serve`.

The raw-socket tests replay the seed tutorial's telnet sessions with smtp.qq.com and smtp.sina.com
reply for reply, as PROTOCOL-FACTS.md quotes them (trailing spaces included).
"""

from __future__ import annotations

import base64
import email
import poplib
import re
import smtplib
import socket
import ssl
import uuid

import pytest

from interop_helpers import MaillabServer

pytestmark = pytest.mark.interop

TIMEOUT = 10



def token() -> str:
    return uuid.uuid4().hex[:12]


def message(sender: str, recipient: str, tag: str, extra: bytes = b"") -> bytes:
    """A small RFC 5322 message with CRLF endings and lines that need dot-stuffing."""
    return (
        f"From: {sender}\r\nTo: {recipient}\r\nSubject: interop {tag}\r\n"
        f"Message-ID: <{tag}@interop.test>\r\n\r\n"
        f"first line {tag}\r\n.a line starting with a dot\r\n..two dots\r\n.\r\nlast line\r\n"
    ).encode() + extra


def send_plain(server: MaillabServer, sender: str, recipient: str, body: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp_port, local_hostname="client.test", timeout=TIMEOUT) as smtp:
        smtp.sendmail(sender, [recipient], body)


def pop3_login(server: MaillabServer, user: str, secret: str, *, stls: bool) -> poplib.POP3:
    pop = poplib.POP3("127.0.0.1", server.pop3_port, timeout=TIMEOUT)
    if stls:
        assert pop.stls(context=server.ssl_context()).startswith(b"+OK")
        assert isinstance(pop.sock, ssl.SSLSocket)
    pop.user(user)
    pop.pass_(secret)
    return pop


# --- smtplib / poplib --------------------------------------------------------------------------


def test_smtplib_starttls_login_send_then_poplib_retr_exact_body(maillab_server) -> None:
    server = maillab_server("rfc")
    tag = token()
    body = message("alice@example.com", "bob@example.com", tag)
    with smtplib.SMTP("127.0.0.1", server.smtp_port, local_hostname="client.test", timeout=TIMEOUT) as smtp:
        code, _ = smtp.ehlo()
        assert code == 250
        assert smtp.has_extn("starttls")
        assert smtp.starttls(context=server.ssl_context())[0] == 220
        assert isinstance(smtp.sock, ssl.SSLSocket)
        smtp.ehlo()
        assert not smtp.has_extn("starttls"), "STARTTLS must not be offered again under TLS"
        assert smtp.login("alice@example.com", "alice-secret")[0] == 235
        assert smtp.sendmail("alice@example.com", ["bob@example.com"], body) == {}

    stored = server.mailbox("bob@example.com")
    assert len(stored) == 1
    assert stored[0].endswith(body), "the message body must be stored exactly as sent (dot-stuffing undone)"
    assert stored[0].startswith(b"Return-Path: <alice@example.com>\r\nReceived: from client.test (localhost [127.0.0.1])")
    assert b"with ESMTPSA" in stored[0]

    pop = poplib.POP3("127.0.0.1", server.pop3_port, timeout=TIMEOUT)
    try:
        assert pop.user("bob@example.com") == b"+OK bob@example.com is a real hoopy frood"
        assert pop.pass_("bob-secret") == (
            f"+OK bob@example.com's maildrop has 1 messages ({len(stored[0])} octets)".encode()
        )
        response, lines, octets = pop.retr(1)
        assert response == f"+OK {len(stored[0])} octets".encode()
        retrieved = b"\r\n".join(lines) + b"\r\n"
        assert retrieved == stored[0]
        assert retrieved.endswith(body)
        parsed = email.message_from_bytes(retrieved)
        assert parsed["Subject"] == f"interop {tag}"
    finally:
        pop.quit()


def test_smtplib_smtp_ssl_on_smtps_port(maillab_server) -> None:
    server = maillab_server("rfc", smtps=True)
    tag = token()
    body = message("alice@example.com", "bob@example.com", tag)
    with smtplib.SMTP_SSL(
        "127.0.0.1", server.smtps_port, local_hostname="client.test", context=server.ssl_context(), timeout=TIMEOUT
    ) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("starttls"), "implicit TLS: STARTTLS must not be advertised"
        assert "CRAM-MD5" in smtp.esmtp_features["auth"]
        assert smtp.login("alice@example.com", "alice-secret")[0] == 235
        smtp.sendmail("alice@example.com", ["bob@example.com"], body)
    stored = server.mailbox("bob@example.com")
    assert len(stored) == 1 and stored[0].endswith(body)
    assert b"with ESMTPSA" in stored[0]


def test_poplib_stls_uidl_stable_across_two_sessions(maillab_server) -> None:
    server = maillab_server("rfc")
    for _ in range(2):
        send_plain(server, "alice@example.com", "bob@example.com", message("alice@example.com", "bob@example.com", token()))

    listings = []
    for _ in range(2):
        pop = pop3_login(server, "bob@example.com", "bob-secret", stls=True)
        response, lines, _ = pop.uidl()
        assert response.startswith(b"+OK")
        listings.append(lines)
        assert pop.quit().startswith(b"+OK")
    assert len(listings[0]) == 2
    assert listings[0] == listings[1]


def test_poplib_uidl_stable_across_two_plain_sessions(maillab_server) -> None:
    server = maillab_server("rfc")
    for _ in range(2):
        send_plain(server, "alice@example.com", "bob@example.com", message("alice@example.com", "bob@example.com", token()))

    listings = []
    for _ in range(2):
        pop = pop3_login(server, "bob@example.com", "bob-secret", stls=False)
        response, lines, _ = pop.uidl()
        assert response == b"+OK unique-id listing follows"
        listings.append(lines)
        numbers = [line.split()[0] for line in lines]
        assert numbers == [b"1", b"2"]
        uids = [line.split()[1] for line in lines]
        assert len(set(uids)) == 2 and all(re.fullmatch(rb"[\x21-\x7e]{1,70}", u) for u in uids)
        assert pop.uidl(2) == b"+OK " + lines[1]
        pop.quit()
    assert listings[0] == listings[1]


@pytest.mark.parametrize("mode", ["stls", "pop3s"])
def test_pop3_quit_over_tls_closes_the_connection(maillab_server, raw_client, mode) -> None:
    """After QUIT from TRANSACTION the server must close the TCP connection (RFC 1939 6)."""
    server = maillab_server("rfc", pop3s=mode == "pop3s")
    if mode == "pop3s":
        client = raw_client(server.pop3s_port, tls_context=server.ssl_context(), timeout=3)
        assert client.read_line().startswith(b"+OK POP3 server ready <")
    else:
        client = raw_client(server.pop3_port, timeout=3)
        assert client.read_line().startswith(b"+OK POP3 server ready <")
        client.send("STLS\r\n")
        assert client.read_line() == b"+OK Begin TLS negotiation\r\n"
        client.sock = server.ssl_context().wrap_socket(client.sock, server_hostname="127.0.0.1")
    local_port = client.sock.getsockname()[1]
    client.send("USER bob@example.com\r\nPASS bob-secret\r\nQUIT\r\n")
    assert client.read_line() == b"+OK bob@example.com is a real hoopy frood\r\n"
    assert client.read_line().startswith(b"+OK bob@example.com's maildrop has 0 messages")
    assert client.read_line() == b"+OK dewey POP3 server signing off (maildrop empty)\r\n"
    server.wait_for_output(rf"POP3 pop3-\S+ 127\.0\.0\.1:{local_port} disconnected", timeout=1.5)


def test_poplib_pop3_ssl_on_pop3s_port(maillab_server) -> None:
    server = maillab_server("rfc", pop3s=True)
    tag = token()
    body = message("alice@example.com", "bob@example.com", tag)
    send_plain(server, "alice@example.com", "bob@example.com", body)
    pop = poplib.POP3_SSL("127.0.0.1", server.pop3s_port, context=server.ssl_context(), timeout=TIMEOUT)
    try:
        capabilities = pop.capa()
        assert "STLS" not in capabilities, "implicit TLS: STLS must not be advertised"
        assert "UIDL" in capabilities and "TOP" in capabilities
        pop.user("bob@example.com")
        pop.pass_("bob-secret")
        count, size = pop.stat()
        assert count == 1 and size == len(server.mailbox("bob@example.com")[0])
        _, lines, _ = pop.retr(1)
        assert (b"\r\n".join(lines) + b"\r\n").endswith(body)
        _, top_lines, _ = pop.top(1, 1)
        assert top_lines[-2:] == [b"", f"first line {tag}".encode()]
    finally:
        pop.close()


def test_poplib_apop_rfc1939_user(maillab_server) -> None:
    server = maillab_server("rfc")
    pop = poplib.POP3("127.0.0.1", server.pop3_port, timeout=TIMEOUT)
    try:
        greeting = pop.getwelcome()
        match = re.fullmatch(rb"\+OK POP3 server ready (<[^<>]+@mail\.example\.com>)", greeting)
        assert match, greeting
        assert pop.apop("mrose@example.com", "tanstaaf") == b"+OK maildrop locked and ready"
        assert pop.stat() == (0, 0)
        pop.quit()
    finally:
        pop.close()

    pop = poplib.POP3("127.0.0.1", server.pop3_port, timeout=TIMEOUT)
    try:
        with pytest.raises(poplib.error_proto) as refused:
            pop.apop("mrose@example.com", "wrong")
        assert refused.value.args[0] == b"-ERR [AUTH] permission denied"
    finally:
        pop.close()


def test_relay_denied_without_auth(maillab_server) -> None:
    server = maillab_server("rfc")
    with smtplib.SMTP("127.0.0.1", server.smtp_port, local_hostname="client.test", timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        assert smtp.mail("alice@example.com") == (250, b"2.1.0 Ok")
        assert smtp.rcpt("x@remote.test") == (554, b"5.7.1 <x@remote.test>: Relay access denied")
        assert smtp.rcpt("bob@example.com") == (250, b"2.1.5 Ok")
        smtp.rset()
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            smtp.sendmail("alice@example.com", ["x@remote.test"], b"Subject: no\r\n\r\nno\r\n")
        assert refused.value.recipients == {"x@remote.test": (554, b"5.7.1 <x@remote.test>: Relay access denied")}
    assert server.queue_files() == []


def test_relay_accepted_when_authenticated(maillab_server) -> None:
    server = maillab_server("rfc")
    tag = token()
    body = message("alice@example.com", "x@remote.test", tag)
    with smtplib.SMTP("127.0.0.1", server.smtp_port, local_hostname="client.test", timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        smtp.login("alice@example.com", "alice-secret")
        assert smtp.mail("alice@example.com") == (250, b"2.1.0 Ok")
        assert smtp.rcpt("x@remote.test") == (250, b"2.1.5 Ok")
        code, text = smtp.data(body)
        assert code == 250 and re.fullmatch(rb"2\.0\.0 Ok: queued as [0-9A-F]+", text), text
    queued = server.queue_files()
    assert queued, "a relayed message must land in DIR/queue"
    assert any(tag.encode() in p.read_bytes() for p in queued if p.is_file())
    for account in ("alice@example.com", "bob@example.com"):
        assert server.mailbox(account) == []


def test_size_declared_too_big_gives_552(maillab_server) -> None:
    server = maillab_server("rfc")
    with smtplib.SMTP("127.0.0.1", server.smtp_port, local_hostname="client.test", timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        assert smtp.esmtp_features["size"] == "10240000"
        assert smtp.mail("alice@example.com", ["SIZE=10240001"]) == (552, b"5.3.4 Message size exceeds fixed limit")
        assert smtp.mail("alice@example.com", ["SIZE=10240000"]) == (250, b"2.1.0 Ok")
        smtp.rset()
        # Undeclared but too big: refused after the final dot, nothing stored.
        assert smtp.mail("alice@example.com") == (250, b"2.1.0 Ok")
        assert smtp.rcpt("bob@example.com")[0] == 250
        big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 10300
        assert smtp.data(big) == (552, b"5.3.4 Message size exceeds fixed limit")
        assert smtp.noop() == (250, b"2.0.0 Ok")
    assert server.mailbox("bob@example.com") == []


def test_auth_secrets_are_redacted_in_transcripts(maillab_server) -> None:
    server = maillab_server("rfc")
    for mechanism in ("PLAIN", "LOGIN", "CRAM-MD5"):
        with smtplib.SMTP("127.0.0.1", server.smtp_port, local_hostname="client.test", timeout=TIMEOUT) as smtp:
            smtp.ehlo()
            smtp.user, smtp.password = "alice@example.com", "alice-secret"
            authobject = {"PLAIN": smtp.auth_plain, "LOGIN": smtp.auth_login, "CRAM-MD5": smtp.auth_cram_md5}[mechanism]
            assert smtp.auth(mechanism, authobject, initial_response_ok=True)[0] == 235
    pop = pop3_login(server, "alice@example.com", "alice-secret", stls=False)
    pop.quit()
    text = server.transcript_text(closed_sessions=4)  # three SMTP logins and one POP3
    assert '"dir": "c"' in text and "***" in text
    secrets = [
        "alice-secret",
        base64.b64encode(b"alice-secret").decode(),
        base64.b64encode(b"\0alice@example.com\0alice-secret").decode(),
    ]
    for secret in secrets:
        assert secret not in text


# --- the seed's sessions, byte for byte --------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_seed_qq_session_byte_for_byte(maillab_server, raw_client) -> None:
    server = maillab_server("qq")
    c = raw_client(server.smtp_port)
    assert c.smtp_reply() == b"220 smtp.qq.com Esmtp QQ Mail Server\r\n"
    assert c.exchange("helo sis") == b"250 smtp.qq.com\r\n"
    assert c.exchange("auth login") == b"334 VXNlcm5hbWU6\r\n"
    assert c.exchange(b64("learner@qq.com")) == b"334 UGFzc3dvcmQ6\r\n"
    assert c.exchange(b64("abcdefghijklmnop")) == b"235 Authentication successful\r\n"
    assert c.exchange("mail from: <learner@qq.com>") == b"250 Ok\r\n"
    assert c.exchange("rcpt to: <friend@qq.com>") == b"250 Ok\r\n"
    assert c.exchange("data") == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    c.send("to: hello\r\nfrom: nian\r\nsubject: this is a test telnet smtp mail\r\n\r\nhello,telnet\r\n")
    assert c.exchange(".") == b"250 Ok: queued as \r\n"  # the real server's trailing space, no id
    assert c.exchange("quit") == b"221 Bye\r\n"
    assert c.read_until_closed() == b""
    stored = server.mailbox("friend@qq.com")
    assert len(stored) == 1
    assert stored[0].startswith(b"Return-Path: <learner@qq.com>\r\n")
    assert stored[0].endswith(
        b"\r\nto: hello\r\nfrom: nian\r\nsubject: this is a test telnet smtp mail\r\n\r\nhello,telnet\r\n"
    )


def test_qq_ehlo_and_errors(maillab_server, raw_client) -> None:
    server = maillab_server("qq")
    c = raw_client(server.smtp_port)
    c.smtp_reply()
    assert c.exchange("EHLO sis") == (
        b"250-smtp.qq.com\r\n250-PIPELINING\r\n250-SIZE 73400320\r\n250-STARTTLS\r\n"
        b"250-AUTH LOGIN PLAIN\r\n250-AUTH=LOGIN\r\n250-MAILCOMPRESS\r\n250 8BITMIME\r\n"
    )
    assert c.exchange("mail from: <learner@qq.com>") == b"503 Error: need EHLO and AUTH first !\r\n"
    assert c.exchange("AUTH CRAM-MD5").startswith(b"504 ")
    assert c.exchange("auth login") == b"334 VXNlcm5hbWU6\r\n"
    assert c.exchange(b64("learner@qq.com")) == b"334 UGFzc3dvcmQ6\r\n"
    assert c.exchange(b64("password123")) == (
        b"535 Login Fail. Please enter your authorization code to login. More information in "
        b"http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=28&&no=1001256\r\n"
    )
    plain = base64.b64encode(b"\0learner@qq.com\0abcdefghijklmnop").decode()
    assert c.exchange(f"AUTH PLAIN {plain}") == b"235 Authentication successful\r\n"
    assert c.exchange("mail from: <friend@qq.com>") == b"501 mail from address must be same as authorization user\r\n"
    assert c.exchange("mail from:<learner@qq.com>") == b"250 Ok\r\n"
    assert c.exchange("QUIT") == b"221 Bye\r\n"


def test_seed_sina_session_byte_for_byte(maillab_server, raw_client) -> None:
    server = maillab_server("sina")
    c = raw_client(server.smtp_port)
    assert c.smtp_reply() == b"220 smtp ready\r\n"
    assert c.exchange("auth login") == b"334 VXNlcm5hbWU6\r\n"  # no HELO first, as in the seed
    assert c.exchange(b64("service@sina.com")) == b"334 UGFzc3dvcmQ6\r\n"
    assert c.exchange(b64("sina-secret")) == b"235 go ahead\r\n"
    assert c.exchange("MAIL FROM: service@sina.com") == b"250 sender <service@sina.com> ok\r\n"
    assert c.exchange("RCPT to: friend@sina.com") == b"250 recipient <friend@sina.com> ok\r\n"
    assert c.exchange("DATA") == b"354 go ahead\r\n"
    c.send("Subject: Hi smtp mail\r\nhello mail\r\n")
    final = c.exchange(".")
    assert re.fullmatch(rb"250 ok: Message \d+ accepted\r\n", final), final
    assert c.exchange("QUIT") == b"221 Bye\r\n"
    assert c.read_until_closed() == b""
    stored = server.mailbox("friend@sina.com")
    assert len(stored) == 1 and stored[0].endswith(b"\r\nSubject: Hi smtp mail\r\nhello mail\r\n")


# --- pipelining --------------------------------------------------------------------------------


def test_smtp_pipelining_replies_in_order(maillab_server, raw_client) -> None:
    server = maillab_server("rfc")
    c = raw_client(server.smtp_port)
    c.smtp_reply()
    assert b"250-PIPELINING\r\n" in c.exchange("EHLO client.test")
    c.send(
        "MAIL FROM:<alice@example.com>\r\n"
        "RCPT TO:<bob@example.com>\r\n"
        "RCPT TO:<nobody@example.com>\r\n"
        "DATA\r\n"
    )
    assert c.smtp_reply() == b"250 2.1.0 Ok\r\n"
    assert c.smtp_reply() == b"250 2.1.5 Ok\r\n"
    assert c.smtp_reply() == (
        b"550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in local recipient table\r\n"
    )
    assert c.smtp_reply() == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    # The message, its final dot and the next transaction in one more write.
    c.send(
        "Subject: pipelined\r\n\r\nbody\r\n.\r\n"
        "MAIL FROM:<bob@example.com>\r\nRCPT TO:<alice@example.com>\r\nRSET\r\nNOOP\r\nQUIT\r\n"
    )
    assert re.fullmatch(rb"250 2\.0\.0 Ok: queued as [0-9A-F]+\r\n", c.smtp_reply())
    assert c.smtp_reply() == b"250 2.1.0 Ok\r\n"
    assert c.smtp_reply() == b"250 2.1.5 Ok\r\n"
    assert c.smtp_reply() == b"250 2.0.0 Ok\r\n"
    assert c.smtp_reply() == b"250 2.0.0 Ok\r\n"
    assert c.smtp_reply() == b"221 2.0.0 Bye\r\n"
    assert c.read_until_closed() == b""
    assert len(server.mailbox("bob@example.com")) == 1
    assert server.mailbox("alice@example.com") == []


def test_pop3_pipelining_replies_in_order(maillab_server, raw_client) -> None:
    server = maillab_server("rfc")
    body = message("alice@example.com", "bob@example.com", token())
    send_plain(server, "alice@example.com", "bob@example.com", body)
    size = len(server.mailbox("bob@example.com")[0])
    c = raw_client(server.pop3_port)
    assert c.read_line().startswith(b"+OK POP3 server ready <")
    c.send("CAPA\r\nUSER bob@example.com\r\nPASS bob-secret\r\nSTAT\r\nLIST\r\nNOOP\r\nRSET\r\nQUIT\r\n")
    assert b"\r\nPIPELINING\r\n" in c.pop3_multiline()
    assert c.read_line() == b"+OK bob@example.com is a real hoopy frood\r\n"
    assert c.read_line() == f"+OK bob@example.com's maildrop has 1 messages ({size} octets)\r\n".encode()
    assert c.read_line() == f"+OK 1 {size}\r\n".encode()
    assert c.pop3_multiline() == f"+OK 1 messages ({size} octets)\r\n1 {size}\r\n.\r\n".encode()
    assert c.read_line() == b"+OK\r\n"
    assert c.read_line() == f"+OK maildrop has 1 messages ({size} octets)\r\n".encode()
    assert c.read_line() == b"+OK dewey POP3 server signing off (1 messages left)\r\n"
    assert c.read_until_closed() == b""



# --- SMTPUTF8 and IPv6 loopback ----------------------------------------------------------------


def test_smtplib_send_message_smtputf8_to_utf8_mailbox(maillab_server) -> None:
    from email.message import EmailMessage

    server = maillab_server("rfc", accounts=["zoë@example.com:zoe-secret"])
    mail = EmailMessage()
    mail["From"] = "alice@example.com"
    mail["To"] = "zoë@example.com"
    mail["Subject"] = "héllo"
    mail.set_content("ünïcode body\n")
    with smtplib.SMTP("127.0.0.1", server.smtp_port, local_hostname="client.test", timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("smtputf8")
        assert smtp.send_message(mail) == {}  # smtplib adds SMTPUTF8 to MAIL by itself
    pop = poplib.POP3("127.0.0.1", server.pop3_port, timeout=TIMEOUT)
    try:
        pop.user("zoë@example.com")
        pop.pass_("zoe-secret")
        _, lines, _ = pop.retr(1)
        assert "ünïcode body".encode() in lines
        assert "Subject: héllo".encode() in lines
    finally:
        pop.quit()


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_ipv6_loopback_starttls_verifies_for_colon_colon_1(maillab_server) -> None:
    if not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback (::1) on this machine")
    server = maillab_server("rfc", host="::1")
    with smtplib.SMTP("::1", server.smtp_port, local_hostname="client.test", timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        smtp.starttls(context=server.ssl_context())  # the certificate must name ::1
        smtp.ehlo()
        smtp.login("alice@example.com", "alice-secret")
        smtp.sendmail("alice@example.com", ["bob@example.com"], b"Subject: v6\r\n\r\nover ::1\r\n")
    stored = server.mailbox("bob@example.com")
    assert len(stored) == 1 and b"(localhost [IPv6:::1])" in stored[0] and stored[0].endswith(b"\r\nover ::1\r\n")


# --- STARTTLS / STLS command injection and concurrency -----------------------------------------


def test_smtp_starttls_discards_plaintext_pipelined_after_it(maillab_server, raw_client) -> None:
    """CVE-2011-0411 style injection: a command sent in clear text behind STARTTLS must not run."""
    server = maillab_server("rfc")
    c = raw_client(server.smtp_port)
    c.smtp_reply()
    c.exchange("EHLO client.test")
    c.send("STARTTLS\r\nMAIL FROM:<alice@example.com>\r\n")
    assert c.smtp_reply() == b"220 2.0.0 Ready to start TLS\r\n"
    assert c.buffer == b""
    c.sock = server.ssl_context().wrap_socket(c.sock, server_hostname="127.0.0.1")
    c.send("NOOP\r\n")
    assert c.smtp_reply() == b"250 2.0.0 Ok\r\n", "the injected MAIL must not be answered inside TLS"
    assert c.exchange("RCPT TO:<bob@example.com>") == b"503 5.5.1 Error: send HELO/EHLO first\r\n"
    assert b"250-AUTH PLAIN LOGIN CRAM-MD5\r\n" in c.exchange("EHLO client.test")
    assert c.exchange("RCPT TO:<bob@example.com>") == b"503 5.5.1 Error: need MAIL command\r\n"
    assert c.exchange("QUIT") == b"221 2.0.0 Bye\r\n"


def test_pop3_stls_discards_plaintext_pipelined_after_it(maillab_server, raw_client) -> None:
    server = maillab_server("rfc")
    c = raw_client(server.pop3_port)
    c.read_line()
    c.send("STLS\r\nUSER bob@example.com\r\n")
    assert c.read_line() == b"+OK Begin TLS negotiation\r\n"
    c.sock = server.ssl_context().wrap_socket(c.sock, server_hostname="127.0.0.1")
    c.send("PASS bob-secret\r\n")
    assert c.read_line() == b"-ERR [AUTH] send USER first\r\n", "the injected USER must have been discarded"
    c.send("QUIT\r\n")
    assert c.read_line() == b"+OK dewey POP3 server signing off\r\n"


def test_concurrent_smtp_clients_all_delivered(maillab_server) -> None:
    from concurrent.futures import ThreadPoolExecutor

    server = maillab_server("rfc")
    tags = [token() for _ in range(24)]

    def send(tag: str) -> None:
        send_plain(server, "alice@example.com", "bob@example.com", message("alice@example.com", "bob@example.com", tag))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(send, tags))
    stored = server.mailbox("bob@example.com")
    assert len(stored) == len(tags)
    for tag in tags:
        assert sum(f"interop {tag}".encode() in m for m in stored) == 1
    pop = pop3_login(server, "bob@example.com", "bob-secret", stls=False)
    try:
        _, uidls, _ = pop.uidl()
        assert len({line.split()[1] for line in uidls}) == len(tags)
    finally:
        pop.quit()


def test_pop3_dele_applies_only_on_quit(maillab_server) -> None:
    """RFC 1939: a dropped connection deletes nothing; QUIT (UPDATE state) removes DELEted mail."""
    server = maillab_server("rfc")
    for _ in range(2):
        send_plain(server, "alice@example.com", "bob@example.com", message("alice@example.com", "bob@example.com", token()))
    before = server.mailbox("bob@example.com")

    pop = pop3_login(server, "bob@example.com", "bob-secret", stls=False)
    assert pop.dele(1) == b"+OK message 1 deleted"
    with pytest.raises(poplib.error_proto) as gone:
        pop.retr(1)
    assert gone.value.args[0] == b"-ERR message 1 already deleted"
    pop.close()  # no QUIT: the connection drops
    server.wait_for_output(r"POP3 \S+ \S+ disconnected")
    assert server.mailbox("bob@example.com") == before

    pop = pop3_login(server, "bob@example.com", "bob-secret", stls=False)
    pop.dele(1)
    assert pop.quit() == b"+OK dewey POP3 server signing off (1 messages left)"
    assert server.mailbox("bob@example.com") == before[1:]
