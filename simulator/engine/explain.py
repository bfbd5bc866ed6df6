"""Explain a server reply to a learner, in English or Chinese, part by part.

`explain_reply()` turns the lines a server sent (plus, when known, the command that caused them
and the persona being imitated) into an `Explanation`: structured fields a TUI can lay out, and
`render_text()` for a terminal. It never raises on bad input: text that is not a reply gets an
explanation that says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, Literal

from mailprotocol import pop3 as core_pop3

from . import knowledge as kb
from .helpers import apop_timestamp, b64encode_text, decode_base64_text, looks_like_base64
from .knowledge import Lang, localized, message
from .replies import (
    POP3Reply,
    SMTPReply,
    looks_like_command,
    looks_like_pop3,
    looks_like_smtp,
    parse_pop3_reply,
    parse_smtp_reply,
    split_lines,
)

Protocol = Literal["smtp", "pop3"]

#: Pass as `after` when the reply is the greeting that follows the TCP connection.
AFTER_CONNECT = "<connect>"
#: Pass as `after` when the reply answers the lone "." that ends DATA.
AFTER_END_OF_DATA = "."

_ALWAYS_POSSIBLE = ("421", "500", "501")


@dataclass(frozen=True)
class DigitNote:
    position: int  # 1, 2 or 3
    digit: str
    meaning: str


@dataclass(frozen=True)
class EnhancedNote:
    code: str  # "5.7.8"
    class_meaning: str
    subject_meaning: str
    detail_title: str | None
    detail_meaning: str


@dataclass(frozen=True)
class ChallengeNote:
    encoded: str
    decoded: str | None  # None when the text is not base64
    meaning: str
    prompt: str | None = None  # "username", "password", "initial", "challenge", "error-detail"


@dataclass(frozen=True)
class CapabilityNote:
    line: str
    keyword: str
    params: str
    meaning: str
    known: bool
    mechanisms: tuple[str, ...] = ()  # one explained line per SASL mechanism on an AUTH/SASL line


@dataclass(frozen=True)
class ResponseCodeNote:
    code: str
    meaning: str
    next: str


@dataclass
class Explanation:
    """Everything the explainer found out about one reply."""

    protocol: Protocol
    lang: Lang
    lines: tuple[str, ...]
    valid: bool
    code: str | None  # SMTP "250"; POP3 "+OK" / "-ERR" / "+"
    meaning: str  # the general meaning of the code / indicator, or why this is not a reply
    after: str | None = None
    digits: list[DigitNote] = field(default_factory=list)
    enhanced: list[EnhancedNote] = field(default_factory=list)
    context: str | None = None  # what this code means after this command
    challenge: ChallengeNote | None = None
    capabilities: list[CapabilityNote] = field(default_factory=list)
    response_codes: list[ResponseCodeNote] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    persona_notes: list[str] = field(default_factory=list)
    persona_note_ids: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    problem_keys: list[str] = field(default_factory=list)

    def render_text(self) -> str:
        """A plain-text rendering for a terminal (no markup, indented sections)."""
        colon = "：" if self.lang == "zh" else ": "

        def label(key: str, **values: str) -> str:
            return message(f"labels.{key}", self.lang, **values) + colon

        out: list[str] = [_prefixed(self.code, self.meaning, "  ")]
        for line in self.lines[:1] if not self.valid else ():
            out.append(f"  > {line}")
        if self.digits:
            out.append(label("digits").rstrip())
            out += [f"  {d.meaning}" for d in self.digits]
        for note in self.enhanced:
            out.append(f"{message('labels.enhanced', self.lang)} {note.code}{colon.strip()}")
            out.append(f"  {label('class')}{note.class_meaning}")
            out.append(f"  {label('subject')}{note.subject_meaning}")
            title = f"{note.detail_title}{colon}" if note.detail_title else ""
            out.append(f"  {label('detail')}{title}{note.detail_meaning}")
        for code in self.response_codes:
            out.append(label("response_code") + _prefixed(f"[{code.code}]", code.meaning, " "))
        if self.context:
            shown = self.after if self.after not in (None, AFTER_CONNECT) else ""
            out.append(f"{label('after', command=shown)}{self.context}" if shown else self.context)
        if self.challenge:
            out.append(f"{label('challenge')}{self.challenge.meaning}")
        if self.capabilities:
            out.append(label("capabilities").rstrip())
            for cap in self.capabilities:
                out.append(f"  {cap.line}{colon}{cap.meaning}")
                out += [f"    - {m}" for m in cap.mechanisms]
        if self.details:
            out.append(label("details").rstrip())
            out += [f"  {d}" for d in self.details]
        if self.persona_notes:
            out.append(label("persona").rstrip())
            out += [f"  {n}" for n in self.persona_notes]
        if self.next_steps:
            out.append(label("next").rstrip())
            out += [f"  {n}" for n in self.next_steps]
        if self.problems:
            out.append(label("problems").rstrip())
            out += [f"  ! {p}" for p in self.problems]
        return "\n".join(out)


def _prefixed(prefix: str | None, text: str, gap: str) -> str:
    """`prefix text`, unless the text already starts with the prefix (POP3 `+OK: ...`)."""
    if not prefix or text.startswith(prefix):
        return text
    return f"{prefix}{gap}{text}"


def explain_reply(
    lines: str | bytes | Iterable[str],
    *,
    protocol: Protocol = "smtp",
    after: str | None = None,
    persona: str | None = None,
    lang: str | None = None,
) -> Explanation:
    """Explain one server reply.

    `after` is the command line that was sent (`"AUTH LOGIN"`, `"RCPT TO:<x>"`), AFTER_CONNECT
    for a greeting or AFTER_END_OF_DATA for the reply to the final dot; `persona` the persona
    name (qq, sina, 163, gmail, outlook, postfix, rfc); `lang` "en"/"zh" or None for the
    environment's choice (see knowledge.resolve_language).
    """
    chosen = kb.resolve_language(lang)
    raw = split_lines(lines)
    if protocol == "pop3":
        return _explain_pop3(raw, after, persona, chosen)
    return _explain_smtp(raw, after, persona, chosen)


# --- SMTP ------------------------------------------------------------------------------------


def _not_a_reply(protocol: Protocol, raw: list[str], lang: Lang, after: str | None) -> Explanation:
    first = next((line for line in raw if line.strip()), "")
    keys: list[str] = []
    if not first:
        keys.append("empty")
    elif looks_like_command(first):
        keys.append("looks_like_command")
    elif protocol == "smtp" and looks_like_pop3(first):
        keys.append("looks_like_pop3")
    elif protocol == "pop3" and looks_like_smtp(first):
        keys.append("looks_like_smtp")
    base = "not_a_reply" if protocol == "smtp" else "not_a_pop3_reply"
    if first:
        keys.insert(0, base)
    texts = [message(f"problems.{key}", lang) for key in keys]
    return Explanation(
        protocol=protocol,
        lang=lang,
        lines=tuple(raw),
        valid=False,
        code=None,
        meaning=texts[0],
        after=after,
        problems=texts[1:],
        problem_keys=keys,
    )


def _explain_smtp(raw: list[str], after: str | None, persona: str | None, lang: Lang) -> Explanation:
    reply = parse_smtp_reply(raw) if any(line.strip() for line in raw) else None
    if reply is None or reply.lines[0].code is None:
        return _not_a_reply("smtp", raw, lang, after)
    code = reply.code or ""
    verb = _verb_of(after)
    entry = kb.reply_code(code, verb)
    explanation = Explanation(
        protocol="smtp",
        lang=lang,
        lines=tuple(raw),
        valid=True,
        code=code,
        meaning=localized(entry["meaning"], lang) if entry else message("explain.unknown_code", lang, code=code),
        after=after,
    )
    explanation.digits = _digits(code, lang)
    explanation.enhanced = _enhanced_notes(reply, lang)
    explanation.context = _smtp_context(code, after, verb, lang)
    if code == "334":
        explanation.challenge = _challenge(reply.lines[-1].text, after, lang)
    if verb == "EHLO" or (verb is None and code == "250" and reply.multiline):
        explanation.capabilities = _ehlo_capabilities(reply, lang)
        if reply.lines:
            host = reply.lines[0].text.split(" ")[0]
            explanation.details.append(message("explain.ehlo_first_line", lang, host=host))
    text = "\n".join(reply.texts)
    _add_persona_notes(explanation, "smtp", code, text, after, persona, lang)
    # What to do next: the challenge's own advice first, then the code's.
    if explanation.challenge is not None:
        explanation.next_steps += _challenge_next(explanation.challenge, lang)
    elif entry:
        explanation.next_steps.append(localized(entry["next"], lang))
    else:
        first = kb.reply_digit(1, code[0])
        explanation.next_steps.append(message("explain.act_on_first_digit", lang))
        if first:
            explanation.next_steps.append(localized(first["meaning"], lang))
    explanation.problem_keys = list(reply.problems)
    explanation.problems = [message(f"problems.{key}", lang) for key in reply.problems]
    return explanation


def _verb_of(after: str | None) -> str | None:
    """The command verb behind `after`; a bare base64 line is an AUTH continuation."""
    if not after or after == AFTER_CONNECT:
        return None
    if after.strip() == AFTER_END_OF_DATA:
        return AFTER_END_OF_DATA
    verb = kb.command_verb(after)
    if verb and (kb.smtp_command(verb) or kb.pop3_command(verb)):
        return verb
    if looks_like_base64(after) or after.strip() == "*":
        return "AUTH"
    return verb


def _digits(code: str, lang: Lang) -> list[DigitNote]:
    notes = []
    first = kb.reply_digit(1, code[0])
    if first:
        notes.append(DigitNote(1, code[0], localized(first["meaning"], lang)))
    second = kb.reply_digit(2, code[1])
    if second:
        notes.append(DigitNote(2, code[1], localized(second["meaning"], lang)))
    notes.append(DigitNote(3, code[2], message("explain.third_digit", lang, digit=code[2])))
    return notes


def _enhanced_notes(reply: SMTPReply, lang: Lang) -> list[EnhancedNote]:
    seen: list[str] = []
    notes: list[EnhancedNote] = []
    for line in reply.lines:
        code = line.enhanced
        if code is None or str(code) in seen:
            continue
        seen.append(str(code))
        klass = kb.enhanced_class(code.klass)
        subject = kb.enhanced_subject(code.subject)
        detail = kb.enhanced_detail(code.subject, code.detail)
        if detail:
            meaning = localized(detail["meaning"], lang)
            if detail.get("vendor"):
                meaning += " " + message("explain.vendor_detail", lang, vendor=detail["vendor"])
        else:
            meaning = message("explain.unknown_detail", lang, key=code.key)
        notes.append(
            EnhancedNote(
                code=str(code),
                class_meaning=localized(klass["meaning"], lang) if klass else "?",
                subject_meaning=localized(subject["meaning"], lang) if subject else "?",
                detail_title=detail.get("title") if detail else None,
                detail_meaning=meaning,
            )
        )
    return notes


def _smtp_context(code: str, after: str | None, verb: str | None, lang: Lang) -> str | None:
    if after == AFTER_CONNECT:
        event = kb.smtp_event("connect")
        on = event.get("on", {}) if event else {}
        return localized(on[code], lang) if code in on else None
    if verb == AFTER_END_OF_DATA:
        event = kb.smtp_event("end_of_data")
        on = event.get("on", {}) if event else {}
        return localized(on[code], lang) if code in on else None
    entry = kb.smtp_command(verb) if verb else None
    if entry is None:
        return None
    on = entry.get("on", {})
    if code in on:
        return localized(on[code], lang)
    if code in entry.get("success", []):
        return message("explain.listed_success", lang, code=code, verb=verb)
    if code in entry.get("failure", []):
        return message("explain.listed_failure", lang, code=code, verb=verb)
    if code in _ALWAYS_POSSIBLE:
        return message("explain.always_possible", lang, code=code)
    return message("explain.unusual_for_command", lang, code=code, verb=verb)


def _ehlo_capabilities(reply: SMTPReply, lang: Lang) -> list[CapabilityNote]:
    notes = []
    for line in reply.lines[1:]:
        text = line.text.strip()
        if not text:
            continue
        keyword, _, params = text.partition(" ")
        entry = kb.smtp_capability(keyword)
        mechanisms: tuple[str, ...] = ()
        upper = keyword.upper()
        if upper == "AUTH" or upper.startswith("AUTH="):
            names = ([upper[5:]] if upper.startswith("AUTH=") else []) + params.split()
            mechanisms = tuple(_mechanism_line(name, lang) for name in names if name)
        meaning = localized(entry["meaning"], lang) if entry else message("explain.unknown_capability", lang)
        notes.append(CapabilityNote(text, upper, params, meaning, entry is not None, mechanisms))
    return notes


def _mechanism_line(name: str, lang: Lang) -> str:
    entry = kb.sasl_mechanism(name)
    if entry is None:
        return message("explain.unknown_mechanism", lang, name=name.upper())
    meaning = localized(entry["meaning"], lang)
    if meaning.upper().startswith(name.upper()):
        return meaning
    return message("explain.mechanism", lang, name=name.upper(), meaning=meaning)


# --- AUTH challenges (SMTP 334 and POP3 "+ ") -----------------------------------------------


def _mechanism_of(after: str | None) -> str | None:
    if after and kb.command_verb(after) == "AUTH":
        parts = after.split()
        return parts[1].upper() if len(parts) > 1 else None
    return None


def _challenge(text: str, after: str | None, lang: Lang) -> ChallengeNote:
    encoded = text.strip()
    mechanism = _mechanism_of(after)
    if not encoded:
        return ChallengeNote("", "", message("explain.challenge_empty", lang), "initial")
    decoded = decode_base64_text(encoded)
    if decoded is None:
        return ChallengeNote(encoded, None, message("explain.challenge_not_base64", lang))
    shown = decoded.text
    prompt_entry = kb.login_prompt(shown)
    base = message("explain.challenge_decoded", lang, encoded=encoded, decoded=shown)
    if prompt_entry is not None:
        prompt = "username" if shown.strip().lower().startswith("user") else "password"
        return ChallengeNote(encoded, shown, f"{base} {localized(prompt_entry, lang)}", prompt)
    if mechanism == "CRAM-MD5" or (shown.startswith("<") and shown.endswith(">") and "@" in shown):
        return ChallengeNote(encoded, shown, f"{base} {message('explain.challenge_cram', lang, decoded=shown)}", "challenge")
    if shown.startswith("{"):
        try:
            json.loads(decoded.data)
        except ValueError:
            pass
        else:
            return ChallengeNote(encoded, shown, f"{base} {message('explain.challenge_xoauth2_error', lang)}", "error-detail")
    return ChallengeNote(encoded, shown, base)


def _challenge_next(challenge: ChallengeNote, lang: Lang) -> list[str]:
    steps: list[str] = []
    if challenge.prompt == "username":
        user = "user@example.com"
        steps.append(message("explain.next_username", lang, user=user, example=b64encode_text(user)))
    elif challenge.prompt == "password":
        steps.append(message("explain.next_password", lang))
    elif challenge.prompt == "initial":
        steps.append(message("explain.next_plain", lang))
    elif challenge.prompt == "challenge":
        steps.append(message("explain.next_cram", lang))
    steps.append(message("explain.next_cancel", lang))
    return steps


# --- POP3 ------------------------------------------------------------------------------------


def _explain_pop3(raw: list[str], after: str | None, persona: str | None, lang: Lang) -> Explanation:
    if not any(line.strip() for line in raw):
        return _not_a_reply("pop3", raw, lang, after)
    verb = _verb_of(after)
    entry = kb.pop3_command(verb) if verb and verb != AFTER_END_OF_DATA else None
    multiline = None
    if entry is not None and verb in core_pop3.VERB_NAMES:
        multiline = core_pop3.multiline_reply(verb, " ".join((after or "").split()[1:]))
    reply = parse_pop3_reply(raw, multiline=multiline)
    if reply.kind == "invalid":
        return _not_a_reply("pop3", raw, lang, after)
    indicator = reply.indicator or ""
    indicator_entry = kb.pop3_indicator(indicator)
    explanation = Explanation(
        protocol="pop3",
        lang=lang,
        lines=tuple(raw),
        valid=True,
        code=indicator,
        meaning=localized(indicator_entry["meaning"], lang) if indicator_entry else indicator,
        after=after,
    )
    explanation.context = _pop3_context(reply, after, entry, lang)
    if reply.kind == "continuation":
        explanation.challenge = _challenge(reply.text, after, lang)
    if reply.response_code:
        code_entry = kb.pop3_response_code(reply.response_code)
        if code_entry:
            explanation.response_codes.append(
                ResponseCodeNote(reply.response_code, localized(code_entry["meaning"], lang), localized(code_entry["next"], lang))
            )
        else:
            explanation.response_codes.append(
                ResponseCodeNote(reply.response_code, message("explain.unknown_response_code", lang, code=reply.response_code), "")
            )
    _pop3_details(explanation, reply, verb, after, lang)
    _add_persona_notes(explanation, "pop3", indicator, "\n".join([reply.text] + list(reply.data)), after, persona, lang)
    if explanation.challenge is not None:
        explanation.next_steps += _challenge_next(explanation.challenge, lang)
    else:
        explanation.next_steps += [code.next for code in explanation.response_codes if code.next]
        if indicator_entry:
            explanation.next_steps.append(localized(indicator_entry["next"], lang))
    explanation.problem_keys = list(reply.problems)
    explanation.problems = [message(f"problems.{key}", lang) for key in reply.problems]
    return explanation


def _pop3_context(reply: POP3Reply, after: str | None, entry: kb.Entry | None, lang: Lang) -> str | None:
    if reply.kind == "continuation":
        return None
    source = kb.pop3_event("connect") if after == AFTER_CONNECT else entry
    if source is None:
        return None
    return localized(source.get("ok" if reply.ok else "err"), lang) or None


def _pop3_details(explanation: Explanation, reply: POP3Reply, verb: str | None, after: str | None, lang: Lang) -> None:
    details = explanation.details
    if after == AFTER_CONNECT or (after is None and reply.ok and not reply.data):
        stamp = apop_timestamp(reply.text)
        if stamp:
            details.append(message("explain.apop_timestamp", lang, timestamp=stamp))
    if verb == "STAT" and reply.ok:
        parts = reply.text.split()
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            details.append(message("explain.stat", lang, count=parts[0], size=parts[1]))
    if verb == "CAPA" and reply.ok:
        for line in reply.data:
            tag, _, params = line.strip().partition(" ")
            if not tag:
                continue
            entry = kb.pop3_capability(tag)
            mechanisms: tuple[str, ...] = ()
            if tag.upper() == "SASL":
                mechanisms = tuple(_mechanism_line(name, lang) for name in params.split())
            meaning = localized(entry["meaning"], lang) if entry else message("explain.unknown_capability", lang)
            explanation.capabilities.append(CapabilityNote(line.strip(), tag.upper(), params, meaning, entry is not None, mechanisms))
    elif verb in ("LIST", "UIDL") and reply.ok and reply.terminated:
        details.append(message("explain.list_count", lang, count=len(reply.data)))
    elif reply.data:
        details.append(message("explain.data_lines", lang, count=len(reply.data)))


# --- personas --------------------------------------------------------------------------------


def _add_persona_notes(
    explanation: Explanation,
    protocol: Protocol,
    code: str,
    text: str,
    after: str | None,
    persona: str | None,
    lang: Lang,
) -> None:
    for note in kb.persona_notes(protocol=protocol, code=code, text=text, after=after, persona=persona):
        explanation.persona_notes.append(localized(note.note, lang))
        explanation.persona_note_ids.append(note.id)
