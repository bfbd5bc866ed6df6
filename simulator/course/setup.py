"""Everything a lesson needs around it: its profile (with overrides, accounts and mail) and the
variables (`$user`, `$secret`, `$to` ...) its patterns and solutions use."""

from __future__ import annotations

import email.utils
from pathlib import Path
from typing import Sequence

from mockservers.accounts import parse_account
from mockservers.profile import Profile, build_profile
from mockservers.profile_files import ProfileError, ProfileSources, load_sources, resolve_profile_path

from .model import Lesson
from .parser import LessonError


def profile_search_path(lesson: Lesson, extra_dirs: Sequence[Path] = ()) -> list[Path]:
    """Where a lesson's `profile: name` may live besides the bundled personas."""
    dirs = [lesson.path.parent, lesson.path.parent / "profiles", lesson.path.parent.parent / "profiles"]
    for directory in extra_dirs:
        dirs += [directory, directory / "profiles"]
    return dirs


def resolve_lesson_profile(lesson: Lesson, extra_dirs: Sequence[Path] = ()) -> Path:
    name = lesson.profile
    for directory in profile_search_path(lesson, extra_dirs):
        for candidate in (directory / name, directory / f"{name}.toml"):
            if candidate.suffix == ".toml" and candidate.is_file():
                return candidate
    try:
        return resolve_profile_path(name, relative_to=lesson.path.parent)
    except ProfileError as error:
        raise LessonError(lesson.path, lesson.line_of("profile"), error.message) from None


def lesson_profile(lesson: Lesson, extra_dirs: Sequence[Path] = ()) -> Profile:
    """The persona with the lesson's overrides and accounts on top; problems name the lesson.

    In a world lesson, the submission persona of its SMTP domain with the world's accounts.
    """
    from mockservers.lint import check_sources

    if lesson.world:
        from mockservers.world.roles import mx_profile, submission_profile

        from .world_lab import lesson_domains, lesson_world, talks_to_mx

        world = lesson_world(lesson)
        domain = lesson_domains(lesson, world)[0]
        return mx_profile(world, domain) if talks_to_mx(lesson) else submission_profile(world, domain)

    path = resolve_lesson_profile(lesson, extra_dirs)
    try:
        sources = load_sources(path)
    except ProfileError as error:
        raise LessonError(lesson.path, lesson.line_of("profile"), f"profile {lesson.profile!r}: {error}") from None
    if lesson.profile_overrides:
        sources = ProfileSources([(lesson.path, dict(lesson.profile_overrides), "")] + sources.chain)
    problems = [p for p in check_sources(sources) if p.severity == "error"]
    if problems:
        first = problems[0]
        where = lesson.line_of("profile_overrides") if first.file == str(lesson.path) else None
        message = first.message if where else str(first)
        raise LessonError(lesson.path, where or lesson.line_of("profile"), f"profile: {message}")
    profile = build_profile(sources)
    try:
        accounts = [parse_account(spec) for spec in lesson.accounts]
    except ValueError as error:
        raise LessonError(lesson.path, lesson.line_of("accounts"), str(error)) from None
    return profile.with_accounts(accounts)


def lesson_variables(lesson: Lesson, profile: Profile) -> dict[str, str]:
    """`$user`/`$secret` (first account), `$user2`/`$secret2`, `$to`, `$domain`, `$host` + `vars`."""
    chosen = []
    for spec in lesson.accounts:
        address = spec.split(":", 1)[0].strip().lower()
        account = profile.find_account(address)
        if account is not None:
            chosen.append(account)
    for account in profile.accounts:
        if account not in chosen:
            chosen.append(account)
    variables: dict[str, str] = {"host": profile.hostname, "pop3_host": profile.pop3_hostname}
    for index, account in enumerate(chosen[:4], start=1):
        suffix = "" if index == 1 else str(index)
        variables[f"user{suffix}"] = account.address
        variables[f"secret{suffix}"] = account.secret
        variables[f"local{suffix}"] = account.local_part
        if account.password:
            variables[f"password{suffix}"] = account.password
    if chosen:
        variables["domain"] = chosen[0].domain
        variables["to"] = chosen[1].address if len(chosen) > 1 else chosen[0].address
    variables.update(lesson.variables)
    return variables


def lesson_mail(lesson: Lesson, variables: dict[str, str]) -> list[tuple[str, bytes]]:
    """The lesson's preloaded messages as (address, CRLF bytes)."""
    from .patterns import encoded_word, substitute_variables

    out = []
    for entry in lesson.mail:
        to = substitute_variables(str(entry["to"]), variables).lower()
        if "content" in entry:
            text = substitute_variables(str(entry["content"]), variables)
        else:
            sender = substitute_variables(str(entry.get("from", f"teacher@{variables.get('domain', 'example.com')}")), variables)
            subject = substitute_variables(str(entry.get("subject", "")), variables)
            if not subject.isascii():
                subject = encoded_word(subject)  # RFC 2047: a header carries ASCII only
            text = (
                f"From: {sender}\nTo: {to}\nSubject: {subject}\n"
                f"Date: {email.utils.formatdate(localtime=True)}\n\n{entry.get('body', '')}"
            )
        data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
        out.append((to, data if data.endswith(b"\r\n") else data + b"\r\n"))
    return out
