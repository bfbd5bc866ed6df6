"""Every byte count the project shows a learner is recounted here from the bytes it describes.

A count typed by hand is a fact with no source; these tests are its source. They find, in the
knowledge files and in every lesson (both languages):

- a `BDAT n` command followed by its chunk lines (knowledge examples `C: ...`, lesson text blocks);
- a `MAIL FROM:... SIZE=n` followed, in the same block, by `DATA` and the message up to the lone dot;
- prose announcing "this message (N octets" / "这封信（N 字节" right before the text block it describes;
- "`text` is N characters but M octets" and "N characters, plus 2 octets ... = M octets" remarks;
- POP3 sizes a lesson prints (STAT, LIST/PASS summaries, `+OK n octets`), against the messages it preloads;
- RFC 2047 encoded-words, against the `{mime:...}` computation of the text shown beside them.

Each line on the wire ends with CR LF (2 octets); text is UTF-8.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simulator.engine import knowledge as kb

REPO = Path(__file__).resolve().parents[1]
LESSON_FILES = sorted((REPO / "lessons").rglob("*.md"))
KNOWLEDGE_FILES = list(kb.FILES)
REPLY = re.compile(r"^\d{3}[ -]")
BDAT = re.compile(r"^BDAT (\d+)( LAST)?$", re.IGNORECASE)


def wire_size(lines: list[str]) -> int:
    """Octets these lines take on the wire, each followed by CR LF."""
    return sum(len(line.encode("utf-8")) + 2 for line in lines)


def text_blocks(markdown: str) -> list[tuple[int, str, list[str]]]:
    """(line number, the prose just before it, lines) of every ```text block."""
    blocks = []
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() == "```text":
            start = index
            end = index + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            before = "\n".join(lines[max(0, start - 4):start])
            blocks.append((start + 1, before, lines[start + 1:end]))
            index = end
        index += 1
    return blocks


def bdat_claims(lines: list[str]) -> list[tuple[int, list[str]]]:
    """(announced size, chunk lines) for every BDAT in a block of commands and replies."""
    claims = []
    for position, line in enumerate(lines):
        match = BDAT.match(line.strip())
        if not match or int(match.group(1)) == 0:
            continue
        chunk = []
        for following in lines[position + 1:]:
            if REPLY.match(following) or BDAT.match(following.strip()):
                break
            chunk.append(following)
        claims.append((int(match.group(1)), chunk))
    return claims


def message_after_data(lines: list[str]) -> list[str] | None:
    """The message lines after DATA's 354 (or right after DATA) up to the lone dot, dot-stuffing undone."""
    try:
        start = next(i for i, line in enumerate(lines) if line.strip().upper() == "DATA")
    except StopIteration:
        return None
    message = []
    for line in lines[start + 1:]:
        if line.startswith("354"):
            continue
        if line == ".":
            return message
        if REPLY.match(line) and not message:
            continue
        message.append(line[1:] if line.startswith("..") else line)
    return None


def lesson_cases():
    for path in LESSON_FILES:
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(REPO)
        for number, before, lines in text_blocks(text):
            for size, chunk in bdat_claims(lines):
                yield pytest.param(size, chunk, id=f"{rel}:{number}:BDAT {size}")
            size_param = next((re.search(r"SIZE=(\d+)", line) for line in lines if re.search(r"SIZE=(\d+)", line)), None)
            message = message_after_data(lines)
            if size_param and message is not None:
                yield pytest.param(int(size_param.group(1)), message, id=f"{rel}:{number}:SIZE={size_param.group(1)}")
            announced = re.search(r"(?:this message \((\d+) octets|这封信（(\d+) 字节)", before)
            if announced:
                body = lines[:lines.index(".")] if "." in lines else lines
                claimed = int(announced.group(1) or announced.group(2))
                yield pytest.param(claimed, body, id=f"{rel}:{number}:message of {claimed} octets")


@pytest.mark.parametrize("claimed, lines", list(lesson_cases()))
def test_lesson_byte_count_matches_the_bytes(claimed, lines):
    assert wire_size(lines) == claimed, f"the lines {lines!r} are {wire_size(lines)} octets on the wire"


def test_lessons_have_byte_count_examples():
    """The scanner finds the examples it is meant to check (a broken scanner would pass silently)."""
    ids = [case.id for case in lesson_cases()]
    assert any("BDAT 18" in i for i in ids)
    assert any("message of 330 octets" in i for i in ids)
    assert any("SIZE=21" in i for i in ids)


def knowledge_examples():
    for name in KNOWLEDGE_FILES:
        data = kb.load(name)
        for section in data.values():
            if not isinstance(section, dict):
                continue
            for key, entry in section.items():
                if isinstance(entry, dict) and isinstance(entry.get("example"), list):
                    yield name, key, entry["example"]


def test_knowledge_bdat_examples_count_their_octets():
    checked = 0
    for name, key, example in knowledge_examples():
        client = [line[3:] for line in example if line.startswith("C: ")]
        for size, chunk in bdat_claims(client):
            checked += 1
            assert wire_size(chunk) == size, f"{name}.toml {key}: BDAT {size} but the chunk is {wire_size(chunk)} octets"
    assert checked, "no BDAT example found in the knowledge files"


CHAR_OCTETS = [
    re.compile(r"`([^`]+)` is (\d+) characters? but (\d+) octets"),
    re.compile(r"`([^`]+)` 是 (\d+) 个字符，却是 (\d+) 个字节"),
]
PLUS_CRLF = [
    re.compile(r"(\d+) characters, plus 2 octets for the CR LF[^=]*= \*\*(\d+) octets"),
    re.compile(r"(\d+) 个字符，再加上每行结尾 CR LF 的 2 个字节，一共 \*\*(\d+) 个字节"),
]


def test_character_and_octet_remarks_are_right():
    checked = 0
    for path in LESSON_FILES:
        text = path.read_text(encoding="utf-8")
        for pattern in CHAR_OCTETS:
            for match in pattern.finditer(text):
                sample, chars, octets = match.group(1), int(match.group(2)), int(match.group(3))
                assert (len(sample), len(sample.encode("utf-8"))) == (chars, octets), f"{path.name}: {match.group(0)}"
                checked += 1
        for pattern in PLUS_CRLF:
            for match in pattern.finditer(text):
                chars, total = int(match.group(1)), int(match.group(2))
                assert total == chars + 2, f"{path.name}: {match.group(0)}"
                before = text[:match.start()]
                block = text_blocks(before)[-1][2]
                assert [len(line) for line in block] == [chars], f"{path.name}: {match.group(0)} vs {block!r}"
                checked += 1
    assert checked >= 4


ENCODED_WORD = re.compile(r"=\?[A-Za-z0-9-]+\?[BbQq]\?[^?\s]*\?=")


def test_encoded_words_in_lessons_are_the_computed_encoding_of_text_shown_beside_them():
    """An RFC 2047 word in a lesson is the encoding of a text the lesson shows, recomputed here.

    UTF-8 words must be exactly what `{mime:...}` computes; other charsets (GBK) are re-encoded
    with their own codec. Shapes such as `=?charset?B?base64?=` or `=?utf-8?b?...?=` are skipped.
    """
    import base64
    import codecs
    from email.header import decode_header

    from simulator.course.patterns import encoded_word, render_solution

    checked = 0
    for path in LESSON_FILES:
        text = path.read_text(encoding="utf-8")
        for match in ENCODED_WORD.finditer(text):
            word = match.group(0)
            _, charset, encoding, payload, _ = word.split("?")
            try:
                codecs.lookup(charset)
            except LookupError:
                continue  # the shape `=?charset?B?base64?=`, not an example
            if payload == "...":
                continue
            raw, _ = decode_header(word)[0]
            decoded = raw.decode(charset)
            if charset.lower() == "utf-8" and encoding.lower() == "b":
                computed = encoded_word(decoded).split("?")[3]
            elif encoding.lower() == "b":
                computed = base64.b64encode(decoded.encode(charset)).decode("ascii")
            else:
                continue
            assert payload == computed, f"{path.name}: {word} is not the computed encoding of {decoded!r}"
            assert decoded in text.replace(word, ""), f"{path.name}: {word} ({decoded}) is not shown in plain text"
            checked += 1
    assert checked >= 2
    assert render_solution("Subject: {mime:会议纪要}", {}) == "Subject: " + encoded_word("会议纪要")


def _pop3_lessons():
    from simulator.course.catalog import load_catalog
    from simulator.course.setup import lesson_mail, lesson_profile, lesson_variables

    catalog = load_catalog()
    for lesson_id, versions in sorted(catalog.lessons.items()):
        for lesson in versions.values():
            if lesson.protocol != "pop3" or lesson.path.parent.name != "pop3":
                continue
            mail = lesson_mail(lesson, lesson_variables(lesson, lesson_profile(lesson)))
            # POP3 counts octets on the wire: every line ends with CR LF (RFC 1939 5, LIST / STAT).
            sizes = [len((c if isinstance(c, bytes) else c.encode()).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")) for _, c in mail]
            if sizes:
                yield pytest.param(lesson.path, sizes, id=str(lesson.path.relative_to(REPO)))


@pytest.mark.parametrize("path, sizes", list(_pop3_lessons()))
def test_pop3_sizes_shown_in_lessons_are_the_preloaded_messages_sizes(path, sizes):
    """STAT, LIST, RETR and PASS replies printed in a POP3 lesson match the messages it preloads."""
    from itertools import combinations

    totals = {(k, sum(c)) for k in range(len(sizes) + 1) for c in combinations(sizes, k)}
    checked = 0
    for number, _before, lines in text_blocks(path.read_text(encoding="utf-8")):
        for line in lines:
            summary = re.search(r"(?:^\+OK |maildrop has |^\+OK )(\d+) messages? \((\d+) octets\)|^\+OK (\d+) (\d+)$", line)
            if summary:
                count, total = (int(summary.group(1)), int(summary.group(2))) if summary.group(1) else (int(summary.group(3)), int(summary.group(4)))
                assert (count, total) in totals, f"{path.name}:{number}: {line!r} but the messages are {sizes} octets"
                checked += 1
            retr = re.fullmatch(r"\+OK (\d+) octets", line)
            if retr:
                assert int(retr.group(1)) in sizes, f"{path.name}:{number}: {line!r} but the messages are {sizes} octets"
                checked += 1
    if path.name.startswith("pop3-login-retr"):
        assert checked >= 4, "the scanner no longer finds the sizes the first POP3 lesson prints"


def test_a_chinese_fixture_subject_is_encoded_by_computation():
    """Preloaded mail with a non-ASCII subject gets an RFC 2047 encoded-word, never raw UTF-8 in the header."""
    from simulator.course.catalog import load_catalog
    from simulator.course.patterns import encoded_word
    from simulator.course.setup import lesson_mail, lesson_profile, lesson_variables

    lesson = load_catalog().get("pop3-login-retr", "zh")
    mail = lesson_mail(lesson, lesson_variables(lesson, lesson_profile(lesson)))
    header = mail[0][1].split(b"\r\n\r\n", 1)[0]
    assert header.isascii()
    assert f"Subject: {encoded_word('欢迎使用 POP3')}".encode() in header


def printed_retr_sizes(path: Path) -> list[tuple[str, str]]:
    """(`RETR n`, `+OK N octets`) pairs a lesson prints in its text blocks."""
    found = []
    for _, _, lines in text_blocks(path.read_text(encoding="utf-8")):
        for command, reply in zip(lines, lines[1:]):
            if re.fullmatch(r"RETR \d+", command.strip()) and re.fullmatch(r"\+OK \d+ octets", reply.strip()):
                found.append((command.strip(), reply.strip()))
    return found


@pytest.mark.parametrize(
    "path", [p for p in LESSON_FILES if printed_retr_sizes(p) and "mail:" not in p.read_text(encoding="utf-8").split("\n---", 1)[0]],
    ids=lambda p: p.name,
)
def test_retr_sizes_a_lesson_prints_are_what_its_replay_is_answered(path):
    """A message the lesson itself sends gets a Received line from the server, so its size is only
    known by sending it: replay the lesson's solution and compare with the server's own answer."""
    from simulator.course.parser import parse_lesson_text
    from simulator.course.replay import replay_sync

    result = replay_sync(parse_lesson_text(path.read_text(encoding="utf-8"), path))
    assert result.ok, result.message
    answered = {sent: reply[0] for sent, reply in result.exchanges if sent.startswith("RETR") and reply}
    for command, printed in printed_retr_sizes(path):
        assert answered.get(command) == printed, (command, printed, answered)
