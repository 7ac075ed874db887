"""Axi's persona: the French text at the head of every conversation prompt.

It lives in `bot/persona/axi.md` (package data) so Ludo can read and amend it without
touching code; it is loaded once per call site and never changes within a process, which
keeps the prompt prefix identical from turn to turn (Ollama's KV cache reuse).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

PERSONA_FILE = "axi.md"


@lru_cache(maxsize=4)
def load_persona(name: str = PERSONA_FILE) -> str:
    """The persona text, stripped, with Windows line endings normalised."""
    text = resources.files("bot").joinpath("persona", name).read_text(encoding="utf-8")
    return text.replace("\r\n", "\n").strip()
