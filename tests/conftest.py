"""Suite-wide options: `--run-slow` turns on the long variants marked `@pytest.mark.slow`.

`make test` runs the quick suite (slow tests are reported as skipped); `make test-long` runs
`pytest -m slow --run-slow`, i.e. only the long campaigns (fuzzing, crash loops, soak tests).
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="run the long variants marked @pytest.mark.slow (skipped otherwise)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long variant: run with --run-slow (make test-long)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
