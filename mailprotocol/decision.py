"""What a decision is: the reply to send (a persona key and its values), the next state, effects.

Effects are data the caller carries out (an I/O adapter really does it; the validator only
notes it). A reply is a key of the persona's reply table plus the values of its placeholders; the
persona renders the text, so protocol code never holds one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

State = TypeVar("State")
T = TypeVar("T")

_PLAIN_FIELDS: dict[type, frozenset[str] | None] = {}


def replace(obj: T, /, **changes: Any) -> T:
    """`dataclasses.replace`, the same object, without running `__init__` again: every command
    makes a new session state (3.3 us each through `dataclasses.replace`, 0.4 us here).

    Only for a dataclass whose fields are all set by `__init__` and that has no `__post_init__`
    and no `__slots__`; anything else (and an unknown field name, for its error) goes through
    `dataclasses.replace`.
    """
    cls = obj.__class__
    names = _PLAIN_FIELDS.get(cls, ())
    if names == ():
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        plain = all(f.init for f in fields) and not hasattr(cls, "__post_init__") and hasattr(obj, "__dict__")
        names = _PLAIN_FIELDS[cls] = frozenset(f.name for f in fields) if plain else None
    if names is None or not names.issuperset(changes):
        return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
    new = object.__new__(cls)
    state = new.__dict__
    state.update(obj.__dict__)
    state.update(changes)
    return new


@dataclass(frozen=True)
class Reply:
    """One reply: `key` in the persona's table, its placeholder values, and any listing lines.

    `listing` holds the lines of a multi-line answer after the first (CAPA tags, `1 120` for LIST);
    `multiline` means the caller ends them with ".". A value of None is one only the live server
    knows (a message's size before the client has seen it): a prediction shows it as unknown.
    """

    key: str
    values: dict[str, Any] = field(default_factory=dict)
    listing: tuple[str, ...] = ()
    multiline: bool = False


@dataclass(frozen=True)
class Effect:
    """Something the server must do besides replying; `kind` names it, `values` say with what."""

    kind: str
    values: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


#: Effect kinds (the adapters dispatch on them; the validator reads them).
START_TLS = "start-tls"  # after the reply: switch the connection to TLS
LOGIN = "login"  # credentials accepted: limits, maildrop lock and opening come next (POP3)
AUTH_FAILED = "auth-failed"  # count a failed login for this client (user, log reason, the credentials verdict)
SEND_MESSAGE = "send-message"  # after the reply's first line: the message (or its top), dot-stuffed
REMOVE_MESSAGES = "remove-messages"  # POP3 UPDATE: delete these messages, then reply
CLOSE = "close"  # close the connection after the reply
START_SASL = "start-sasl"  # an AUTH exchange continues on the next line


@dataclass(frozen=True)
class Decision(Generic[State]):
    """The answer to one line: replies in order, the state after it, and the effects.

    `reason` names why a refusal happened (`needs-login`, `message-deleted`), so a teacher can
    explain it; the server never shows it. `detail` is what the grammar made of the argument: the
    typed problem behind a refusal (an `AddressSyntaxError`, a `ParameterProblem`) or, for an
    accepted MAIL/RCPT, its `PathArgument`; for an AUTH line, its SASL `Step` (what it decoded to),
    so the explanation need not parse or decode the line again.
    """

    replies: tuple[Reply, ...]
    state: State
    effects: tuple[Effect, ...] = ()
    reason: str = ""
    detail: Any = None

    @property
    def reply(self) -> Reply | None:
        return self.replies[0] if self.replies else None

    def has(self, kind: str) -> bool:
        return self.effect(kind) is not None

    def effect(self, kind: str) -> Effect | None:
        """The first effect of this kind. A plain loop: the adapters ask for several kinds per
        line, and a generator per question was 5 % of a busy server's reactor."""
        for effect in self.effects:
            if effect.kind == kind:
                return effect
        return None


def argument_of(name: str, grammar: str) -> str:
    """Whether a verb takes an argument, read from its grammar: "none", "optional" or "required"."""
    rest = grammar[len(name):].strip()
    if not rest:
        return "none"
    return "optional" if rest.startswith("[") else "required"
