"""The session models: state, envelope, AUTH exchanges and "what may I send now?"."""

from __future__ import annotations

import pytest

from simulator.engine import explain_reply
from simulator.engine.helpers import b64encode_text, cram_md5_response, login_payload, plain_payload
from simulator.engine.session import (
    AUTH_CANCEL,
    AUTH_RESPONSE,
    BDAT_OCTETS,
    END_OF_DATA,
    MESSAGE_LINE,
    TLS_HANDSHAKE,
    Expect,
    LineKind,
    POP3Session,
    POP3State,
    SMTPSession,
    SMTPState,
    replay,
)

QQ_EHLO = [
    "250-smtp.qq.com",
    "250-PIPELINING",
    "250-SIZE 73400320",
    "250-STARTTLS",
    "250-AUTH LOGIN PLAIN",
    "250-AUTH=LOGIN",
    "250-MAILCOMPRESS",
    "250 8BITMIME",
]
POSTFIX_EHLO = [
    "250-mail.example.com",
    "250-PIPELINING",
    "250-SIZE 10240000",
    "250-VRFY",
    "250-ETRN",
    "250-STARTTLS",
    "250-AUTH PLAIN LOGIN CRAM-MD5",
    "250-ENHANCEDSTATUSCODES",
    "250-8BITMIME",
    "250-DSN",
    "250-SMTPUTF8",
    "250 CHUNKING",
]


def smtp_after_ehlo(ehlo: list[str] = POSTFIX_EHLO) -> SMTPSession:
    session = SMTPSession()
    session.received("220 mail.example.com ESMTP Postfix\r\n")
    session.sent("EHLO client.example")
    session.received(ehlo)
    return session


# --- the seed's sessions, reply for reply ----------------------------------------------------

QQ_SEED = [
    ("S", "220 smtp.qq.com Esmtp QQ Mail Server", SMTPState.GREETED),
    ("C", "helo sis", SMTPState.GREETED),
    ("S", "250 smtp.qq.com", SMTPState.READY),
    ("C", "STARTTLS", SMTPState.READY),
    ("S", "220 Ready to start TLS", SMTPState.TLS_HANDSHAKE),
    ("TLS", "", SMTPState.GREETED),
    ("C", "helo sis", SMTPState.GREETED),
    ("S", "250 smtp.qq.com", SMTPState.READY),
    ("C", "auth login", SMTPState.AUTH),
    ("S", "334 VXNlcm5hbWU6", SMTPState.AUTH),
    ("C", login_payload("learner@qq.com", "abcdefghijklmnop")[0], SMTPState.AUTH),
    ("S", "334 UGFzc3dvcmQ6", SMTPState.AUTH),
    ("C", login_payload("learner@qq.com", "abcdefghijklmnop")[1], SMTPState.AUTH),
    ("S", "235 Authentication successful", SMTPState.READY),
    ("C", "mail from: <learner@qq.com>", SMTPState.READY),
    ("S", "250 Ok", SMTPState.MAIL),
    ("C", "rcpt to: <friend@qq.com>", SMTPState.MAIL),
    ("S", "250 Ok", SMTPState.RCPT),
    ("C", "data", SMTPState.RCPT),
    ("S", "354 End data with <CR><LF>.<CR><LF>", SMTPState.DATA),
    ("C", "to: hello", SMTPState.DATA),
    ("C", "from: nian", SMTPState.DATA),
    ("C", "subject: this is a test telnet smtp mail", SMTPState.DATA),
    ("C", "", SMTPState.DATA),
    ("C", "hello,telnet", SMTPState.DATA),
    ("C", ".", SMTPState.RCPT),  # the envelope stays open until the verdict on the message
    ("S", "250 Ok: queued as ", SMTPState.READY),
    ("C", "QUIT", SMTPState.READY),
    ("S", "221 Bye", SMTPState.CLOSED),
]


def test_qq_seed_session_step_by_step() -> None:
    session = SMTPSession()
    for direction, line, state in QQ_SEED:
        if direction == "TLS":
            session.tls_started()
        elif direction == "C":
            session.sent(line)
        else:
            session.received([line])
        assert session.state is state, (line, session.state)
    assert session.tls_active and session.authenticated_user == "learner@qq.com"
    assert session.last_auth is not None and session.last_auth.password == "abcdefghijklmnop"
    assert session.messages_accepted == 1
    assert session.last_message == ["to: hello", "from: nian", "subject: this is a test telnet smtp mail", "", "hello,telnet"]
    assert session.notices == []
    assert [e.kind for e in session.history].count("auth-response") == 2
    # Every exchange carries what the explainer needs to read it in context.
    for exchange in session.history:
        explained = explain_reply(exchange.reply.raw, after=exchange.after, persona="qq", lang="zh")
        assert explained.valid and explained.context, exchange
    password_line = login_payload("learner@qq.com", "abcdefghijklmnop")[1]
    assert all(password_line not in (e.after or "") for e in session.history)


def test_sina_seed_session_auth_without_helo_and_bare_addresses() -> None:
    user, password = login_payload("service@heep.cq", "xxxxxxxx")
    session = replay(
        SMTPSession(),
        [
            ("S", "220 smtp ready"),
            ("C", "auth login"),
            ("S", "334 VXNlcm5hbWU6"),
            ("C", user),
            ("S", "334 UGFzc3dvcmQ6"),
            ("C", password),
            ("S", "235 #2.0.0 OK Authenticated"),
            ("C", "MAIL FROM: service@heep.cq"),
            ("S", "250 sender <service@heep.cq> ok"),
            ("C", "RCPT to: friend@example.com"),
            ("S", "250 recipient <friend@example.com> ok"),
            ("C", "DATA"),
            ("S", "354 go ahead"),
            ("C", "Subject: Hi smtp mail"),
            ("C", "hello mail"),
            ("C", "."),
            ("S", "250 ok:  Message 1763097690 accepted"),
        ],
    )
    assert isinstance(session, SMTPSession)
    assert session.helo_domain is None  # never greeted, and the server did not mind
    assert session.authenticated_user == "service@heep.cq"
    assert session.messages_accepted == 1 and session.state is SMTPState.GREETED
    mail = session.history[4]
    assert mail.after == "MAIL FROM: service@heep.cq"
    explained = explain_reply(mail.reply.raw, after=mail.after, persona="sina", lang="zh")
    assert "sina-mail-from-without-brackets" in explained.persona_note_ids


# --- next_commands, table-driven -------------------------------------------------------------


def _fresh() -> SMTPSession:
    return SMTPSession()


def _greeted() -> SMTPSession:
    s = SMTPSession()
    s.received("220 mail.example.com ESMTP Postfix")
    return s


def _helo_only() -> SMTPSession:
    s = _greeted()
    s.sent("HELO client.example")
    s.received("250 mail.example.com")
    return s


def _mail() -> SMTPSession:
    s = smtp_after_ehlo()
    s.sent("MAIL FROM:<a@example.com>")
    s.received("250 2.1.0 Ok")
    return s


def _rcpt() -> SMTPSession:
    s = _mail()
    s.sent("RCPT TO:<b@example.com>")
    s.received("250 2.1.5 Ok")
    return s


def _data() -> SMTPSession:
    s = _rcpt()
    s.sent("DATA")
    s.received("354 End data with <CR><LF>.<CR><LF>")
    return s


def _waiting() -> SMTPSession:
    s = smtp_after_ehlo()
    s.sent("DATA")
    return s


def _no_pipelining_waiting() -> SMTPSession:
    s = _helo_only()
    s.sent("MAIL FROM:<a@example.com>")
    return s


def _pipelined() -> SMTPSession:
    s = smtp_after_ehlo()
    s.sent("MAIL FROM:<a@example.com>")
    s.sent("RCPT TO:<b@example.com>")
    return s


def _tls() -> SMTPSession:
    s = smtp_after_ehlo()
    s.sent("STARTTLS")
    s.received("220 2.0.0 Ready to start TLS")
    return s


def _after_tls() -> SMTPSession:
    s = _tls()
    s.tls_started()
    s.sent("EHLO client.example")
    s.received([line for line in POSTFIX_EHLO if "STARTTLS" not in line])
    return s


def _authenticated() -> SMTPSession:
    s = _after_tls()
    s.sent("AUTH PLAIN " + plain_payload("a@example.com", "secret"))
    s.received("235 2.7.0 Authentication successful")
    return s


def _mid_auth() -> SMTPSession:
    s = smtp_after_ehlo()
    s.sent("AUTH LOGIN")
    s.received("334 VXNlcm5hbWU6")
    return s


def _bdat_chunk() -> SMTPSession:
    s = _rcpt()
    s.sent("BDAT 10")
    return s


def _bdat_open() -> SMTPSession:
    s = _bdat_chunk()
    s.sent("12345678")  # 8 octets + CRLF = 10
    s.received("250 2.0.0 Ok: 10 octets")
    return s


def _closed() -> SMTPSession:
    s = _greeted()
    s.sent("QUIT")
    s.received("221 2.0.0 Bye")
    return s


NEXT = [
    ("before greeting", _fresh, SMTPState.CONNECTING, Expect.REPLY, [], []),
    ("greeted", _greeted, SMTPState.GREETED, Expect.COMMAND, ["EHLO", "HELO", "QUIT"], ["MAIL", "AUTH", "STARTTLS", "DATA"]),
    ("after HELO: no extensions", _helo_only, SMTPState.READY, Expect.COMMAND, ["MAIL", "QUIT"], ["STARTTLS", "AUTH", "BDAT"]),
    ("after EHLO", smtp_after_ehlo, SMTPState.READY, Expect.COMMAND, ["STARTTLS", "AUTH", "MAIL", "ETRN"], ["RCPT", "DATA", "ATRN"]),
    ("sender accepted", _mail, SMTPState.MAIL, Expect.COMMAND, ["RCPT", "RSET"], ["MAIL", "DATA", "BDAT", "AUTH"]),
    ("recipient accepted", _rcpt, SMTPState.RCPT, Expect.COMMAND, ["RCPT", "DATA", "BDAT"], ["MAIL", "AUTH", "STARTTLS"]),
    ("in DATA", _data, SMTPState.DATA, Expect.MESSAGE, [MESSAGE_LINE, END_OF_DATA], ["QUIT", "RSET"]),
    ("waiting for DATA's reply", _waiting, SMTPState.READY, Expect.REPLY, [], ["QUIT"]),
    ("no pipelining: wait", _no_pipelining_waiting, SMTPState.READY, Expect.REPLY, [], ["RCPT"]),
    ("pipelining: keep going", _pipelined, SMTPState.READY, Expect.COMMAND, ["RCPT", "DATA", "BDAT"], ["MAIL"]),
    ("TLS handshake", _tls, SMTPState.TLS_HANDSHAKE, Expect.TLS, [TLS_HANDSHAKE], ["EHLO"]),
    ("after TLS", _after_tls, SMTPState.READY, Expect.COMMAND, ["AUTH", "MAIL"], ["STARTTLS"]),
    ("authenticated", _authenticated, SMTPState.READY, Expect.COMMAND, ["MAIL"], ["AUTH", "STARTTLS"]),
    ("mid AUTH", _mid_auth, SMTPState.AUTH, Expect.AUTH_RESPONSE, [AUTH_RESPONSE, AUTH_CANCEL], ["MAIL", "QUIT"]),
    ("inside a BDAT chunk", _bdat_chunk, SMTPState.BDAT, Expect.OCTETS, [BDAT_OCTETS], ["BDAT"]),
    ("BDAT transaction open", _bdat_open, SMTPState.BDAT, Expect.COMMAND, ["BDAT", "RSET", "QUIT"], ["DATA", "MAIL", "RCPT"]),
    ("closed", _closed, SMTPState.CLOSED, Expect.NOTHING, [], ["QUIT"]),
]


@pytest.mark.parametrize(("name", "build", "state", "expect", "allowed", "forbidden"), NEXT, ids=[n[0] for n in NEXT])
def test_smtp_next_commands(name, build, state, expect, allowed, forbidden) -> None:
    session = build()
    assert session.state is state
    assert session.expecting is expect
    offered = session.next_commands()
    for verb in allowed:
        assert verb in offered, (verb, offered)
        assert session.allows(verb)
    for verb in forbidden:
        assert verb not in offered, (verb, offered)


def test_first_suggestion_is_the_natural_next_step() -> None:
    assert _greeted().next_commands()[0] == "EHLO"
    assert smtp_after_ehlo().next_commands()[0] == "STARTTLS"
    assert _after_tls().next_commands()[0] == "AUTH"
    assert _mail().next_commands()[0] == "RCPT"


# --- EHLO, STARTTLS ---------------------------------------------------------------------------


def test_capabilities_learned_and_forgotten_after_starttls() -> None:
    session = smtp_after_ehlo(QQ_EHLO)
    assert session.esmtp and session.helo_domain == "client.example"
    assert session.has_capability("mailcompress") and session.pipelining
    assert session.max_size == 73400320
    assert session.auth_mechanisms == ["LOGIN", "PLAIN"]
    session.sent("STARTTLS")
    session.received("220 Ready to start TLS")
    session.sent("EHLO again")  # a telnet user typing on: plain text after 220
    assert "plaintext_after_starttls" in session.notices
    session.tls_started()
    assert session.capabilities == {} and session.helo_domain is None and session.pending == ()
    assert session.state is SMTPState.GREETED and session.tls_active


def test_163_legacy_auth_line_names_mechanisms() -> None:
    session = smtp_after_ehlo(["250-mail", "250-AUTH LOGIN PLAIN", "250-AUTH=LOGIN PLAIN", "250-coremail 1Uxr2x", "250 8BITMIME"])
    assert session.auth_mechanisms == ["LOGIN", "PLAIN"]
    assert session.capabilities["COREMAIL"] == "1Uxr2x"
    assert session.max_size is None


def test_ehlo_resets_the_envelope() -> None:
    session = _rcpt()
    session.sent("EHLO client.example")
    session.received(POSTFIX_EHLO)
    assert session.mail_from is None and session.recipients == []


def test_multiline_reply_in_pieces() -> None:
    session = _greeted()
    session.sent("EHLO me")
    assert session.received(POSTFIX_EHLO[:3]) == []
    assert session.state is SMTPState.GREETED and session.expecting is Expect.REPLY
    done = session.received(POSTFIX_EHLO[3:])
    assert len(done) == 1 and session.has_capability("CHUNKING")


# --- AUTH exchanges, including mid-exchange state -------------------------------------------


def test_auth_login_with_initial_username() -> None:
    session = smtp_after_ehlo()
    session.sent("AUTH LOGIN " + b64encode_text("a@example.com"))
    assert session.auth is not None and session.auth.username == "a@example.com"
    session.received("334 UGFzc3dvcmQ6")
    assert session.auth.prompt == "password" and session.expecting is Expect.AUTH_RESPONSE
    assert session.sent(b64encode_text("pw")) is LineKind.AUTH_RESPONSE
    session.received("235 2.7.0 Authentication successful")
    assert session.authenticated_user == "a@example.com"


def test_auth_plain_after_empty_challenge() -> None:
    session = smtp_after_ehlo()
    session.sent("AUTH PLAIN")
    session.received("334 ")
    assert session.auth is not None and session.auth.prompt == "initial"
    session.sent("AHVzZXJAZXhhbXBsZS5jb20Ac2VjcmV0")
    assert (session.auth.username, session.auth.password) == ("user@example.com", "secret")
    session.received("235 2.7.0 Authentication successful")
    assert session.authenticated and session.state is SMTPState.READY


def test_auth_cram_md5_rfc_example() -> None:
    session = smtp_after_ehlo()
    session.sent("AUTH CRAM-MD5")
    session.received("334 PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+")
    assert session.auth is not None
    assert session.auth.challenge == "<1896.697170952@postoffice.reston.mci.net>"
    assert session.auth.prompt == "challenge"
    answer = cram_md5_response("tim", "tanstaaftanstaaf", session.auth.challenge)
    assert answer == "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"
    session.sent(answer)
    assert session.state is SMTPState.AUTH and session.expecting is Expect.REPLY
    session.received("235 2.7.0 Authentication successful")
    assert session.authenticated_user == "tim"


def test_auth_cancel_and_failure() -> None:
    session = _mid_auth()
    assert session.sent("*") is LineKind.AUTH_RESPONSE
    session.received("501 5.7.0 Authentication aborted")
    assert session.last_auth is not None and session.last_auth.cancelled
    assert not session.authenticated and session.auth_failures == 1
    assert "AUTH" in session.next_commands()


def test_auth_bad_base64_is_noticed() -> None:
    session = _mid_auth()
    session.sent("learner@qq.com")  # typed in clear text
    assert session.auth is not None and "auth_bad_base64" in session.auth.problems
    session.received("535 5.7.8 Error: authentication failed: authentication failure")
    assert session.authenticated_user is None


def test_xoauth2_user_is_recognised() -> None:
    session = _after_tls()
    session.sent("AUTH XOAUTH2 " + b64encode_text("user=me@gmail.com\x01auth=Bearer tok\x01\x01"))
    session.received("235 2.7.0 Accepted")
    assert session.authenticated_user == "me@gmail.com"


# --- learning what the server requires ------------------------------------------------------


def test_qq_need_auth_first_is_learned() -> None:
    session = smtp_after_ehlo(QQ_EHLO)
    assert "MAIL" in session.next_commands()
    session.sent("MAIL FROM:<learner@qq.com>")
    session.received("503 Error: need EHLO and AUTH first !")
    assert session.auth_required and session.mail_from is None
    offered = session.next_commands()
    assert "MAIL" not in offered and "AUTH" in offered


def test_qq_secure_connection_is_learned() -> None:
    session = smtp_after_ehlo(QQ_EHLO)
    session.sent("AUTH LOGIN")
    session.received(
        "530 Login fail. A secure connection is requiered(such as ssl). More information at http://service.mail.qq.com/cgi-bin/help?id=28"
    )
    assert session.tls_required and session.auth is None
    offered = session.next_commands()
    assert offered[0] == "STARTTLS" and "AUTH" not in offered


def test_must_issue_starttls_is_learned_from_mail() -> None:
    session = smtp_after_ehlo()
    session.sent("MAIL FROM:<a@example.com>")
    session.received("530 5.7.0 Must issue a STARTTLS command first")
    assert session.tls_required


def test_disabled_commands_are_not_offered_again() -> None:
    session = smtp_after_ehlo()
    session.sent("VRFY ted")
    session.received("502 5.5.1 VRFY command is disabled")
    assert "VRFY" not in session.next_commands()


# --- envelope and data -----------------------------------------------------------------------


def test_envelope_and_rejected_recipients() -> None:
    session = _mail()
    session.sent("RCPT TO:<nobody@example.com>")
    session.received("550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in local recipient table")
    assert session.state is SMTPState.MAIL and session.rejected_recipients == ["nobody@example.com"]
    session.sent("RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE")
    session.received("250 2.1.5 Ok")
    assert session.recipients == ["b@example.com"]
    session.sent("RSET")
    session.received("250 2.0.0 Ok")
    assert session.state is SMTPState.READY and session.recipients == []


def test_null_sender_and_parameters() -> None:
    session = smtp_after_ehlo()
    session.sent("MAIL FROM:<> SIZE=1000 BODY=8BITMIME")
    session.received("250 2.1.0 Ok")
    assert session.mail_from == "" and session.mail_params == {"SIZE": "1000", "BODY": "8BITMIME"}
    assert session.in_transaction


def test_data_dot_stuffing_and_refusal() -> None:
    session = _data()
    assert session.sent("..leading dot") is LineKind.MESSAGE
    assert session.sent(".oops") is LineKind.MESSAGE
    assert "dot_not_stuffed" in session.notices
    assert session.sent("QUIT") is LineKind.MESSAGE  # still message text
    assert session.sent(".") is LineKind.END_OF_DATA
    assert session.expecting is Expect.REPLY
    session.received("554 5.7.1 DT:SPM")
    assert session.messages_refused == 1 and session.state is SMTPState.READY
    assert session.last_message == [".leading dot", "oops", "QUIT"]
    assert session.history[-1].after == "."


def test_bdat_counts_octets() -> None:
    session = _rcpt()
    session.sent("BDAT 23 LAST")
    assert session.sent("Subject: hi") is LineKind.OCTETS  # 11 + 2
    assert session.sent("") is LineKind.OCTETS  # 2
    assert session.bdat_remaining == 8
    session.sent("hello!")  # 6 + 2
    assert session.bdat_remaining == 0 and session.expecting is Expect.REPLY
    session.received("250 2.0.0 Ok: queued as 1A2B")
    assert session.messages_accepted == 1 and session.state is SMTPState.READY


def test_failed_chunk_requires_rset() -> None:
    session = _bdat_chunk()
    session.sent_octets(b"0123456789")
    session.received("552 5.3.4 Message size exceeds fixed limit")
    assert session.bdat_failed and session.next_commands()[0] == "RSET"
    assert "BDAT" not in session.next_commands()


def test_bdat_overrun_is_noticed() -> None:
    session = _rcpt()
    session.sent("BDAT 3 LAST")
    session.sent("too long")
    assert "bdat_overrun" in session.notices


# --- odd conversations ----------------------------------------------------------------------


def test_421_closes_even_unsolicited() -> None:
    session = smtp_after_ehlo()
    session.received("421 4.4.2 mail.example.com Error: timeout exceeded")
    assert session.state is SMTPState.CLOSED and session.next_commands() == []
    assert session.sent("NOOP") is LineKind.IGNORED and "sent_after_close" in session.notices


def test_554_greeting_closes() -> None:
    session = SMTPSession()
    session.received("554 No SMTP service here")
    assert session.state is SMTPState.CLOSED


def test_talking_out_of_turn_is_noticed() -> None:
    session = SMTPSession()
    session.sent("EHLO early")
    assert "spoke_before_greeting" in session.notices
    session = _helo_only()
    session.sent("MAIL FROM:<a@b.example>")
    session.sent("RCPT TO:<c@d.example>")
    assert "not_waiting_for_reply" in session.notices


def test_pipelined_replies_arrive_together() -> None:
    session = _pipelined()
    session.sent("DATA")
    done = session.received(["250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"])
    assert [e.sent for e in done] == ["MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "DATA"]
    assert session.state is SMTPState.DATA and session.notices == []


def test_garbage_from_the_server_does_not_derail() -> None:
    session = smtp_after_ehlo()
    session.sent("NOOP")
    session.received(["*** hello from a proxy ***", "250 2.0.0 Ok"])
    assert "garbage_received" in session.notices and session.pending == ()
    session.received("250 surprise")
    assert "unexpected_reply" in session.notices


def test_turn_and_atrn() -> None:
    session = _authenticated()
    session.sent("TURN")
    session.received("502 5.5.1 Error: command not implemented")
    assert "TURN" in session.unsupported and session.state is SMTPState.READY
    session.capabilities["ATRN"] = ""
    assert "ATRN" in session.next_commands()
    session.sent("ATRN example.org")
    session.received("250 OK now reversing the connection")
    assert session.state is SMTPState.REVERSED and session.next_commands() == []


# --- POP3 -------------------------------------------------------------------------------------

RFC1939 = [
    ("S", "+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>", POP3State.AUTHORIZATION),
    ("C", "APOP mrose c4c9334bac560ecc979e58001b3e22fb", POP3State.AUTHORIZATION),
    ("S", "+OK mrose's maildrop has 2 messages (320 octets)", POP3State.TRANSACTION),
    ("C", "STAT", POP3State.TRANSACTION),
    ("S", "+OK 2 320", POP3State.TRANSACTION),
    ("C", "LIST", POP3State.TRANSACTION),
    ("S", "+OK 2 messages (320 octets)", POP3State.TRANSACTION),
    ("S", "1 120", POP3State.TRANSACTION),
    ("S", "2 200", POP3State.TRANSACTION),
    ("S", ".", POP3State.TRANSACTION),
    ("C", "RETR 1", POP3State.TRANSACTION),
    ("S", "+OK 120 octets", POP3State.TRANSACTION),
    ("S", "Subject: hi", POP3State.TRANSACTION),
    ("S", "", POP3State.TRANSACTION),
    ("S", "..a stuffed line", POP3State.TRANSACTION),
    ("S", ".", POP3State.TRANSACTION),
    ("C", "DELE 1", POP3State.TRANSACTION),
    ("S", "+OK message 1 deleted", POP3State.TRANSACTION),
    ("C", "RETR 2", POP3State.TRANSACTION),
    ("S", "+OK 200 octets", POP3State.TRANSACTION),
    ("S", ".", POP3State.TRANSACTION),
    ("C", "DELE 2", POP3State.TRANSACTION),
    ("S", "+OK message 2 deleted", POP3State.TRANSACTION),
    ("C", "QUIT", POP3State.UPDATE),
    ("S", "+OK dewey POP3 server signing off (maildrop empty)", POP3State.CLOSED),
]


def test_rfc1939_example_session() -> None:
    session = POP3Session()
    for direction, line, state in RFC1939:
        if direction == "C":
            session.sent(line)
        else:
            session.received([line])
        assert session.state is state, (line, session.state)
    assert session.apop_timestamp == "<1896.697170952@dbc.mtview.ca.us>"
    assert session.authenticated_user == "mrose"
    assert session.message_count == 2 and session.sizes == {1: 120, 2: 200}
    assert session.deleted == {1, 2} and session.retrieved == {1, 2}
    assert session.deletions_applied
    retr = [e for e in session.history if e.sent == "RETR 1"][0]
    assert retr.reply.data == ("Subject: hi", "", ".a stuffed line")


def test_qq_pop3_user_pass_and_bare_list() -> None:
    session = replay(
        POP3Session(),
        [
            ("S", "+OK QQMail POP3 Server v1.0 Service Ready(QQMail v2.0)"),
            ("C", "USER learner@qq.com"),
            ("S", "+OK"),
        ],
    )
    assert isinstance(session, POP3Session)
    assert session.user == "learner@qq.com" and session.next_commands() == ["PASS", "QUIT"]
    assert session.apop_timestamp is None
    session.sent("PASS abcdefghijklmnop")
    assert session.history[-1].after == "USER learner@qq.com"
    session.received("+OK")
    assert session.state is POP3State.TRANSACTION and session.authenticated_user == "learner@qq.com"
    session.sent("LIST")
    session.received(["+OK", "1 7514", "2 8000", "3 9000"])
    assert session.expecting is Expect.REPLY  # the list is not finished
    session.received(["4 201718", "."])
    assert session.message_count == 4 and session.pending == ()


def test_pop3_pass_failure_returns_to_user() -> None:
    session = replay(POP3Session(), [("S", "+OK ready"), ("C", "USER a"), ("S", "+OK"), ("C", "PASS wrong")])
    assert session.history[-1].after == "USER a"
    assert session.pending == ("PASS wrong",)
    session.received("-ERR [AUTH] Username and password not accepted.")
    assert session.state is POP3State.AUTHORIZATION and session.user is None and session.auth_failures == 1
    assert session.history[-1].after == "PASS"  # the password is not repeated in explanations
    assert session.next_commands()[0] == "USER"


def test_pop3_capa_stls_and_auth() -> None:
    session = replay(POP3Session(), [("S", "+OK Dovecot ready.")])
    assert isinstance(session, POP3Session)
    assert session.next_commands() == ["USER", "CAPA", "QUIT"]
    session.sent("CAPA")
    session.received(["+OK Capability list follows", "TOP", "USER", "SASL PLAIN LOGIN", "STLS", "UIDL", "RESP-CODES", "."])
    assert session.sasl_mechanisms == ["PLAIN", "LOGIN"]
    assert session.next_commands()[0] == "STLS" and "AUTH" in session.next_commands()
    session.sent("STLS")
    session.received("+OK Begin TLS negotiation")
    assert session.state is POP3State.TLS_HANDSHAKE and session.next_commands() == [TLS_HANDSHAKE]
    session.tls_started()
    assert session.capabilities is None and session.tls_active
    session.sent("CAPA")
    session.received(["+OK", "USER", "SASL PLAIN LOGIN", "."])
    assert "STLS" not in session.next_commands()
    session.sent("AUTH LOGIN")
    session.received("+ VXNlcm5hbWU6")
    assert session.expecting is Expect.AUTH_RESPONSE and session.auth is not None and session.auth.prompt == "username"
    session.sent(b64encode_text("tim"))
    session.received("+ UGFzc3dvcmQ6")
    session.sent(b64encode_text("secret"))
    session.received("+OK Logged in.")
    assert session.state is POP3State.TRANSACTION and session.authenticated_user == "tim"
    assert "TOP" not in session.next_commands()  # the post-TLS CAPA did not offer TOP


def test_pop3_rset_unmarks_and_dropped_connection_deletes_nothing() -> None:
    session = replay(
        POP3Session(),
        [("S", "+OK ready"), ("C", "USER a"), ("S", "+OK"), ("C", "PASS b"), ("S", "+OK 1 message"),
         ("C", "STAT"), ("S", "+OK 1 100"), ("C", "DELE 1"), ("S", "+OK message 1 deleted")],
    )
    assert isinstance(session, POP3Session)
    assert session.available_messages == []
    offered = session.next_commands()
    assert "RETR" not in offered and "DELE" not in offered and "RSET" in offered
    session.sent("RSET")
    session.received("+OK maildrop has 1 message (100 octets)")
    assert session.deleted == set() and session.available_messages == [1]
    assert not session.deletions_applied


def test_pop3_quit_in_authorization_applies_nothing() -> None:
    session = replay(POP3Session(), [("S", "+OK ready"), ("C", "QUIT"), ("S", "+OK bye")])
    assert isinstance(session, POP3Session)
    assert session.state is POP3State.CLOSED and not session.deletions_applied


def test_pop3_err_greeting_and_garbage() -> None:
    refused = replay(POP3Session(), [("S", "-ERR go away")])
    assert refused.state is POP3State.CLOSED
    session = replay(POP3Session(), [("S", "+OK ready"), ("C", "NOOP")])
    session.received(["what is this", "-ERR not in this state"])
    assert "garbage_received" in session.notices and session.pending == ()


@pytest.mark.parametrize(
    ("transcript", "state", "expect"),
    [
        ([], POP3State.CONNECTING, Expect.REPLY),
        ([("S", "+OK hi")], POP3State.AUTHORIZATION, Expect.COMMAND),
        ([("S", "+OK hi"), ("C", "USER a")], POP3State.AUTHORIZATION, Expect.REPLY),
        ([("S", "+OK hi"), ("C", "AUTH PLAIN"), ("S", "+ ")], POP3State.AUTHORIZATION, Expect.AUTH_RESPONSE),
        ([("S", "+OK hi"), ("C", "USER a"), ("S", "+OK"), ("C", "PASS b"), ("S", "+OK")], POP3State.TRANSACTION, Expect.COMMAND),
        ([("S", "+OK hi"), ("C", "USER a"), ("S", "+OK"), ("C", "PASS b"), ("S", "+OK"), ("C", "QUIT")], POP3State.UPDATE, Expect.REPLY),
    ],
)
def test_pop3_states(transcript, state, expect) -> None:
    session = replay(POP3Session(), transcript)
    assert session.state is state and session.expecting is expect


def test_the_cores_replace_makes_what_dataclasses_replace_makes() -> None:
    import dataclasses

    from mailprotocol.decision import replace
    from mailprotocol.pop3 import POP3State
    from mailprotocol.smtp import SMTPState

    for state, changes in ((SMTPState(), {"helo": "client.test", "auth_failures": 2}), (POP3State(), {"user": "ann"})):
        new = replace(state, **changes)
        assert new == dataclasses.replace(state, **changes) and type(new) is type(state) and new != state
        assert replace(new) == new and replace(new) is not new
        with pytest.raises(TypeError):
            replace(state, no_such_field=1)
        with pytest.raises(dataclasses.FrozenInstanceError):
            new.user = "changed"  # type: ignore[misc]

    @dataclasses.dataclass(frozen=True)
    class Checked:
        value: int

        def __post_init__(self) -> None:
            if self.value < 0:
                raise ValueError("negative")

    with pytest.raises(ValueError):  # a class that checks itself is built by dataclasses.replace
        replace(Checked(1), value=-1)
