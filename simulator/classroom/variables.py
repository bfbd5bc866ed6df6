"""Lesson variables for one student: `$user` is the student's address, `$secret` their secret.

Shared by grading, the dashboard and the TUI's `--login` mode, so the three agree on what a
lesson's patterns mean on a classroom server.
"""

from __future__ import annotations

import re
from typing import Any

from simulator.classroom.config import unknown_recipient_on
from simulator.course.model import Lesson
from simulator.course.setup import lesson_variables

#: Stands for other people's secrets: no line a student types can equal it (NUL is refused).
HIDDEN_SECRET = "\0hidden"

_OTHER_SECRET = re.compile(r"^(?:secret|password)\d+$")


def student_variables(
    lesson: Lesson,
    profile: Any,
    address: str,
    secret: str,
    *,
    to: str | None = None,
    partner: str | None = None,
    base: dict[str, str] | None = None,
    world: dict[str, str] | None = None,
) -> dict[str, str]:
    """The lesson's variables with the student as `$user` (and `$local`, `$domain`, `$secret`).

    `$to` is `to` (default: the student's own address); `$user2` is the partner when given.
    Other accounts' secrets are never known to a student, so `$secret2`... become unmatchable.
    The lesson's own `vars` still win, as in `lesson_variables`. `base` is
    `lesson_variables(lesson, profile)` when the caller already has it (a class of 200).
    `world` adds a world class's `$other_user` (the student on the second domain),
    `$other_domain` and `$unknown` (the address on it that bounces).
    """
    address = address.strip().lower()
    local, _, domain = address.rpartition("@")
    variables = dict(base) if base is not None else lesson_variables(lesson, profile)
    for key in list(variables):
        if _OTHER_SECRET.match(key):
            variables[key] = HIDDEN_SECRET
    variables.pop("password", None)
    variables.update(user=address, secret=secret, local=local, domain=domain, to=(to or address).lower())
    if partner:
        partner = partner.strip().lower()
        variables.update(user2=partner, local2=partner.rpartition("@")[0])
    if world:
        variables.update({key: value.lower() for key, value in world.items()})
    variables.update(lesson.variables)
    return variables


def world_variables(other_address: str) -> dict[str, str]:
    """A world class's `$other_user` (the student's address on the second domain), `$other_domain`
    and `$unknown` (the address there that bounces): the same for the tracker and the student's app."""
    other = other_address.strip().lower()
    domain = other.rpartition("@")[2]
    return {"other_user": other, "other_domain": domain, "unknown": unknown_recipient_on(domain)}


def uses_variable(lesson: Lesson, name: str) -> bool:
    """Whether any check of the lesson mentions `$name`."""
    pattern = re.compile(rf"\${re.escape(name)}(?![A-Za-z0-9_])")
    return any(
        pattern.search(expectation.text)
        for step in lesson.steps
        for group in step.checks
        for expectation in group.expectations
    )
