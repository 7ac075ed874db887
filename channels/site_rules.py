"""The pure rules of the agency's website endpoints (channels/site.py), apart from any I/O
so they are tested without a server: reading the legacy `/chat-proxy` body, the visitor
key, a `#memo`, validating the contact form (French messages), the honeypot, and CORS.

Why a separate module: the site sends bodies shaped by the earlier Axi and by whoever
edits the site; every branch of reading them is a rule worth a plain test.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

MAX_MESSAGES = 200
"""At most this many turns read from `messages` (a longer body is refused)."""
SITE_ID_MAX = 100
DEFAULT_SITE = "site"
NAME_MAX = 200
MESSAGE_MAX = 5000
PHONE_MAX = 40
BIEN_MAX = 300
EMAIL_MAX = 254
MEMO_MAX = 1000
HONEYPOT_FIELDS = ("website", "hp", "_gotcha")
"""Fields a person never fills (hidden by the site): filled, the sender is a robot."""

_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
_PHONE_CHARS = re.compile(r"\+?[0-9 .()/-]+")
_MEMO = re.compile(r"#memo\b[\s:–—-]*", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
"""Half of a UTF-16 pair (an emoji cut in two by the page's script): no valid text holds
one, and PostgreSQL refuses it."""


def plain(value: str) -> str:
    """Text with no control character (a space instead) and no lone surrogate (U+FFFD)."""
    return _SURROGATE.sub("\ufffd", _CONTROL.sub(" ", value))


class Invalid(ValueError):
    """A body the endpoint refuses (400): `message` is French, for the visitor;
    `fields` maps each faulty field to its message."""

    def __init__(self, message: str, fields: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


# ------------------------------------------------------------------ chat-proxy
@dataclass(frozen=True)
class ChatRequest:
    """What Axi takes from a `/chat-proxy` body: the site, the visitor's first message (for
    the visitor key), the last one (what Axi answers) and every turn before it (the
    conversation so far, as the visitor's page holds it: the prompt's history — the key is
    no identity, two visitors behind one IP who both open with « Bonjour » share it). The
    site's `system` text is not taken: Axi's persona applies."""

    site_id: str
    first_user: str
    last_user: str
    earlier: tuple[tuple[str, str], ...] = ()
    """(role, text) of the turns before the last user message, oldest first."""


def _content_text(content: Any) -> str | None:
    """A turn's text: a string, or Anthropic-style blocks [{"type": "text", "text": …}]."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [b.get("text") for b in content if isinstance(b, dict)]
        if texts and all(isinstance(t, str) for t in texts):
            return "\n".join(t for t in texts if isinstance(t, str))
    return None


def clean_site_id(value: Any) -> str:
    if value is None:
        return DEFAULT_SITE
    if not isinstance(value, str):
        raise Invalid("Le champ site_id doit être un texte.", {"site_id": "texte attendu"})
    site = " ".join(plain(value).split())[:SITE_ID_MAX]
    return site or DEFAULT_SITE


def parse_chat(body: dict[str, Any]) -> ChatRequest:
    """The legacy body `{"system", "messages": [{"role", "content"}…], "site_id"}`."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Invalid("La conversation est vide (champ messages).", {"messages": "liste attendue"})
    if len(messages) > MAX_MESSAGES:
        raise Invalid("La conversation est trop longue : recommencez-en une nouvelle.",
                      {"messages": f"au plus {MAX_MESSAGES} messages"})
    turns: list[tuple[str, str]] = []
    for turn in messages:
        if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant"):
            raise Invalid("Un message de la conversation est mal formé.",
                          {"messages": "role user ou assistant attendu"})
        text = _content_text(turn.get("content"))
        if text is None:
            raise Invalid("Un message de la conversation est mal formé.",
                          {"messages": "content texte attendu"})
        turns.append((turn["role"], text))
    users = [i for i, (role, _) in enumerate(turns) if role == "user"]
    if not users or not plain(turns[users[-1]][1]).strip():
        raise Invalid("Écrivez votre message avant de l'envoyer.", {"messages": "message vide"})
    return ChatRequest(site_id=clean_site_id(body.get("site_id")),
                       first_user=turns[users[0]][1], last_user=turns[users[-1]][1],
                       earlier=tuple(t for t in turns[:users[-1]] if plain(t[1]).strip()))


def visitor_key(site_id: str, ip: str, first_message: str) -> str:
    """The address a visitor's conversation is stored under: the same site, client IP and
    first message give the same visitor (the site resends the whole conversation each
    turn), and the key reveals none of them."""
    material = "\x1f".join((site_id, ip, " ".join(first_message.split())))
    return "visiteur-" + hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def memo_text(message: str) -> str | None:
    """The memo a visitor typed (`#memo …`, at the start), '' for a bare `#memo`, or
    None when the message is not a memo."""
    stripped = message.strip()
    found = _MEMO.match(stripped)
    if found is None:
        return None
    return " ".join(plain(stripped[found.end():]).split())


# ------------------------------------------------------------------ contact
@dataclass(frozen=True)
class ContactForm:
    name: str
    email: str
    phone: str | None
    message: str
    bien: str | None


def is_robot(body: dict[str, Any]) -> bool:
    """A honeypot field filled in: answered as accepted, nothing stored or sent."""
    for name in HONEYPOT_FIELDS:
        value = body.get(name)
        if value is not None and value != "" and value is not False:
            return True
    return False


def valid_email(address: str) -> bool:
    return len(address) <= EMAIL_MAX and _EMAIL.fullmatch(address) is not None


def plausible_phone(phone: str) -> bool:
    digits = sum(c.isdigit() for c in phone)
    return _PHONE_CHARS.fullmatch(phone) is not None and 6 <= digits <= 15


class _WrongType(Exception):
    pass


def _text(body: dict[str, Any], key: str, *, multiline: bool = False) -> str | None:
    """A field as clean text ('' when blank, None when absent); _WrongType when the field
    is not text (a number is taken for a phone)."""
    value = body.get(key)
    if value is None:
        return None
    if key == "phone" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _WrongType(key)
    value = plain(value.replace("\r\n", "\n"))
    return value.strip() if multiline else " ".join(value.split())


def _field(body: dict[str, Any], key: str, problems: dict[str, str], wrong: str, *,
           multiline: bool = False) -> str | None:
    try:
        return _text(body, key, multiline=multiline)
    except _WrongType:
        problems[key] = wrong
        return None


def validate_contact(body: dict[str, Any]) -> ContactForm:
    """The contact form `{"name", "email", "phone", "message", "bien"}`, or Invalid with
    every faulty field's French message (the first one as the message)."""
    problems: dict[str, str] = {}
    name = _field(body, "name", problems, "Indiquez votre nom.")
    if "name" not in problems:
        if not name:
            problems["name"] = "Indiquez votre nom."
        elif len(name) > NAME_MAX:
            problems["name"] = f"Votre nom est trop long ({NAME_MAX} caractères au plus)."
    bad_email = "Indiquez une adresse électronique valide (par exemple nom@exemple.fr)."
    email = _field(body, "email", problems, bad_email)
    if "email" not in problems and (not email or not valid_email(email)):
        problems["email"] = bad_email
    bad_phone = "Ce numéro de téléphone ne semble pas valide."
    phone = _field(body, "phone", problems, bad_phone)
    if phone and (len(phone) > PHONE_MAX or not plausible_phone(phone)):
        problems["phone"] = bad_phone
    message = _field(body, "message", problems, "Écrivez votre message.", multiline=True)
    if "message" not in problems:
        if not message:
            problems["message"] = "Écrivez votre message."
        elif len(message) > MESSAGE_MAX:
            problems["message"] = (f"Votre message est trop long ({MESSAGE_MAX} caractères "
                                   "au plus).")
    bad_bien = "La référence du bien n'est pas valide."
    bien = _field(body, "bien", problems, bad_bien)
    if bien and len(bien) > BIEN_MAX:
        problems["bien"] = bad_bien
    if problems:
        raise Invalid(next(iter(problems.values())), problems)
    assert name and email and message
    return ContactForm(name=name, email=email, phone=phone or None, message=message,
                       bien=bien or None)


def site_of_origin(origin: str | None) -> str | None:
    """The site a request came from, as its host ('https://www.icidordogne.fr' →
    'www.icidordogne.fr')."""
    if not origin:
        return None
    host = origin.partition("://")[2] or origin
    return host.split("/")[0][:SITE_ID_MAX] or None


# ------------------------------------------------------------------ CORS
def cors_verdict(origin: str | None, allowed: tuple[str, ...]) -> bool | None:
    """None: no Origin header (a server, curl: allowed, no CORS headers); True: an allowed
    origin (exact match); False: another origin (refused, no CORS headers)."""
    if origin is None:
        return None
    return origin in allowed


def cors_headers(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def preflight_headers(origin: str) -> dict[str, str]:
    return {**cors_headers(origin), "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": "86400"}
