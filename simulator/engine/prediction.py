"""A predicted reply: the protocol core's answer rendered by the persona, with holes for what only
the live server knows (a message size the client has not listed, a CRAM-MD5 challenge, a queue id).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Stands for a value only the live server knows (a size not yet listed, a CRAM-MD5 challenge).
HOLE = "\ufffc"


@dataclass(frozen=True)
class Prediction:
    """The reply lines the server will send; HOLE marks unknown values, `open_ended` unknown lines after them."""

    lines: tuple[str, ...]
    open_ended: bool = False

    def shown(self) -> list[str]:
        """For a reader: unknown values as "?" (an open listing ends with its ".")."""
        lines = [line.replace(HOLE, "?") for line in self.lines]
        return lines + ["."] if self.open_ended else lines

    def matches(self, actual: list[str]) -> bool:
        """Whether the server's reply is this one (unknown values and open lines match anything)."""
        if len(actual) < len(self.lines) or (not self.open_ended and len(actual) != len(self.lines)):
            return False
        for expected, line in zip(self.lines, actual):
            pattern = ".*?".join(re.escape(part) for part in expected.split(HOLE))
            if not re.fullmatch(pattern, line, re.DOTALL):
                return False
        return True
