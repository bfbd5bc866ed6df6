"""Server-wide memory behind the policies that span sessions.

Connection counts (total and per client address), greylisting triplets, failed-auth counts per
client address and POP3 last-login times. Pure Python; time comes from the caller's clock so tests
use a fake one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class ServerLimits:
    """Shared by every session of one server (all its listeners)."""

    connections: Counter = field(default_factory=Counter)  # (protocol, client) -> open sessions
    greylist: dict[tuple[str, str, str], float] = field(default_factory=dict)
    auth_failures: Counter = field(default_factory=Counter)  # (protocol, client) -> failures
    last_login: dict[str, float] = field(default_factory=dict)  # address -> time of last POP3 login

    # --- connections -------------------------------------------------------------------------

    def open(self, protocol: str, client: str, max_total: int, max_per_client: int) -> str | None:
        """Count a new session; returns "total" or "client" when a limit refuses it (not counted)."""
        total = sum(n for (p, _), n in self.connections.items() if p == protocol)
        if max_total and total >= max_total:
            return "total"
        if max_per_client and self.connections[(protocol, client)] >= max_per_client:
            return "client"
        self.connections[(protocol, client)] += 1
        return None

    def close(self, protocol: str, client: str) -> None:
        key = (protocol, client)
        if self.connections[key] > 1:
            self.connections[key] -= 1
        else:
            self.connections.pop(key, None)

    # --- greylisting -------------------------------------------------------------------------

    def greylisted(self, client: str, sender: str, recipient: str, now: float, delay: float) -> float:
        """Seconds the triplet must still wait (0 when it may pass); the first sight starts the clock."""
        key = (client, sender.lower(), recipient.lower())
        first = self.greylist.setdefault(key, now)
        return max(0.0, first + delay - now)

    # --- authentication ----------------------------------------------------------------------

    def failed_auth(self, protocol: str, client: str) -> int:
        self.auth_failures[(protocol, client)] += 1
        return self.auth_failures[(protocol, client)]

    def auth_failure_count(self, protocol: str, client: str) -> int:
        return self.auth_failures[(protocol, client)]

    def reset_auth_failures(self, protocol: str, client: str) -> None:
        self.auth_failures.pop((protocol, client), None)

    # --- POP3 LOGIN-DELAY --------------------------------------------------------------------

    def login_wait(self, address: str, now: float, delay: float) -> float:
        """Seconds before `address` may log in again (RFC 2449 LOGIN-DELAY)."""
        last = self.last_login.get(address)
        if last is None or not delay:
            return 0.0
        return max(0.0, last + delay - now)

    def logged_in(self, address: str, now: float) -> None:
        self.last_login[address] = now
