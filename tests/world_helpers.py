"""Running a world in tests: free ports, an event queue to wait on, POP3 fetching."""

from __future__ import annotations

import email
import email.policy
import poplib
import queue
import smtplib
import time
from pathlib import Path
from typing import Any, Iterator

from mockservers.world.servers import EmbeddedWorld, WorldServers
from mockservers.world.worldfile import World, load_world

DEADLINE = 20.0


class RunningWorld:
    """A started world plus every event it publishes, in order, to wait on."""

    def __init__(self, world: World, data_dir: Path, **options: Any) -> None:
        self.embedded = EmbeddedWorld(world, data_dir, **options)
        self.events: queue.Queue = queue.Queue()
        self.seen: list[tuple[str, Any]] = []
        self.servers: WorldServers = self.embedded.start()
        self.servers.subscribe(lambda domain, event: self.events.put((domain, event)))

    def wait_for(self, domain: str, kind: str, contains: str = "", timeout: float = DEADLINE) -> Any:
        """The next event of `kind` in `domain` whose detail contains `contains`."""
        for seen_domain, event in self.seen:
            if seen_domain == domain and event.kind == kind and contains in event.detail:
                self.seen.remove((seen_domain, event))
                return event
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind!r} event in {domain} containing {contains!r}; saw {[(d, str(e)) for d, e in self.seen]}")
            try:
                seen_domain, event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if seen_domain == domain and event.kind == kind and contains in event.detail:
                return event
            self.seen.append((seen_domain, event))

    def submit(self, domain: str, login: str, secret: str, sender: str, recipients: list[str], message: bytes) -> dict:
        with smtplib.SMTP("127.0.0.1", self.servers.port_of(domain, "SMTP"), timeout=DEADLINE) as client:
            client.ehlo("learner-pc")
            client.login(login, secret)
            return client.sendmail(sender, recipients, message)

    def fetch_all(self, domain: str, login: str, secret: str) -> list[bytes]:
        client = poplib.POP3("127.0.0.1", self.servers.port_of(domain, "POP3"), timeout=DEADLINE)
        try:
            client.user(login)
            client.pass_(secret)
            count = client.stat()[0]
            return [b"\r\n".join(client.retr(n + 1)[1]) + b"\r\n" for n in range(count)]
        finally:
            client.quit()

    def stop(self) -> None:
        self.embedded.stop()


def parse(message: bytes) -> Any:
    return email.message_from_bytes(message, policy=email.policy.default)


def world_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "world.toml"
    path.write_text(text, encoding="utf-8")
    return path


def running(world: World, tmp_path: Path) -> Iterator[RunningWorld]:
    lab = RunningWorld(world.free_ports(), tmp_path / "data")
    try:
        yield lab
    finally:
        lab.stop()


def default_world(**changes: Any) -> World:
    from dataclasses import replace

    return replace(load_world(), **changes)
