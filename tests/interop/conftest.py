"""Interop fixtures: `maillab_server` (a factory of real `maillab serve` subprocesses on free loopback
ports, each with its own data directory, stopped with SIGTERM and checked for exit 0 on teardown)
and `raw_client` (byte-exact loopback conversations). The helpers live in interop_helpers.py.
"""

from __future__ import annotations

import signal
from typing import Callable, Iterator, Sequence

import pytest

from interop_helpers import MaillabServer, RawClient, start_server


def _server_factory(tmp_path_factory: pytest.TempPathFactory, servers: list[MaillabServer]):
    def factory(
        profile: str = "rfc",
        *,
        smtps: bool = False,
        pop3s: bool = False,
        accounts: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> MaillabServer:
        data_dir = tmp_path_factory.mktemp(f"maillab-{profile}") / "data"
        server = start_server(
            data_dir, profile=profile, smtps=smtps, pop3s=pop3s, accounts=accounts, extra_args=extra_args, host=host
        )
        servers.append(server)
        return server

    return factory


def _stop_all(servers: list[MaillabServer]) -> None:
    """SIGTERM every server still running; each must exit 0 (killed after STOP_TIMEOUT)."""
    failures = []
    for server in servers:
        if server.stopped:
            continue
        status = server.stop(signal.SIGTERM)
        if status != 0:
            stderr = server.process.stderr.read() if server.process.stderr else ""
            failures.append(f"maillab serve exited {status} on SIGTERM; stderr: {stderr!r}")
    for server in servers:
        if server.process.stderr:
            server.process.stderr.close()
    assert not failures, failures


@pytest.fixture
def maillab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., MaillabServer]]:
    """Factory: `maillab_server(profile="qq", smtps=True, pop3s=True, accounts=["a@b.c:s"], host="::1")`.

    Each call starts a fresh server in a fresh data directory. Teardown sends SIGTERM to every
    server still running and asserts exit status 0.
    """
    servers: list[MaillabServer] = []
    yield _server_factory(tmp_path_factory, servers)
    _stop_all(servers)


@pytest.fixture(scope="module")
def shared_rfc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MaillabServer]:
    """One rfc server (all four listeners) for a module's tests that need no isolation.

    Tests using it must find their own mail by a unique tag rather than count messages, and use
    the POP3 accounts nobody sends to (mrose, tim) when they expect an empty maildrop.
    """
    servers: list[MaillabServer] = []
    server = _server_factory(tmp_path_factory, servers)("rfc", smtps=True, pop3s=True)
    server.ca_path  # resolve once, through `maillab cert`
    yield server
    assert server.process.poll() is None, "the shared server died during the module"
    _stop_all(servers)


@pytest.fixture
def raw_client() -> Iterator[Callable[..., RawClient]]:
    clients: list[RawClient] = []

    def connect(port: int, **options) -> RawClient:
        client = RawClient(port, **options)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()
