"""What a profile file may contain, and which reply codes fit which command.

The linter (`maillab lint`) and the loader share this table, so a profile that lints clean is a
profile the servers can run, and every mistake is reported as `file:line: what is wrong`.
"""

from __future__ import annotations

from typing import Any

# --- the shape of a profile ----------------------------------------------------------------------

STR, INT, NUM, BOOL = "string", "whole number", "number", "true or false"
LIST_STR = "list of strings"
REPLY = "reply (a string or a list of strings)"
CAPS = "list of capabilities"

POLICY_TYPES: dict[str, Any] = {
    "strict_syntax": BOOL,
    "require_helo": BOOL,
    "helo_check": ("none", "fqdn"),
    "delay_reject": BOOL,
    "undeclared_8bit": ("accept", "note", "refuse"),
    "require_auth_for_mail": BOOL,
    "sender_must_match_auth": BOOL,
    "require_tls_for_auth": BOOL,
    "require_tls_for_mail": BOOL,
    "mechanisms_requiring_tls": LIST_STR,
    "relay": ("authenticated", "never", "open"),
    "max_message_size": INT,
    "max_recipients": INT,
    "vrfy": ("252", "verify", "disabled"),
    "expn": ("252", "verify", "disabled"),
    "atrn": BOOL,
    "smtp_idle_timeout": NUM,
    "pop3_idle_timeout": NUM,
    "max_command_line": INT,
    "max_auth_line": INT,
    "max_pop3_line": INT,
    "max_connections": INT,
    "max_connections_per_client": INT,
    "max_auth_failures": INT,
    "auth_failure_action": ("disconnect", "refuse"),
    "greylist_delay": NUM,
    "tarpit_delay": NUM,
    "login_delay": NUM,
    "expire_days": INT,
    "implicit_tls_only": BOOL,
    "max_sessions": INT,
    "fd_headroom": INT,
    "max_session_time": NUM,
    "min_data_rate": NUM,
    "rate_grace": NUM,
    "auth_failure_delay": NUM,
    "auth_failure_delay_max": NUM,
    "auth_lockout_failures": INT,
    "auth_lockout_window": NUM,
    "hide_unknown_users": BOOL,
    "mailbox_quota": INT,
    "quota_full_tempfail": BOOL,
    "min_free_disk": INT,
    "log_queue_lines": INT,
    "transcript_queue_bytes": INT,
}

QUIRK_TYPES: dict[str, Any] = {
    "smtp_unimplemented": LIST_STR,
    "pop3_unimplemented": LIST_STR,
    "enhanced_codes": ("auto", "success-only", "never"),
    "disconnect_after_unknown": INT,
    "accept_any_secret": BOOL,
}

SCHEMA: dict[str, Any] = {
    "extends": STR,
    "name": STR,
    "description": STR,
    "seed": INT,
    "identity": {"hostname": STR, "pop3_hostname": STR, "implementation": STR},
    "accounts": [
        {
            "address": STR,
            "secret": STR,
            "secret_kind": ("password", "authorization code", "app password"),
            "password": STR,
            "note": STR,
        }
    ],
    "domains": {"local": LIST_STR, "relay": LIST_STR},
    "policies": POLICY_TYPES,
    "quirks": QUIRK_TYPES,
    "smtp": {"capabilities": CAPS, "replies": {"*": REPLY}, "close_after": LIST_STR},
    "pop3": {"greeting": STR, "capabilities": CAPS, "replies": {"*": REPLY}, "close_after": LIST_STR},
    "mail": [{"to": STR, "file": STR, "content": STR}],
    "faults": [
        {
            "protocol": ("smtp", "pop3"),
            "command": STR,
            "argument": STR,
            "account": STR,
            "client": STR,
            "nth": INT,
            "every": INT,
            "after": INT,
            "from_seconds": NUM,
            "probability": NUM,
            "times": INT,
            "scope": ("session", "server"),
            "reply": REPLY,
            "delay": NUM,
            "drop": BOOL,
        }
    ],
}

# --- reply keys and the command they answer ------------------------------------------------------

#: SMTP reply key -> the command it answers ("*" any command, "CONNECT" the greeting).
SMTP_REPLY_COMMAND: dict[str, str] = {
    "greeting": "CONNECT", "helo": "HELO", "ehlo": "EHLO", "noop": "NOOP", "rset": "RSET", "quit": "QUIT",
    "mail_ok": "MAIL", "rcpt_ok": "RCPT", "rcpt_relay_ok": "RCPT", "data_start": "DATA", "data_ok": "DATA-END",
    "bdat_ok": "BDAT", "help": "HELP", "help_topic": "HELP", "help_unknown": "HELP",
    "vrfy_cannot": "VRFY", "vrfy_ok": "VRFY", "vrfy_unknown": "VRFY", "vrfy_disabled": "VRFY", "vrfy_syntax": "VRFY",
    "expn_cannot": "EXPN", "expn_ok": "EXPN", "expn_unknown": "EXPN", "expn_disabled": "EXPN", "expn_syntax": "EXPN",
    "starttls_ready": "STARTTLS", "starttls_unavailable": "STARTTLS", "starttls_syntax": "STARTTLS",
    "tls_already": "STARTTLS", "tls_required": "*",
    "auth_username_prompt": "AUTH", "auth_password_prompt": "AUTH", "auth_plain_prompt": "AUTH",
    "auth_cram_challenge": "AUTH", "auth_ok": "AUTH", "auth_failed": "AUTH", "auth_aborted": "AUTH",
    "auth_bad_base64": "AUTH", "auth_malformed": "AUTH", "auth_unknown_mechanism": "AUTH", "auth_already": "AUTH",
    "auth_in_transaction": "AUTH", "auth_syntax": "AUTH", "auth_not_enabled": "AUTH", "auth_line_too_long": "AUTH",
    "auth_required": "*", "auth_encryption_required": "AUTH", "auth_failures_refused": "AUTH",
    "too_many_errors": "*", "sender_not_owned": "MAIL",
    "need_helo": "*", "nested_mail": "MAIL", "need_mail": "*", "need_rcpt": "*", "no_valid_recipients": "DATA",
    "transaction_in_progress": "*", "unknown_command": "*", "not_implemented": "*", "turn_refused": "TURN",
    "helo_syntax": "HELO", "ehlo_syntax": "EHLO", "helo_not_fqdn": "HELO", "mail_syntax": "MAIL", "rcpt_syntax": "RCPT",
    "bad_sender_syntax": "MAIL", "bad_recipient_syntax": "RCPT",
    "mail_missing_brackets": "MAIL", "rcpt_missing_brackets": "RCPT",
    "data_ok_undeclared_8bit": "DATA-END", "undeclared_8bit": "DATA-END", "no_arguments": "*", "unsupported_option": "*",
    "bad_parameter": "*", "utf8_not_declared": "*", "size_exceeded_declared": "MAIL", "size_exceeded": "DATA-END",
    "too_many_recipients": "RCPT", "relay_denied": "RCPT", "unknown_user": "RCPT", "greylisted": "RCPT", "mailbox_full": "RCPT", "mailbox_full_temp": "RCPT",
    "line_too_long": "*", "bad_characters": "*", "data_after_bdat": "DATA", "bdat_syntax": "BDAT",
    "bdat_after_failure": "BDAT", "storage_failed": "DATA-END", "storage_full": "DATA-END", "dmarc_rejected": "DATA-END",
    "etrn_syntax": "ETRN", "etrn_no_mail": "ETRN", "etrn_started": "ETRN", "etrn_not_allowed": "ETRN",
    "atrn_refused": "ATRN", "atrn_auth_required": "ATRN", "atrn_no_mail": "ATRN", "atrn_unable": "ATRN",
    "timeout": "*", "shutdown": "*", "too_many_connections": "CONNECT",
}

POP3_REPLY_KEYS = frozenset(
    """greeting user_ok user_unknown user_syntax pass_ok pass_failed pass_without_user pass_syntax in_use
    apop_ok apop_failed apop_syntax apop_unavailable auth_ok auth_failed auth_aborted auth_bad_base64
    auth_malformed auth_unknown_mechanism auth_mechanisms auth_username_prompt auth_password_prompt
    auth_plain_prompt auth_cram_challenge tls_required capa stls_ok stls_active stls_unavailable stat
    list_header list_one uidl_header uidl_one no_such_message message_deleted bad_number retr top top_syntax
    dele noop rset quit quit_update quit_update_empty quit_failed unknown_command wrong_state no_arguments
    line_too_long bad_characters timeout too_many_connections login_delay too_many_auth_failures shutdown""".split()
)

#: Replies RFC 5321 4.3.2 (and the extension RFCs) allow per command; 421 is allowed everywhere.
_COMMON = {421, 500, 501, 530}
ALLOWED_CODES: dict[str, set[int]] = {
    "CONNECT": {220, 554, 421},
    "HELO": {250, 504, 550, 502} | _COMMON,
    "EHLO": {250, 504, 550, 502} | _COMMON,
    "MAIL": {250, 552, 451, 452, 550, 553, 554, 503, 455, 555, 501, 504, 530} | _COMMON,
    # 554 is not in RFC 5321's RCPT list, but Postfix and most MTAs use it for policy refusals
    # ("Relay access denied"); the textbook persona reproduces Postfix, so it is allowed.
    "RCPT": {250, 251, 550, 551, 552, 553, 554, 450, 451, 452, 503, 455, 555, 501, 504, 530} | _COMMON,
    "DATA": {354, 503, 554, 451, 452, 450, 550, 552} | _COMMON,
    "DATA-END": {250, 552, 554, 451, 452, 450, 550, 421},
    "BDAT": {250, 503, 552, 554, 451, 452, 450, 550, 504} | _COMMON,
    "RSET": {250} | _COMMON,
    "VRFY": {250, 251, 252, 550, 551, 553, 502, 504} | _COMMON,
    "EXPN": {250, 252, 550, 500, 502, 504} | _COMMON,
    "HELP": {211, 214, 502, 504} | _COMMON,
    "NOOP": {250} | _COMMON,
    "QUIT": {221} | _COMMON,
    "STARTTLS": {220, 454, 501, 503, 554} | _COMMON,
    "AUTH": {235, 334, 432, 451, 454, 500, 501, 503, 504, 530, 534, 535, 538, 421},
    "ETRN": {250, 251, 252, 253, 458, 459, 500, 501, 503} | _COMMON,
    "TURN": {250, 502, 503} | _COMMON,
    "ATRN": {250, 450, 451, 453, 502, 530} | _COMMON,
    "*": set(range(200, 600)),
}


def smtp_code_fits(command: str, code: int) -> bool:
    """Does RFC 5321 4.3.2 (or the extension's RFC) allow `code` as an answer to `command`?"""
    allowed = ALLOWED_CODES.get(command.upper())
    return True if allowed is None else code in allowed
