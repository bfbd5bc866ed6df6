"""`maillab explain` and `maillab validate`, run as a learner runs them (a subprocess)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mailprotocol import codec as sasl

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / ".venv" / "bin" / "maillab"
CJK = re.compile(r"[\u4e00-\u9fff]")


def maillab(*args: str, lang_env: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "simulator.cli"]
    env = {k: v for k, v in os.environ.items() if k not in ("MAILLAB_LANG", "LC_ALL", "LC_MESSAGES", "LANG")}
    env["LANG"] = "C.UTF-8"
    env["PYTHONIOENCODING"] = "utf-8"
    if lang_env is not None:
        env["MAILLAB_LANG"] = lang_env
    return subprocess.run(command + list(args), capture_output=True, text=True, cwd=REPO, env=env, timeout=60)


# --- explain ----------------------------------------------------------------------------------------


def test_explain_decodes_the_login_prompt() -> None:
    result = maillab("explain", "334 VXNlcm5hbWU6")
    assert result.returncode == 0, result.stderr
    assert "Username:" in result.stdout
    assert "base64" in result.stdout
    assert not CJK.search(result.stdout)


def test_explain_in_chinese() -> None:
    result = maillab("explain", "--lang", "zh", "334 VXNlcm5hbWU6")
    assert result.returncode == 0, result.stderr
    assert "Username:" in result.stdout
    assert CJK.search(result.stdout)


def test_explain_language_from_the_environment() -> None:
    result = maillab("explain", "250 2.1.0 Ok", lang_env="zh_CN.UTF-8")
    assert result.returncode == 0
    assert CJK.search(result.stdout)
    english = maillab("explain", "--lang", "en", "250 2.1.0 Ok", lang_env="zh")
    assert not CJK.search(english.stdout)


def test_explain_multiline_reply_after_a_command() -> None:
    result = maillab(
        "explain", "--after", "EHLO client.example.com",
        "250-smtp.qq.com", "250-AUTH LOGIN PLAIN", "250 8BITMIME",
    )
    assert result.returncode == 0, result.stderr
    assert "AUTH LOGIN PLAIN" in result.stdout and "8BITMIME" in result.stdout


def test_explain_guesses_pop3_and_uses_the_persona() -> None:
    result = maillab("explain", "--profile", "qq", "-ERR Please using authorized code to login.")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("-ERR")
    smtp = maillab("explain", "--profile", "qq", "--after", "AUTH LOGIN",
                   "535 Login Fail. Please enter your authorization code to login.")
    assert "authorization code" in smtp.stdout


def test_explain_pop3_with_an_explicit_protocol() -> None:
    result = maillab("explain", "--protocol", "pop3", "--after", "STAT", "+OK 2 320")
    assert result.returncode == 0
    assert "320" in result.stdout


def test_explain_garbage_is_explained_not_crashed() -> None:
    result = maillab("explain", "hello world")
    assert result.returncode == 0
    assert "not" in result.stdout.lower()


def test_explain_unknown_profile_is_a_usage_error() -> None:
    result = maillab("explain", "--profile", "no-such-persona", "250 Ok")
    assert result.returncode == 2
    assert "no-such-persona" in result.stderr


# --- validate ---------------------------------------------------------------------------------------


def test_validate_accepts_a_good_line() -> None:
    result = maillab("validate", "--after", "EHLO client.example.com", "MAIL FROM:<alice@example.com>")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.1.0 Ok" in result.stdout  # the reply to expect
    assert "you may send" in result.stdout


def test_validate_refuses_a_space_after_the_colon_on_a_strict_server() -> None:
    result = maillab("validate", "--after", "EHLO client.example.com", "MAIL FROM: <alice@example.com>")
    assert result.returncode == 1
    assert "mail-space-after-colon" in result.stdout
    assert "RFC 5321 4.1.2" in result.stdout
    assert "MAIL FROM:<alice@example.com>" in result.stdout  # the suggestion
    assert "501" in result.stdout


def test_validate_only_warns_on_qq() -> None:
    user, password = sasl.b64encode_text("learner@qq.com"), sasl.b64encode_text("abcdefghijklmnop")
    result = maillab(
        "validate", "--profile", "qq", "--lang", "zh",
        "--after", "helo sis", "--after", "auth login", "--after", user, "--after", password,
        "mail from: <learner@qq.com>",
    )
    assert result.returncode == 0, result.stdout
    assert "警告" in result.stdout and "mail-space-after-colon" in result.stdout
    assert "250 Ok" in result.stdout


def test_validate_sequence_errors_exit_1_with_the_code() -> None:
    result = maillab("validate", "--after", "EHLO client.example.com", "RCPT TO:<bob@example.com>")
    assert result.returncode == 1
    assert "rcpt-before-mail" in result.stdout and "503" in result.stdout


def test_validate_unknown_verb_suggests_the_nearest() -> None:
    result = maillab("validate", "EHOL client.example.com")
    assert result.returncode == 1
    assert "EHLO client.example.com" in result.stdout


def test_validate_pop3() -> None:
    result = maillab("validate", "--protocol", "pop3", "--lang", "zh", "STAT")
    assert result.returncode == 1
    assert "pop3-needs-login" in result.stdout and CJK.search(result.stdout)
    good = maillab("validate", "--protocol", "pop3", "--after", "USER alice@example.com", "PASS alice-secret")
    assert good.returncode == 0, good.stdout


def test_validate_warning_only_exits_0() -> None:
    result = maillab(
        "validate", "--after", "EHLO client.example.com", "--after", "MAIL FROM:<alice@example.com>",
        "--after", "RCPT TO:<bob@example.com>", "--after", "DATA", "--after", "Subject: hi", "--after", "",
        ".hidden line",
    )
    assert result.returncode == 0
    assert "data-leading-dot" in result.stdout and "..hidden line" in result.stdout


@pytest.mark.parametrize("persona", ["gmail", "outlook"])
def test_validate_starttls_in_after_counts_as_a_handshake(persona: str) -> None:
    plain = maillab("validate", "--profile", persona, "--after", "EHLO client.example.com", "AUTH LOGIN")
    assert plain.returncode == 1 and "530" in plain.stdout
    tls = maillab(
        "validate", "--profile", persona,
        "--after", "EHLO client.example.com", "--after", "STARTTLS", "--after", "EHLO client.example.com",
        "AUTH LOGIN",
    )
    assert tls.returncode == 0, tls.stdout


def test_validate_unknown_profile_is_a_usage_error() -> None:
    result = maillab("validate", "--profile", "no-such-persona", "NOOP")
    assert result.returncode == 2
