"""The one rule that hides secrets, for server transcripts and for every pane of the app.

Pure standard library, so the server (transcripts) and the app (transcript panes, the sandbox's
account list, watch mode) apply the same rule and a secret hidden in one place is hidden in all.
What counts as a secret: the response of `AUTH <mech> <initial response>` (RFC 4954 section 4;
the empty response `=` is kept), every line the client sends inside a SASL exchange (RFC 4954
section 4, RFC 5034 section 4; a lone `*` cancels and is kept), the password of POP3 `PASS`
(RFC 1939 section 7, may contain spaces), the digest of `APOP` (RFC 1939 section 7), and the
secret half of an `ADDRESS:SECRET` account given on the command line.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from typing import Any

from mailprotocol import pop3, smtp

__all__ = ["MASK", "KnownSecrets", "mask_account", "mask_line"]

#: What a hidden secret looks like, everywhere.
MASK = "***"

_SECRET_VERBS = pop3.LOGIN_VERBS | frozenset(verb.name for verb in smtp.VERBS if verb.logs_in)
_AUTH_RE = re.compile(r"^(\s*AUTH\s+\S+\s+)(\S.*)$", re.IGNORECASE | re.DOTALL)
_PASS_RE = re.compile(r"^(\s*PASS\s)(.*\S.*)$", re.IGNORECASE | re.DOTALL)
_APOP_RE = re.compile(r"^(\s*APOP\s+\S+\s+)(\S.*)$", re.IGNORECASE | re.DOTALL)


def mask_line(line: str, *, in_sasl_exchange: bool = False) -> str:
    """One client line of SMTP or POP3 with its secret replaced by MASK; other lines unchanged.

    `in_sasl_exchange`: the server has asked for a SASL response (a `334` or `+ ` reply), so the
    whole line is a secret unless it is the `*` that cancels the exchange. A trailing CR/LF is kept.
    """
    body = line.rstrip("\r\n")
    ending = line[len(body):]
    if in_sasl_exchange:
        return line if body.strip() == "*" else MASK + ending
    if line.lstrip()[:4].upper() not in _SECRET_VERBS:
        return line  # the fast path: most lines carry no secret and skip the three patterns
    for pattern in (_AUTH_RE, _PASS_RE, _APOP_RE):
        match = pattern.match(body)
        if match is None:
            continue
        if pattern is _AUTH_RE and match.group(2).strip() == "=":
            return line
        return match.group(1) + MASK + ending
    return line


def mask_account(spec: str) -> str:
    """`ADDRESS:SECRET` (a `--account` value) as `ADDRESS:***`; text without a secret unchanged."""
    address, sep, secret = spec.partition(":")
    return f"{address}:{MASK}" if sep and secret else spec


#: Secrets shorter than this are not searched for inside other text (they would hide common words).
MIN_KNOWN_SECRET = 4
#: KnownSecrets remembers the result for texts up to this long, at most this many (then starts over).
_MEMO_TEXT = 200
_MEMO_ENTRIES = 4096
# A word that may be base64 (AUTH LOGIN answers, PLAIN tokens) is decoded and searched too: a run
# of at least 6 base64 characters (more when every secret is long, see KnownSecrets.__init__).


def _trie_regex(words: set[str]) -> str:
    """One regular expression for `words`, shaped as a trie: at each position `re` follows one branch
    per character instead of trying every word, so the cost barely grows with the number of accounts
    (1,000 classroom secrets: 13 us per line as a flat alternation, 0.6 us as a trie). A greedy
    optional tail keeps the longest secret that matches at a position, as longest-first
    alternation does."""
    trie: dict[str, dict] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # a word ends here

    def build(node: dict[str, dict]) -> str:
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(trie)


def _any_of(words: set[str]) -> re.Pattern[str]:
    """A pattern matching any of `words`, the longest one where several start at the same place."""
    try:
        return re.compile(_trie_regex(words))
    except (RecursionError, re.error):  # absurdly long secrets: the plain alternation, slower but the same
        return re.compile("|".join(re.escape(word) for word in sorted(words, key=len, reverse=True)))


class KnownSecrets:
    """The secrets of the accounts a server knows, hidden wherever they are typed.

    `mask_line` knows where secrets belong (PASS, AUTH); a learner also types them where they do
    not: a password as the POP3 user name, in MAIL FROM, in a message. Any occurrence of a known
    secret, and any base64 word that decodes to text containing one, becomes MASK.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        found = {secret for secret in secrets if secret and len(secret) >= MIN_KNOWN_SECRET}
        self._pattern = _any_of(found) if found else None
        # A base64 word shorter than this cannot decode to text holding the shortest secret
        # (n characters decode to at most 3n/4 octets, and UTF-8 text has no more characters
        # than octets), so it is not decoded at all.
        shortest = min((len(secret) for secret in found), default=0)
        self._base64_word = re.compile(r"[A-Za-z0-9+/]{%d,}={0,2}" % max(6, -(-shortest * 4 // 3)))
        # Lines recently masked and their result: a server says "250 2.0.0 Ok" and reads "DATA"
        # thousands of times, and the answer for a text never changes.
        self._recent: dict[str, str] = {}

    @classmethod
    def of_accounts(cls, accounts: Iterable[Any]) -> "KnownSecrets":
        """The secrets of `accounts`: each one's authorization code and its web password.

        The server's transcripts and the app's panes both hide these, by this one rule.
        """
        return cls(secret for account in accounts for secret in (account.secret, account.password or ""))

    def mask(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None:
            return text
        masked = self._recent.get(text)
        if masked is None:
            masked = self._mask(pattern, text)
            if len(text) <= _MEMO_TEXT:
                if len(self._recent) >= _MEMO_ENTRIES:
                    self._recent.clear()
                self._recent[text] = masked
        return masked

    def _mask(self, pattern: re.Pattern[str], text: str) -> str:
        text = pattern.sub(MASK, text)

        def decoded(match: re.Match[str]) -> str:
            word = match.group(0)
            try:
                plain = base64.b64decode(word + "=" * (-len(word) % 4), validate=True)
            except (binascii.Error, ValueError):
                return word
            return MASK if pattern.search(plain.decode("utf-8", "replace")) else word

        return self._base64_word.sub(decoded, text)
