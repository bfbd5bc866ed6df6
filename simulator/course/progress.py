"""Saved progress: completed steps per lesson, keyed by lesson id and a hash of its steps, so an
edited lesson is not marked complete by stale progress. Written atomically."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .model import Lesson

VERSION = 1


class Progress:
    def __init__(self, path: Path, data: dict[str, Any] | None = None) -> None:
        self.path = path
        self.data: dict[str, Any] = data or {"version": VERSION, "lessons": {}, "last": None}

    @classmethod
    def load(cls, path: Path) -> "Progress":
        """A missing or unreadable file is an empty progress (a damaged file is kept aside)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("lessons"), dict):
                raise ValueError("not a progress file")
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError):
            try:
                path.replace(path.with_name(path.name + ".damaged"))
            except OSError:
                pass
            return cls(path)
        return cls(path, data)

    def completed(self, lesson: Lesson) -> set[str]:
        entry = self.data["lessons"].get(lesson.id)
        if not entry or entry.get("steps_hash") != lesson.steps_hash:
            return set()
        valid = {s.id for s in lesson.steps}
        return {s for s in entry.get("completed", []) if s in valid}

    def is_complete(self, lesson: Lesson) -> bool:
        return self.completed(lesson) >= {s.id for s in lesson.steps}

    def mark(self, lesson: Lesson, step_ids: list[str] | set[str]) -> None:
        done = self.completed(lesson) | set(step_ids)
        self.data["lessons"][lesson.id] = {
            "steps_hash": lesson.steps_hash,
            "completed": [s.id for s in lesson.steps if s.id in done],
            "title": lesson.title,
            "total": len(lesson.steps),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        current = next((s.id for s in lesson.steps if s.id not in done), None)
        self.data["last"] = {"lesson": lesson.id, "step": current}

    def reset(self, lesson_id: str | None = None) -> bool:
        """Forget one lesson (True if it was known) or everything."""
        if lesson_id is None:
            self.data = {"version": VERSION, "lessons": {}, "last": None}
            return True
        known = self.data["lessons"].pop(lesson_id, None) is not None
        if (self.data.get("last") or {}).get("lesson") == lesson_id:
            self.data["last"] = None
        return known

    def last(self) -> tuple[str, str | None] | None:
        last = self.data.get("last")
        return (last["lesson"], last.get("step")) if last else None

    def entries(self) -> dict[str, dict[str, Any]]:
        return dict(self.data["lessons"])

    def save(self) -> None:
        """Write to a temporary file in the same folder, fsync, then rename over the old one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".progress-", dir=self.path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(self.data, stream, ensure_ascii=False, indent=2)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise


def progress_path(data_dir: Path) -> Path:
    """The progress file inside a data directory (the app and `maillab progress` share it)."""
    return data_dir / "progress.json"
