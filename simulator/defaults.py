"""Values the command line, the app and the course agree on, defined once.

Pure standard library (plus `platformdirs` on demand), imported by everything and importing no
other simulator module, so it can never take part in an import cycle.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Exit statuses of every `maillab` command: success, a check that failed, a usage error.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Where `maillab serve` listens and the app connects unless told otherwise (no root needed).
DEFAULT_SMTP_PORT = 2525
DEFAULT_POP3_PORT = 2110

#: Lessons `maillab lint` replays at once (`--jobs`): a replay mostly waits, so a few at once
#: finish the course several times sooner, each against its own servers.
DEFAULT_REPLAY_JOBS = 4

#: The environment variable that moves the data directory (tests and classrooms use it).
DATA_ENV = "MAILLAB_DATA"


def default_data_dir() -> Path:
    """Where mailboxes, transcripts, certificates and progress live unless --data says otherwise."""
    override = os.environ.get(DATA_ENV)
    if override:
        return Path(override)
    from platformdirs import user_data_dir

    return Path(user_data_dir("maillab", appauthor=False))


def data_dir(given: Path | None) -> Path:
    """The --data directory when given, else the default one."""
    return given if given is not None else default_data_dir()
