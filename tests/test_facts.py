"""Facts the knowledge files state about the standards and about the personas, checked against their source.

Each test names the RFC section or persona setting the text relies on; if either side changes, the
test fails instead of the learner being taught something no longer true.
"""

from __future__ import annotations

import re

from mockservers.profile import load_profile
from mockservers.profile_files import bundled_personas
from simulator.engine import knowledge as kb
from simulator.engine.explain import explain_reply


def test_455_and_555_are_defined_by_rfc_5321_itself():
    """RFC 5321 4.2.3 lists both codes; 4.3.2 lists them among MAIL and RCPT replies."""
    for code in ("455", "555"):
        assert kb.reply_code(code)["rfc"].startswith("RFC 5321 4.2.3")
    x4z = kb.reply_digit(2, 4)["meaning"]["en"]
    assert "455" in x4z and "RFC 5321" in x4z and "SIZE 455" not in x4z


def test_data_timeout_mistake_names_the_figure_every_persona_uses():
    """The 10 minutes of RFC 5321 4.5.3.2.6 are the client's; the server's idle timeout is the persona's."""
    mistake = kb.smtp_command("DATA")["mistakes"][0]
    assert "4.5.3.2.6" in mistake["en"] and "4.5.3.2.7" in mistake["en"]
    seconds = {int(n) for n in re.findall(r"(\d+) seconds", mistake["en"])}
    assert seconds == {int(n) for n in re.findall(r"(\d+) 秒", mistake["zh"])}
    for name in bundled_personas():
        assert {int(load_profile(name).policies.smtp_idle_timeout)} == seconds, name


def test_turn_was_deprecated_by_rfc_2821():
    entry = kb.smtp_command("TURN")
    assert "RFC 2821" in entry["rfc"] and "RFC 2821" in entry["summary"]["en"]


def test_pop3_response_code_sections_follow_rfc_2449_and_3206():
    codes = kb.load("pop3_codes")["response_codes"]
    assert codes["LOGIN-DELAY"]["rfc"] == "RFC 2449 8.1.1"
    assert codes["IN-USE"]["rfc"] == "RFC 2449 8.1.2"
    # RFC 3206 4 gives its own examples: SYS/PERM is a corrupted mailbox or a configuration error,
    # not a condition of the user's account (that is AUTH, section 5: "an expired account").
    assert "disabled" not in codes["SYS/PERM"]["meaning"]["en"]
    assert "corrupted mailbox" in codes["SYS/PERM"]["meaning"]["en"]
    assert "expired account" in codes["AUTH"]["meaning"]["en"]
    assert "timeout" in codes["IN-USE"]["next"]["en"] or "inactivity" in codes["IN-USE"]["next"]["en"]


def test_third_digit_is_labelled_by_its_role():
    explanation = explain_reply("250 2.1.0 Ok", after="MAIL FROM:<a@example.com>", lang="en")
    text = explanation.render_text()
    assert "Third digit 0" in text and "x0:" not in text
    assert "第三位数字 0" in explain_reply("250 2.1.0 Ok", after="MAIL FROM:<a@example.com>", lang="zh").render_text()


def test_221_does_not_invite_another_command():
    text = explain_reply("221 2.0.0 Bye", after="QUIT", lang="en").render_text()
    assert "you may send the next one" not in text
    assert "closes the connection" in text


def test_rfc_persona_summary_does_not_promise_word_for_word_texts():
    summary = kb.load("personas")["personas"]["rfc"]["summary"]
    assert "word for word" not in summary["en"] and "一字不差" not in summary["zh"]


def test_gmail_expire_0_is_explained_as_the_pop3_view_only():
    """Gmail's EXPIRE 0 removes a message from POP3, not from the web Inbox (POP setting)."""
    capa = ["+OK Capability list follows", "USER", "RESP-CODES", "EXPIRE 0", "LOGIN-DELAY 300", "UIDL", "."]
    for lang, words in (("en", "web Inbox"), ("zh", "网页版收件箱")):
        explanation = explain_reply(capa, protocol="pop3", after="CAPA", persona="gmail", lang=lang)
        assert "gmail-pop3-expire" in explanation.persona_note_ids
        assert any(words in note for note in explanation.persona_notes)
    assert "Gmail" in kb.pop3_capability("EXPIRE")["meaning"]["en"]


def test_every_session_state_has_a_chinese_name():
    from simulator.engine.session import POP3State, SMTPState

    for section, states in (("smtp_states", SMTPState), ("pop3_states", POP3State)):
        for state in states:
            zh = kb.message(f"{section}.{state.value}", "zh")
            assert re.search(r"[\u4e00-\u9fff]", zh), (section, state)
            assert kb.message(f"{section}.{state.value}", "en") == state.value


def test_validate_cli_prints_chinese_state_names():
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "simulator.cli", "validate", "--lang", "zh", "--after", "EHLO x", "MAIL FROM:<a@example.com>"],
        capture_output=True, text=True, timeout=60,
    )
    assert "会话状态：已打招呼；" in run.stdout, run.stdout + run.stderr
    assert "ready" not in run.stdout
