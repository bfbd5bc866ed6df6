"""The world's authoritative DNS, built on twisted.names, and the resolvers that ask it.

Each domain is one zone (SOA, MX, A for mx./smtp./pop., SPF and DMARC TXT, the DKIM key TXT and
any extra records); a parent zone per top-level name (`lab`) answers NXDOMAIN for a domain the
world does not have, as the real root would. The reverse zone `in-addr.arpa` holds a PTR record
for every address the world's A records give a host (`ptr_records`), so `dig -x 127.0.0.2` names
it and a receiving MX can write that name in its Received line (`confirmed_name`). The server
listens on UDP and TCP of the same port, so `dig @127.0.0.1 -p PORT MX sina.lab` (and `+tcp`) work.

Relays resolve through it asynchronously (`twisted.names.client`); SPF and DKIM checks, which run
in worker threads with synchronous libraries, ask it with dnspython (`lookup_txt`, `lookup`).
"""

from __future__ import annotations

import ipaddress
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Iterable, NamedTuple

from twisted.internet import defer
from twisted.names import authority, dns, server

from .worldfile import DnsRecord, World

TTL = 300


class Zone(authority.FileAuthority):
    """One zone held in memory (FileAuthority does the answering; only loading differs)."""

    def __init__(self, origin: str, records: Iterable[DnsRecord]) -> None:
        self._origin = origin
        self._source = list(records)
        super().__init__(origin)

    def loadFile(self, filename: Any) -> None:  # noqa: N802 - twisted's name
        """Build SOA and records from the world's data instead of a zone file."""
        origin = self._origin.encode("ascii")
        soa = dns.Record_SOA(
            mname=b"ns." + origin, rname=b"hostmaster." + origin, serial=1, refresh=3600, retry=600,
            expire=86400, minimum=TTL, ttl=TTL,
        )
        self.soa = (origin, soa)
        self.records = {origin: [soa, dns.Record_NS(b"ns." + origin, ttl=TTL)]}
        for record in self._source:
            key = record.name.encode("ascii").lower()
            self.records.setdefault(key, []).append(to_twisted(record))


def to_twisted(record: DnsRecord) -> Any:
    if record.type == "A":
        return dns.Record_A(record.value, ttl=TTL)
    if record.type == "PTR":
        return dns.Record_PTR(record.value.encode("ascii"), ttl=TTL)
    if record.type == "MX":
        target = b"" if record.value == "." else record.value.encode("ascii")
        return dns.Record_MX(record.preference, target, ttl=TTL)
    data = record.value.encode("utf-8")
    # RFC 1035 3.3.14: a TXT string holds at most 255 octets; long ones (DKIM keys) are split.
    return dns.Record_TXT(*[data[i : i + 255] for i in range(0, len(data), 255)], ttl=TTL)


def zone_records(world: World, dkim_public: dict[str, str]) -> dict[str, list[DnsRecord]]:
    """The records of every domain's zone; `dkim_public` maps a domain to its p= value."""
    zones: dict[str, list[DnsRecord]] = {}
    for domain in world.domains:
        name = domain.name
        records = [
            DnsRecord(name, "MX", domain.mx_host, 10),
            DnsRecord(domain.mx_host, "A", domain.address),
            DnsRecord(domain.smtp_host, "A", domain.address),
            DnsRecord(domain.pop3_host, "A", domain.address),
            DnsRecord(f"ns.{name}", "A", world.reach_host),
            DnsRecord(name, "TXT", domain.spf_record),
            DnsRecord(f"_dmarc.{name}", "TXT", domain.dmarc_record),
        ]
        if name in dkim_public:
            records.append(DnsRecord(f"{domain.dkim_selector}._domainkey.{name}", "TXT", f"v=DKIM1; k=rsa; p={dkim_public[name]}"))
        for extra in domain.extra_records:
            if extra.name == name and extra.type == "MX":
                records = [r for r in records if not (r.name == name and r.type == "MX")]
            records.append(extra)
        zones[name] = records
    return zones


#: The reverse zone (RFC 1035 3.5): every world address is IPv4 loopback, so one zone holds them
#: all and answers NXDOMAIN for an address the world does not use.
REVERSE_ZONE = "in-addr.arpa"


def reverse_name(address: str) -> str:
    """`127.0.0.2` -> `2.0.0.127.in-addr.arpa`, the name a PTR query asks (RFC 1035 3.5)."""
    return ipaddress.ip_address(address).reverse_pointer


def ptr_records(world: World, zones: dict[str, list[DnsRecord]]) -> list[DnsRecord]:
    """One PTR per address the zones' A records use, naming one host there.

    A domain's own address is named after its submission host (`smtp.<domain>`), the name its
    relay gives in HELO: then the receiving MX finds HELO, PTR and A in agreement, what mailbox
    providers ask of a sending host (forward-confirmed reverse DNS, Postfix's
    reject_unknown_client_hostname in postconf(5)). Other addresses take the first A record's
    name. The world's own address (127.0.0.1, where `ns.<domain>` points) gets none: /etc/hosts
    names it `localhost`, as the servers already write.
    """
    names: dict[str, str] = {d.address: d.smtp_host for d in world.domains}
    for records in zones.values():
        for record in records:
            if record.type == "A" and record.value != world.reach_host:
                names.setdefault(record.value, record.name)
    return [DnsRecord(reverse_name(address), "PTR", name) for address, name in names.items()]


def build_authorities(world: World, dkim_public: dict[str, str]) -> list[Zone]:
    records = zone_records(world, dkim_public)
    zones = [Zone(name, domain_records) for name, domain_records in records.items()]
    parents = sorted({d.name.rpartition(".")[2] for d in world.domains})
    reverse = Zone(REVERSE_ZONE, ptr_records(world, records))
    return zones + [Zone(parent, []) for parent in parents] + [reverse]


#: Questions the world's DNS remembers (a lesson asks whether the learner's `dig` arrived).
ASKED_KEPT = 1000


class Question(NamedTuple):
    """One question the world's DNS was asked: record type and name, as dig shows them."""

    qtype: str
    name: str


class RecordingFactory(server.DNSServerFactory):
    """twisted.names' server, remembering each question (bounded) and telling who listens.

    A lesson step "look up sina.lab's MX with dig" is checked by the question reaching the
    server, not by trusting the learner; the world's own relays ask too.
    """

    def __init__(self, authorities: list[Any]) -> None:
        super().__init__(authorities=authorities)
        self._asked: deque[Question] = deque(maxlen=ASKED_KEPT)
        self._asked_lock = threading.Lock()  # asked in the reactor thread, read by the app's
        self.listeners: list[Callable[[Question], None]] = []

    def was_asked(self, question: Question) -> bool:
        with self._asked_lock:
            return question in self._asked

    def handleQuery(self, message: Any, protocol: Any, address: Any) -> Any:  # noqa: N802 - twisted's name
        if message.queries:
            query = message.queries[0]
            question = Question(dns.QUERY_TYPES.get(query.type, str(query.type)), str(query.name).rstrip(".").lower())
            with self._asked_lock:
                self._asked.append(question)
            for listener in list(self.listeners):
                listener(question)
        return super().handleQuery(message, protocol, address)


class WorldDNS:
    """The authoritative server on UDP and TCP of one port."""

    def __init__(self, world: World, dkim_public: dict[str, str], reactor: Any) -> None:
        self.reactor = reactor
        self.host = world.host
        self.reach_host = world.reach_host
        self.requested_port = world.dns_port
        self.factory = RecordingFactory(build_authorities(world, dkim_public))
        self.port = 0
        self._listeners: list[Any] = []

    def start(self) -> int:
        """Bind UDP then TCP on the same port (a free one when asked for 0; retried if TCP is taken)."""
        from twisted.internet.error import CannotListenError

        for _ in range(20):
            udp = self.reactor.listenUDP(self.requested_port, dns.DNSDatagramProtocol(controller=self.factory), interface=self.host)
            port = udp.getHost().port
            try:
                tcp = self.reactor.listenTCP(port, self.factory, interface=self.host)
            except CannotListenError:
                udp.stopListening()
                if self.requested_port:
                    raise
                continue
            self._listeners = [udp, tcp]
            self.port = port
            return port
        raise CannotListenError(self.host, self.requested_port, OSError("no free port for both UDP and TCP"))

    def stop(self) -> defer.Deferred:
        listeners, self._listeners = self._listeners, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in listeners], consumeErrors=True)

    def was_asked(self, qtype: str, name: str) -> bool:
        """Has anyone asked this server for `qtype` records of `name` (since it started)?"""
        return self.factory.was_asked(Question(qtype.upper(), name.rstrip(".").lower()))

    def subscribe(self, listener: Callable[[Question], None]) -> Callable[[], None]:
        """Call `listener` (in the reactor thread) with every question; returns the unsubscribe."""
        self.factory.listeners.append(listener)
        return lambda: self.factory.listeners.remove(listener) if listener in self.factory.listeners else None

    def resolver(self) -> Any:
        """An asynchronous resolver that asks only this server (what the relays use)."""
        from twisted.names import client

        return client.Resolver(servers=[(self.reach_host, self.port)], reactor=self.reactor)


#: Seconds one query of `confirmed_name` may take; two queries, so a client is named within
#: 2 s or written `unknown` (the world's DNS answers on loopback in well under a millisecond).
NAME_QUERY_TIMEOUT = 1.0


@defer.inlineCallbacks
def confirmed_name(resolver: Any, address: str) -> Any:
    """The host name of `address` when its PTR name has an A record back to it, else None.

    Postfix's smtpd trusts a PTR name only when it resolves back to the address; no PTR, a
    name without that address, or no answer in time make the client `unknown` (postconf(5),
    reject_unknown_client_hostname), as its Received line shows: `(unknown [IP])`.
    Asynchronous (twisted.names), so the reactor goes on while the answer comes.
    """
    timeout = (NAME_QUERY_TIMEOUT,)
    try:
        answers, _, _ = yield resolver.lookupPointer(reverse_name(address), timeout=timeout)
        names = [str(a.payload.name).rstrip(".") for a in answers if a.type == dns.PTR]
        for name in names:
            forward, _, _ = yield resolver.lookupAddress(name, timeout=timeout)
            if address in {a.payload.dottedQuad() for a in forward if a.type == dns.A}:
                return name.lower()
    except Exception:  # noqa: BLE001 - NXDOMAIN, timeout, bad address: all mean `unknown`
        return None
    return None


# --- synchronous look-ups for the SPF and DKIM libraries (worker threads only) ----------------


def _dnspython_resolver(nameserver: tuple[str, int]) -> Any:
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [nameserver[0]]
    resolver.port = nameserver[1]
    resolver.lifetime = 5.0
    return resolver


def lookup(nameserver: tuple[str, int], name: str, qtype: str) -> list[Any]:
    """Answers of one query to the world's DNS: [] for NXDOMAIN or no answer; raises on timeout."""
    import dns.resolver

    try:
        return list(_dnspython_resolver(nameserver).resolve(name, qtype))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []


def lookup_txt(nameserver: tuple[str, int], name: str) -> list[bytes]:
    """Each TXT record as one string (its character-strings joined, RFC 7208 3.3)."""
    return [b"".join(answer.strings) for answer in lookup(nameserver, name, "TXT")]
