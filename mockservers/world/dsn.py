"""Bounces: delivery status notifications as RFC 3464 `multipart/report` messages.

Three parts, as RFC 3462/3464 require and Postfix writes them: a text for people, the
`message/delivery-status` fields (per message: Reporting-MTA, Arrival-Date; per recipient:
Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code) and the original headers as
`text/rfc822-headers`. Built with the standard library's `email` package.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText


@dataclass(frozen=True)
class RecipientStatus:
    """What happened to one recipient (RFC 3464 2.3)."""

    recipient: str
    action: str  # "failed" or "delayed" (RFC 3464 2.3.3)
    status: str  # "5.1.1" (RFC 3463)
    diagnostic: str = ""  # the remote server's reply, e.g. "550 5.1.1 <x@y>: ... unknown"
    remote_mta: str = ""  # the host that said it, e.g. "mx.sina.lab"
    command: str = ""  # the command it answered, e.g. "RCPT TO"


def original_headers(message: bytes) -> bytes:
    """The header block of a message (up to the first empty line), CRLF line endings."""
    normalized = message.replace(b"\r\n", b"\n")
    head, _, _ = normalized.partition(b"\n\n")
    return head.replace(b"\n", b"\r\n") + b"\r\n"


def human_text(reporting_mta: str, statuses: list[RecipientStatus]) -> str:
    """The first part, worded like Postfix's default bounce template (bounce(5))."""
    lines = [
        f"This is the mail system at host {reporting_mta}.",
        "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. It's attached below.",
        "",
        "For further assistance, please send mail to postmaster.",
        "",
        "                   The mail system",
        "",
    ]
    for status in statuses:
        if status.remote_mta and status.diagnostic:
            said = f"host {status.remote_mta} said: {status.diagnostic}"
            if status.command:
                said += f" (in reply to {status.command} command)"
        else:
            said = status.diagnostic
        lines.append(f"<{status.recipient}>: {said}")
    return "\n".join(lines) + "\n"


def build_dsn(
    *,
    reporting_mta: str,
    sender: str,
    original: bytes,
    statuses: list[RecipientStatus],
    arrival: float,
    now: float,
) -> bytes:
    """The bounce for `sender`; sent with MAIL FROM:<> so it is never bounced again (RFC 5321 6.1)."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    report["To"] = sender
    delayed = all(s.action == "delayed" for s in statuses)
    report["Subject"] = "Delayed Mail (still being retried)" if delayed else "Undelivered Mail Returned to Sender"
    report["Date"] = email.utils.formatdate(now, localtime=True)
    report["Message-ID"] = email.utils.make_msgid(domain=reporting_mta)
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834 5
    text = human_text(reporting_mta, statuses)
    report.attach(MIMEText(text, "plain", "us-ascii" if text.isascii() else "utf-8"))

    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {reporting_mta}"
    per_message["Arrival-Date"] = email.utils.formatdate(arrival, localtime=True)
    blocks = [per_message]
    for status in statuses:
        block = Message()
        block["Final-Recipient"] = f"rfc822; {status.recipient}"
        block["Action"] = status.action
        block["Status"] = status.status
        if status.remote_mta:
            block["Remote-MTA"] = f"dns; {status.remote_mta}"
        if status.diagnostic:
            block["Diagnostic-Code"] = f"smtp; {status.diagnostic}"
        blocks.append(block)
    delivery_status = Message()
    delivery_status["Content-Type"] = "message/delivery-status"
    delivery_status.set_payload(blocks)
    report.attach(delivery_status)

    headers = Message()
    headers["Content-Type"] = "text/rfc822-headers"
    headers["Content-Description"] = "Undelivered Message Headers"
    headers.set_payload(original_headers(original).decode("utf-8", "replace"))
    report.attach(headers)
    return report.as_bytes(policy=policy.SMTP)


def status_of(code: int, text: str) -> str:
    """The enhanced status code in a reply (RFC 3463; qmail writes it as `(#5.1.1)` at the end),
    or one derived from the reply's class (RFC 3463 3.1)."""
    for found in re.finditer(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)", text):
        if found.group(1) == str(code)[0]:
            return found.group(0)
    return {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}.get(code // 100, "5.0.0")
