#!/usr/bin/env python3
"""Relay throughput through two hops, and the memory of a five-domain world at rest.

A script, not a pytest test (it measures a machine, not a behaviour)::

    .venv/bin/python tests/benchmarks/world_relay.py                 # 300 messages, 4 clients
    .venv/bin/python tests/benchmarks/world_relay.py --messages 1000 --clients 8

Throughput: the bundled world on free ports (one process: the world's reactor in a thread, the
clients in threads). CLIENTS smtplib connections to smtp.qq.lab log in once each and submit their
share of MESSAGES 1 KB messages for bob@sina.lab. The clock stops when the last message has been
relayed, i.e. mx.sina.lab answered 250 after fsyncing it into bob's mailbox: each message takes two
SMTP hops (learner -> smtp.qq.lab -> mx.sina.lab), a DNS look-up, DKIM signing at qq.lab and SPF,
DKIM and DMARC checks at sina.lab.

Memory: a child process imports maillab, notes its RSS, starts a world of five domains (the bundled
four plus one more), lets it settle and notes its RSS again: the difference is the world at rest.
"""

from __future__ import annotations

import argparse
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

BODY = ("x" * 76 + "\r\n") * 13  # ~1 KB


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def throughput(messages: int, clients: int) -> None:
    from world_helpers import RunningWorld

    from mockservers.world.worldfile import load_world

    with tempfile.TemporaryDirectory() as data:
        lab = RunningWorld(load_world().free_ports(), Path(data))
        try:
            relayed = threading.Semaphore(0)
            lab.servers.subscribe(lambda domain, event: relayed.release() if event.kind == "relayed" else None)
            port = lab.servers.port_of("qq.lab", "SMTP")
            share = [messages // clients + (1 if i < messages % clients else 0) for i in range(clients)]

            def client(count: int) -> None:
                with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
                    smtp.ehlo("bench")
                    smtp.login("alice@qq.lab", "abcdefghijklmnop")
                    for n in range(count):
                        message = f"From: alice@qq.lab\r\nTo: bob@sina.lab\r\nSubject: bench {n}\r\n\r\n{BODY}"
                        smtp.sendmail("alice@qq.lab", ["bob@sina.lab"], message.encode())

            start = time.perf_counter()
            threads = [threading.Thread(target=client, args=(n,)) for n in share]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            submitted = time.perf_counter() - start
            for _ in range(messages):
                if not relayed.acquire(timeout=120):
                    raise SystemExit("a message was not relayed within 120 s")
            elapsed = time.perf_counter() - start
            stored = len(lab.servers.store("sina.lab").messages("bob@sina.lab"))
            print(f"relay throughput: {messages} messages, {clients} clients, two hops: "
                  f"{messages / elapsed:.1f} messages/s end to end ({elapsed:.2f} s; submission alone {messages / submitted:.1f}/s); "
                  f"{stored} in bob@sina.lab")
        finally:
            lab.stop()


FIFTH = """
[[domain]]
name = "work.lab"
persona = "postfix"
address = "127.0.0.6"
submission_port = 0
smtps_port = 0
pop3_port = 0
pop3s_port = 0
accounts = ["dave:dave-secret"]
"""


def memory_child() -> None:
    import re

    from mockservers.world.servers import EmbeddedWorld
    from mockservers.world.worldfile import DEFAULT_WORLD, load_world

    text = DEFAULT_WORLD.read_text() + FIFTH
    text = re.sub(r"^(dns_port|relay_port|submission_port|smtps_port|pop3_port|pop3s_port) = \d+", r"\1 = 0", text, flags=re.M)
    with tempfile.TemporaryDirectory() as data:
        path = Path(data) / "five.toml"
        path.write_text(text)
        world = load_world(path)
        from mockservers.server import _ReactorThread

        _ReactorThread.ensure()
        before = rss_kib()
        embedded = EmbeddedWorld(world, Path(data) / "d")
        servers = embedded.start()
        time.sleep(2.0)  # at rest: nothing to do but wait
        after = rss_kib()
        listeners = len(servers.listening())
        embedded.stop()
    print(f"memory: a world of {len(world.domains)} domains ({listeners} listeners) at rest: "
          f"{(after - before) / 1024:.1f} MiB over the process ({before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child()
        return
    throughput(args.messages, args.clients)
    subprocess.run([sys.executable, __file__, "--memory-child"], check=True)


if __name__ == "__main__":
    main()
