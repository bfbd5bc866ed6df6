"""Prove a lesson solvable: replay its reference solution against freshly started embedded
servers (the lesson's profile, accounts and mail), step by step, over real TCP.

Solution lines are sent exactly as a learner would type them. Two directives help lessons that
span connections: `@connect smtp|pop3` (hang up and connect again) and `@wait SECONDS`
(greylisting, LOGIN-DELAY), which takes what the server says on its own meanwhile (a `421`), and,
in world lessons, `@dig TYPE NAME` (a question to the world's DNS, as the learner's `dig`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from simulator.engine.client import ClientError, MailClient
from simulator.engine.session import Expect, LineKind

from .model import Lesson, Step
from .parser import LessonError
from .patterns import PatternError, RuntimeValues, render_solution
from .runner import LessonRun, StepCompleted, StoreFacts, reply_matches
from .setup import lesson_mail, lesson_profile, lesson_variables


@dataclass(frozen=True)
class ReplayResult:
    lesson: Lesson
    completed: tuple[str, ...]
    failed_step: Step | None
    message: str
    line: int | None
    #: (line sent, the reply's lines) of the whole replay, for tests that check what a lesson
    #: prints against what the server really answered (sizes, texts).
    exchanges: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def ok(self) -> bool:
        return self.failed_step is None and not self.message


class _Connection:
    """One client connection fed into the lesson run."""

    def __init__(self, run: LessonRun, client: MailClient, runtime: RuntimeValues) -> None:
        self.run = run
        self.client = client
        self.runtime = runtime
        self.closed = False

    async def read_until_answered(self, timeout: float = 10.0) -> None:
        """Read lines until every line waiting for a reply has one (or the server hangs up)."""
        while (self.run.waiting_for_reply or self.run.session.expecting == Expect.REPLY) and self.run.session.expecting != Expect.OCTETS:
            try:
                line = await self.client.read_line(timeout)
            except ClientError:
                self.closed = True
                self.run.closed()
                return
            for exchange in self.run.received([line]):
                self._remember(exchange.reply)
            if self.run.session.expecting == Expect.TLS:
                await self.client.starttls()
                self.run.tls_started()
            if self.run.session.closed:
                return

    async def listen(self, seconds: float) -> None:
        """Wait `seconds`, taking what the server says on its own meanwhile.

        A server speaks unasked: `421` right after the last `500`, `421` when the idle timeout
        ends the session. A learner's screen shows those lines as they come; the replay must see
        them too, or it would type the next line into a connection the server has closed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (remaining := deadline - loop.time()) > 0:
            if self.closed or self.run.session.closed:
                await asyncio.sleep(remaining)  # nothing more to hear; the wait still lasts
                return
            try:
                line = await self.client.poll_line(remaining)
            except ClientError:
                self.closed = True
                self.run.closed()
                continue
            if line is None:
                return
            for exchange in self.run.received([line]):
                self._remember(exchange.reply)

    def _remember(self, reply: object) -> None:
        raw = list(getattr(reply, "raw", ()))
        if not raw:
            return
        first = raw[0]
        token = first[4:] if first.startswith("334 ") else first[2:] if first.startswith("+ ") else None
        if token is not None:
            try:
                self.runtime.last_challenge = base64.b64decode(token.strip(), validate=True)
            except (binascii.Error, ValueError):
                pass
        if self.run.protocol == "pop3" and getattr(self.run.session, "apop_timestamp", None):
            self.runtime.apop_timestamp = self.run.session.apop_timestamp or ""


async def replay(lesson: Lesson, extra_dirs: Sequence[Path] = (), timeout: float = 10.0) -> ReplayResult:
    from mockservers.server import EmbeddedServers

    try:
        profile = lesson_profile(lesson, extra_dirs)
    except LessonError as error:
        return ReplayResult(lesson, (), None, error.message, error.line)
    variables = lesson_variables(lesson, profile)
    with tempfile.TemporaryDirectory(prefix="maillab-lint-") as data:
        if lesson.world:
            return await _replay_in_world(lesson, Path(data), variables, timeout)
        servers = EmbeddedServers(profile, Path(data), record_transcripts=False)
        await asyncio.to_thread(servers.start)
        try:
            store = servers.servers.store
            for address, content in lesson_mail(lesson, variables):
                store.deliver([address], content)
            run = LessonRun(lesson, variables, server_facts=StoreFacts(store))
            listening = {item.name: item.port for item in servers.servers.listening}
            target = _Target(listening, servers.servers.tls_files.ca_cert)
            return await _replay_steps(lesson, run, target, timeout)
        finally:
            await asyncio.to_thread(servers.stop)


async def _replay_in_world(lesson: Lesson, data: Path, variables: dict[str, str], timeout: float) -> ReplayResult:
    """A fresh world on free ports: SMTP to the lesson's smtp_domain, POP3 to its pop3_domain."""
    from mockservers.world.servers import EmbeddedWorld

    from .world_lab import WorldFacts, lesson_world, world_ports, world_smtp_host

    world = EmbeddedWorld(lesson_world(lesson).free_ports(), data, record_transcripts=False)
    servers = await asyncio.to_thread(world.start)
    try:
        for address, content in lesson_mail(lesson, variables):
            servers.store(address.rpartition("@")[2]).deliver([address], content)
        run = LessonRun(lesson, variables, server_facts=WorldFacts(servers))
        ports = world_ports(servers, lesson)
        target = _Target(
            {"SMTP": ports["smtp"], "POP3": ports["pop3"]}, data / "tls" / "ca.pem", world_smtp_host(servers, lesson),
            dns=(servers.world.reach_host, servers.dns.port),
        )
        return await _replay_steps(lesson, run, target, timeout)
    finally:
        await asyncio.to_thread(world.stop)


@dataclass(frozen=True)
class _Target:
    """Where a replay connects: listener name -> port on 127.0.0.1, and the CA to trust."""

    listening: dict[str, int]
    ca_cert: Path
    smtp_host: str = "127.0.0.1"  # a world lesson that talks to an MX: the domain's own address
    dns: tuple[str, int] | None = None  # a world's DNS server, which `@dig` asks


async def _open(run: LessonRun, target: _Target, protocol: str, timeout: float) -> _Connection:
    name = protocol.upper()
    listening = target.listening
    implicit = name not in listening and f"{name}S" in listening
    port = listening[f"{name}S"] if implicit else listening[name]
    host = target.smtp_host if protocol != "pop3" else "127.0.0.1"
    client = MailClient(host, port, ca_cert=target.ca_cert, implicit_tls=implicit, timeout=timeout)
    await client.connect()
    run.reconnect(protocol, implicit_tls=implicit)
    connection = _Connection(run, client, RuntimeValues())
    await connection.read_until_answered(timeout)
    return connection


async def _replay_steps(lesson: Lesson, run: LessonRun, servers: _Target, timeout: float) -> ReplayResult:
    protocol = "pop3" if lesson.protocol == "pop3" else "smtp"
    done: set[str] = set()  # steps the run reported completed (a step may finish before its solution ends)
    stop = run.subscribe(lambda event: done.add(event.step) if isinstance(event, StepCompleted) else None)
    connection = await _open(run, servers, protocol, timeout)
    try:
        for step in lesson.steps:
            if not step.solution:
                return ReplayResult(lesson, tuple(run.completed_steps()), step, f"step {step.id!r} has no ```solution block", step.line)
            for number, raw in enumerate(step.solution):
                line_no = (step.solution_line or step.line) + 1 + number
                if raw.startswith("@connect"):
                    await connection.client.close()
                    connection = await _open(run, servers, raw.split()[1].lower(), timeout)
                    continue
                if raw.startswith("@wait"):
                    await connection.listen(float(raw.split()[1]))
                    run.server_changed()  # what the wait was for (a relay, a delivery) may have happened
                    continue
                if raw.startswith("@dig"):
                    problem = await _dig(servers, raw, run.variables)
                    if problem:
                        return _failure(run, step, problem, line_no)
                    run.server_changed()
                    continue
                if step.id in done:
                    break  # done before the end of the solution
                if connection.closed:
                    return _failure(run, step, f"the server closed the connection before solution line {raw!r}", line_no)
                try:
                    line = render_solution(raw, run.variables, connection.runtime)
                except PatternError as error:
                    return _failure(run, step, str(error), line_no)
                kind = run.sent(line)
                await connection.client.send_line(line)
                if kind in (LineKind.COMMAND, LineKind.AUTH_RESPONSE, LineKind.END_OF_DATA) or (
                    kind == LineKind.OCTETS and run.session.expecting == Expect.REPLY
                ):
                    await connection.read_until_answered(timeout)  # a BDAT chunk is answered after its last octet
            if step.id not in done:
                return _failure(run, step, _why(run, step), step.line)
        return ReplayResult(lesson, tuple(run.completed_steps()), None, "", None, _exchanges(run))
    except ClientError as error:
        step = run.current.step if run.current else None
        return _failure(run, step, str(error), step.line if step else None)
    finally:
        stop()
        await connection.client.close()


async def _dig(target: _Target, directive: str, variables: dict[str, str]) -> str | None:
    """`@dig TYPE NAME`: ask the world's DNS as the learner's `dig` would; a problem, or None."""
    from mockservers.world.dns import lookup

    from .patterns import substitute_variables

    _, qtype, name = directive.split()
    name = substitute_variables(name, variables)
    if target.dns is None:
        return "@dig needs a world lesson (world: in the front matter): there is no DNS server to ask"
    try:
        await asyncio.to_thread(lookup, target.dns, name, qtype.upper())
    except Exception as error:  # a timeout or a refused query: say what dig would have said
        return f"@dig {qtype} {name}: the world's DNS did not answer ({error})"
    return None


def _failure(run: LessonRun, step: Step | None, message: str, line: int | None) -> ReplayResult:
    prefix = f"step {step.id!r}: " if step else ""
    return ReplayResult(run.lesson, tuple(run.completed_steps()), step, prefix + message, line, _exchanges(run))


def _exchanges(run: LessonRun) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple(
        (event.sent, tuple(getattr(event.reply, "raw", ())))
        for event in run.events
        if event.sent is not None and event.reply is not None and event.reply != "closed"
    )


def _why(run: LessonRun, step: Step) -> str:
    """Say which expectation the solution never met, with the last reply, for the instructor."""
    events = run.step_events()
    replies = [e.reply for e in events if e.reply is not None and e.reply != "closed"]
    last = " / ".join(getattr(replies[-1], "raw", ())) if replies else "no reply"
    for group in step.checks:
        for expectation in group.expectations:
            if expectation.kind == "send" and not any(e.sent and run.matches_line(expectation, e.sent) for e in events):
                return f"the solution never sends a line matching `> {expectation.text}` (line {expectation.line})"
            if expectation.kind == "reply" and not any(e.reply is not None and reply_matches(expectation.text, e.reply) for e in events):
                return f"the server never answered `< {expectation.text}` (line {expectation.line}); last reply: {last}"
            if expectation.kind == "fact" and not run.fact(expectation.text):
                return f"session fact `? {expectation.text}` does not hold (line {expectation.line}); last reply: {last}"
            if expectation.kind == "server" and not run.server_fact(expectation.text):
                return f"server fact `! {expectation.text}` does not hold (line {expectation.line})"
    return f"the reference solution does not complete the step; last reply: {last}"


def replay_sync(lesson: Lesson, extra_dirs: Sequence[Path] = ()) -> ReplayResult:
    return asyncio.run(replay(lesson, extra_dirs))
