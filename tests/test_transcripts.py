"""Session transcripts: records on disk, crash tolerance, live following, secret redaction."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest

from mockservers.masking import MASK, KnownSecrets, mask_account, mask_line
from mockservers.transcripts import (
    TranscriptWriter,
    follow,
    iter_transcripts,
    read_transcript,
)

NOON = time.mktime((2025, 3, 14, 12, 0, 0, 0, 0, -1))


class FakeClock:
    def __init__(self, start: float = NOON) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 0.5
        return self.now


def make_writer(directory: Path, session: str = "s1", clock: FakeClock | None = None) -> TranscriptWriter:
    return TranscriptWriter(directory, session, "smtp", "127.0.0.1:50000", "qq", clock=clock or FakeClock())


def test_records_in_order_with_fields(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = make_writer(tmp_path, "abc123", clock)
    assert writer.path == tmp_path / "2025-03-14" / "abc123.jsonl"
    writer.server("220 smtp.qq.com Esmtp QQ Mail Server")
    writer.client("EHLO learner")
    writer.event("tls", version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256")
    writer.client("AUTH PLAIN ***")
    writer.close()
    writer.close()
    records = read_transcript(writer.path)
    assert [r["dir"] for r in records] == ["e", "s", "c", "e", "c", "e"]
    assert records[0] == {
        "t": NOON + 0.5 * 2,
        "session": "abc123",
        "dir": "e",
        "event": "open",
        "protocol": "smtp",
        "peer": "127.0.0.1:50000",
        "profile": "qq",
    }
    assert records[1] == {"t": NOON + 1.5, "session": "abc123", "dir": "s", "line": "220 smtp.qq.com Esmtp QQ Mail Server"}
    assert records[2]["line"] == "EHLO learner"
    assert records[3]["event"] == "tls" and records[3]["version"] == "TLSv1.3"
    assert records[-1]["event"] == "close"
    assert [r["event"] for r in records if r["dir"] == "e"].count("close") == 1
    times = [r["t"] for r in records]
    assert times == sorted(times)
    # One JSON object per line, nothing else.
    lines = writer.path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(records) + 1


def test_records_are_on_disk_after_each_flush(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.client("NOOP")
    writer.server("250 Ok")
    assert [r.get("line") for r in read_transcript(writer.path)] == [None]  # the open record only
    writer.flush()  # the session flushes after each batch of input it handled
    # Another process (the dashboard, an instructor's script) sees them without close().
    assert [r.get("line") for r in read_transcript(writer.path)] == [None, "NOOP", "250 Ok"]
    writer.close()


def test_writes_after_close_are_ignored(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.close()
    writer.client("late")
    writer.event("late")
    assert [r["event"] for r in read_transcript(writer.path)] == ["open", "close"]
    assert writer.closed


def test_non_ascii_and_odd_lines_round_trip(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    tricky = ['Subject: 你好', 'quote " backslash \\ tab \t', "replacement \ufffd", "", "line\nwith newline"]
    for line in tricky:
        writer.client(line)
    writer.close()
    records = read_transcript(writer.path)
    assert [r["line"] for r in records if r["dir"] == "c"] == tricky
    assert len(writer.path.read_bytes().splitlines()) == len(records)


def test_event_rejects_reserved_fields(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    with pytest.raises(ValueError):
        writer.event("x", dir="c")
    with pytest.raises(ValueError):
        writer.event("x", session="other")
    writer.event("auth", user="alice", ok=True, count=3, where=tmp_path)
    writer.flush()
    record = read_transcript(writer.path)[-1]
    assert record["user"] == "alice" and record["ok"] is True and record["count"] == 3
    assert record["where"] == str(tmp_path)


@pytest.mark.parametrize("bad", ["", "../escape", "a/b", "a\\b", ".hidden", "nul\0"])
def test_session_id_cannot_escape(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        make_writer(tmp_path, bad)


def test_context_manager_closes(tmp_path: Path) -> None:
    with make_writer(tmp_path) as writer:
        writer.server("+OK")
    assert read_transcript(writer.path)[-1]["event"] == "close"


def test_many_concurrent_sessions(tmp_path: Path) -> None:
    writers = [make_writer(tmp_path, f"s{i:03d}") for i in range(200)]
    for round_ in range(3):
        for i, writer in enumerate(writers):
            writer.client(f"{i}-{round_}")
    for writer in writers:
        writer.close()
    for i, writer in enumerate(writers):
        lines = [r["line"] for r in read_transcript(writer.path) if r["dir"] == "c"]
        assert lines == [f"{i}-0", f"{i}-1", f"{i}-2"]


def test_truncated_last_line_is_skipped(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.client("MAIL FROM:<a@x.org>")
    writer.client("RCPT TO:<b@x.org>")
    writer.close()
    data = writer.path.read_bytes()
    cut = data[: data.rindex(b"\n", 0, len(data) - 1) + 12]
    writer.path.write_bytes(cut)
    records = read_transcript(writer.path)
    assert [r.get("line") for r in records] == [None, "MAIL FROM:<a@x.org>", "RCPT TO:<b@x.org>"]


def test_damaged_line_in_the_middle_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"dir": "c", "line": "a"}\n{"dir": "c", "li\n[1, 2]\n\n{"dir": "s", "line": "b"}\n')
    assert read_transcript(path) == [{"dir": "c", "line": "a"}, {"dir": "s", "line": "b"}]


def test_last_line_without_newline_but_complete_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"dir": "c", "line": "a"}\n{"dir": "s", "line": "b"}')
    assert [r["line"] for r in read_transcript(path)] == ["a", "b"]


def test_follow_offsets(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    assert follow(path) == ([], 0)
    writer = make_writer(tmp_path, "live")
    records, offset = follow(writer.path)
    assert [r["event"] for r in records] == ["open"]
    assert offset == writer.path.stat().st_size
    assert follow(writer.path, offset) == ([], offset)

    writer.client("USER alice")
    writer.server("+OK")
    writer.flush()
    records, offset2 = follow(writer.path, offset)
    assert [r["line"] for r in records] == ["USER alice", "+OK"]
    assert offset2 == writer.path.stat().st_size

    # A record being written (no newline yet) is not consumed until it is complete.
    with open(writer.path, "ab") as handle:
        handle.write(b'{"dir": "c", "line": "PA')
    assert follow(writer.path, offset2) == ([], offset2)
    with open(writer.path, "ab") as handle:
        handle.write(b'SS ***"}\n')
    records, offset3 = follow(writer.path, offset2)
    assert records == [{"dir": "c", "line": "PASS ***"}]
    assert offset3 == writer.path.stat().st_size
    writer.close()


def test_follow_restarts_when_file_shrinks(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2}\n')
    _, offset = follow(path)
    path.write_bytes(b'{"n": 3}\n')
    records, new_offset = follow(path, offset)
    assert records == [{"n": 3}]
    assert new_offset == path.stat().st_size


def test_iter_transcripts_by_mtime_then_name(tmp_path: Path) -> None:
    root = tmp_path / "transcripts"
    paths = {}
    for day, name, mtime in [
        ("2025-03-15", "b", 300),
        ("2025-03-14", "z", 100),
        ("2025-03-15", "a", 300),
        ("2025-03-13", "m", 200),
    ]:
        path = root / day / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n")
        os.utime(path, (mtime, mtime))
        paths[name] = path
    (root / "2025-03-15" / "notes.txt").write_text("ignored")
    assert list(iter_transcripts(root)) == [paths["z"], paths["m"], paths["a"], paths["b"]]
    assert list(iter_transcripts(tmp_path / "missing")) == []


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "AUTH PLAIN ***"),
        ("auth plain AGFsaWNlAHNlY3JldA==", "auth plain ***"),
        ("AUTH LOGIN YWxpY2U=", "AUTH LOGIN ***"),
        ("Auth Login YWxpY2U=", "Auth Login ***"),
        ("AUTH XOAUTH2 dXNlcj1hbGljZQFhdXRoPUJlYXJlciB0b2tlbgEB", "AUTH XOAUTH2 ***"),
        ("AUTH PLAIN", "AUTH PLAIN"),
        ("AUTH LOGIN", "AUTH LOGIN"),
        ("AUTH CRAM-MD5", "AUTH CRAM-MD5"),
        ("AUTH PLAIN =", "AUTH PLAIN ="),
        ("AUTH", "AUTH"),
        ("PASS secret", "PASS ***"),
        ("pass secret", "pass ***"),
        ("PASS pass word with spaces", "PASS ***"),
        ("PASS", "PASS"),
        ("APOP alice c4c9334bac560ecc979e58001b3e22fb", "APOP alice ***"),
        ("apop alice c4c9334bac560ecc979e58001b3e22fb", "apop alice ***"),
        ("APOP alice", "APOP alice"),
        ("AUTH PLAIN secret\r\n", "AUTH PLAIN ***\r\n"),
        ("USER alice", "USER alice"),
        ("MAIL FROM:<a@x.org>", "MAIL FROM:<a@x.org>"),
        ("PASSWORD is not a verb", "PASSWORD is not a verb"),
        ("AUTHORIZE x y", "AUTHORIZE x y"),
        ("Subject: PASS secret", "Subject: PASS secret"),
        ("", ""),
    ],
)
def test_redact(line: str, expected: str) -> None:
    assert mask_line(line) == expected


def test_redacted_secret_never_reaches_disk(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    for line in ("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "PASS hunter2", "APOP alice 0123456789abcdef"):
        writer.client(mask_line(line))
    writer.close()
    data = writer.path.read_text()
    assert "AGFsaWNlAHNlY3JldA" not in data and "hunter2" not in data and "0123456789abcdef" not in data
    assert data.count(json.dumps(MASK)[1:-1]) == 3


@pytest.mark.parametrize(
    ("line", "expected"),
    [("dXNlcg==", "***"), ("AGFsaWNlAHNlY3JldA==\r\n", "***\r\n"), ("*", "*"), ("MAIL FROM:<a@x>", "***")],
)
def test_every_line_inside_a_sasl_exchange_is_a_secret(line: str, expected: str) -> None:
    assert mask_line(line, in_sasl_exchange=True) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("a@b.test:hunter2", "a@b.test:***"), ("a@b.test:with:colons", "a@b.test:***"), ("a@b.test", "a@b.test"), ("a@b.test:", "a@b.test:")],
)
def test_account_values_hide_their_secret(spec: str, expected: str) -> None:
    assert mask_account(spec) == expected


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("USER abcd-efgh", "USER ***"),
        ("abcd-efghXY abcd", "***XY abcd"),  # the longest secret where two start at the same place
        ("xxabcd-efgh-ijkl", "xx***"),
        ("a.b*c+d a-b*c+d", "*** a-b*c+d"),  # regex characters in a secret are plain characters
        ("abc fine", "abc fine"),  # shorter than MIN_KNOWN_SECRET: not searched for
        (f"AUTH PLAIN {_b64(chr(0) + 'u@x' + chr(0) + 'abcd-efgh')}", "AUTH PLAIN ***"),
        (f"{_b64('abcd-efgh')} {_b64('abcd-efgh').rstrip('=')}", "*** ***"),  # padded or not
        (f"{_b64('abcd-efg')}", f"{_b64('abcd-efg')}"),
        ("", ""),
    ],
)
def test_known_secrets_hidden_anywhere(text: str, expected: str) -> None:
    secrets = KnownSecrets(["abcd-efgh", "abcd-efgh-ijkl", "a.b*c+d", "abc", ""])
    assert secrets.mask(text) == expected


def test_known_secrets_of_a_large_class() -> None:
    """1,000 accounts (a classroom): every one is found, as typed and in base64, and others are not."""
    secrets = [f"{n:04d}-pw-{n * 7919 % 10007:05d}" for n in range(1000)]
    known = KnownSecrets(secrets)
    for secret in secrets[::37]:
        assert known.mask(f"PASS {secret}") == "PASS ***"
        assert known.mask(_b64(f"{chr(0)}user{chr(0)}{secret}")) == "***"
    assert known.mask("0001-pw-0000 0001-pw-07919") == "0001-pw-0000 ***"


def test_known_secrets_remember_recent_lines_with_the_same_answer() -> None:
    known = KnownSecrets(["abcd-efgh"])
    for _ in range(3):  # the second and third time come from memory
        assert known.mask("250 2.0.0 Ok") == "250 2.0.0 Ok"
        assert known.mask("USER abcd-efgh") == "USER ***"
        assert known.mask(_b64("abcd-efgh")) == "***"
    long_line = "x" * 5000 + "abcd-efgh"
    assert known.mask(long_line) == "x" * 5000 + "***"  # long texts are not kept, still masked
