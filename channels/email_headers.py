"""Mail headers read safely: the bounded `email.policy.default` that `parse_mail` parses
with (raw values capped, long values cut before the slow header parser sees them, 8-bit
bytes decoded, a parser crash turned into a stripped value) and the small helpers that
turn header values into single lines, message ids and addresses.

Pure: standard library only; split out of `channels/email_parse.py` to keep it small.
"""

from __future__ import annotations

import re
from email import policy as email_policy
from email.message import Message
from typing import Any

from channels import email_text

MAX_RAW_HEADER_CHARS = 128 * 1024  # kept of one raw header value (References can be long)
MAX_ADDRESS_HEADER_CHARS = 16 * 1024  # To/Cc of a few hundred recipients
MAX_HEADER_CHARS = 2048  # other headers given to the `email` header parser
MAX_DEPTH = 30  # MIME nesting
MAX_TEXT_PART_BYTES = 4 * 1024 * 1024  # encoded bytes of one text part that are read
MAX_SUBJECT_CHARS = 1000
MAX_REFERENCES = 100
MAX_PROBLEMS = 50
ADDRESS_HEADERS = frozenset({"from", "to", "cc", "bcc", "sender", "reply-to", "resent-from", "resent-to"})


# --- a bounded email.policy.default --------------------------------------------------------

LINESEP = re.compile(r"\r\n|\r|\n")


class BoundedPolicy(email_policy.EmailPolicy):
    """`email.policy.default` whose header parsing is bounded: raw values capped, values
    longer than the parser copes with cut before parsing (the feed parser itself parses
    Content-Type while splitting parts), 8-bit bytes in headers decoded as UTF-8 or
    windows-1252, a parser crash turned into a stripped value, each value parsed once."""

    notes: list[str] | None = None
    parsed: dict[tuple[str, str], Any] | None = None

    def _note(self, problem: str) -> None:
        if self.notes is not None and len(self.notes) < MAX_PROBLEMS:
            self.notes.append(problem)

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = super().header_source_parse(sourcelines)
        if len(value) > MAX_RAW_HEADER_CHARS:
            self._note(f"header {name[:40]} over {MAX_RAW_HEADER_CHARS} characters: cut")
            value = value[:MAX_RAW_HEADER_CHARS]
        return name, value

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):
            return value
        key = (name.lower(), value)
        if self.parsed is not None and key in self.parsed:
            return self.parsed[key]
        text = "".join(LINESEP.split(value))
        limit = MAX_ADDRESS_HEADER_CHARS if key[0] in ADDRESS_HEADERS else MAX_HEADER_CHARS
        if len(text) > limit:
            self._note(f"header {name[:40]} over {limit} characters: cut")
            text = text[:limit]
        text = email_text.fix_8bit(text)
        try:
            header = self.header_factory(name, text)
        except Exception as error:
            self._note(f"header {name[:40]} unparsable ({type(error).__name__})")
            try:
                header = self.header_factory(name, re.sub(r'[()\\"<>]', " ", text))
            except Exception:
                header = self.header_factory(name, "")
        if self.parsed is not None:
            self.parsed[key] = header
        return header


def new_policy(notes: list[str]) -> BoundedPolicy:
    factory: Any = BoundedPolicy  # Policy.__init__ takes any declared attribute
    return factory(notes=notes, parsed={})  # type: ignore[no-any-return]


# --- small helpers -------------------------------------------------------------------------

_UNICODE_SPACES = re.compile(r"[\u00a0\u2000-\u200a\u202f\u205f\u3000\n\t]")


def single_line(value: str, limit: int) -> str:
    value = email_text.normalise_text(value, collapse_spaces=True)
    return re.sub(" {2,}", " ", _UNICODE_SPACES.sub(" ", value)).strip()[:limit]


class Headers:
    """The raw (unfolded, undecoded) header values of a message by lower-case name, in
    order, and the parsed ones through the bounded policy."""

    def __init__(self, message: Message) -> None:
        self.message = message
        self.raw: dict[str, list[str]] = {}
        for name, value in message.raw_items():
            unfolded = "".join(LINESEP.split(str(value)))[:MAX_RAW_HEADER_CHARS]
            self.raw.setdefault(str(name).strip().lower(), []).append(email_text.fix_8bit(unfolded))

    def first_raw(self, name: str) -> str | None:
        values = self.raw.get(name)
        return values[0] if values else None

    def parsed(self, name: str) -> list[Any]:
        return list(self.message.get_all(name) or [])

    def text(self, name: str, limit: int = MAX_SUBJECT_CHARS) -> str | None:
        values = self.parsed(name)
        return single_line(str(values[0]), limit) if values else None


_MSGID = re.compile(r"<([\x21-\x3b\x3d\x3f-\x7e]{1,900})>")
_BARE_MSGID = re.compile(r"^\s*([\x21-\x3b\x3d\x3f-\x7e]{1,900}@[\x21-\x3b\x3d\x3f-\x7e]{1,900})\s*$")


def message_ids(value: str | None) -> list[str]:
    if not value:
        return []
    found = [f"<{m}>" for m in _MSGID.findall(value)]
    if not found:
        bare = _BARE_MSGID.match(value)
        found = [f"<{bare.group(1)}>"] if bare else []
    return list(dict.fromkeys(found))


def addr_spec(address: Any) -> str | None:
    """"local@domain" with the domain lower-cased, or None without both parts."""
    spec = email_text.normalise_text(str(address.addr_spec))
    local, at, domain = spec.rpartition("@")
    domain = domain.strip().lower().rstrip(".")
    if not at or not local or not domain or any(c.isspace() for c in spec) or "@" in domain:
        return None
    return f"{local}@{domain}"


def printable(value: str) -> str:
    """`value` without lone surrogates (left by raw 8-bit header bytes) or controls."""
    return email_text.normalise_text(email_text.fix_8bit(value)).replace("\n", " ")
