"""The Maildir store: delivery, ordering, durability, safety of addresses and uids."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mockservers import store as store_module
from mockservers.store import AddressError, MailStore, StoreError, StoredMessage, normalize_address

PROJECT = Path(__file__).resolve().parents[1]


def message(n: int | str) -> bytes:
    return f"From: a@example.com\r\nSubject: {n}\r\n\r\nbody {n}\r\n".encode()


def new_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "mailboxes").glob("*/new/*"))


def tmp_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "mailboxes").glob("*/tmp/*"))


@pytest.fixture
def store(tmp_path: Path) -> MailStore:
    return MailStore(tmp_path)


# -- addresses -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Alice@Example.COM", "alice@example.com"),
        ("  bob@x.org \r\n", "bob@x.org"),
        ("first.last+tag@sub.example.com", "first.last+tag@sub.example.com"),
        ("a" * 64 + "@x.com", "a" * 64 + "@x.com"),
    ],
)
def test_normalize_accepts(raw: str, expected: str) -> None:
    assert normalize_address(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("nobody", "no '@'"),
        ("@x", "empty local part"),
        ("x@", "empty domain"),
        ("../x@y", "'/'"),
        ("a/b@c", "'/'"),
        ("a\\b@c", "'\\\\'"),
        ("a\0@b", "NUL"),
        ("a\x01@b", "control"),
        ("a\x7f@b", "control"),
        ("a b@c", "whitespace"),
        ("a\tb@c", "control character"),
        ("a\u3000b@c", "whitespace"),
        ("..@x", "'..'"),
        (".@x", "'.'"),
        (".hidden@x", "starts with '.'"),
        ("a@..", "'..'"),
        ("a@.", "'.'"),
        ("a@.x", "starts with '.'"),
        ("a" * 65 + "@x.com", "local part is longer"),
        ("a@" + "b" * 253, "longer than 254"),
    ],
)
def test_normalize_rejects_with_reason(raw: str, reason: str) -> None:
    with pytest.raises(AddressError) as caught:
        normalize_address(raw)
    assert reason in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("bad", ["../x@y", "a/b@c", "a\0@b", "..@x", "@x", "x@", "a\\..\\b@c"])
def test_traversal_attempts_rejected_everywhere(store: MailStore, tmp_path: Path, bad: str) -> None:
    for call in (
        lambda: store.mailbox_dir(bad),
        lambda: store.ensure_mailbox(bad),
        lambda: store.deliver([bad], b"x\r\n"),
        lambda: store.deliver(["ok@example.com", bad], b"x\r\n"),
        lambda: store.messages(bad),
        lambda: store.try_lock(bad),
    ):
        with pytest.raises(AddressError):
            call()
    assert not store.has_mailbox(bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mailboxes", "queue"]
    assert list((tmp_path / "mailboxes").iterdir()) == []


def test_mailbox_dir_stays_inside_root(store: MailStore, tmp_path: Path) -> None:
    path = store.mailbox_dir("User@Example.com")
    assert path == tmp_path / "mailboxes" / "user@example.com"
    assert path.resolve().parent == (tmp_path / "mailboxes").resolve()


# -- mailboxes and delivery ------------------------------------------------------------------------


def test_ensure_mailbox_is_idempotent(store: MailStore, tmp_path: Path) -> None:
    assert not store.has_mailbox("a@x.org")
    store.ensure_mailbox("A@x.org")
    store.ensure_mailbox("a@X.ORG")
    box = tmp_path / "mailboxes" / "a@x.org"
    assert sorted(p.name for p in box.iterdir()) == ["cur", "new", "tmp"]
    assert store.has_mailbox("a@x.org")
    assert store.mailbox_addresses() == ["a@x.org"]
    assert store.messages("a@x.org") == []


def test_messages_of_unknown_mailbox_is_empty(store: MailStore) -> None:
    assert store.messages("ghost@example.com") == []
    with pytest.raises(KeyError):
        store.read("ghost@example.com", "123.M1P1Q1.host")


def test_deliver_one_recipient(store: MailStore, tmp_path: Path) -> None:
    content = message(1)
    uid = store.deliver(["Alice@Example.com"], content)
    [stored] = store.messages("alice@example.com")
    assert stored == StoredMessage(uid=uid, size=len(content), path=stored.path)
    lf_content = content.replace(b"\r\n", b"\n")
    # Dovecot's naming: the file size and the wire (CRLF) size in the name; LF endings in the file.
    assert stored.path == tmp_path / "mailboxes" / "alice@example.com" / "new" / f"{uid},S={len(lf_content)},W={len(content)}"
    assert stored.path.read_bytes() == lf_content
    assert store.read("alice@example.com", uid) == content
    assert tmp_files(tmp_path) == []
    assert 1 <= len(uid) <= 70
    assert all(0x21 <= ord(c) <= 0x7E for c in uid)
    assert "/" not in uid and ":" not in uid


def test_deliver_several_recipients_shares_one_id(store: MailStore, tmp_path: Path) -> None:
    content = message("multi")
    uid = store.deliver(["a@x.org", "b@y.org", "A@X.org", "c@x.org"], content)
    assert store.mailbox_addresses() == ["a@x.org", "b@y.org", "c@x.org"]
    for address in ("a@x.org", "b@y.org", "c@x.org"):
        assert [m.uid for m in store.messages(address)] == [uid]
        assert store.read(address, uid) == content
    # The duplicate recipient got the message once, and the staging file is gone.
    assert len(new_files(tmp_path)) == 3
    assert tmp_files(tmp_path) == []


def test_deliver_keeps_bytes_exactly(store: MailStore) -> None:
    content = b"Subject: x\r\n\r\nline with \xff\xfe bytes\r\n..leading dot\r\n" + b"z" * 100_000 + b"\r\n"
    uid = store.deliver(["a@x.org"], content)
    assert store.read("a@x.org", uid) == content
    assert store.messages("a@x.org")[0].size == len(content)


def test_deliver_needs_recipients(store: MailStore) -> None:
    with pytest.raises(ValueError):
        store.deliver([], b"x")
    with pytest.raises(TypeError):
        store.deliver("a@x.org", b"x")  # type: ignore[arg-type]


def test_messages_sorted_by_delivery(store: MailStore) -> None:
    uids = [store.deliver(["a@x.org"], message(n)) for n in range(30)]
    assert len(set(uids)) == 30
    listed = store.messages("a@x.org")
    assert [m.uid for m in listed] == uids
    assert [store.read("a@x.org", m.uid) for m in listed] == [message(n) for n in range(30)]


def test_messages_include_cur_with_flags(store: MailStore, tmp_path: Path) -> None:
    first = store.deliver(["a@x.org"], message(1))
    second = store.deliver(["a@x.org"], message(2))
    box = tmp_path / "mailboxes" / "a@x.org"
    [first_file] = [p for p in (box / "new").iterdir() if p.name.startswith(first)]
    os.rename(first_file, box / "cur" / f"{first_file.name}:2,S")
    (box / "new" / ".hidden").write_bytes(b"not a message")
    listed = store.messages("a@x.org")
    assert [m.uid for m in listed] == [first, second]
    assert listed[0].path == box / "cur" / f"{first_file.name}:2,S"
    assert store.read("a@x.org", first) == message(1)
    store.remove("a@x.org", [first])
    assert [m.uid for m in store.messages("a@x.org")] == [second]


def test_uids_stable_across_instances(tmp_path: Path) -> None:
    first = MailStore(tmp_path)
    uids = [first.deliver(["a@x.org", "b@x.org"], message(n)) for n in range(5)]
    before = [(m.uid, m.size) for m in first.messages("a@x.org")]
    second = MailStore(tmp_path)
    after = [(m.uid, m.size) for m in second.messages("a@x.org")]
    assert after == before
    assert [uid for uid, _ in after] == uids
    assert second.mailbox_addresses() == ["a@x.org", "b@x.org"]
    later = second.deliver(["a@x.org"], message("later"))
    assert [m.uid for m in second.messages("a@x.org")] == [*uids, later]


def test_remove(store: MailStore, tmp_path: Path) -> None:
    uids = [store.deliver(["a@x.org", "b@x.org"], message(n)) for n in range(4)]
    store.remove("a@x.org", [uids[1], uids[3], "999.M0P0Q0.gone"])
    assert [m.uid for m in store.messages("a@x.org")] == [uids[0], uids[2]]
    # The other recipient's hard link is independent.
    assert [m.uid for m in store.messages("b@x.org")] == uids
    assert store.read("b@x.org", uids[1]) == message(1)
    with pytest.raises(KeyError):
        store.read("a@x.org", uids[1])
    store.remove("a@x.org", [])
    store.remove("nobody@x.org", [uids[0]])
    assert len(store.messages("a@x.org")) == 2


@pytest.mark.parametrize("bad_uid", ["../x", "a/b", "..", ".", "", "x\\y", "a b", "x" * 71, "u\0", "é", "a:2,S"])
def test_uid_arguments_are_validated(store: MailStore, bad_uid: str) -> None:
    uid = store.deliver(["a@x.org"], message(1))
    with pytest.raises(ValueError):
        store.read("a@x.org", bad_uid)
    with pytest.raises(ValueError):
        store.remove("a@x.org", [uid, bad_uid])
    # Validation happens before anything is removed.
    assert [m.uid for m in store.messages("a@x.org")] == [uid]


def test_read_cannot_escape_through_uid(store: MailStore, tmp_path: Path) -> None:
    store.ensure_mailbox("a@x.org")
    (tmp_path / "secret").write_bytes(b"secret")
    with pytest.raises(ValueError):
        store.read("a@x.org", "../../../secret")


# -- locks -----------------------------------------------------------------------------------------


def test_lock_exclusive(store: MailStore) -> None:
    assert store.try_lock("a@x.org")
    assert not store.try_lock("A@X.org")
    assert store.try_lock("b@x.org")
    store.unlock("a@x.org")
    assert store.try_lock("a@x.org")
    store.unlock("a@x.org")
    store.unlock("a@x.org")  # releasing twice is harmless


def test_lock_exclusive_between_threads(store: MailStore) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(16)

    def attempt() -> None:
        barrier.wait()
        results.append(store.try_lock("shared@x.org"))

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 15 + [True]


# -- queue -----------------------------------------------------------------------------------------


def test_queue_outbound_and_count(store: MailStore, tmp_path: Path) -> None:
    first = store.queue_outbound("me@local.test", ["x@QQ.com", "y@163.com"], message(1))
    second = store.queue_outbound("me@local.test", ["z@qq.com"], message(2))
    store.queue_outbound("", ["w@gmail.com"], message(3))
    assert first != second
    assert store.queued_count("qq.com") == 2
    assert store.queued_count("QQ.COM") == 2
    assert store.queued_count("163.com") == 1
    assert store.queued_count("gmail.com") == 1
    assert store.queued_count("example.com") == 0
    queue = tmp_path / "queue"
    assert (queue / f"{first}.eml").read_bytes() == message(1)
    meta = json.loads((queue / f"{first}.json").read_text())
    assert meta["sender"] == "me@local.test"
    assert meta["recipients"] == ["x@QQ.com", "y@163.com"]
    assert abs(meta["time"] - time.time()) < 60
    assert sorted(p.name for p in queue.iterdir() if p.name.startswith(".")) == []
    # Queued mail is not delivered locally.
    assert store.mailbox_addresses() == []


def test_half_written_queue_entry_is_not_counted(store: MailStore, tmp_path: Path) -> None:
    queue = tmp_path / "queue"
    (queue / "123.M1P1Q1.h.eml").write_bytes(b"only the body")
    (queue / ".124.M1P1Q1.h.json.tmp").write_text('{"recipients": ["a@qq.com"]}')
    (queue / "125.M1P1Q1.h.json").write_text('{"recipients": ["a@qq.c')
    assert store.queued_count("qq.com") == 0
    store.queue_outbound("s@x.org", ["a@qq.com"], b"x")
    assert store.queued_count("qq.com") == 1


# -- concurrency and failures ---------------------------------------------------------------------


def test_concurrent_delivery_from_threads(store: MailStore, tmp_path: Path) -> None:
    threads_n, per_thread = 8, 50
    returned: list[list[str]] = [[] for _ in range(threads_n)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_n)

    def worker(index: int) -> None:
        try:
            barrier.wait()
            for n in range(per_thread):
                recipients = ["all@x.org", f"t{index}@x.org"]
                returned[index].append(store.deliver(recipients, message(f"{index}-{n}")))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    all_uids = [uid for chunk in returned for uid in chunk]
    assert len(all_uids) == len(set(all_uids)) == threads_n * per_thread
    listed = store.messages("all@x.org")
    assert sorted(m.uid for m in listed) == sorted(all_uids)
    contents = {store.read("all@x.org", m.uid) for m in listed}
    assert contents == {message(f"{i}-{n}") for i in range(threads_n) for n in range(per_thread)}
    for index in range(threads_n):
        assert [m.uid for m in store.messages(f"t{index}@x.org")] == returned[index]
    assert tmp_files(tmp_path) == []


def test_fsync_failure_leaves_nothing_visible(store: MailStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = store.deliver(["a@x.org"], message("kept"))
    store.ensure_mailbox("b@x.org")
    real_fsync = os.fsync
    synced: list[str] = []

    def failing_fsync(fd: int) -> None:
        # The message file may be synced; syncing new/ after linking fails.
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced.append("dir")
            raise OSError(errno.EIO, "simulated I/O error")
        synced.append("file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StoreError) as caught:
        store.deliver(["a@x.org", "b@x.org"], message("lost"))
    assert isinstance(caught.value, OSError)
    assert caught.value.errno == errno.EIO
    assert synced[:2] == ["file", "dir"]
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert [m.uid for m in store.messages("a@x.org")] == [kept]
    assert store.messages("b@x.org") == []
    assert tmp_files(tmp_path) == []


def test_failure_creating_mailbox_is_a_store_error(store: MailStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "simulated I/O error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StoreError):
        store.deliver(["fresh@x.org"], message(1))
    monkeypatch.undo()
    assert store.messages("fresh@x.org") == []


def test_disk_full_while_writing_leaves_nothing(store: MailStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StoreError) as caught:
        store.deliver(["a@x.org"], message(1))
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert new_files(tmp_path) == []
    assert tmp_files(tmp_path) == []


def test_link_failure_midway_rolls_back(store: MailStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_link = os.link
    calls = {"n": 0}

    def link(src: object, dst: object, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.EIO, "simulated I/O error")
        real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "link", link)
    with pytest.raises(StoreError):
        store.deliver(["a@x.org", "b@x.org", "c@x.org"], message(1))
    assert calls["n"] == 3
    assert new_files(tmp_path) == []
    assert tmp_files(tmp_path) == []


def test_copy_fallback_when_links_unsupported(store: MailStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    uid = store.deliver(["a@x.org", "b@x.org"], message(1))
    for address in ("a@x.org", "b@x.org"):
        assert store.read(address, uid) == message(1)
    a, b = (store.messages(x)[0].path for x in ("a@x.org", "b@x.org"))
    assert not os.path.samefile(a, b)
    assert tmp_files(tmp_path) == []


def test_unique_names_are_sortable_and_bounded(store: MailStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module.time, "time_ns", lambda: 1_700_000_000_000_000_000)
    names = [store._unique_name() for _ in range(100)]
    assert len(set(names)) == 100
    assert sorted(names, key=store_module._sort_key) == names
    assert all(len(n) <= 70 for n in names)


# -- crash safety ----------------------------------------------------------------------------------

CHILD = r"""
import sys
import time
from pathlib import Path
from mockservers.store import MailStore

store = MailStore(Path(sys.argv[1]))
for n in range(300):
    body = f"Subject: {n}\r\n\r\n".encode() + (b"x" * 997 + b"\r\n") * 20
    uid = store.deliver(["crash@x.org", "copy@x.org"], body)
    sys.stdout.write(f"{n} {uid}\n")
    sys.stdout.flush()
time.sleep(60)  # never exit on its own: the parent's kill -9 always ends this process
"""


def crash_body(n: int) -> bytes:
    return f"Subject: {n}\r\n\r\n".encode() + (b"x" * 997 + b"\r\n") * 20


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs kill -9")
def test_kill_9_loses_no_acknowledged_message(tmp_path: Path) -> None:
    root = tmp_path / "data"
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root)],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
    )
    assert child.stdout is not None
    acknowledged: dict[int, str] = {}
    try:
        while len(acknowledged) < 40 and time.monotonic() - started < 15:
            line = child.stdout.readline()
            if not line:
                break
            n, uid = line.decode().split()
            acknowledged[int(n)] = uid
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()
    finally:
        child.kill()
        child.wait(timeout=10)
    for line in rest.decode().splitlines(keepends=True):
        if line.endswith("\n"):
            n, uid = line.split()
            acknowledged[int(n)] = uid
    assert child.returncode == -signal.SIGKILL, "the child finished before it could be killed"
    assert len(acknowledged) >= 40
    assert time.monotonic() - started < 20

    after = MailStore(root)
    for address in ("crash@x.org", "copy@x.org"):
        listed = [m.uid for m in after.messages(address)]
        assert len(listed) == len(set(listed))
        for n, uid in acknowledged.items():
            assert listed.count(uid) == 1
            assert after.read(address, uid) == crash_body(n)
        # Anything visible is complete, even a message whose id was never printed.
        for stored in after.messages(address):
            content = stored.path.read_bytes()
            n = int(content.split(b"\n", 1)[0].removeprefix(b"Subject: "))
            assert content == crash_body(n).replace(b"\r\n", b"\n")
            assert stored.size == len(crash_body(n))
