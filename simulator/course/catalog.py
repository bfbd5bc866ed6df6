"""Find lessons: the bundled curriculum plus instructors' folders (`--lessons DIR`), grouped by
lesson id and language, ordered into tracks by `course.toml` files."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .model import Lesson
from .parser import LessonError, language_of, parse_lesson

BUNDLED_DIR = Path(__file__).resolve().parents[2] / "lessons"
SKIP = {"README.md", "README.zh.md"}


def bundled_lessons_dir() -> Path:
    """The curriculum shipped with maillab (the `lessons` package)."""
    try:
        import lessons

        return Path(lessons.__file__).resolve().parent
    except ImportError:  # running from a checkout without the package installed
        return BUNDLED_DIR


def lesson_files(directories: Iterable[Path]) -> list[Path]:
    """Every lesson file under the given folders (or files), each once however it is reached."""
    files: list[Path] = []
    seen: set[Path] = set()
    for directory in directories:
        found = [directory] if directory.is_file() else sorted(
            p for p in directory.rglob("*.md") if p.name not in SKIP and "profiles" not in p.parts[-2:-1]
        )
        for path in found:
            resolved = path.resolve()
            if resolved not in seen:
                seen.add(resolved)
                files.append(path)
    return files


@dataclass
class Track:
    id: str
    title: dict[str, str]
    lessons: list[str]


@dataclass
class Catalog:
    """Every lesson found, by id then language, and the tracks that order them."""

    lessons: dict[str, dict[str, Lesson]] = field(default_factory=dict)
    tracks: list[Track] = field(default_factory=list)
    errors: list[LessonError] = field(default_factory=list)
    directories: list[Path] = field(default_factory=list)

    def get(self, lesson_id: str, language: str = "en") -> Lesson | None:
        versions = self.lessons.get(lesson_id, {})
        return versions.get(language) or versions.get("en") or next(iter(versions.values()), None)

    def ordered(self) -> list[tuple[Track, list[str]]]:
        """Tracks with their lesson ids; lessons in no track go to a last "more" track."""
        placed = {lesson_id for track in self.tracks for lesson_id in track.lessons}
        out = [(track, [i for i in track.lessons if i in self.lessons]) for track in self.tracks]
        rest = sorted(i for i in self.lessons if i not in placed)
        if rest:
            out.append((Track("more", {"en": "More lessons", "zh": "更多课程"}, rest), rest))
        return out


def load_catalog(extra_dirs: Sequence[Path] = (), *, include_bundled: bool = True) -> Catalog:
    directories = ([bundled_lessons_dir()] if include_bundled else []) + [Path(d) for d in extra_dirs]
    catalog = Catalog(directories=directories)
    for path in lesson_files(directories):
        try:
            lesson = parse_lesson(path)
        except LessonError as error:
            catalog.errors.append(error)
            continue
        versions = catalog.lessons.setdefault(lesson.id, {})
        if lesson.language in versions:
            other = versions[lesson.language].path
            catalog.errors.append(LessonError(path, 2, f"lesson id {lesson.id!r} ({lesson.language}) is also used by {other}"))
            continue
        versions[lesson.language] = lesson
    catalog.tracks = load_catalog_tracks(directories, catalog.errors)
    return catalog


@dataclass(frozen=True)
class LessonInfo:
    """What the home screen needs about a lesson, read from its front matter alone (fast)."""

    id: str
    title: str
    protocol: str
    minutes: int
    language: str
    path: Path


@dataclass
class LessonIndex:
    """Lessons by id and language, parsed in full only when opened (start-up stays fast)."""

    lessons: dict[str, dict[str, LessonInfo]] = field(default_factory=dict)
    tracks: list[Track] = field(default_factory=list)
    errors: list[LessonError] = field(default_factory=list)
    _parsed: dict[Path, Lesson] = field(default_factory=dict)

    def get(self, lesson_id: str, language: str = "en") -> LessonInfo | None:
        versions = self.lessons.get(lesson_id, {})
        return versions.get(language) or versions.get("en") or next(iter(versions.values()), None)

    def load(self, lesson_id: str, language: str = "en") -> Lesson | None:
        """The full lesson (parsed once); None when it does not exist or does not parse."""
        info = self.get(lesson_id, language)
        if info is None:
            return None
        if info.path not in self._parsed:
            try:
                self._parsed[info.path] = parse_lesson(info.path)
            except LessonError as error:
                self.errors.append(error)
                return None
        return self._parsed[info.path]

    def ordered(self) -> list[tuple[Track, list[str]]]:
        return Catalog(lessons=self.lessons, tracks=self.tracks).ordered()  # type: ignore[arg-type]


def load_index(extra_dirs: Sequence[Path] = (), *, include_bundled: bool = True) -> LessonIndex:
    """Like load_catalog, reading only each file's front matter."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    directories = ([bundled_lessons_dir()] if include_bundled else []) + [Path(d) for d in extra_dirs]
    index = LessonIndex()
    for path in lesson_files(directories):
        try:
            text = path.read_text(encoding="utf-8")
            if not text.startswith("---"):
                raise LessonError(path, 1, "a lesson starts with front matter between --- lines")
            end = text.find("\n---", 3)
            meta = yaml.load(text[3:end], Loader=loader) if end > 0 else None
            if not isinstance(meta, dict) or "id" not in meta or "title" not in meta:
                raise LessonError(path, 1, "front matter needs id and title")
            minutes = meta.get("minutes", 5)
            info = LessonInfo(
                str(meta["id"]), str(meta["title"]), str(meta.get("protocol", "smtp")),
                minutes if isinstance(minutes, int) else 5, str(meta.get("language", language_of(path))), path,
            )
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            index.errors.append(LessonError(path, None, f"cannot read lesson: {error}"))
            continue
        except LessonError as error:
            index.errors.append(error)
            continue
        index.lessons.setdefault(info.id, {}).setdefault(info.language, info)
    index.tracks = load_catalog_tracks(directories, index.errors)
    return index


def load_catalog_tracks(directories: Sequence[Path], errors: list[LessonError]) -> list[Track]:
    tracks: list[Track] = []
    for directory in directories:
        course = directory / "course.toml"
        if course.is_file():
            try:
                data = tomllib.loads(course.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as error:
                errors.append(LessonError(course, getattr(error, "lineno", None), f"course file: {error}"))
                continue
            for index, track in enumerate(data.get("tracks", [])):
                title = track.get("title", track.get("id", f"track {index + 1}"))
                tracks.append(
                    Track(str(track.get("id", index)), title if isinstance(title, dict) else {"en": str(title)}, list(track.get("lessons", [])))
                )
    return tracks


def same_lesson_other_language(path: Path) -> list[Path]:
    """`name.md` <-> `name.zh.md`."""
    language = language_of(path)
    stem = path.name[: -len(".zh.md")] if language == "zh" else path.name[: -len(".md")]
    return [p for p in (path.with_name(f"{stem}.md"), path.with_name(f"{stem}.zh.md")) if p != path and p.exists()]
