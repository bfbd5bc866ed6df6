"""The lab internet: world files, the world's DNS, relaying over real SMTP, bounces, retries."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mockservers.world.worldfile import DEFAULT_WORLD, WorldError, lint_world, load_world

from world_helpers import default_world, parse, running, world_file

pytestmark = pytest.mark.timeout(90)

MESSAGE = b"From: alice@qq.lab\r\nTo: bob@sina.lab\r\nSubject: hello across domains\r\n\r\nHi Bob!\r\n"


# --- world files ----------------------------------------------------------------------------


def test_bundled_world_is_clean_and_has_four_domains_with_their_personas() -> None:
    assert lint_world(DEFAULT_WORLD) == []
    world = load_world()
    assert [(d.name, d.persona) for d in world.domains] == [
        ("qq.lab", "qq"), ("sina.lab", "sina"), ("163.lab", "163"), ("school.lab", "rfc"),
    ]
    ports = [p for d in world.domains for p in (d.submission_port, d.smtps_port, d.pop3_port, d.pop3s_port)]
    assert len(set(ports)) == len(ports)


BROKEN = """[world]
name = "broken"
dns_port = 99999
colour = "blue"

[[domain]]
name = "a.lab"
persona = "no-such-persona"
address = "10.0.0.1"
submission_port = 2587
accounts = ["alice"]

[[domain]]
name = "b.lab"
persona = "rfc"
address = "127.0.0.3"
submission_port = 2587
full_mailboxes = ["nobody"]
records = ["b.lab CNAME x.lab"]
spf = "spf1 -all"
"""


def test_a_broken_world_file_lists_every_problem_with_its_line(tmp_path: Path) -> None:
    path = world_file(tmp_path, BROKEN)
    found = {(p.line, p.message.split(" (")[0]) for p in lint_world(path)}
    assert (3, "dns_port 99999 is not a port number") in found
    assert (4, "unknown key 'colour'") in found
    assert any(line == 8 and "no-such-persona" in message for line, message in found)
    assert (9, "10.0.0.1 is not a loopback address") in found
    assert (11, "account 'alice' must be \"user:secret\"") in found
    assert (17, "port 2587 is already used by a.lab submission_port") in found
    assert (18, "nobody@b.lab is not an account of b.lab") in found
    assert any(line == 19 and "type CNAME is not one of A, MX, TXT" in message for line, message in found)
    assert (20, "an SPF record starts with v=spf1") in found
    with pytest.raises(WorldError) as raised:
        load_world(path)
    assert str(raised.value).startswith(f"{path}:3: ")


def test_toml_syntax_error_has_its_line(tmp_path: Path) -> None:
    path = world_file(tmp_path, "[world]\nname = \n")
    [problem] = lint_world(path)
    assert problem.line == 2 and "TOML syntax error" in problem.message


def test_maillab_lint_checks_a_world_file(tmp_path: Path) -> None:
    path = world_file(tmp_path, BROKEN)
    result = subprocess.run([sys.executable, "-m", "simulator.cli", "lint", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"{path}:4: unknown key 'colour'" in result.stdout
    assert "1 world checked" in result.stdout.splitlines()[-1]


# --- DNS ------------------------------------------------------------------------------------


def test_world_dns_answers_mx_a_and_txt_over_udp_and_tcp(tmp_path: Path) -> None:
    import dns.resolver

    for lab in running(load_world(), tmp_path):
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = lab.servers.world.dns_port
        mx = resolver.resolve("sina.lab", "MX")
        assert [(r.preference, r.exchange.to_text()) for r in mx] == [(10, "mx.sina.lab.")]
        assert mx.response.flags & dns.flags.AA  # authoritative, as the world's own server
        assert [r.address for r in resolver.resolve("mx.sina.lab", "A", tcp=True)] == ["127.0.0.3"]
        assert [b"".join(r.strings) for r in resolver.resolve("qq.lab", "TXT")] == [b"v=spf1 ip4:127.0.0.2 -all"]
        assert [b"".join(r.strings) for r in resolver.resolve("_dmarc.163.lab", "TXT")] == [b"v=DMARC1; p=reject"]
        with pytest.raises(dns.resolver.NXDOMAIN):
            resolver.resolve("nowhere.lab", "MX")


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed (dnspython covers the same query above)")
def test_dig_sees_the_mx_the_relay_sees(tmp_path: Path) -> None:
    for lab in running(load_world(), tmp_path):
        assert _dig(lab, "MX", "sina.lab") == "10 mx.sina.lab."


def _dig(lab: Any, *question: str) -> str:
    """`dig +short` against the world's DNS, as a learner types it."""
    command = ["dig", "@127.0.0.1", "-p", str(lab.servers.world.dns_port), "+short", *question]
    return subprocess.run(command, capture_output=True, text=True, timeout=20).stdout.strip()


def _world_resolver(lab):
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = lab.servers.world.dns_port
    resolver.lifetime = 10.0
    return resolver


PTR_WORLD_EXTRA = '''
records = ["qq.lab MX 20 mx2.qq.lab", "mx2.qq.lab A 127.0.0.12"]
'''


def test_world_dns_answers_ptr_for_every_address_it_gives_a_host(tmp_path: Path) -> None:
    import dns.resolver
    import dns.reversename

    text = DEFAULT_WORLD.read_text(encoding="utf-8").replace(
        'accounts = ["alice:abcdefghijklmnop", "xiaoming:qrstuvwxyzabcdef"]',
        'accounts = ["alice:abcdefghijklmnop", "xiaoming:qrstuvwxyzabcdef"]' + PTR_WORLD_EXTRA,
    )
    for lab in running(load_world(world_file(tmp_path, text)), tmp_path):
        resolver = _world_resolver(lab)

        def ptr(address: str) -> list[str]:
            answer = resolver.resolve(dns.reversename.from_address(address), "PTR")
            assert answer.response.flags & dns.flags.AA
            return [r.target.to_text() for r in answer]

        assert ptr("127.0.0.2") == ["smtp.qq.lab."]  # the name qq's relay gives in HELO
        assert ptr("127.0.0.3") == ["smtp.sina.lab."]
        assert ptr("127.0.0.12") == ["mx2.qq.lab."]  # an extra A record gets its PTR too
        for address in ("127.0.0.99", "127.0.0.1"):  # no host there; 127.0.0.1 is /etc/hosts' localhost
            with pytest.raises(dns.resolver.NXDOMAIN):
                resolver.resolve(dns.reversename.from_address(address), "PTR")
        assert lab.servers.dns.was_asked("PTR", "2.0.0.127.in-addr.arpa")


def test_twisted_names_confirms_a_world_hosts_name_forward(tmp_path: Path) -> None:
    from mockservers.world.dns import confirmed_name

    for lab in running(load_world(), tmp_path):
        resolver = lab.servers.dns.resolver()
        assert lab.embedded.call(confirmed_name, resolver, "127.0.0.3") == "smtp.sina.lab"
        assert lab.embedded.call(confirmed_name, resolver, "127.0.0.77") is None  # NXDOMAIN


def test_a_ptr_name_that_does_not_resolve_back_leaves_the_client_unknown() -> None:
    """Postfix's rule (postconf(5), reject_unknown_client_hostname): PTR alone is not enough."""
    from twisted.internet import defer
    from twisted.names import dns as names

    from mockservers.world.dns import confirmed_name

    class Liar:
        def lookupPointer(self, name: str, timeout: object = None) -> defer.Deferred:  # noqa: N802
            answer = names.RRHeader(name.encode(), names.PTR, payload=names.Record_PTR(b"mx.bank.lab"))
            return defer.succeed(([answer], [], []))

        def lookupAddress(self, name: str, timeout: object = None) -> defer.Deferred:  # noqa: N802
            answer = names.RRHeader(name.encode(), names.A, payload=names.Record_A("127.0.0.9"))
            return defer.succeed(([answer], [], []))

    results: list[object] = []
    confirmed_name(Liar(), "127.0.0.66").addCallback(results.append)
    assert results == [None]


def test_a_dns_server_that_never_answers_leaves_the_client_unknown_within_two_seconds(tmp_path: Path) -> None:
    import socket
    import time

    from twisted.names import client

    from mockservers.world.dns import confirmed_name

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never read: queries time out
    silent.bind(("127.0.0.1", 0))
    try:
        for lab in running(load_world(), tmp_path):
            resolver = client.Resolver(servers=[silent.getsockname()], reactor=lab.embedded.reactor)
            started = time.monotonic()
            assert lab.embedded.call(confirmed_name, resolver, "127.0.0.2") is None
            assert time.monotonic() - started < 3.0
    finally:
        silent.close()


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed (dnspython covers the same query above)")
def test_dig_x_names_a_world_address(tmp_path: Path) -> None:
    for lab in running(load_world(), tmp_path):
        assert _dig(lab, "-x", "127.0.0.4") == "smtp.163.lab."


# --- relaying -------------------------------------------------------------------------------


def test_qq_to_sina_over_real_smtp_arrives_with_two_received_and_one_return_path(tmp_path: Path) -> None:
    for lab in running(load_world(), tmp_path):
        assert lab.submit("qq.lab", "alice@qq.lab", "abcdefghijklmnop", "alice@qq.lab", ["bob@sina.lab"], MESSAGE) == {}
        lab.wait_for("qq.lab", "relayed", "bob@sina.lab")
        [raw] = lab.fetch_all("sina.lab", "bob@sina.lab", "bob-secret")
        message = parse(raw)
        received = message.get_all("Received")
        assert len(received) == 2
        # The MX named its client from the world's DNS: PTR 127.0.0.2 -> smtp.qq.lab, A back to it.
        assert "by mx.sina.lab" in received[0] and "from smtp.qq.lab (smtp.qq.lab [127.0.0.2])" in received[0]
        assert "by smtp.qq.lab" in received[1] and "ESMTPA" in received[1]
        assert message.get_all("Return-Path") == ["<alice@qq.lab>"]
        assert raw.index(b"Return-Path:") == 0
        assert message["Subject"] == "hello across domains"
        # Checked at sina's MX with the world's DNS: qq's SPF allows 127.0.0.2, qq's relay signed it.
        assert message["Authentication-Results"] == (
            "mx.sina.lab; spf=pass smtp.mailfrom=alice@qq.lab; dkim=pass header.d=qq.lab; dmarc=pass header.from=qq.lab"
        )
        assert "d=qq.lab" in message["DKIM-Signature"] and "s=lab" in message["DKIM-Signature"]
        # The relay's own SMTP session is transcribed like any other.
        transcripts = list((tmp_path / "data" / "qq.lab" / "transcripts").rglob("relay-qq.lab-*.jsonl"))
        assert transcripts
        text = transcripts[0].read_text()
        assert '"MAIL FROM:<alice@qq.lab>"' in text and '"RCPT TO:<bob@sina.lab>"' in text
        assert lab.servers.store("qq.lab").queued() == []


def test_the_mx_writes_unknown_for_a_client_whose_address_has_no_ptr(tmp_path: Path) -> None:
    import smtplib

    for lab in running(load_world(), tmp_path):
        port = lab.servers.port_of("sina.lab", "MX")
        with smtplib.SMTP("127.0.0.3", port, timeout=20, source_address=("127.0.0.77", 0)) as client:
            client.sendmail("someone@elsewhere.example", ["bob@sina.lab"], MESSAGE)
        [raw] = lab.fetch_all("sina.lab", "bob@sina.lab", "bob-secret")
        received = parse(raw).get_all("Received")
        assert "(unknown [127.0.0.77])" in received[0]


def test_the_mx_refuses_to_relay_for_other_domains_and_asks_no_auth(tmp_path: Path) -> None:
    import smtplib

    for lab in running(load_world(), tmp_path):
        with smtplib.SMTP("127.0.0.3", lab.servers.port_of("sina.lab", "MX"), timeout=20) as client:
            client.ehlo("stranger.example")
            assert client.mail("someone@elsewhere.example")[0] == 250
            code, text = client.rcpt("carol@163.lab")
            assert code == 553 and b"rcpthosts" in text
            assert client.rcpt("bob@sina.lab")[0] == 250


def _dsn_of(lab, domain: str, login: str, secret: str):
    messages = [parse(raw) for raw in lab.fetch_all(domain, login, secret)]
    reports = [m for m in messages if m.get_content_type() == "multipart/report"]
    assert len(reports) == 1, [m["Subject"] for m in messages]
    return reports[0]


def test_unknown_recipient_bounces_with_an_rfc3464_report_fetched_over_pop3(tmp_path: Path) -> None:
    for lab in running(load_world(), tmp_path):
        lab.submit("qq.lab", "alice@qq.lab", "abcdefghijklmnop", "alice@qq.lab", ["nobody@sina.lab", "bob@sina.lab"], MESSAGE)
        lab.wait_for("qq.lab", "bounce sent", "nobody@sina.lab")
        report = _dsn_of(lab, "qq.lab", "alice@qq.lab", "abcdefghijklmnop")
        assert report.get_param("report-type") == "delivery-status"
        assert report["From"] == "Mail Delivery System <MAILER-DAEMON@smtp.qq.lab>"
        assert report["Return-Path"] == "<>"
        human, status, headers = report.iter_parts()
        assert "nobody@sina.lab" in human.get_content()
        per_message, per_recipient = status.get_payload()
        assert per_message["Reporting-MTA"] == "dns; smtp.qq.lab"
        assert per_recipient["Final-Recipient"] == "rfc822; nobody@sina.lab"
        assert per_recipient["Action"] == "failed"
        assert per_recipient["Status"] == "5.1.1"  # sina (qmail) writes it as (#5.1.1)
        assert per_recipient["Remote-MTA"] == "dns; mx.sina.lab"
        assert per_recipient["Diagnostic-Code"].startswith("smtp; 550 sorry, no mailbox here by that name.")
        assert headers.get_content_type() == "text/rfc822-headers"
        assert "Subject: hello across domains" in headers.get_payload()
        # bob still got it: one failed recipient does not stop the others.
        assert len(lab.fetch_all("sina.lab", "bob@sina.lab", "bob-secret")) == 1


def test_full_mailbox_bounces_552_5_2_2(tmp_path: Path) -> None:
    for lab in running(load_world(), tmp_path):
        lab.submit("qq.lab", "alice@qq.lab", "abcdefghijklmnop", "alice@qq.lab", ["alumni@school.lab"], MESSAGE)
        lab.wait_for("qq.lab", "bounce sent")
        _, status, _ = _dsn_of(lab, "qq.lab", "alice@qq.lab", "abcdefghijklmnop").iter_parts()
        assert status.get_payload()[1]["Status"] == "5.2.2"
        assert "552" in status.get_payload()[1]["Diagnostic-Code"]


def test_unknown_domain_bounces_without_waiting(tmp_path: Path) -> None:
    for lab in running(load_world(), tmp_path):
        lab.submit("qq.lab", "alice@qq.lab", "abcdefghijklmnop", "alice@qq.lab", ["x@nowhere.lab"], MESSAGE)
        lab.wait_for("qq.lab", "bounce sent")
        _, status, _ = _dsn_of(lab, "qq.lab", "alice@qq.lab", "abcdefghijklmnop").iter_parts()
        assert status.get_payload()[1]["Status"] == "5.4.4"
        assert "Host or domain name not found" in status.get_payload()[1]["Diagnostic-Code"]


def test_greylisted_delivery_is_retried_with_backoff_and_succeeds(tmp_path: Path) -> None:
    # school.lab greylists for 300 lab seconds; at 600x the first retry (300 s) comes 0.5 s later.
    for lab in running(default_world(time_scale=600.0), tmp_path):
        lab.submit("qq.lab", "alice@qq.lab", "abcdefghijklmnop", "alice@qq.lab", ["student@school.lab"], MESSAGE)
        deferred = lab.wait_for("qq.lab", "deferred", "student@school.lab")
        assert "450 4.2.0" in deferred.detail and "Greylisted" in deferred.detail
        assert "next attempt in 300 s" in deferred.detail
        lab.wait_for("qq.lab", "relayed", "student@school.lab")
        [raw] = lab.fetch_all("school.lab", "student@school.lab", "student-secret")
        assert parse(raw)["Subject"] == "hello across domains"
        assert lab.servers.store("qq.lab").queued() == []


UNREACHABLE = f"""[world]
name = "unreachable"
time_scale = 3600
queue_lifetime = 1200

[[domain]]
name = "qq.lab"
persona = "{(Path(__file__).parent.parent / 'mockservers' / 'personas' / 'qq.toml').as_posix()}"
address = "127.0.0.2"
submission_port = 0
pop3_port = 0
accounts = ["alice:abcdefghijklmnop"]

[[domain]]
name = "down.lab"
persona = "rfc"
address = "127.0.0.6"
accounts = ["dan:dan-secret"]
records = ["down.lab MX 10 mx9.down.lab", "mx9.down.lab A 127.0.0.99"]
"""


def test_unreachable_mx_is_retried_then_bounced_when_the_queue_lifetime_ends(tmp_path: Path) -> None:
    world = load_world(world_file(tmp_path, UNREACHABLE))
    for lab in running(world, tmp_path):
        lab.submit("qq.lab", "alice@qq.lab", "abcdefghijklmnop", "alice@qq.lab", ["dan@down.lab"], MESSAGE)
        first = lab.wait_for("qq.lab", "deferred", "dan@down.lab")
        assert "connect to mx9.down.lab[127.0.0.99]" in first.detail and "Connection refused" in first.detail
        [entry] = lab.servers.store("qq.lab").queued()
        assert entry["attempts"] == 1 and "Connection refused" in entry["last_error"] and entry["next_attempt"] > entry["time"]
        lab.wait_for("qq.lab", "bounce sent", "dan@down.lab")
        _, status, _ = _dsn_of(lab, "qq.lab", "alice@qq.lab", "abcdefghijklmnop").iter_parts()
        assert status.get_payload()[1]["Action"] == "failed"
        assert status.get_payload()[1]["Status"] == "4.4.1"
        assert lab.servers.store("qq.lab").queued() == []


def test_backoff_doubles_from_first_retry_up_to_the_maximum(tmp_path: Path) -> None:
    from mockservers.world.relay import RelayAgent

    agent = RelayAgent.__new__(RelayAgent)
    agent.world = load_world()
    assert [agent.backoff(n) for n in (1, 2, 3, 4, 5, 6)] == [300, 600, 1200, 2400, 4000, 4000]


# --- the command ----------------------------------------------------------------------------


def test_maillab_serve_world_starts_every_domain_and_stops_on_sigterm(tmp_path: Path) -> None:
    world = load_world()
    text = DEFAULT_WORLD.read_text()
    for key in ("dns_port", "relay_port", "submission_port", "smtps_port", "pop3_port", "pop3s_port"):
        import re

        text = re.sub(rf"^{key} = \d+", f"{key} = 0", text, flags=re.M)
    path = world_file(tmp_path, text)
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "serve", "--world", str(path), "--data", str(tmp_path / "d")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("data in "):
                break
        listening = "".join(lines)
        for domain in world.domains:
            assert f"{domain.name}: MX listening on {domain.address}:" in listening
            assert f"{domain.name}: SMTP listening on 127.0.0.1:" in listening
        assert "world: DNS listening on 127.0.0.1:" in listening
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert "maillab serve: stopped" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_world_refuses_single_server_options(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simulator.cli", "serve", "--world", "--profile", "qq", "--data", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "--profile (each domain names its persona in the world file) cannot be used with --world" in result.stderr


# --- sender authentication ------------------------------------------------------------------

FORGED = b"From: alice@qq.lab\r\nTo: bob@sina.lab\r\nSubject: pay this invoice\r\n\r\nUrgent.\r\n"


def test_a_forged_sender_gets_spf_fail_and_dmarc_fail_but_is_delivered_under_p_none(tmp_path: Path) -> None:
    import smtplib

    for lab in running(load_world(), tmp_path):
        # Straight to sina's MX from 127.0.0.1, which qq.lab's SPF (ip4:127.0.0.2 -all) does not list.
        with smtplib.SMTP("127.0.0.3", lab.servers.port_of("sina.lab", "MX"), timeout=20) as client:
            client.ehlo("forger.example")
            assert client.sendmail("alice@qq.lab", ["bob@sina.lab"], FORGED) == {}
        [raw] = lab.fetch_all("sina.lab", "bob@sina.lab", "bob-secret")
        assert parse(raw)["Authentication-Results"] == (
            "mx.sina.lab; spf=fail smtp.mailfrom=alice@qq.lab; dkim=none; dmarc=fail header.from=qq.lab"
        )


def test_a_domain_that_enforces_dmarc_rejects_a_forged_p_reject_sender(tmp_path: Path) -> None:
    import smtplib

    for lab in running(load_world(), tmp_path):
        forged = FORGED.replace(b"alice@qq.lab", b"carol@163.lab")
        with smtplib.SMTP("127.0.0.4", lab.servers.port_of("163.lab", "MX"), timeout=20) as client:
            client.ehlo("forger.example")
            client.mail("carol@163.lab")
            client.rcpt("carol@163.lab")
            code, text = client.data(forged)
        assert (code, text) == (550, b"rejected by DMARC policy for 163.lab")  # 163 shows no enhanced codes
        lab.wait_for("163.lab", "message refused", "DMARC p=reject for 163.lab")
        assert lab.fetch_all("163.lab", "carol@163.lab", "carol-authcode") == []


def test_a_message_changed_after_signing_fails_dkim(tmp_path: Path) -> None:
    from mockservers.arrival import Arrival
    from mockservers.world.senderauth import SenderChecks

    for lab in running(load_world(), tmp_path):
        sign = lab.servers.signer(lab.servers.world.domain("qq.lab"))
        signed = sign(MESSAGE)
        checks = SenderChecks("mx.sina.lab", ("127.0.0.1", lab.servers.world.dns_port))
        good = checks.evaluate(Arrival("127.0.0.2", "smtp.qq.lab", "alice@qq.lab", ("bob@sina.lab",), signed))
        assert (good.spf, good.dkim, good.dkim_domain, good.dmarc) == ("pass", "pass", "qq.lab", "pass")
        tampered = signed.replace(b"Hi Bob!", b"Hi Bob, send money!")
        bad = checks.evaluate(Arrival("127.0.0.9", "evil.example", "alice@qq.lab", ("bob@sina.lab",), tampered))
        assert (bad.spf, bad.dkim, bad.dmarc) == ("fail", "fail", "fail")


def test_a_message_without_from_is_relayed_unsigned(tmp_path: Path) -> None:
    for lab in running(load_world(), tmp_path):
        lab.submit("qq.lab", "alice@qq.lab", "abcdefghijklmnop", "alice@qq.lab", ["bob@sina.lab"], b"Subject: no From\r\n\r\nhi\r\n")
        lab.wait_for("qq.lab", "relayed", "bob@sina.lab")
        [raw] = lab.fetch_all("sina.lab", "bob@sina.lab", "bob-secret")
        message = parse(raw)
        assert message["DKIM-Signature"] is None  # RFC 6376 5.4: From must be signed, so nothing is
        assert message["Authentication-Results"] == "mx.sina.lab; spf=pass smtp.mailfrom=alice@qq.lab; dkim=none"


def test_maillab_queue_shows_each_message_its_next_attempt_and_last_error(tmp_path: Path) -> None:
    from mockservers.store import MailStore

    store = MailStore(tmp_path / "world" / "default" / "qq.lab")
    queue_id = store.queue_outbound("alice@qq.lab", ["dan@down.lab"], MESSAGE)
    [record] = store.queued()
    record.update(attempts=2, next_attempt=record["time"] + 600, last_error="dan@down.lab: connect to mx9.down.lab[127.0.0.99]:10025: Connection refused")
    store.update_queued(record)
    result = subprocess.run([sys.executable, "-m", "simulator.cli", "queue", "--data", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"default/qq.lab {queue_id}: alice@qq.lab -> dan@down.lab" in result.stdout
    assert "2 attempt(s)" in result.stdout and "next attempt " in result.stdout
    assert "last error: dan@down.lab: connect to mx9.down.lab[127.0.0.99]:10025: Connection refused" in result.stdout


def test_a_world_lesson_naming_an_unknown_domain_is_refused_at_its_line(tmp_path: Path) -> None:
    from simulator.course.lint import lint_lessons

    lesson = (Path(__file__).parent.parent / "lessons" / "journey" / "mail-journey.md").read_text()
    broken = tmp_path / "broken.md"
    broken.write_text(lesson.replace("pop3_domain: sina.lab", "pop3_domain: nowhere.lab").replace("id: mail-journey", "id: broken-journey"))
    report = lint_lessons([broken], [], replay=True)
    messages = [str(p) for p in report.problems if p.severity == "error"]
    assert any(f"{broken}:8:" in m and "pop3_domain 'nowhere.lab' is not a domain of world default" in m for m in messages), messages


def test_real_client_settings_smtp_ssl_465_and_pop3_ssl_995_with_an_authorization_code(tmp_path: Path) -> None:
    """What docs/world.md tells a learner to put in smtplib/poplib for QQ and 163 (RFC 8314 implicit TLS)."""
    import poplib
    import smtplib
    import ssl

    for lab in running(load_world(), tmp_path):
        context = ssl.create_default_context(cafile=str(tmp_path / "data" / "tls" / "ca.pem"))
        assert context.check_hostname  # the lab's certificate names 127.0.0.1 too: verified, not switched off
        with smtplib.SMTP_SSL("127.0.0.1", lab.servers.port_of("qq.lab", "SMTPS"), context=context, timeout=20) as smtp:
            smtp.login("alice@qq.lab", "abcdefghijklmnop")  # the authorization code, not a web password
            smtp.sendmail("alice@qq.lab", ["carol@163.lab"], b"From: alice@qq.lab\r\nTo: carol@163.lab\r\nSubject: over TLS\r\n\r\nhi\r\n")
        lab.wait_for("qq.lab", "relayed", "carol@163.lab")
        pop = poplib.POP3_SSL("127.0.0.1", lab.servers.port_of("163.lab", "POP3S"), context=context, timeout=20)
        try:
            pop.user("carol@163.lab")
            pop.pass_("carol-authcode")
            assert pop.stat()[0] == 1
            raw = b"\r\n".join(pop.retr(1)[1])
        finally:
            pop.quit()
        message = parse(raw)
        assert message["Subject"] == "over TLS"
        assert "with ESMTPSA" in message.get_all("Received")[1]  # submitted with TLS and AUTH
