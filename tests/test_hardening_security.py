"""What a running lab exposes, one test per item of docs/security.md.

1. Listeners bind to loopback unless told otherwise (`maillab serve`, MailServers, EmbeddedServers).
2. No open relay: every bundled persona refuses unauthenticated relaying, in plain text and after
   STARTTLS, and queues nothing; a persona that sets relay = "open" does relay (the control).
3. Addresses cannot name paths: `../`, `/`, NUL, quoted local parts and overlong paths get the
   persona's reply (syntax error, unknown user, relay denied) and no file or directory appears
   outside DATA; inside DATA only the known mailboxes, queue/ and transcripts/.
4. TLS: SSLv3, TLS 1.0 and TLS 1.1 are refused on STARTTLS, STLS, SMTPS and POP3S (the client
   is first shown able to speak them, against a local control server); TLS 1.2 and 1.3 work.
5. Secrets never reach the transcripts or the `maillab serve` log: AUTH PLAIN/LOGIN/CRAM-MD5 over
   SMTP, USER/PASS, APOP and AUTH over POP3, successful and failed.
6. Lesson and profile files are data: YAML `!!python/...` tags are refused (nothing runs), reply
   templates cannot reach attributes or allocate unbounded widths, and no eval/exec/pickle or
   unsafe YAML loader exists in the code that reads them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Iterator

import pytest

from fakes import Harness, smtp as smtp_harness
from live import LineClient, persona, serving
from mailprotocol import codec as sasl
from mockservers.profile import load_profile
from mockservers.profile_files import bundled_personas
from mockservers.server import MailServers
from mockservers.smtp import SMTPSession
from mockservers.tls import client_ssl_context, ensure_certificates
from waiting import wait_until

PROJECT = Path(__file__).resolve().parents[1]
_LISTENING = re.compile(r"^(SMTPS?|POP3S?) listening on (\S+):(\d+) ")


def maillab_command() -> list[str]:
    script = Path(sys.executable).with_name("maillab")
    return [str(script)] if script.exists() else [sys.executable, "-m", "simulator.cli"]


@contextlib.contextmanager
def maillab_serve(data_dir: Path, log: Path, *extra: str) -> Iterator[dict[str, tuple[str, int]]]:
    """`maillab serve` with its whole output (listening lines, event log, errors) in `log`."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*maillab_command(), "serve", "--data", str(data_dir), "--smtp-port", "0", "--pop3-port", "0", *extra],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=PROJECT,
        )  # fmt: skip
    try:
        listening: dict[str, tuple[str, int]] = {}

        def both_listening() -> bool:
            for line in log.read_text("utf-8", "replace").splitlines():
                match = _LISTENING.match(line)
                if match:
                    listening[match.group(1)] = (match.group(2), int(match.group(3)))
            assert process.poll() is None, log.read_text()
            return "SMTP" in listening and "POP3" in listening

        wait_until(both_listening, timeout=20, what="the SMTP and POP3 listening lines")
        yield listening
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def bound_addresses(port: int) -> set[str]:
    """Local addresses of listening sockets on `port`, from /proc/net/tcp and tcp6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            address, _, port_hex = fields[1].rpartition(":")
            if int(port_hex, 16) == port and fields[3] == "0A":  # LISTEN
                if len(address) == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    raw = bytes.fromhex(address)
                    found.add(socket.inet_ntop(socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))))
    return found


# --- 1. loopback by default ----------------------------------------------------------------------


def test_maillab_serve_binds_loopback_by_default(tmp_path):
    with maillab_serve(tmp_path / "data", tmp_path / "log") as listening:
        for name, (host, port) in listening.items():
            assert host == "127.0.0.1", (name, host)
            if Path("/proc/net/tcp").exists():
                assert bound_addresses(port) == {"127.0.0.1"}, (name, bound_addresses(port))


def test_server_classes_default_to_loopback(tmp_path):
    import inspect

    from mockservers.server import EmbeddedServers

    assert inspect.signature(MailServers).parameters["host"].default == "127.0.0.1"
    with serving(persona("rfc"), tmp_path) as servers:
        port = servers.port_of("SMTP")
        assert all(item.host == "127.0.0.1" for item in servers.servers.listening)
        if Path("/proc/net/tcp").exists():
            assert bound_addresses(port) == {"127.0.0.1"}
    assert "host" not in inspect.signature(EmbeddedServers).parameters  # only through MailServers


# --- 2. no open relay ----------------------------------------------------------------------------


def _relay_attempt(profile, data_dir: Path, *, tls: bool) -> list[str]:
    """EHLO, (STARTTLS, EHLO), MAIL from outside, RCPT to outside: the replies to MAIL and RCPT."""
    h = Harness(SMTPSession, data_dir, profile)
    if profile.policies.implicit_tls_only:
        h.session.tls_active = True
    if tls and not h.session.tls_active:
        h.send("EHLO relay.example")
        assert h.send("STARTTLS")[0].startswith("220")
    h.send("EHLO relay.example")
    mail = h.send("MAIL FROM:<spammer@outside.example>")
    rcpt = h.send("RCPT TO:<victim@elsewhere.example>")
    data = h.send("DATA")
    if data and data[0].startswith("354"):
        data += h.raw(b"Subject: spam\r\n\r\nbuy now\r\n.\r\n")
    return [mail[-1] if mail else "", rcpt[-1] if rcpt else "", data[-1] if data else ""]


@pytest.mark.parametrize("name", bundled_personas())
@pytest.mark.parametrize("tls", [False, True])
def test_no_bundled_persona_is_an_open_relay(tmp_path, name, tls):
    profile = load_profile(name)
    assert profile.policies.relay != "open", f"persona {name} relays for anyone"
    mail, rcpt, data = _relay_attempt(profile, tmp_path, tls=tls)
    assert not (mail.startswith("250") and rcpt.startswith("250")), (name, mail, rcpt)
    assert not data.startswith("250"), (name, data)
    assert list((tmp_path / "queue").glob("*")) == [] if (tmp_path / "queue").exists() else True


def test_relay_open_is_the_only_way_to_relay_without_auth(tmp_path):
    """The control: the same attempt succeeds exactly when a persona sets relay = "open"."""
    profile = persona("rfc", relay="open")
    mail, rcpt, data = _relay_attempt(profile, tmp_path, tls=False)
    assert mail.startswith("250") and rcpt.startswith("250") and data.startswith("250")
    assert len(list((tmp_path / "queue").glob("*.json"))) == 1


def test_relay_needs_authentication_then_works(tmp_path):
    h = smtp_harness(tmp_path)
    h.send("EHLO x.example")
    h.send("MAIL FROM:<alice@example.com>")
    assert h.send("RCPT TO:<victim@elsewhere.example>") == ["554 5.7.1 <victim@elsewhere.example>: Relay access denied"]
    h.send("RSET")
    assert h.send("AUTH PLAIN " + sasl.plain_payload("alice@example.com", "alice-secret"))[0].startswith("235")
    h.send("MAIL FROM:<alice@example.com>")
    assert h.send("RCPT TO:<friend@elsewhere.example>")[0].startswith("250")


# --- 3. addresses cannot name paths ---------------------------------------------------------------

HOSTILE_RCPT = {
    # argument -> the rfc persona's reply code
    "<../../../../tmp/owned@example.com>": "501",
    "<..@example.com>": "501",
    "<a/../../b@example.com>": "501",  # '..' inside a dot-atom is not an address
    "<a/b@example.com>": "550",  # '/' is legal atext: a well-formed address of nobody here
    '<"../../etc/passwd"@example.com>': "550",
    '<"a/b"@example.com>': "550",
    "<x@../../etc>": "501",
    "<x@example.com/../../etc>": "501",
    "<" + "a" * 65 + "@example.com>": "501",  # local part over 64 octets
    "<" + "a" * 60 + "@" + ".".join(["b" * 60] * 4) + ".com>": "501",  # path over 256 octets
    "<postmaster/../../x@example.com>": "501",
    "<postmaster/x@example.com>": "550",
    "<%2e%2e%2fx@example.com>": "550",
    "<../x@elsewhere.example>": "501",
    "<x/y@elsewhere.example>": "554",  # not local: relay denied
}


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _only_bookkeeping(created: set[str]) -> bool:
    """New paths are the store's empty top directories and transcripts: no mailbox, nothing outside."""
    return all(p in ("data/mailboxes", "data/queue") or p.startswith("data/transcripts") for p in created)


@pytest.mark.parametrize("argument, code", sorted(HOSTILE_RCPT.items()))
def test_path_traversal_in_rcpt_is_refused(tmp_path, argument, code):
    outside = tmp_path / "outside"
    data = tmp_path / "data"
    outside.mkdir()
    data.mkdir()
    before = _tree(tmp_path)
    h = smtp_harness(data)
    h.send("EHLO x.example")
    assert h.send("MAIL FROM:<alice@example.com>")[0].startswith("250")
    reply = h.send(f"RCPT TO:{argument}")
    assert reply[-1][:3] == code, reply
    assert h.send("DATA")[0][:3] in ("503", "554")  # no valid recipient: no DATA phase
    h.session.connectionLost(None)
    created = _tree(tmp_path) - before
    assert _only_bookkeeping(created), sorted(created)


@pytest.mark.parametrize("name", ["qq", "sina", "163"])
def test_path_traversal_in_lenient_personas(tmp_path, name):
    data = tmp_path / "data"
    data.mkdir()
    before = _tree(tmp_path)
    profile = load_profile(name)
    domain = profile.local_domains[0]
    for argument in (f"../../x@{domain}", f"<../../x@{domain}>", f"a/b@{domain}", f'"../x"@{domain}', "../../x@elsewhere.example"):
        h = Harness(SMTPSession, data, profile)
        h.send("HELO x.example")
        account = profile.accounts[0]
        h.send("AUTH PLAIN " + sasl.plain_payload(account.address, account.secret))
        h.send(f"MAIL FROM:<{account.address}>")
        reply = h.send(f"RCPT TO:{argument}")
        assert reply and reply[-1][0] in "45", (name, argument, reply)
        h.session.connectionLost(None)
    created = _tree(tmp_path) - before
    assert _only_bookkeeping(created), sorted(created)


def test_nul_in_an_address_is_a_syntax_error(tmp_path):
    h = smtp_harness(tmp_path)
    h.send("EHLO x.example")
    h.send("MAIL FROM:<alice@example.com>")
    assert h.raw(b"RCPT TO:<a\0/../x@example.com>\r\n")[-1][:3] == "500"
    assert h.raw(b"MAIL FROM:<a\0b@example.com>\r\n")[-1][:3] == "500"


def test_authenticated_relay_to_a_hostile_address_writes_only_inside_the_queue(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    before = _tree(tmp_path)
    h = smtp_harness(data)
    h.send("EHLO x.example")
    h.send("AUTH PLAIN " + sasl.plain_payload("alice@example.com", "alice-secret"))
    h.send("MAIL FROM:<alice@example.com>")
    assert h.send('RCPT TO:<"../../../../tmp/x"@elsewhere.example>')[0].startswith("250")
    h.send("DATA")
    assert h.raw(b"Subject: relayed\r\n\r\nok\r\n.\r\n")[-1].startswith("250")
    h.session.connectionLost(None)
    created = _tree(tmp_path) - before
    assert {p.split("/")[1] for p in created if p.count("/") >= 1} <= {"mailboxes", "queue", "transcripts"}, sorted(created)
    assert not [p for p in created if p.startswith("data/mailboxes/")], sorted(created)
    assert all(re.fullmatch(r"data/queue/[0-9]{19}\.M[0-9]{6}P[0-9]+Q[0-9]+\.[A-Za-z0-9_.-]+\.(eml|json)", p) for p in created if p.startswith("data/queue/"))


@pytest.mark.parametrize("user", ["../../etc/passwd", "/etc/passwd", "bob@example.com/../alice@example.com", "a\0b", "x" * 300])
def test_pop3_login_names_cannot_name_paths(tmp_path, user):
    h = Harness(__import__("mockservers.pop3", fromlist=["POP3Session"]).POP3Session, tmp_path / "data", "rfc")
    before = _tree(tmp_path)
    reply = h.raw(f"USER {user}\r\n".encode())
    assert reply and reply[0].startswith("-ERR"), reply
    reply = h.raw(f"APOP {user} {'0' * 32}\r\n".encode())
    assert reply and reply[0].startswith("-ERR"), reply
    h.session.connectionLost(None)
    assert _only_bookkeeping(_tree(tmp_path) - before)


# --- 4. TLS versions -----------------------------------------------------------------------------

OLD_VERSIONS = ["TLSv1", "TLSv1_1"]


def _old_client_context(version: str) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pinned = getattr(ssl.TLSVersion, version)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = pinned
        context.maximum_version = pinned
        context.set_ciphers("ALL:@SECLEVEL=0")
    return context


def _client_can_speak(version: str, tls_dir: Path) -> bool:
    """Control: a local stdlib server pinned to `version` completes a handshake with our client."""
    files = ensure_certificates(tls_dir, ["localhost"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(files.cert, files.key)
        pinned = getattr(ssl.TLSVersion, version)
        try:
            server.minimum_version = server.maximum_version = pinned
            server.set_ciphers("ALL:@SECLEVEL=0")
        except (ValueError, ssl.SSLError):
            return False
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with contextlib.suppress(OSError, ssl.SSLError):
                with server.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=5) as raw:
            with _old_client_context(version).wrap_socket(raw) as tls:
                return tls.version() is not None
    except (OSError, ssl.SSLError):
        return False
    finally:
        listener.close()
        thread.join(5)


def _read_smtp_reply(raw: socket.socket) -> bytes:
    """Read one whole SMTP reply (up to its last line, `NNN ` + CRLF), so STARTTLS is sent after it."""
    data = b""
    while not re.search(rb"(^|\r\n)\d{3} [^\r\n]*\r\n$", data):
        chunk = raw.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed before the reply ended: {data!r}")
        data += chunk
    return data


def _handshake(port: int, context: ssl.SSLContext, starttls: bytes | None, protocol: str) -> str:
    """Connect (STARTTLS/STLS first when asked); the negotiated version, or raise ssl.SSLError."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        if starttls is not None:
            raw.recv(1024)
            if protocol == "SMTP":
                raw.sendall(b"EHLO x.example\r\n")
                _read_smtp_reply(raw)
            raw.sendall(starttls)
            reply = raw.recv(1024)
            assert reply[:1] in (b"2", b"+"), reply
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.version() or ""


def _endpoints(servers) -> list[tuple[int, bytes | None, str]]:
    return [
        (servers.port_of("SMTP"), b"STARTTLS\r\n", "SMTP"),
        (servers.port_of("POP3"), b"STLS\r\n", "POP3"),
        (servers.port_of("SMTPS"), None, "SMTPS"),
        (servers.port_of("POP3S"), None, "POP3S"),
    ]


@pytest.mark.parametrize("version", OLD_VERSIONS)
def test_old_tls_versions_are_refused_everywhere(tmp_path, version):
    if not _client_can_speak(version, tmp_path / "control"):
        pytest.skip(f"this OpenSSL cannot speak {version} even to a willing server (nothing to test against)")
    with serving(persona("rfc"), tmp_path / "data", smtps_port=0, pop3s_port=0) as servers:
        for port, starttls, name in _endpoints(servers):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                _handshake(port, _old_client_context(version), starttls, name.rstrip("S") if starttls else name)
            # The listener is fine afterwards: a modern client gets through.
            context = client_ssl_context(servers.servers.tls_files.ca_cert)
            assert _handshake(port, context, starttls, name.rstrip("S") if starttls else name) in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("maximum", ["TLSv1_2", "TLSv1_3"])
def test_tls12_and_tls13_work(tmp_path, maximum):
    with serving(persona("rfc"), tmp_path, smtps_port=0, pop3s_port=0) as servers:
        context = client_ssl_context(servers.servers.tls_files.ca_cert)
        context.maximum_version = getattr(ssl.TLSVersion, maximum)
        for port, starttls, name in _endpoints(servers):
            assert _handshake(port, context, starttls, name.rstrip("S") if starttls else name) == maximum.replace("_", ".")


def _sslv3_client_hello() -> bytes:
    """A minimal SSL 3.0 ClientHello (the stdlib cannot send one: SSLv3 is not compiled in)."""
    suites = bytes.fromhex("002f 0035 000a 0005 0004 c013 c009".replace(" ", ""))
    body = b"\x03\x00" + os.urandom(32) + b"\x00" + len(suites).to_bytes(2, "big") + suites + b"\x01\x00"
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x00" + len(handshake).to_bytes(2, "big") + handshake


def test_sslv3_client_hello_gets_no_server_hello(tmp_path):
    with serving(persona("rfc"), tmp_path, smtps_port=0, pop3s_port=0) as servers:
        for port, starttls, name in _endpoints(servers):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                if starttls is not None:
                    raw.recv(1024)
                    if name == "SMTP":
                        raw.sendall(b"EHLO x.example\r\n")
                        _read_smtp_reply(raw)
                    raw.sendall(starttls)
                    raw.recv(1024)
                raw.sendall(_sslv3_client_hello())
                answer = b""
                with contextlib.suppress(OSError):
                    while len(answer) < 5:
                        chunk = raw.recv(4096)
                        if not chunk:
                            break
                        answer += chunk
                # A fatal alert (content type 21) or a closed connection, never a handshake (22).
                assert answer[:1] in (b"", b"\x15"), (name, answer[:16])


# --- 5. secrets stay out of transcripts and logs ---------------------------------------------------


def _closed_transcripts(data: Path) -> int:
    files = (data / "transcripts").rglob("*.jsonl") if (data / "transcripts").is_dir() else []
    return sum(1 for path in files if path.read_text("utf-8", "replace").rstrip().endswith('"event": "close"}'))


def test_secrets_never_reach_transcripts_or_the_serve_log(tmp_path):
    data = tmp_path / "data"
    log = tmp_path / "serve.log"
    secrets: set[bytes] = set()

    def remember(*values: str | bytes) -> None:
        for value in values:
            secrets.add(value.encode() if isinstance(value, str) else value)

    with maillab_serve(data, log, "--account", "carol@example.com:Sup3r-Secret!") as listening:
        smtp_port = listening["SMTP"][1]
        pop3_port = listening["POP3"][1]
        for user, password in (("alice@example.com", "alice-secret"), ("alice@example.com", "Wr0ng-Passw0rd")):
            plain = sasl.plain_payload(user, password)
            remember(password, plain, sasl.b64encode_text(password))
            with LineClient(smtp_port) as c:
                c.smtp_reply()
                c.smtp("EHLO x.example")
                c.smtp(f"AUTH PLAIN {plain}")
            with LineClient(smtp_port) as c:
                c.smtp_reply()
                c.smtp("EHLO x.example")
                c.smtp("AUTH PLAIN")
                c.smtp(plain)
            with LineClient(smtp_port) as c:
                c.smtp_reply()
                c.smtp("EHLO x.example")
                c.smtp("AUTH LOGIN")
                c.smtp(sasl.b64encode_text(user))
                c.smtp(sasl.b64encode_text(password))
            with LineClient(smtp_port) as c:
                c.smtp_reply()
                c.smtp("EHLO x.example")
                challenge = sasl.b64decode_strict(c.smtp("AUTH CRAM-MD5")[0][4:])
                response = sasl.cram_md5_response(user, password, challenge)
                remember(response, response.split()[-1] if " " in response else response)
                c.smtp(response)
            with LineClient(pop3_port) as c:
                c.pop3_reply()
                c.pop3(f"USER {user}")
                c.pop3(f"PASS {password}")
            with LineClient(pop3_port) as c:
                greeting = c.pop3_reply()[0]
                stamp = re.search(r"<[^>]*>", greeting).group(0)
                digest = hashlib.md5((stamp + password).encode()).hexdigest()
                remember(digest)
                c.pop3(f"APOP {user} {digest}")
            with LineClient(pop3_port) as c:
                c.pop3_reply()
                c.pop3("AUTH PLAIN")
                c.pop3(plain)
        # The account given on the command line: its secret must not be echoed either.
        remember("Sup3r-Secret!")
        with LineClient(pop3_port) as c:
            c.pop3_reply()
            c.pop3("USER carol@example.com")
            assert c.pop3("PASS Sup3r-Secret!")[0].startswith("+OK")
        # Every session's transcript closed (the output thread writes them) and the log has its lines.
        wait_until(lambda: _closed_transcripts(data) >= 15, what="15 closed transcripts")
        wait_until(lambda: b"authentication failed" in log.read_bytes(), what="the serve log's failed login")
    transcripts = list((data / "transcripts").rglob("*.jsonl"))
    assert len(transcripts) >= 15
    haystacks = {path: path.read_bytes() for path in transcripts}
    haystacks[log] = log.read_bytes()
    assert b"authenticated" in haystacks[log] and b"authentication failed" in haystacks[log]  # it did log
    leaks = [(str(path), secret) for path, text in haystacks.items() for secret in secrets if secret in text]
    assert not leaks, leaks


# --- 6. lesson and profile files are data ------------------------------------------------------------

LESSON_WITH_TAG = """---
id: evil
title: !!python/object/apply:os.system ["touch {marker}"]
protocol: smtp
---

# Evil

::::: step
x
:::::
"""


def test_lesson_with_python_yaml_tags_is_rejected_and_runs_nothing(tmp_path):
    from simulator.course.catalog import load_catalog, load_index
    from simulator.course.parser import LessonError, parse_lesson

    marker = tmp_path / "owned"
    lessons = tmp_path / "lessons"
    lessons.mkdir()
    lesson = lessons / "evil.md"
    for tag in ("!!python/object/apply:os.system", "!!python/object/new:os.system", "!!python/name:os.system"):
        lesson.write_text(LESSON_WITH_TAG.replace("!!python/object/apply:os.system", tag).format(marker=marker))
        with pytest.raises(LessonError):
            parse_lesson(lesson)
        catalog = load_catalog([lessons], include_bundled=False)
        assert catalog.errors and not catalog.lessons
        index = load_index([lessons], include_bundled=False)
        assert index.errors
        assert not marker.exists()


def test_profile_templates_cannot_reach_python_objects(tmp_path):
    profile_file = tmp_path / "evil.toml"
    profile_file.write_text(
        'name = "evil"\nextends = "rfc"\n[smtp.replies]\n'
        'noop = "250 {host.__class__.__mro__} {date.__init__.__globals__} {size:>999999999} {client_ip!r}"\n'
    )
    try:
        profile = load_profile(str(profile_file))
    except Exception as error:  # refusing such a template at load time is fine too
        assert "evil" in str(error) or "noop" in str(error)
        return
    h = smtp_harness(tmp_path / "data", profile)
    start = time.perf_counter()
    reply = h.send("NOOP")
    assert time.perf_counter() - start < 1.0
    assert reply and len(reply[0]) < 300, reply[0][:300]
    assert "class" not in reply[0].replace("{host.__class__.__mro__}", "") and "<" not in reply[0]


def test_profile_toml_has_no_code_path(tmp_path):
    """TOML has no tags; a value that looks like code stays a string and is never evaluated."""
    marker = tmp_path / "owned"
    profile_file = tmp_path / "code.toml"
    profile_file.write_text(
        f'name = "code"\nextends = "rfc"\ndescription = "__import__(\'os\').system(\'touch {marker}\')"\n'
        f'[smtp.replies]\nnoop = "250 __import__(\'os\').system(\'touch {marker}\')"\n'
    )
    profile = load_profile(str(profile_file))
    h = smtp_harness(tmp_path / "data", profile)
    assert "__import__" in h.send("NOOP")[0]
    assert not marker.exists()


def test_no_dynamic_code_in_the_loaders():
    pattern = re.compile(r"\b(eval|exec)\s*\(|\bpickle\b|\bmarshal\.loads|yaml\.(unsafe_load|full_load)|Loader=yaml\.(Loader|FullLoader|UnsafeLoader)|\bcompile\(")
    offenders = []
    for package in ("mockservers", "simulator"):
        for path in (PROJECT / package).rglob("*.py"):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                code = line.split("#", 1)[0]
                if pattern.search(code) and "re.compile" not in code:
                    offenders.append(f"{path.relative_to(PROJECT)}:{number}: {line.strip()}")
                if "yaml.load(" in code and "Safe" not in code and "loader" not in code:
                    offenders.append(f"{path.relative_to(PROJECT)}:{number}: {line.strip()}")
    assert not offenders, offenders
    catalog = (PROJECT / "simulator" / "course" / "catalog.py").read_text()
    assert 'getattr(yaml, "CSafeLoader", yaml.SafeLoader)' in catalog  # the one yaml.load uses a safe loader


def test_mail_and_transcripts_are_private_files(tmp_path):
    """Messages, queued (relayed) mail and transcripts hold mail: mode 0600 whatever the umask."""
    import stat

    h = smtp_harness(tmp_path)
    h.send("EHLO x.example")
    h.send("AUTH PLAIN " + sasl.plain_payload("alice@example.com", "alice-secret"))
    h.send("MAIL FROM:<alice@example.com>")
    h.send("RCPT TO:<bob@example.com>")
    h.send("RCPT TO:<friend@elsewhere.example>")
    h.send("DATA")
    assert h.raw(b"Subject: private\r\n\r\nbody\r\n.\r\n")[-1].startswith("250")
    h.session.connectionLost(None)
    files = [
        *(tmp_path / "mailboxes" / "bob@example.com" / "new").iterdir(),
        *(tmp_path / "queue").iterdir(),
        *(tmp_path / "transcripts").rglob("*.jsonl"),
    ]
    assert len(files) >= 4
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_reply_templates_render_as_the_restricted_formatter_does():
    """Templates are parsed once and cached; the text is what `_Template.vformat` makes of them."""
    from mockservers.rendering import _FORMATTER, format_template

    values = {"host": "mx.test", "size": 1234, "name": "a\x1bb\rc", "ratio": 1.5}
    for template in (
        "250 {host} ok", "{size:>8}|{size:,}|{ratio:.2f}", "{name} {unknown} {host.__class__} {0}", "{} and {}",
        "{{literal}} {size:{host}}", "{size:>999999999}", "{host:d}", "{host!r}", "", "no fields",
    ):
        assert format_template(template, values) == _FORMATTER.vformat(template, (), values), template
        assert format_template(template, values) == format_template(template, values)  # cached: the same
