"""`maillab cert`: the path of the local CA certificate, for `openssl s_client -CAfile $(maillab cert)`."""

from __future__ import annotations

import argparse

HELP = "print the path of maillab's local CA certificate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Only the global options (--data)."""


def run(args: argparse.Namespace) -> int:
    from mockservers.tls import ensure_certificates
    from simulator.defaults import EXIT_OK, data_dir

    print(ensure_certificates(data_dir(args.data)).ca_cert)
    return EXIT_OK
