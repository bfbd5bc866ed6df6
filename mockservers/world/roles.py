"""The profile of each role a world's domain plays, as a provider runs them: the submission
server learners log in to, and the MX other domains deliver to. Pure: the app, the linter and
the classroom read them without starting anything (`servers.py` starts them).
"""

from __future__ import annotations

from dataclasses import replace

from mailprotocol.faults import rule_from_table
from ..profile import Profile, load_profile
from .worldfile import Domain, World


def submission_profile(world: World, domain: Domain) -> Profile:
    """The persona with the world's accounts instead of its own, named smtp./pop.<domain>."""
    profile = load_profile(_persona_path(world, domain))
    bare = replace(
        profile, accounts=(), local_domains=(domain.name,), preloaded_mail=(), relay_domains=(),
        hostname=domain.smtp_host, pop3_hostname=domain.pop3_host,
    )
    return bare.with_accounts(domain.accounts)


def mx_profile(world: World, domain: Domain, submission: Profile | None = None) -> Profile:
    """The receiving role: what an MX asks of another MTA (RFC 5321 vs RFC 6409 submission).

    `submission` is the domain's submission profile when a class adapted it (quota, policies):
    the MX shares its store and its limits, but never its per-client connection limit, which is
    for people: every relay of a domain comes from one address.
    """
    persona = submission_profile(world, domain)
    profile = submission or persona
    policies = replace(
        profile.policies,
        max_connections_per_client=persona.policies.max_connections_per_client,
        require_auth_for_mail=False,
        sender_must_match_auth=False,
        require_tls_for_mail=False,
        require_tls_for_auth=False,
        relay="never",
        greylist_delay=domain.greylist_delay,
    )
    faults = tuple(
        rule_from_table(
            {"command": "RCPT", "argument": f"<{address}>", "reply": profile.smtp("mailbox_full", address=address)},
            index,
        )
        for index, address in enumerate(domain.full_mailboxes)
    )
    return replace(profile, policies=policies, hostname=domain.mx_host, faults=faults)


def _persona_path(world: World, domain: Domain) -> str:
    candidate = world.source.parent / domain.persona
    return str(candidate) if candidate.suffix == ".toml" and candidate.exists() else domain.persona
