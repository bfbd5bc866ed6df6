"""Headless smoke test of an installed maillab (a wheel, not the source tree).

Run with the interpreter of a fresh venv the wheel was installed into, from a directory outside
the source tree: `python install_smoke.py SOURCE_TREE`. Checks that every data file of the source
packages was installed, then starts the app headless, opens the first lesson with Enter, types
EHLO key by key and waits for the 250 reply.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

PACKAGES = ("mailprotocol", "mockservers", "simulator", "lessons")


def check_installed(source: Path) -> None:
    import simulator

    installed = Path(simulator.__file__).resolve().parent.parent
    if source.resolve() in Path(simulator.__file__).resolve().parents:
        sys.exit(f"simulator was imported from the source tree ({simulator.__file__}), not the install")
    missing = []
    count = 0
    for package in PACKAGES:
        for path in (source / package).rglob("*"):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            count += 1
            relative = path.relative_to(source)
            if not (installed / relative).is_file():
                missing.append(str(relative))
    if missing:
        sys.exit(f"{len(missing)} of {count} package files are not installed: {', '.join(missing[:10])}")
    print(f"smoke: all {count} package files installed under {installed}")


async def drive_app() -> None:
    from simulator.tui.app import MaillabApp
    from simulator.tui.lesson_screen import LessonScreen

    async def wait_for(pilot, condition, what: str, timeout: float = 20.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition():
            if asyncio.get_running_loop().time() > deadline:
                sys.exit(f"smoke: timed out waiting for {what}")
            await pilot.pause(0.05)

    with tempfile.TemporaryDirectory() as data:
        app = MaillabApp(data_dir=Path(data), lang="en")
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("enter")  # the first lesson is highlighted on the home screen
            await wait_for(pilot, lambda: isinstance(app.screen, LessonScreen) and app.screen.run is not None, "the lesson")
            screen = app.screen
            await wait_for(pilot, lambda: screen.console.session.greeting is not None, "the greeting")
            await pilot.press(*["space" if ch == " " else "full_stop" if ch == "." else ch for ch in "EHLO smoke.example"], "enter")
            await wait_for(pilot, lambda: any(line.startswith("‹ 250") for line in screen.console.transcript.plain_lines), "250")
            print("smoke: lesson", screen.lesson.id, "answered EHLO with", next(l for l in screen.console.transcript.plain_lines if l.startswith("‹ 250")))
            await pilot.press("ctrl+q")
            await wait_for(pilot, lambda: not app.is_running, "the app to quit")


if __name__ == "__main__":
    check_installed(Path(sys.argv[1]))
    asyncio.run(drive_app())
