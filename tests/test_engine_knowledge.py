"""The knowledge files: complete, bilingual, consistent, and covering the seed tutorial."""

from __future__ import annotations

import re
import string
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from simulator.engine import helpers
from simulator.engine import knowledge as kb

CJK = re.compile(r"[\u4e00-\u9fff]")
REPO = Path(__file__).resolve().parent.parent
SEED_NAME = "000_c13da0eb7b1f4bd6.txt"


# --- loading and bilingual entries -----------------------------------------------------------


def test_every_file_loads() -> None:
    files = kb.all_files()
    assert set(files) == set(kb.FILES)
    for name in kb.FILES:
        assert (kb.KNOWLEDGE_DIR / f"{name}.toml").is_file()


def _localized_tables(value: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every dict in the tree that holds `en` or `zh`."""
    if isinstance(value, dict):
        if "en" in value or "zh" in value:
            yield path, value
            return
        for key, child in value.items():
            yield from _localized_tables(child, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _localized_tables(child, f"{path}[{index}]")


def _all_localized() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{name}:{path}", table)
        for name, data in kb.all_files().items()
        for path, table in _localized_tables(data)
    ]


def test_there_are_many_localized_entries() -> None:
    assert len(_all_localized()) > 500


def test_every_entry_has_en_and_zh() -> None:
    missing = [
        path
        for path, table in _all_localized()
        if not (isinstance(table.get("en"), str) and table["en"].strip())
        or not (isinstance(table.get("zh"), str) and table["zh"].strip())
        or set(table) - {"en", "zh"}
    ]
    assert missing == []


def test_chinese_is_chinese_and_english_is_not_a_copy() -> None:
    wrong = [
        path
        for path, table in _all_localized()
        if not CJK.search(table["zh"]) or table["en"] == table["zh"] or len(CJK.findall(table["en"])) > 8
    ]
    assert wrong == []


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_languages_use_the_same_placeholders() -> None:
    for path, table in _localized_tables(kb.load("messages")):
        assert _placeholders(table["en"]) == _placeholders(table["zh"]), path


_REQUIRED_FIELDS: list[tuple[str, str, tuple[str, ...]]] = [
    ("smtp_commands", "commands", ("syntax", "rfc", "status", "success", "failure", "example", "summary", "mistakes")),
    ("smtp_commands", "extensions", ("rfc", "keyword", "parameters", "summary")),
    ("reply_codes", "codes", ("text", "rfc", "meaning", "next")),
    ("enhanced_codes", "details", ("title", "rfc", "meaning")),
    ("capabilities", "smtp", ("rfc", "params", "meaning")),
    ("capabilities", "pop3", ("rfc", "params", "meaning")),
    ("capabilities", "sasl", ("rfc", "meaning")),
    ("pop3_commands", "commands", ("syntax", "rfc", "states", "multiline", "example", "summary", "ok", "err")),
    ("pop3_codes", "response_codes", ("rfc", "meaning", "next")),
    ("personas", "personas", ("title", "summary")),
]


@pytest.mark.parametrize(("file", "table", "fields"), _REQUIRED_FIELDS)
def test_entries_have_their_fields(file: str, table: str, fields: tuple[str, ...]) -> None:
    entries = kb.load(file)[table]
    assert entries
    for name, entry in entries.items():
        for field in fields:
            assert field in entry, f"{file} [{table}.{name}] lacks {field}"


# --- completeness ----------------------------------------------------------------------------

SMTP_COMMANDS = "HELO EHLO MAIL RCPT DATA BDAT RSET NOOP VRFY EXPN HELP QUIT STARTTLS AUTH ETRN TURN ATRN".split()
SMTP_EXTENSIONS = "SIZE PIPELINING CHUNKING DSN".split()
REPLY_CODES = (
    "211 214 220 221 235 250 251 252 253 334 354 421 432 450 451 452 454 455 458 459 500 501 502 503 504 "
    "521 530 534 535 538 550 551 552 553 554 555"
).split()
ENHANCED_DETAILS = (
    ["0.0"]
    + [f"1.{d}" for d in range(0, 11)]
    + [f"2.{d}" for d in range(0, 5)]
    + [f"3.{d}" for d in range(0, 6)]
    + [f"4.{d}" for d in range(0, 8)]
    + [f"5.{d}" for d in range(0, 7)]
    + [f"6.{d}" for d in range(0, 6)]
    + [f"7.{d}" for d in range(0, 14)]
)
EHLO_KEYWORDS = (
    "PIPELINING SIZE 8BITMIME SMTPUTF8 STARTTLS AUTH ENHANCEDSTATUSCODES DSN CHUNKING BINARYMIME ETRN VRFY "
    "ATRN HELP DELIVERBY AUTH=LOGIN MAILCOMPRESS coremail"
).split()
SASL = "LOGIN PLAIN CRAM-MD5 XOAUTH2 XOAUTH OAUTHBEARER PLAIN-CLIENTTOKEN".split()
POP3_TAGS = "TOP USER UIDL SASL RESP-CODES LOGIN-DELAY PIPELINING EXPIRE IMPLEMENTATION STLS AUTH-RESP-CODE X-GOOGLE-VERHOEVEN".split()
POP3_COMMANDS = "USER PASS APOP AUTH CAPA STLS STAT LIST RETR DELE NOOP RSET TOP UIDL QUIT".split()
POP3_RESPONSE_CODES = "IN-USE LOGIN-DELAY SYS/TEMP SYS/PERM AUTH UTF8".split()
PERSONAS = "qq sina 163 gmail outlook postfix rfc".split()


@pytest.mark.parametrize("verb", SMTP_COMMANDS)
def test_smtp_command_known(verb: str) -> None:
    assert kb.smtp_command(verb) is not None


@pytest.mark.parametrize("name", SMTP_EXTENSIONS)
def test_seed_extensions_known(name: str) -> None:
    entry = kb.smtp_extension(name)
    assert entry is not None and kb.smtp_capability(entry["keyword"]) is not None


@pytest.mark.parametrize("code", REPLY_CODES)
def test_reply_code_known(code: str) -> None:
    assert kb.reply_code(code) is not None


@pytest.mark.parametrize("digit", "2345")
def test_first_digits(digit: str) -> None:
    assert kb.reply_digit(1, digit) is not None


@pytest.mark.parametrize("digit", "012345")
def test_second_digits(digit: str) -> None:
    assert kb.reply_digit(2, digit) is not None


def test_enhanced_codes_cover_the_registry_basics() -> None:
    assert [c for c in "245" if kb.enhanced_class(c) is None] == []
    assert [s for s in range(8) if kb.enhanced_subject(s) is None] == []
    missing = [key for key in ENHANCED_DETAILS if kb.enhanced_detail(*key.split(".")) is None]
    assert missing == []


@pytest.mark.parametrize("keyword", EHLO_KEYWORDS)
def test_ehlo_keyword_known(keyword: str) -> None:
    assert kb.smtp_capability(keyword) is not None


@pytest.mark.parametrize("name", SASL)
def test_sasl_mechanism_known(name: str) -> None:
    assert kb.sasl_mechanism(name) is not None


@pytest.mark.parametrize("tag", POP3_TAGS)
def test_pop3_tag_known(tag: str) -> None:
    assert kb.pop3_capability(tag) is not None


@pytest.mark.parametrize("verb", POP3_COMMANDS)
def test_pop3_command_known(verb: str) -> None:
    entry = kb.pop3_command(verb)
    assert entry is not None
    assert set(entry["states"]) <= {"AUTHORIZATION", "TRANSACTION"}
    assert entry["multiline"] in ("never", "always", "without-argument")


@pytest.mark.parametrize("code", POP3_RESPONSE_CODES)
def test_pop3_response_code_known(code: str) -> None:
    assert kb.pop3_response_code(code) is not None


@pytest.mark.parametrize("indicator", ["+OK", "-ERR", "+"])
def test_pop3_indicators(indicator: str) -> None:
    assert kb.pop3_indicator(indicator) is not None


def test_personas_known() -> None:
    assert set(PERSONAS) <= set(kb.personas())


# --- internal consistency --------------------------------------------------------------------


def test_command_reply_codes_are_explained() -> None:
    known = set(kb.reply_codes())
    for verb, entry in kb.smtp_commands().items():
        listed = set(entry["success"]) | set(entry["failure"]) | set(entry.get("on", {}))
        assert listed <= known, (verb, listed - known)
    for name in ("connect", "end_of_data"):
        assert set(kb.smtp_event(name)["on"]) <= known


def test_extension_commands_name_an_advertised_keyword() -> None:
    for verb, entry in kb.smtp_commands().items():
        if entry["keyword"]:
            assert kb.smtp_capability(entry["keyword"]) is not None, verb


def test_persona_notes_are_well_formed() -> None:
    notes = kb.load("personas")["notes"]
    ids = [note["id"] for note in notes]
    assert len(ids) == len(set(ids))
    for note in notes:
        assert set(note["personas"]) <= set(kb.personas()), note["id"]
        assert note["protocol"] in ("smtp", "pop3")
        assert "text" in note or note["personas"], note["id"]
        for key in ("text", "sent"):
            if key in note:
                re.compile(note[key])


@pytest.mark.parametrize(
    ("protocol", "text", "expected"),
    [
        ("smtp", "Login Fail. Please enter your authorization code to login. More information in http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=28&&no=1001256", "qq-authorization-code"),
        ("smtp", "Error: 请使用授权码登录。详情请看: http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=28&&no=1001256", "qq-authorization-code"),
        ("smtp", "Login fail. A secure connection is requiered(such as ssl). More information at http://service.mail.qq.com/cgi-bin/help?id=28", "qq-requiered"),
        ("smtp", "Error: need EHLO and AUTH first !", "qq-need-ehlo-and-auth"),
        ("smtp", "mail from address must be same as authorization user", "qq-same-as-authorization-user"),
        ("smtp", "DT:SPM 163 smtp10,DsCowAB", "163-dt-spm"),
        ("smtp", "DT:SUM envelope sender differs", "163-dt-sum"),
        ("smtp", "RP:FRL", "163-rp-frl"),
        ("smtp", "authentication is required,163 smtp12,abc 1700000000", "163-authentication-required"),
        ("smtp", "Requested mail action not taken: too much fail authentication", "163-too-much-fail"),
        ("smtp", "5.7.8  https://support.google.com/mail/?p=BadCredentials abc - gsmtp", "gmail-bad-credentials"),
        ("smtp", "5.7.57 Client not authenticated to send mail.", "outlook-5-7-57"),
        ("smtp", "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.", "outlook-5-7-139"),
        ("smtp", "5.7.1 <u@remote.example>: Relay access denied", "postfix-relay-access-denied"),
        ("pop3", "Please using authorized code to login.", "qq-pop3-authorized-code"),
    ],
)
def test_recognisable_texts_find_their_note(protocol: str, text: str, expected: str) -> None:
    # Recognised by text alone: no persona given.
    found = [n.id for n in kb.persona_notes(protocol=protocol, code=None, text=text)]
    assert expected in found


def test_persona_only_notes_need_the_persona() -> None:
    kwargs = dict(protocol="smtp", code="250", text="sender <a@sina.com> ok", after="MAIL FROM: a@sina.com")
    assert [n.id for n in kb.persona_notes(persona="sina", **kwargs)] == ["sina-mail-from-without-brackets"]
    assert kb.persona_notes(persona="gmail", **kwargs) == []
    bracketed = dict(kwargs, after="MAIL FROM:<a@sina.com>")
    assert kb.persona_notes(persona="sina", **bracketed) == []


# --- the seed tutorial -----------------------------------------------------------------------


def test_seed_list_is_covered_by_the_knowledge() -> None:
    seed = kb.seed()
    assert [v for v in seed["smtp_commands"] if kb.smtp_command(v) is None] == []
    assert [e for e in seed["smtp_extensions"] if kb.smtp_extension(e) is None] == []
    assert [c for c in seed["reply_codes"] if kb.reply_code(c) is None] == []
    assert [m for m in seed["sasl_mechanisms"] if kb.sasl_mechanism(m) is None] == []
    assert [p for p in seed["login_prompts"] if kb.login_prompt(p) is None] == []
    for code in seed["enhanced_codes"]:
        _klass, subject, detail = code.split(".")
        assert kb.enhanced_detail(subject, detail) is not None


SEED_PATH = Path(__file__).resolve().parent / "fixtures" / SEED_NAME


@pytest.fixture(scope="module")
def seed_text() -> str:
    """The seed tutorial (a Chinese telnet walkthrough of smtp.qq.com / smtp.sina.com), kept in tests/fixtures."""
    return SEED_PATH.read_text(encoding="utf-8")


def test_seed_document_codes_are_all_in_the_list(seed_text: str) -> None:
    mentioned = set(re.findall(r"(?<![\d.])([2-5][0-5]\d)(?![\d.])", seed_text))
    assert len(mentioned) >= 25
    assert mentioned - set(kb.seed()["reply_codes"]) == set()


def test_seed_document_commands_are_all_in_the_list(seed_text: str) -> None:
    listed_alone = set(re.findall(r"^([A-Z][A-Z0-9]{2,})(?: (?:FROM|TO))?\s*$", seed_text, re.MULTILINE))
    typed = {
        word.upper()
        for word in re.findall(r"\b(helo|ehlo|starttls|auth|mail from|rcpt to|data|quit|rset|vrfy)\b", seed_text, re.IGNORECASE)
    }
    mentioned = listed_alone | {w.split()[0] for w in typed}
    seed = kb.seed()
    covered = set(seed["smtp_commands"]) | set(seed["smtp_extensions"])
    assert {"HELO", "EHLO", "TURN", "ATRN", "SIZE", "ETRN", "PIPELINING", "CHUNKING", "DSN", "AUTH"} <= mentioned
    assert mentioned - covered == set()


# --- lookups ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "verb"),
    [("mail from: <a@b>", "MAIL"), ("RCPT TO:<x@y>", "RCPT"), ("  ehlo x", "EHLO"), ("auth login", "AUTH"), ("", None), ("123", None)],
)
def test_command_verb(typed: str, verb: str | None) -> None:
    assert kb.command_verb(typed) == verb


def test_reply_code_meaning_depends_on_the_command() -> None:
    general = kb.reply_code("251")["meaning"]["en"]
    after_etrn = kb.reply_code("251", after="ETRN example.org")["meaning"]["en"]
    assert general != after_etrn and "ETRN" in after_etrn
    assert kb.reply_code("999") is None


def test_pop3_response_codes_are_hierarchical() -> None:
    assert kb.pop3_response_code("SYS/FOO") is kb.pop3_response_code("SYS")
    assert kb.pop3_response_code("sys/temp") is not kb.pop3_response_code("SYS")
    assert kb.pop3_response_code("NOPE") is None


def test_localized_falls_back() -> None:
    assert kb.localized({"en": "hi", "zh": "你好"}, "zh") == "你好"
    assert kb.localized({"en": "hi"}, "zh") == "hi"
    assert kb.localized("plain", "en") == "plain"
    assert kb.localized(None, "en") == ""


def test_message_formats_and_rejects_unknown_keys() -> None:
    assert "250" in kb.message("explain.unknown_code", "en", code="250")
    with pytest.raises(kb.KnowledgeError):
        kb.message("explain.no_such_thing", "en")
    with pytest.raises(kb.KnowledgeError):
        kb.load("no_such_file")


@pytest.mark.parametrize(
    ("explicit", "environ", "expected"),
    [
        ("zh", {}, "zh"),
        ("en", {"MAILLAB_LANG": "zh"}, "en"),
        ("zh_CN.UTF-8", {}, "zh"),
        (None, {"MAILLAB_LANG": "zh"}, "zh"),
        (None, {"MAILLAB_LANG": "zh", "LANG": "en_US.UTF-8"}, "zh"),
        ("fr", {"MAILLAB_LANG": "zh"}, "zh"),
        (None, {"MAILLAB_LANG": "klingon", "LANG": "zh_CN.UTF-8"}, "zh"),
        (None, {"LANG": "zh_TW.UTF-8"}, "zh"),
        (None, {"LC_MESSAGES": "zh_CN.GBK", "LANG": "en_US.UTF-8"}, "zh"),
        (None, {"LC_ALL": "en_GB.UTF-8", "LANG": "zh_CN.UTF-8"}, "en"),
        (None, {"LC_ALL": "C", "LANG": "zh_CN.UTF-8"}, "en"),
        (None, {"LANG": "de_DE.UTF-8"}, "en"),
        (None, {}, "en"),
    ],
)
def test_resolve_language(explicit: str | None, environ: dict[str, str], expected: str) -> None:
    assert kb.resolve_language(explicit, environ) == expected


def test_resolve_language_reads_the_real_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MAILLAB_LANG", "zh")
    assert kb.resolve_language() == "zh"
    monkeypatch.delenv("MAILLAB_LANG")
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert kb.resolve_language() == "zh"


def test_as_lang() -> None:
    assert kb.as_lang("ZH") == "zh"
    with pytest.raises(ValueError):
        kb.as_lang("fr")


# --- codec helpers against the RFC examples --------------------------------------------------


def test_cram_md5_rfc2195_example() -> None:
    challenge = helpers.b64decode_strict("PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+")
    assert challenge == b"<1896.697170952@postoffice.reston.mci.net>"
    assert helpers.cram_md5_digest("tanstaaftanstaaf", challenge) == "b913a602c7eda7a495b4e6e7334d3890"
    line = helpers.cram_md5_response("tim", "tanstaaftanstaaf", challenge)
    assert line == "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"
    assert helpers.parse_cram_md5(helpers.b64decode_strict(line)) == ("tim", "b913a602c7eda7a495b4e6e7334d3890")


def test_apop_rfc1939_example() -> None:
    stamp = helpers.apop_timestamp("+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>")
    assert stamp == "<1896.697170952@dbc.mtview.ca.us>"
    assert helpers.apop_digest(stamp, "tanstaaf") == "c4c9334bac560ecc979e58001b3e22fb"
    assert helpers.apop_timestamp("+OK QQMail POP3 Server v1.0 Service Ready(QQMail v2.0)") is None


def test_plain_example() -> None:
    assert helpers.plain_payload("user@example.com", "secret") == "AHVzZXJAZXhhbXBsZS5jb20Ac2VjcmV0"
    decoded = helpers.decode_base64_text("AHVzZXJAZXhhbXBsZS5jb20Ac2VjcmV0")
    assert decoded is not None and decoded.text == "\\0user@example.com\\0secret" and not decoded.exact


@pytest.mark.parametrize(
    ("encoded", "text"),
    [("VXNlcm5hbWU6", "Username:"), ("UGFzc3dvcmQ6", "Password:"), ("dXNlcm5hbWU6", "username:")],
)
def test_login_prompts(encoded: str, text: str) -> None:
    assert helpers.b64encode_text(text) == encoded
    decoded = helpers.decode_base64_text(encoded)
    assert decoded is not None and decoded.text == text and decoded.exact
    assert kb.login_prompt(text) is not None


def test_login_payload_gives_two_lines() -> None:
    assert helpers.login_payload("service@heep.cq", "secret") == ("c2VydmljZUBoZWVwLmNx", "c2VjcmV0")
    user, password = helpers.login_payload("张三@例子.中国", "授权码")
    assert helpers.b64decode_strict(user).decode("utf-8") == "张三@例子.中国"
    assert helpers.b64decode_strict(password).decode("utf-8") == "授权码"


def test_xoauth2_round_trip() -> None:
    payload = helpers.xoauth2_payload("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")
    assert payload == (
        "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
    )
    assert helpers.parse_xoauth2(helpers.b64decode_strict(payload))[0] == "someuser@example.com"
    with pytest.raises(helpers.SASLError):
        helpers.parse_xoauth2(b"nothing here")


@pytest.mark.parametrize("line", ["", "abc", "a b c d", "Zm9v!", "250 ok", "=="])
def test_not_base64(line: str) -> None:
    assert helpers.decode_base64_text(line) is None


def test_xtext_is_shared_with_the_servers() -> None:
    assert helpers.xtext_encode("a+b=c") == "a+2Bb+3Dc"
    assert helpers.xtext_decode("a+2Bb+3Dc") == "a+b=c"


# --- the engine stays free of UI and Twisted -------------------------------------------------


def test_engine_imports_neither_textual_nor_twisted() -> None:
    code = (
        "import sys, simulator.engine, simulator.engine.session, simulator.engine.explain;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'twisted'));"
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == ""


def test_every_problem_key_the_engine_reports_has_a_sentence() -> None:
    engine = REPO / "simulator" / "engine"
    source = "\n".join(path.read_text(encoding="utf-8") for path in engine.glob("*.py"))
    keys = set(re.findall(r'(?:problems|notices)\.append\("([a-z_0-9]+)"\)', source))
    keys |= set(re.findall(r'\("([a-z_0-9]+)",\)', source))  # one-key tuples: ("not_a_reply",)
    keys |= set(re.findall(r'keys\.append\("([a-z_0-9]+)"\)', source))
    assert len(keys) > 20
    assert keys - set(kb.load("messages")["problems"]) == set()
