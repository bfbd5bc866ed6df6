"""Server-wide memory behind the policies that span sessions.

Connection counts (total and per client address), greylisting triplets, failed logins per client
address and per account (a sliding window, for delays and lockouts) and POP3 last-login times. Pure Python; time comes from the caller's clock so tests
use a fake one.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

try:
    import resource
except ImportError:  # not on Windows: no descriptor limit to derive a cap from
    resource = None  # type: ignore[assignment]

#: Failure times remembered per client or account (enough for any lockout a profile sets).
_MAX_REMEMBERED_FAILURES = 1024

#: Descriptors a session holds: its socket and its transcript file.
DESCRIPTORS_PER_SESSION = 2


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as servers do at start); the soft limit now."""
    if resource is None:
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def descriptor_budget(headroom: int) -> int:
    """Sessions the process can hold: the raised descriptor limit less `headroom` for the store,
    the listeners and the thread pool, two descriptors per session."""
    limit = raise_descriptor_limit()
    return max(1, (limit - headroom) // DESCRIPTORS_PER_SESSION) if limit else 0


@dataclass
class ServerLimits:
    """Shared by every session of one server (all its listeners)."""

    connections: Counter = field(default_factory=Counter)  # (protocol, client) -> open sessions
    greylist: dict[tuple[str, str, str], float] = field(default_factory=dict)
    auth_failures: dict[tuple[str, str], deque] = field(default_factory=dict)  # (scope, name) -> (time, user)
    last_login: dict[str, float] = field(default_factory=dict)  # address -> time of last POP3 login

    # --- connections -------------------------------------------------------------------------

    max_sessions: int = 0  # all protocols together (0: no server-wide cap); see `descriptor_budget`
    # Running sums of `connections` (all, per protocol), kept by open/close: a new connection
    # checks its caps without walking every client's count (a class holds a thousand).
    _open_total: int = field(default=0, init=False, repr=False)
    _open_by_protocol: Counter = field(default_factory=Counter, init=False, repr=False)

    def open(self, protocol: str, client: str, max_total: int, max_per_client: int) -> str | None:
        """Count a new session; returns "server", "total" or "client" when a cap refuses it (not counted).

        "server": the server-wide cap derived from the descriptor limit; "total": the persona's cap
        for this protocol; "client": the per-client cap of this protocol. A per-client cap of 0
        means half the server-wide cap (Postfix's default ratio of smtpd_client_connection_count_limit
        to default_process_limit), so one address can never hold every slot.
        """
        if self.max_sessions and self._open_total >= self.max_sessions:
            return "server"
        if max_total and self._open_by_protocol[protocol] >= max_total:
            return "total"
        per_client = max_per_client or self.max_sessions // 2
        if per_client and self.connections[(protocol, client)] >= per_client:
            return "client"
        self.connections[(protocol, client)] += 1
        self._open_by_protocol[protocol] += 1
        self._open_total += 1
        return None

    def close(self, protocol: str, client: str) -> None:
        key = (protocol, client)
        held = self.connections.get(key, 0)
        if held > 1:
            self.connections[key] = held - 1
        else:
            self.connections.pop(key, None)
        if held:
            self._open_by_protocol[protocol] -= 1
            self._open_total -= 1

    def heaviest_client(self, protocol: str | None) -> tuple[str, int]:
        """The client address holding the most sessions (of `protocol`, or of all protocols)."""
        held: Counter = Counter()
        for (p, client), count in self.connections.items():
            if protocol is None or p == protocol:
                held[client] += count
        if not held:
            return "", 0
        return held.most_common(1)[0]

    def held_by(self, client: str, protocol: str | None) -> int:
        return sum(n for (p, c), n in self.connections.items() if c == client and (protocol is None or p == protocol))

    # --- greylisting -------------------------------------------------------------------------

    def greylisted(self, client: str, sender: str, recipient: str, now: float, delay: float) -> float:
        """Seconds the triplet must still wait (0 when it may pass); the first sight starts the clock."""
        key = (client, sender.lower(), recipient.lower())
        first = self.greylist.setdefault(key, now)
        return max(0.0, first + delay - now)

    # --- authentication ----------------------------------------------------------------------
    #
    # Failures are remembered per client address (with the name that was tried) and per account
    # for `auth_lockout_window` seconds, server-wide: reconnecting changes nothing. A successful
    # login clears only the failures *on that account* (its owner mistyped, then got it right);
    # what a client did to other accounts stays, so logging in to one's own account between
    # guesses at a classmate's never resets the count.

    def _failures(self, key: tuple[str, str], now: float, window: float) -> deque:
        entries = self.auth_failures.get(key)
        if entries is None:
            return deque()
        while entries and entries[0][0] <= now - window:
            entries.popleft()
        if not entries:
            del self.auth_failures[key]
        return entries

    def record_auth_failure(self, protocol: str, client: str, user: str, known: bool, now: float, window: float) -> int:
        """Remember one failed login as `user`; the most failures the client or the account has now.

        Only a `known` account gets an entry of its own, so invented names cannot grow memory.
        """
        name = user.lower()
        scored = [("client", client)] + ([("account", name)] if known else [])
        for key in [*scored, (protocol, client)]:
            self.auth_failures.setdefault(key, deque(maxlen=_MAX_REMEMBERED_FAILURES)).append((now, name))
        return max(len(self._failures(key, now, window)) for key in scored)

    def auth_failure_count(self, protocol: str, client: str, now: float, window: float) -> int:
        """Failures of this client in this protocol within the window (the persona's `max_auth_failures`)."""
        return len(self._failures((protocol, client), now, window))

    def client_locked_out(self, client: str, now: float, window: float, limit: int) -> bool:
        """True while the client has `limit` failures (all protocols, all accounts) within the window."""
        return bool(limit) and len(self._failures(("client", client), now, window)) >= limit

    def auth_succeeded(self, client: str, account: str) -> None:
        """`account` logged in from `client`: forget the failures on that account, and only those."""
        name = account.lower()
        self.auth_failures.pop(("account", name), None)
        for key in [key for key in self.auth_failures if key[1] == client and key[0] != "account"]:
            kept = deque((entry for entry in self.auth_failures[key] if entry[1] != name), maxlen=_MAX_REMEMBERED_FAILURES)
            if kept:
                self.auth_failures[key] = kept
            else:
                del self.auth_failures[key]

    # --- POP3 LOGIN-DELAY --------------------------------------------------------------------

    def login_wait(self, address: str, now: float, delay: float) -> float:
        """Seconds before `address` may log in again (RFC 2449 LOGIN-DELAY)."""
        last = self.last_login.get(address)
        if last is None or not delay:
            return 0.0
        return max(0.0, last + delay - now)

    def logged_in(self, address: str, now: float) -> None:
        self.last_login[address] = now
