"""The channel/core message values and the token estimator."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime

import pytest

from bot.inbound import Attachment, ButtonPressed, Edited, Inbound, event_from_json
from llm.tokens import (
    MESSAGE_OVERHEAD,
    PROMPT_OVERHEAD,
    _char_weight,
    estimate_messages,
    estimate_text,
)

NOW = datetime(2025, 3, 4, 13, 5, tzinfo=UTC)


def test_inbound_is_frozen_and_normalises_attachments() -> None:
    msg = Inbound(channel="telegram", sender="123456789", verified=True, text="Salut Axi",
                  external_id="update-42", received_at=NOW,
                  attachments=[Attachment("plan.pdf", "application/pdf", 1024, ref="file-1")])  # type: ignore[arg-type]
    assert isinstance(msg.attachments, tuple) and msg.attachments[0].filename == "plan.pdf"
    assert not msg.empty and msg.thread_ref is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.text = "autre"  # type: ignore[misc]


@pytest.mark.parametrize("bad", [
    {"channel": ""}, {"sender": " "}, {"external_id": ""}, {"received_at": datetime(2025, 3, 4)},
])
def test_inbound_rejects_incomplete_values(bad: dict[str, object]) -> None:
    fields = {"channel": "email", "sender": "ludo@ici-dordogne.fr", "verified": False,
              "text": "Bonjour", "external_id": "<id@x>", "received_at": NOW} | bad
    with pytest.raises(ValueError):
        Inbound(**fields)  # type: ignore[arg-type]


def test_empty_inbound_and_events() -> None:
    empty = Inbound(channel="web", sender="s1", verified=False, text="  ", external_id="1",
                    received_at=NOW)
    assert empty.empty
    pressed = Inbound(channel="telegram", sender="1001", verified=True, text="",
                      external_id="cb-1", received_at=NOW,
                      event=ButtonPressed("confirmation:3:oui"))
    assert not pressed.empty
    for event in (ButtonPressed("confirmation:3:oui"), Edited("1001:42")):
        assert event_from_json(event.as_json()) == event
    assert event_from_json(None) is None and event_from_json({"type": "inconnu"}) is None
    with pytest.raises(ValueError):
        ButtonPressed("  ")
    with pytest.raises(ValueError):
        Inbound(channel="telegram", sender="1", verified=True, text="x", external_id="e",
                received_at=NOW, event="confirmation:1:oui")  # type: ignore[arg-type]


def test_token_estimate_is_conservative_for_french() -> None:
    text = "La maison de Vergt a été vendue, le compromis est signé chez le notaire."
    assert estimate_text(text) >= len(text) / 3.5  # French averages 3.5-4 chars a token
    assert estimate_text("24260") == 5  # digits count one each
    assert estimate_text("🏠") == 4
    assert estimate_text("") == 0
    msgs = [{"role": "system", "content": "abc"}, {"role": "user", "content": "def"}]
    assert estimate_messages(msgs) == PROMPT_OVERHEAD + 2 * (MESSAGE_OVERHEAD + 1)


def test_token_estimate_equals_the_per_character_weights_exactly() -> None:
    """The fast count (regex scans, integer thirds) is the exact sum of the documented
    per-character weights, rounded up, on mixed text: Latin, accents, digits, curly
    punctuation, Cyrillic, CJK and emoji."""
    rng = random.Random(3)
    alphabet = "abcdefé èàŒ0123456789’…–“”\U0001f3e0中ЖΩ\n\t,.;"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        thirds = sum(1 if _char_weight(ch) < 1 else 3 * int(_char_weight(ch)) for ch in text)
        assert estimate_text(text) == -(-thirds // 3), text
    assert estimate_text("Prix : 250 000 € 🏠") == -(-(10 + 3 * 6 + 3 + 12) // 3)  # 10 Latin, 6 digits, €, 🏠
