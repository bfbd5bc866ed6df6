"""Lessons that happen in a world (front matter `world`, `smtp_domain`, `pop3_domain`): which
world, which domain each protocol talks to, and the server facts read from every domain's store.

Pure: the world itself is started by the linter's replay or the app's lab.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mockservers.world.worldfile import DEFAULT_WORLD, Domain, World, WorldError, load_world

from .model import Lesson
from .parser import LessonError


def lesson_world(lesson: Lesson) -> World:
    """The lesson's world (`default` is the bundled one; a path is relative to the lesson)."""
    path = DEFAULT_WORLD if lesson.world == "default" else (lesson.path.parent / lesson.world)
    try:
        return load_world(path)
    except WorldError as error:
        raise LessonError(lesson.path, lesson.line_of("world"), f"world: {error}") from None


def talks_to_mx(lesson: Lesson) -> bool:
    """`smtp_domain: mx.sina.lab`: the SMTP session plays another mail server at sina.lab's MX."""
    return lesson.smtp_domain.startswith("mx.")


def lesson_domains(lesson: Lesson, world: World) -> tuple[Domain, Domain]:
    """(the SMTP session's domain, the POP3 session's domain); POP3 defaults to the SMTP one."""
    found = []
    smtp_name = lesson.smtp_domain[3:] if talks_to_mx(lesson) else lesson.smtp_domain
    for key, name in (("smtp_domain", smtp_name), ("pop3_domain", lesson.pop3_domain or smtp_name)):
        domain = world.domain(name) if name else world.domains[0]
        if domain is None:
            known = ", ".join(d.name for d in world.domains)
            raise LessonError(lesson.path, lesson.line_of(key), f"{key} {name!r} is not a domain of world {world.name} ({known})")
        found.append(domain)
    return found[0], found[1]


def world_ports(servers: Any, lesson: Lesson) -> dict[str, int]:
    """protocol -> port for a started WorldServers (SMTP on world_smtp_host, POP3 on 127.0.0.1)."""
    smtp, pop3 = lesson_domains(lesson, servers.world)
    smtp_port = servers.port_of(smtp.name, "MX" if talks_to_mx(lesson) else "SMTP")
    return {"smtp": smtp_port, "pop3": servers.port_of(pop3.name, "POP3")}


def world_smtp_host(servers: Any, lesson: Lesson) -> str:
    """127.0.0.1 for submission; the domain's own address for its MX."""
    smtp, _ = lesson_domains(lesson, servers.world)
    return smtp.address if talks_to_mx(lesson) else servers.world.host


class WorldFacts:
    """ServerFacts over every domain of a running world: a mailbox is read where its domain lives."""

    def __init__(self, servers: Any = None, *, stores: dict[str, Any] | None = None) -> None:
        """A running world's stores, or `stores` (domain -> MailStore) read from its data
        directory when nothing runs (classroom grading of a world class)."""
        self.servers = servers
        self.stores = stores if stores is not None else {name: servers.store(name) for name in servers.domains}

    def _store(self, address: str) -> Any:
        return self.stores.get(address.rpartition("@")[2].lower())

    def mailbox_messages(self, address: str) -> list[bytes]:
        store = self._store(address)
        if store is None:
            return []
        try:
            return [store.read(address, m.uid) for m in store.messages(address)]
        except (KeyError, ValueError, OSError):
            return []

    def queue_count(self, domain: str) -> int:
        """Messages waiting for `domain` in every domain's queue."""
        return sum(store.queued_count(domain) for store in self.stores.values())

    def dns_asked(self, qtype: str, name: str) -> bool:
        """Did the world's DNS get this question (the learner's `dig`)? False when nothing runs."""
        dns = getattr(self.servers, "dns", None)
        return dns is not None and dns.was_asked(qtype, name)


def world_data_dir(root: Path, lesson: Lesson) -> Path:
    return root / "lab" / f"world-{lesson.id}"
