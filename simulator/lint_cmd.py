"""`maillab lint`: every problem as `file:line: message`, a summary line, exit 1 on any error."""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli import EXIT_FAILED, EXIT_OK


def run_lint(args: argparse.Namespace) -> int:
    from mockservers.lint import lint_profile
    from mockservers.profile import bundled_personas

    targets: list[str] = list(args.paths) or bundled_personas()
    errors = warnings = 0
    for target in targets:
        problems = lint_profile(target) if not Path(target).is_dir() else []
        for problem in problems:
            print(problem)
            if problem.severity == "error":
                errors += 1
            else:
                warnings += 1
    checked = len(targets)
    print(f"{checked} file{'s' if checked != 1 else ''} checked: {errors} error{'s' if errors != 1 else ''}, "
          f"{warnings} warning{'s' if warnings != 1 else ''}")
    return EXIT_FAILED if errors else EXIT_OK
