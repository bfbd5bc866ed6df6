"""POP3's multi-line framing from the stored form equals the rule it implements (RFC 1939 3)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mockservers.pop3 import dot_stuff
from mockservers.store import to_wire, wire_size


def reference(content: bytes) -> bytes:
    """The rule spelled out on the wire form: CRLF lines, a leading '.' doubled, then '.'."""
    wire = to_wire(content)
    lines = wire.split(b"\r\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines) + b".\r\n"


octets = st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"..", b"x y", b"\x00"]), max_size=40).map(b"".join)


@given(octets)
def test_framing_equals_the_rule_for_any_endings(content):
    assert dot_stuff(content) == reference(content)


def test_examples():
    assert dot_stuff(b"") == b".\r\n"
    assert dot_stuff(b".hidden\nline\n..two\n") == b"..hidden\r\nline\r\n...two\r\n.\r\n"
    assert dot_stuff(b"no final break") == b"no final break\r\n.\r\n"
    assert dot_stuff(b"a\r\n.\r\nb\r\n") == b"a\r\n..\r\nb\r\n.\r\n"


@given(octets)
def test_wire_size_counts_the_wire_form(content):
    assert wire_size(content) == len(to_wire(content))
