"""World lessons that teach DNS: a step is done when the learner's question reaches the world's DNS."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from simulator.course.lint import lint_lessons
from simulator.course.parser import parse_lesson_text
from simulator.course.replay import replay_sync
from simulator.tui.dialogs import watch_commands
from simulator.tui.lab import Endpoints

LESSONS = Path(__file__).resolve().parents[1] / "lessons"
#: The bundled lesson under an id of its own (lint refuses two lessons with one id).
MX_LOOKUP = (LESSONS / "journey" / "mx-lookup.md").read_text(encoding="utf-8").replace("id: mx-lookup", "id: mx-copy")


def lesson_at(tmp_path: Path, text: str, name: str = "lesson.md"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return parse_lesson_text(text, path)


def test_the_mx_step_is_not_done_until_the_question_reaches_the_dns(tmp_path):
    """Without the `@dig`, nothing asks the DNS, and the fact the step waits for never holds."""
    text = MX_LOOKUP.replace("```solution\n@dig MX sina.lab\n```", "```solution\n@wait 0.5\n```")
    result = replay_sync(lesson_at(tmp_path, text))
    assert not result.ok
    assert result.failed_step.id == "mx"
    assert "server fact `! dns asked MX sina.lab` does not hold" in result.message


def test_the_mx_lookup_lesson_replays(tmp_path):
    result = replay_sync(lesson_at(tmp_path, MX_LOOKUP))
    assert result.ok, result.message
    assert result.completed == ("mx", "address", "knock")


def test_dns_facts_and_dig_only_in_world_lessons(tmp_path):
    text = MX_LOOKUP.replace("world: default\nsmtp_domain: mx.sina.lab\npop3_domain: sina.lab\n", "profile: rfc\n")
    lesson_at(tmp_path, text, "flat.md")
    messages = [f"{p.line}: {p.message}" for p in lint_lessons([tmp_path / "flat.md"], replay=False).problems if p.severity == "error"]
    assert any("`! dns asked` needs a world lesson" in m for m in messages), messages
    assert any("@dig asks a world's DNS: only in a lesson with `world:`" in m for m in messages), messages


def test_a_dig_directive_needs_a_known_type(tmp_path):
    lesson_at(tmp_path, MX_LOOKUP.replace("@dig MX sina.lab", "@dig MXX sina.lab"))
    messages = [p.message for p in lint_lessons([tmp_path / "lesson.md"], replay=False).problems]
    assert any(m.startswith("@dig needs a record type (MX, A, AAAA, TXT, NS, SOA)") for m in messages), messages


def test_f6_names_the_mx_address_and_the_dig_with_this_labs_port():
    endpoints = Endpoints("127.0.0.1", 40025, 40110, None, embedded=True, smtp_host="127.0.0.3", dns=("127.0.0.1", 40053), dns_example="sina.lab")
    commands = watch_commands(endpoints, None)
    assert "telnet 127.0.0.3 40025" in commands and "telnet 127.0.0.1 40110" in commands
    assert commands[-1] == "dig @127.0.0.1 -p 40053 MX sina.lab"


@pytest.mark.skipif(shutil.which("dig") is None, reason="needs dig (bind9-dnsutils; .ci/run installs it)")
def test_real_dig_against_a_running_world_is_seen_by_the_lesson_facts(tmp_path):
    """The wire matters here: the real dig, over UDP, against `maillab serve --world`'s DNS."""
    from mockservers.world.servers import EmbeddedWorld
    from mockservers.world.worldfile import DEFAULT_WORLD, load_world
    from simulator.course.world_lab import WorldFacts

    world = EmbeddedWorld(load_world(DEFAULT_WORLD).free_ports(), tmp_path, record_transcripts=False)
    servers = world.start()
    try:
        facts = WorldFacts(servers)
        assert not facts.dns_asked("MX", "sina.lab")
        answer = subprocess.run(
            ["dig", "@127.0.0.1", "-p", str(servers.dns.port), "MX", "sina.lab", "+short", "+time=5", "+tries=1"],
            capture_output=True, text=True, timeout=20,
        )
        assert answer.stdout.strip() == "10 mx.sina.lab."
        assert facts.dns_asked("MX", "sina.lab") and facts.dns_asked("mx", "SINA.lab.")
        assert not facts.dns_asked("A", "sina.lab")
    finally:
        world.stop()
