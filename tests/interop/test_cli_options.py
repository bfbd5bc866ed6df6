"""Global options work before or after the subcommand, and mean the same in both places."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from interop_helpers import STOP_TIMEOUT, maillab_command, run_tool

from simulator.cli import COMMANDS, build_parser
from simulator.cli.options import GLOBAL_OPTIONS, merge_global_options


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MAILLAB_DATA", None)
    env.pop("MAILLAB_LANG", None)
    return env


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
def test_serve_writes_into_the_data_option(tmp_path: Path, before: bool) -> None:
    data = tmp_path / "chosen"
    options = ["--data", str(data)]
    args = [*maillab_command(), *(options if before else []), "serve", "--smtp-port", "0", "--pop3-port", "0",
            "--smtps-port", "0", "--quiet", *([] if before else options)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                               stdin=subprocess.DEVNULL, cwd=tmp_path)
    try:
        seen = []
        assert process.stdout is not None
        for line in process.stdout:  # the server prints its listening lines, then waits
            seen.append(line)
            if line.startswith("SMTPS listening"):
                break
        assert any(line.startswith("SMTPS listening") for line in seen), (seen, process.stderr.read() if process.poll() is not None else "")
        assert (data / "tls" / "ca.pem").is_file()  # the certificates of implicit TLS went where --data said
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT)
    assert process.returncode == 0


@pytest.mark.parametrize("order", [["--lang", "zh", "lessons"], ["lessons", "--lang", "zh"]])
def test_lang_before_or_after_lessons(tmp_path: Path, order: list[str]) -> None:
    done = run_tool([*maillab_command(), *order], timeout=60)
    assert done.returncode == 0, done.stderr
    assert "初次见面" in done.stdout, done.stdout[:300]


def test_every_subcommand_accepts_every_global_option_on_both_sides() -> None:
    """One definition each: the same flags parse to the same values wherever they are written."""
    parser = build_parser()
    values = {"--data": "D", "--lang": "zh", "--lessons": "L", "--server": "h.example", "--login": "a@b.test", "--other-login": "a@c.test",
              "--smtp-port": "25", "--pop3-port": "110"}
    assert {flag for option in GLOBAL_OPTIONS for flag in option.flags} == set(values)
    required = {"explain": ["250 ok"], "validate": ["NOOP"], "classroom": ["grade", "dir", "--lesson", "x"]}
    for name in COMMANDS:
        tail = required.get(name, [])
        flags = [item for pair in values.items() for item in pair]
        before = merge_global_options(parser.parse_args([*flags, name, *tail]))
        after = merge_global_options(parser.parse_args([name, *tail, *flags]))
        assert vars(before) == vars(after), name
        assert before.lang == "zh" and str(before.data) == "D" and before.smtp_port == 25 and [str(p) for p in before.lessons] == ["L"]


def test_repeatable_global_option_keeps_both_sides() -> None:
    args = merge_global_options(build_parser().parse_args(["--lessons", "A", "lint", "--lessons", "B"]))
    assert [str(p) for p in args.lessons] == ["A", "B"]
