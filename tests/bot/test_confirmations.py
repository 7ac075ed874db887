"""Confirmations ("ne rien lancer sans accord Ludo"): asked on Ludo's channel with buttons,
answered through the inbox, the action run exactly once — and never by text, by someone
else, after "non" or after expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.app import Axi
from bot.confirmations import ActionContext
from bot.inbound import ButtonPressed, Inbound
from memory.confirmations import button_data
from tests.bot.test_pipeline import run_all, sent, telegram
from tests.fakes.ollama_server import FakeOllama

_counter = iter(range(1, 1_000_000))


def press(sender: str, data: str, *, verified: bool = True) -> Inbound:
    return Inbound(channel="telegram", sender=sender, verified=verified, text="",
                   external_id=f"cb{next(_counter)}", received_at=datetime.now(UTC),
                   event=ButtonPressed(data))


async def active_consignes(axi: Axi) -> list[str]:
    return [c.texte for c in await axi.store.list_consignes()]


async def ask_replace(axi: Axi, **options: object) -> int:
    await axi.store.add_consigne("Ancienne consigne")
    record = await axi.confirmations.ask(
        "consignes.remplacer", "Je remplace les consignes par « Toujours vouvoyer les "
        "clients » : d'accord ?", {"textes": ["Toujours vouvoyer les clients"]},
        **options)  # type: ignore[arg-type]
    return record.id


async def test_question_goes_to_ludo_with_buttons_and_runs_once(axi: Axi) -> None:
    cid = await ask_replace(axi)
    await run_all(axi)
    [question] = sent(axi)
    assert question.kind == "confirmation" and question.address == "1001"
    assert question.choices == (("Oui", button_data(cid, "oui")), ("Non", button_data(cid, "non")))
    # Ludo presses "Oui" — twice (Telegram redelivers, or he double-taps)
    first = await axi.pipeline.accept(press("1001", button_data(cid, "oui")))
    second = await axi.pipeline.accept(press("1001", button_data(cid, "oui")))
    await run_all(axi)
    assert await active_consignes(axi) == ["Toujours vouvoyer les clients"]
    record = await axi.store.get_confirmation(cid)
    assert record is not None and record.etat == "executee" and record.reponse == "oui"
    answers = [d.text for d in sent(axi) if d.in_reply_to in (first, second)]
    assert answers[0].startswith("C'est fait") and "déjà été traitée" in answers[1]
    # no model was asked anything for a button
    assert len(await axi.store.list_consignes()) == 1


async def test_no_after_expiry_someone_else_or_text_never_runs_it(axi: Axi) -> None:
    cid = await ask_replace(axi)
    # a client presses a forged button: nothing happens
    await axi.pipeline.accept(press("2002", button_data(cid, "oui")))
    # an unverified sender claiming Ludo's address: a stranger
    await axi.pipeline.accept(press("1001", button_data(cid, "oui"), verified=False))
    # Ludo types "oui" as text: text never approves
    await axi.pipeline.accept(telegram("1001", "oui"))
    await run_all(axi)
    assert await active_consignes(axi) == ["Ancienne consigne"]
    record = await axi.store.get_confirmation(cid)
    assert record is not None and record.etat == "en_attente"
    # "non" settles it for good
    await axi.pipeline.accept(press("1001", button_data(cid, "non")))
    await axi.pipeline.accept(press("1001", button_data(cid, "oui")))
    await run_all(axi)
    record = await axi.store.get_confirmation(cid)
    assert record is not None and record.etat == "refusee"
    assert await active_consignes(axi) == ["Ancienne consigne"]


async def test_an_expired_confirmation_does_nothing(axi: Axi) -> None:
    cid = await ask_replace(axi, expires_in=timedelta(hours=1))
    axi.confirmations.clock = lambda: datetime.now(UTC) + timedelta(hours=2)
    await axi.pipeline.accept(press("1001", button_data(cid, "oui")))
    await run_all(axi)
    record = await axi.store.get_confirmation(cid)
    assert record is not None and record.etat == "expiree"
    assert await active_consignes(axi) == ["Ancienne consigne"]
    assert any("expiré" in d.text for d in sent(axi))


async def test_a_failing_action_leaves_nothing_half_done(axi: Axi) -> None:
    await axi.store.add_consigne("Ancienne consigne")
    record = await axi.confirmations.ask("consignes.remplacer", "Vider les consignes ?",
                                         {"textes": []})
    await axi.pipeline.accept(press("1001", button_data(record.id, "oui")))
    await run_all(axi)
    settled = await axi.store.get_confirmation(record.id)
    assert settled is not None and settled.etat == "echouee"
    assert await active_consignes(axi) == ["Ancienne consigne"]  # the UPDATE was rolled back


async def test_asking_needs_a_known_action_and_someone_to_ask(axi: Axi) -> None:
    from memory.errors import InvalidInput, NotFound
    with pytest.raises(InvalidInput):
        await axi.confirmations.ask("envoyer.tout", "?", {})
    await axi.store.remove_person("Ludo")
    with pytest.raises(NotFound):
        await axi.confirmations.ask("consignes.remplacer", "?", {"textes": ["x"]})


async def test_a_button_never_waits_behind_a_message_waiting_for_a_model(
    axi: Axi, ollama_server: FakeOllama
) -> None:
    cid = await ask_replace(axi)
    ollama_server.stop()
    waiting = await axi.pipeline.accept(telegram("1001", "Salut", local_only=True))
    await axi.pipeline.accept(press("1001", button_data(cid, "oui")))
    await run_all(axi)
    assert (await axi.store.get_message(waiting)).etat == "en_attente"
    record = await axi.store.get_confirmation(cid)
    assert record is not None and record.etat == "executee"


async def test_loose_button_data_settles_nothing(axi: Axi) -> None:
    cid = await ask_replace(axi, expires_in=timedelta(hours=1))
    with pytest.raises(ValueError):  # a button carries no text
        Inbound(channel="telegram", sender="1001", verified=True, text="et aussi…",
                external_id="x", received_at=datetime.now(UTC), event=ButtonPressed("d"))
    await axi.pipeline.accept(press("1001", f"confirmation:{chr(0xFF10 + cid)}:oui"))  # ０-９
    axi.confirmations.clock = lambda: datetime.now(UTC) + timedelta(hours=2)
    await axi.pipeline.accept(press("1001", button_data(cid, "n'importe quoi")))
    await run_all(axi)
    record = await axi.store.get_confirmation(cid)
    assert record is not None and record.etat == "en_attente" and record.reponse is None


async def test_a_refusal_lets_go_of_what_waited_at_once(axi: Axi) -> None:
    """An action may register what to release when it is refused (or answered too
    late): run once, in the answer's transaction; a failing one still refuses."""
    released: list[tuple[int, str]] = []

    async def let_go(ctx: ActionContext) -> None:
        released.append((ctx.confirmation.id, ctx.choice))
        if ctx.payload.get("casse"):
            raise RuntimeError("boom")

    async def never(ctx: ActionContext) -> str:
        raise AssertionError("the action must not run")

    axi.confirmations.register("essai.attente", never, on_refusal=let_go)
    refused = await axi.confirmations.ask("essai.attente", "?", {})
    broken = await axi.confirmations.ask("essai.attente", "?", {"casse": True})
    late = await axi.confirmations.ask("essai.attente", "?", {}, expires_in=timedelta(hours=1))
    await axi.pipeline.accept(press("1001", button_data(refused.id, "non")))
    await axi.pipeline.accept(press("1001", button_data(refused.id, "non")))
    await axi.pipeline.accept(press("1001", button_data(broken.id, "non")))
    await run_all(axi)
    axi.confirmations.clock = lambda: datetime.now(UTC) + timedelta(hours=2)
    await axi.pipeline.accept(press("1001", button_data(late.id, "oui")))
    await run_all(axi)
    assert released == [(refused.id, "non"), (broken.id, "non"), (late.id, "oui")]
    states = [(await axi.store.get_confirmation(c.id)) for c in (refused, broken, late)]
    assert [s.etat for s in states if s is not None] == ["refusee", "refusee", "expiree"]
