"""Real third-party mail clients against `maillab serve` over loopback.

swaks, curl (smtp://, pop3://, pop3s://), openssl s_client (-starttls smtp / pop3), msmtp + mpop,
nc (bare LF lines, no -C) and telnet (non-interactive, fed from a here-doc).
"""

from __future__ import annotations

import base64
import os
import re
import uuid
from pathlib import Path

import pytest

from interop_helpers import MaillabServer, require_tool, run_tool

pytestmark = pytest.mark.interop


def token() -> str:
    return uuid.uuid4().hex[:12]


def message_file(directory: Path, sender: str, recipient: str, tag: str) -> tuple[Path, bytes]:
    content = (
        f"From: {sender}\r\nTo: {recipient}\r\nSubject: interop {tag}\r\n\r\n"
        f"hello {tag}\r\n.a line starting with a dot\r\nlast line\r\n"
    ).encode()
    path = directory / f"message-{tag}.eml"
    path.write_bytes(content)
    return path, content


def output_of(completed) -> str:
    return f"exit {completed.returncode}\n--- stdout\n{completed.stdout}\n--- stderr\n{completed.stderr}"


# --- swaks -------------------------------------------------------------------------------------


def swaks_base(server: MaillabServer, port: int, *, to: str = "bob@example.com", tag: str = "") -> list[str]:
    return [
        require_tool("swaks"),
        "--server", "127.0.0.1",
        "--port", str(port),
        "--helo", "client.test",
        "--from", "alice@example.com",
        "--to", to,
        "--header", f"Subject: swaks {tag}",
        "--body", f"hello from swaks {tag}",
        "--timeout", "10",
    ]


def require_swaks_tls() -> None:
    """swaks does TLS through Net::SSLeay (a Recommends of the Debian package): fail loudly without it."""
    support = run_tool([require_tool("swaks"), "--support"], timeout=20)
    text = support.stdout + support.stderr
    assert "=== TLS supported" in text, f"swaks has no TLS support (install libnet-ssleay-perl):\n{text}"


def test_swaks_plain(maillab_server) -> None:
    server = maillab_server("rfc")
    tag = token()
    done = run_tool(swaks_base(server, server.smtp_port, tag=tag))
    assert done.returncode == 0, output_of(done)
    assert "<-  220 mail.example.com ESMTP Postfix" in done.stdout
    assert re.search(r"<-  250 2\.0\.0 Ok: queued as [0-9A-F]+", done.stdout), done.stdout
    assert "<-  221 2.0.0 Bye" in done.stdout
    stored = server.mailbox("bob@example.com")
    assert len(stored) == 1 and f"hello from swaks {tag}".encode() in stored[0]
    assert b"with ESMTP id " in stored[0]
    on_disk = server.mailbox_files("bob@example.com")[0]
    assert b"\r" not in on_disk and b"with ESMTP id " in on_disk and b"\n\tfor <bob@example.com>;" in on_disk, "Maildir files keep LF line endings"


def test_swaks_starttls_verified(maillab_server) -> None:
    server = maillab_server("rfc")
    require_swaks_tls()
    tag = token()
    done = run_tool(
        swaks_base(server, server.smtp_port, tag=tag) + ["--tls", "--tls-verify", "--tls-ca-path", str(server.ca_path)]
    )
    assert done.returncode == 0, output_of(done)
    assert "<-  220 2.0.0 Ready to start TLS" in done.stdout
    assert "=== TLS started" in done.stdout
    after_tls = done.stdout.split("=== TLS started", 1)[1]
    assert "<~  250 CHUNKING" in after_tls
    assert "STARTTLS" not in after_tls, "STARTTLS must not be offered after TLS is active"
    stored = server.mailbox("bob@example.com")
    assert len(stored) == 1 and tag.encode() in stored[0] and b"with ESMTPS id " in stored[0]


def test_swaks_starttls_refuses_untrusted_certificate(shared_rfc_server, tmp_path) -> None:
    """The check above is real: a CA file that is not maillab's makes verification fail."""
    server = shared_rfc_server
    require_swaks_tls()
    tag = token()
    other_ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if not other_ca.is_file():
        other_ca = tmp_path / "empty-ca.pem"
        other_ca.write_text("")
    done = run_tool(
        swaks_base(server, server.smtp_port, tag=tag) + ["--tls", "--tls-verify", "--tls-ca-path", str(other_ca)]
    )
    assert done.returncode != 0, output_of(done)
    assert "certificate verify failed" in done.stdout + done.stderr, output_of(done)
    assert not any(tag.encode() in m for m in server.mailbox("bob@example.com"))


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN", "CRAM-MD5"])
def test_swaks_auth_then_relay(shared_rfc_server, mechanism) -> None:
    server = shared_rfc_server
    tag = token()
    done = run_tool(
        swaks_base(server, server.smtp_port, to="x@remote.test", tag=tag)
        + ["--auth", mechanism, "--auth-user", "alice@example.com", "--auth-password", "alice-secret"]
    )
    assert done.returncode == 0, output_of(done)
    assert f" -> AUTH {mechanism}" in done.stdout
    assert "<-  235 2.7.0 Authentication successful" in done.stdout
    assert "<-  250 2.1.5 Ok" in done.stdout
    queued = [p for p in server.queue_files() if p.is_file()]
    assert any(tag.encode() in p.read_bytes() for p in queued), "the relayed message must be queued"


def test_swaks_implicit_tls_on_smtps_port(shared_rfc_server) -> None:
    server = shared_rfc_server
    require_swaks_tls()
    tag = token()
    done = run_tool(
        swaks_base(server, server.smtps_port, tag=tag)
        + ["--tlsc", "--tls-verify", "--tls-ca-path", str(server.ca_path),
           "--auth", "PLAIN", "--auth-user", "alice@example.com", "--auth-password", "alice-secret"]
    )
    assert done.returncode == 0, output_of(done)
    assert "=== TLS started" in done.stdout
    assert "<~  220 mail.example.com ESMTP Postfix" in done.stdout
    assert "STARTTLS" not in done.stdout
    stored = [m for m in server.mailbox("bob@example.com") if tag.encode() in m]
    assert len(stored) == 1 and b"with ESMTPSA id " in stored[0]


def test_swaks_wrong_password_gives_535_and_nonzero_exit(shared_rfc_server) -> None:
    server = shared_rfc_server
    tag = token()
    done = run_tool(
        swaks_base(server, server.smtp_port, tag=tag)
        + ["--auth", "LOGIN", "--auth-user", "alice@example.com", "--auth-password", "not-the-secret"]
    )
    assert done.returncode != 0, output_of(done)
    assert "535 5.7.8 Error: authentication failed: authentication failure" in done.stdout
    assert " -> MAIL FROM" not in done.stdout
    assert not any(tag.encode() in m for m in server.mailbox("bob@example.com"))
    server.wait_for_output(r"authentication failed: alice@example\.com")


# --- curl --------------------------------------------------------------------------------------


def test_curl_smtp_plain_upload(maillab_server, tmp_path) -> None:
    server = maillab_server("rfc")
    path, content = message_file(tmp_path, "alice@example.com", "bob@example.com", token())
    done = run_tool([
        require_tool("curl"), "-sS", "--max-time", "20",
        f"smtp://127.0.0.1:{server.smtp_port}/client.test",
        "--mail-from", "alice@example.com",
        "--mail-rcpt", "bob@example.com",
        "--upload-file", str(path),
    ])
    assert done.returncode == 0, output_of(done)
    stored = server.mailbox("bob@example.com")
    assert len(stored) == 1
    assert stored[0].endswith(content), "curl's dot-stuffing must be undone exactly"
    assert b"Received: from client.test (localhost [127.0.0.1])" in stored[0]


def test_curl_smtp_starttls_required_with_auth(maillab_server, tmp_path) -> None:
    server = maillab_server("rfc")
    path, content = message_file(tmp_path, "alice@example.com", "bob@example.com", token())
    done = run_tool([
        require_tool("curl"), "-sS", "-v", "--max-time", "20",
        f"smtp://127.0.0.1:{server.smtp_port}/client.test",
        "--ssl-reqd", "--cacert", str(server.ca_path),
        "-u", "alice@example.com:alice-secret",
        "--mail-from", "alice@example.com",
        "--mail-rcpt", "bob@example.com",
        "--upload-file", str(path),
    ])
    assert done.returncode == 0, output_of(done)
    assert "> STARTTLS" in done.stderr and "< 220 2.0.0 Ready to start TLS" in done.stderr
    assert "SSL certificate verify ok" in done.stderr
    stored = server.mailbox("bob@example.com")
    assert len(stored) == 1 and stored[0].endswith(content)
    assert b"with ESMTPSA id " in stored[0]


def deliver_with_curl(server: MaillabServer, tmp_path: Path, count: int) -> list[bytes]:
    for _ in range(count):
        path, _ = message_file(tmp_path, "alice@example.com", "bob@example.com", token())
        done = run_tool([
            require_tool("curl"), "-sS", "--max-time", "20", f"smtp://127.0.0.1:{server.smtp_port}/client.test",
            "--mail-from", "alice@example.com", "--mail-rcpt", "bob@example.com", "--upload-file", str(path),
        ])
        assert done.returncode == 0, output_of(done)
    stored = server.mailbox("bob@example.com")
    assert len(stored) == count
    return stored


def test_curl_pop3_list_and_retrieve(maillab_server, tmp_path) -> None:
    server = maillab_server("rfc")
    stored = deliver_with_curl(server, tmp_path, 2)
    curl = require_tool("curl")
    listing = run_tool([curl, "-sS", "--max-time", "20", f"pop3://127.0.0.1:{server.pop3_port}/",
                        "-u", "bob@example.com:bob-secret"])
    assert listing.returncode == 0, output_of(listing)
    assert listing.stdout == f"1 {len(stored[0])}\r\n2 {len(stored[1])}\r\n"
    first = run_tool([curl, "-sS", "--max-time", "20", f"pop3://127.0.0.1:{server.pop3_port}/1",
                      "-u", "bob@example.com:bob-secret"])
    assert first.returncode == 0, output_of(first)
    assert first.stdout == stored[0].decode()
    wrong = run_tool([curl, "-sS", "--max-time", "20", f"pop3://127.0.0.1:{server.pop3_port}/1",
                      "-u", "bob@example.com:wrong"])
    assert wrong.returncode == 67, output_of(wrong)  # CURLE_LOGIN_DENIED


def test_curl_pop3s_retrieve(maillab_server, tmp_path) -> None:
    server = maillab_server("rfc", pop3s=True)
    stored = deliver_with_curl(server, tmp_path, 1)
    done = run_tool([
        require_tool("curl"), "-sS", "--max-time", "20", f"pop3s://127.0.0.1:{server.pop3s_port}/1",
        "--cacert", str(server.ca_path), "-u", "bob@example.com:bob-secret",
    ])
    assert done.returncode == 0, output_of(done)
    assert done.stdout == stored[0].decode()


# --- openssl s_client --------------------------------------------------------------------------


def s_client(server: MaillabServer, port: int, protocol: str, commands: str) -> str:
    done = run_tool(
        [
            require_tool("openssl"), "s_client",
            "-starttls", protocol, "-crlf",
            "-connect", f"127.0.0.1:{port}",
            "-CAfile", str(server.ca_path),
            "-verify_return_error", "-verify_ip", "127.0.0.1",
            "-ign_eof",
        ],
        input=commands,
        timeout=20,
    )
    assert done.returncode == 0, output_of(done)
    assert "Verify return code: 0 (ok)" in done.stdout, output_of(done)
    return done.stdout


def test_openssl_s_client_starttls_smtp(shared_rfc_server) -> None:
    server = shared_rfc_server
    out = s_client(server, server.smtp_port, "smtp", "EHLO client.test\nQUIT\n")
    replies = [line for line in out.splitlines() if re.match(r"^\d{3}[ -]", line)]
    assert replies[0] == "250-mail.example.com", replies
    assert "250 CHUNKING" in replies
    assert "250-AUTH PLAIN LOGIN CRAM-MD5" in replies
    assert not any("STARTTLS" in line for line in replies), "no STARTTLS in the EHLO reply under TLS"
    assert replies[-1] == "221 2.0.0 Bye"


def test_openssl_s_client_starttls_pop3(shared_rfc_server) -> None:
    server = shared_rfc_server
    out = s_client(server, server.pop3_port, "pop3", "CAPA\nUSER mrose@example.com\nPASS tanstaaf\nSTAT\nQUIT\n")
    lines = out.splitlines()
    start = lines.index("+OK Capability list follows")
    capa = lines[start + 1 : lines.index(".", start)]
    assert "STLS" not in capa and "UIDL" in capa and "USER" in capa
    assert "+OK mrose@example.com is a real hoopy frood" in lines
    assert "+OK mrose@example.com's maildrop has 0 messages (0 octets)" in lines
    assert "+OK 0 0" in lines
    assert "+OK dewey POP3 server signing off (maildrop empty)" in lines


# --- msmtp + mpop ------------------------------------------------------------------------------


def write_private(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o600)  # msmtp/mpop refuse config files with passwords that others can read
    return path


def test_msmtp_send_then_mpop_retrieve_to_maildir(maillab_server, tmp_path) -> None:
    msmtp, mpop = require_tool("msmtp"), require_tool("mpop")
    server = maillab_server("rfc")
    tag = token()
    msmtprc = write_private(tmp_path / "msmtprc", f"""\
defaults
tls on
tls_starttls on
tls_trust_file {server.ca_path}
auth on
logfile {tmp_path / 'msmtp.log'}

account maillab
host 127.0.0.1
port {server.smtp_port}
domain client.test
from alice@example.com
user alice@example.com
password alice-secret

account default : maillab
""")
    mail = f"From: alice@example.com\nTo: bob@example.com\nSubject: msmtp {tag}\n\nhello from msmtp {tag}\n.dot line\n"
    sent = run_tool([msmtp, "-C", str(msmtprc), "bob@example.com"], input=mail, env=dict(os.environ, HOME=str(tmp_path)))
    assert sent.returncode == 0, output_of(sent)
    stored = server.mailbox("bob@example.com")
    assert len(stored) == 1 and f"hello from msmtp {tag}\r\n.dot line\r\n".encode() in stored[0]
    assert b"with ESMTPSA id " in stored[0]

    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    mpoprc = write_private(tmp_path / "mpoprc", f"""\
defaults
tls on
tls_starttls on
tls_trust_file {server.ca_path}
uidls_file {tmp_path / 'mpop-uidls'}

account maillab
host 127.0.0.1
port {server.pop3_port}
user bob@example.com
password bob-secret
delivery maildir {maildir}
keep off

account default : maillab
""")
    fetched = run_tool([mpop, "-C", str(mpoprc), "-q"], env=dict(os.environ, HOME=str(tmp_path)))
    assert fetched.returncode == 0, output_of(fetched)
    files = [p for sub in ("new", "cur") for p in (maildir / sub).iterdir()]
    assert len(files) == 1, files
    content = files[0].read_bytes()
    assert f"Subject: msmtp {tag}".encode() in content
    assert f"hello from msmtp {tag}\n.dot line\n".encode() in content.replace(b"\r\n", b"\n")
    assert server.mailbox("bob@example.com") == [], "keep off: mpop deletes the message on the server"


def test_msmtp_smtps_then_mpop_pop3s_keep_on_fetches_only_new_mail(maillab_server, tmp_path) -> None:
    """Implicit TLS both ways, CRAM-MD5 both ways; mpop's UIDL bookkeeping sees only new mail."""
    msmtp, mpop = require_tool("msmtp"), require_tool("mpop")
    server = maillab_server("rfc", smtps=True, pop3s=True)
    env = dict(os.environ, HOME=str(tmp_path))
    msmtprc = write_private(tmp_path / "msmtprc", f"""\
account default
host 127.0.0.1
port {server.smtps_port}
tls on
tls_starttls off
tls_trust_file {server.ca_path}
auth cram-md5
domain client.test
user alice@example.com
password alice-secret
from alice@example.com
""")
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    mpoprc = write_private(tmp_path / "mpoprc", f"""\
account default
host 127.0.0.1
port {server.pop3s_port}
tls on
tls_starttls off
tls_trust_file {server.ca_path}
auth cram-md5
user bob@example.com
password bob-secret
delivery maildir {maildir}
keep on
uidls_file {tmp_path / 'mpop-uidls'}
""")

    def send(tag: str) -> None:
        done = run_tool([msmtp, "-C", str(msmtprc), "bob@example.com"],
                        input=f"Subject: {tag}\n\nbody {tag}\n", env=env)
        assert done.returncode == 0, output_of(done)

    def fetch() -> list[bytes]:
        done = run_tool([mpop, "-C", str(mpoprc), "-q"], env=env)
        assert done.returncode == 0, output_of(done)
        return sorted(p.read_bytes() for sub in ("new", "cur") for p in (maildir / sub).iterdir())

    first, second, third = token(), token(), token()
    send(first)
    send(second)
    fetched = fetch()
    assert len(fetched) == 2 and all(b"with ESMTPSA" in m for m in fetched)
    send(third)
    fetched = fetch()
    assert len(fetched) == 3, "mpop must fetch only the new message (UIDLs stable across sessions)"
    assert sum(third.encode() in m for m in fetched) == 1
    assert len(server.mailbox("bob@example.com")) == 3, "keep on: nothing deleted on the server"


def test_openssl_s_client_seed_qq_session_with_starttls(maillab_server) -> None:
    """The seed's optional STARTTLS branch: the same QQ session continued inside TLS."""
    server = maillab_server("qq")
    user = base64.b64encode(b"learner@qq.com").decode()
    code = base64.b64encode(b"abcdefghijklmnop").decode()
    commands = (
        f"helo sis\nauth login\n{user}\n{code}\nmail from: <learner@qq.com>\nrcpt to: <friend@qq.com>\n"
        "data\nto: hello\nfrom: nian\nsubject: this is a test telnet smtp mail\n\nhello,telnet\n.\nquit\n"
    )
    out = s_client(server, server.smtp_port, "smtp", commands)
    lines = [line.rstrip("\r") for line in out.split("\n")]
    replies = [line for line in lines if re.match(r"^\d{3}[ -]", line)]
    assert replies[-9:] == [
        "250 smtp.qq.com",
        "334 VXNlcm5hbWU6",
        "334 UGFzc3dvcmQ6",
        "235 Authentication successful",
        "250 Ok",
        "250 Ok",
        "354 End data with <CR><LF>.<CR><LF>",
        "250 Ok: queued as ",
        "221 Bye",
    ], replies
    stored = server.mailbox("friend@qq.com")
    assert len(stored) == 1 and stored[0].endswith(b"\r\n\r\nhello,telnet\r\n")
    assert b"with SMTP id " in stored[0]  # HELO (the seed's): RFC 3848's S and A are registered only after ESMTP


# --- nc and telnet -----------------------------------------------------------------------------


def test_nc_bare_lf_smtp(shared_rfc_server) -> None:
    server = shared_rfc_server
    done = run_tool(
        [require_tool("nc"), "-q", "5", "127.0.0.1", str(server.smtp_port)],
        input="EHLO x\nMAIL FROM:<alice@example.com>\nRCPT TO:<bob@example.com>\nRSET\nQUIT\n",
        timeout=15,
    )
    assert done.returncode == 0, output_of(done)
    assert done.stdout.startswith("220 mail.example.com ESMTP Postfix\r\n250-mail.example.com\r\n")
    assert done.stdout.endswith("250 CHUNKING\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n")


def test_nc_bare_lf_pop3(shared_rfc_server) -> None:
    server = shared_rfc_server
    done = run_tool(
        [require_tool("nc"), "-q", "5", "127.0.0.1", str(server.pop3_port)],
        input="USER tim@example.com\nPASS tanstaaftanstaaf\nSTAT\nQUIT\n",
        timeout=15,
    )
    assert done.returncode == 0, output_of(done)
    lines = done.stdout.split("\r\n")
    assert lines[0].startswith("+OK POP3 server ready <")
    assert lines[1:] == [
        "+OK tim@example.com is a real hoopy frood",
        "+OK tim@example.com's maildrop has 0 messages (0 octets)",
        "+OK 0 0",
        "+OK dewey POP3 server signing off (maildrop empty)",
        "",
    ]


def test_telnet_here_doc(shared_rfc_server) -> None:
    telnet = require_tool("telnet")
    server = shared_rfc_server
    script = f"""(sleep 0.5; cat <<'EOF'
EHLO client.test
NOOP
QUIT
EOF
sleep 0.7) | {telnet} 127.0.0.1 {server.smtp_port}
"""
    done = run_tool(["/bin/sh", "-c", script], timeout=15)
    assert "Connected to 127.0.0.1." in done.stdout, output_of(done)
    # telnet prints the server's lines with plain LF endings
    lines = [line.rstrip("\r") for line in done.stdout.splitlines()]
    start = lines.index("220 mail.example.com ESMTP Postfix")
    replies = lines[start:]
    assert replies[1] == "250-mail.example.com" and "250 CHUNKING" in replies
    assert replies[-2:] == ["250 2.0.0 Ok", "221 2.0.0 Bye"]
    assert "Connection closed by foreign host." in done.stdout + done.stderr
