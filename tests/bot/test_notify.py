"""`notify` (DESIGN "Reaching people"): routing, keys that never send twice, quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from bot.app import Axi
from bot.channel import OutgoingFile
from bot.notify import OWNER, choose_routes, raw_route
from bot.outbox import delivery_of
from bot.quiet_hours import QuietHours
from tests.bot.test_pipeline import run_all, sent

PARIS = ZoneInfo("Europe/Paris")


def test_routes_follow_preference_then_telegram_then_email() -> None:
    ids = [("email", "l@x.fr"), ("telegram", "1001"), ("telegram", "1002")]
    everything = {"telegram", "email", "console"}
    assert choose_routes(ids, {}, everything) == [("telegram", "1001")]
    assert choose_routes(ids, {"canal_prefere": "email"}, everything) == [("email", "l@x.fr")]
    both = choose_routes(ids, {"canal_prefere": ["email", "telegram"]}, everything)
    assert both == ids
    # a channel not configured is never used (its message would go out stale one day)
    assert choose_routes(ids, {}, {"email", "console"}) == [("email", "l@x.fr")]
    assert choose_routes(ids, {"canal_prefere": "sms"}, {"console"}) == []
    # the Axis mailbox (read in the cloud) is Axis's default route, nobody else's
    axis = [("axis", "personne-3")]
    assert choose_routes(axis, {}, {"axis"}, "axis") == [("axis", "personne-3")]
    assert choose_routes(axis, {}, {"axis"}, "créateur") == []


def test_raw_addresses() -> None:
    assert raw_route("agence@icidordogne.fr") == ("email", "agence@icidordogne.fr")
    assert raw_route("telegram:1001") == ("telegram", "1001")
    assert raw_route("Ludo") is None and raw_route("a b@c") is None


def test_quiet_hours_hold_pushes_until_morning() -> None:
    quiet = QuietHours.parse("21:00-07:30")
    assert quiet is not None
    evening = datetime(2026, 11, 30, 22, 15, tzinfo=PARIS)
    assert quiet.hold_until(evening) == datetime(2026, 12, 1, 7, 30, tzinfo=PARIS)
    night = datetime(2026, 12, 1, 3, 0, tzinfo=PARIS)
    assert quiet.hold_until(night) == datetime(2026, 12, 1, 7, 30, tzinfo=PARIS)
    assert quiet.hold_until(datetime(2026, 12, 1, 7, 30, tzinfo=PARIS)) is None
    assert quiet.hold_until(datetime(2026, 12, 1, 12, 0, tzinfo=PARIS)) is None
    day = QuietHours.parse("12:00-14:00")
    assert day is not None and day.hold_until(datetime(2026, 12, 1, 13, 0, tzinfo=PARIS)) == \
        datetime(2026, 12, 1, 14, 0, tzinfo=PARIS)
    assert QuietHours.parse("off") is None
    for bad in ("21h-7h", "21:00", "25:00-07:00", "08:00-08:00"):
        with pytest.raises(ValueError):
            QuietHours.parse(bad)


async def test_a_push_reaches_a_person_once_per_key(axi: Axi) -> None:
    first = await axi.notifier.notify("Ludo", "3 nouveaux DPE à Vergt.", key="veille:dpe:2026-11-30",
                                      subject="Veille DPE", html="<p>3 nouveaux DPE</p>",
                                      attachments=[OutgoingFile("dpe.csv", "text/csv", b"a;b\n")],
                                      urgent=True)
    again = await axi.notifier.notify("Ludo", "3 nouveaux DPE à Vergt.",
                                      key="veille:dpe:2026-11-30", urgent=True)
    assert len(first) == 1 and again == []
    await run_all(axi)
    [push] = sent(axi)
    assert push.kind == "push" and push.address == "1001" and push.subject == "Veille DPE"
    assert push.html == "<p>3 nouveaux DPE</p>"
    assert push.attachments == (OutgoingFile("dpe.csv", "text/csv", b"a;b\n"),)
    # a push is not a turn of the conversation
    history, _ = await axi.store.conversation_history("telegram:1001", current_id=0)
    assert history == []


async def test_pushes_wait_out_quiet_hours_unless_urgent(axi: Axi) -> None:
    # 23:00 in Paris today: a push held until 07:30 tomorrow, always after the database's
    # own now() (a fixed date made this test fail once the real clock passed that 07:30)
    today = datetime.now(PARIS).date()
    late = datetime(today.year, today.month, today.day, 23, 0, tzinfo=PARIS)
    axi.notifier.clock = lambda: late.astimezone(UTC)
    held = await axi.notifier.notify(OWNER, "Résumé de la journée.", key=f"resume:{today}")
    urgent = await axi.notifier.notify(OWNER, "La sauvegarde a échoué.", key="backup:ko",
                                       urgent=True)
    await run_all(axi)
    assert [d.message_id for d in sent(axi)] == urgent
    msg = await axi.store.get_message(held[0])
    assert msg.etat == "a_envoyer"
    tomorrow = today + timedelta(days=1)
    assert msg.prochain_essai == datetime(tomorrow.year, tomorrow.month, tomorrow.day, 7, 30,
                                          tzinfo=PARIS)


async def test_raw_address_and_unknown_person(axi: Axi) -> None:
    from memory.errors import InvalidInput, NotFound
    with pytest.raises(InvalidInput):  # email is not configured in this process
        await axi.notifier.notify("agence@icidordogne.fr", "x", key="contact:0")
    axi.wiring.configured = frozenset({"telegram", "email"})
    ids = await axi.notifier.notify("agence@icidordogne.fr", "Nouveau contact depuis le site.",
                                    key="contact:1", cc=["anthony@icidordogne.fr"],
                                    reply_to="client@example.fr", urgent=True)
    async with axi.db.engine.connect() as conn:
        row = (await conn.execute(text("SELECT * FROM messages WHERE id = :i"),
                                  {"i": ids[0]})).one()
    assert (row.canal, row.adresse) == ("email", "agence@icidordogne.fr")
    delivery = delivery_of(await axi.store.get_message(ids[0]))
    assert delivery.cc == ("anthony@icidordogne.fr",) and delivery.reply_to == "client@example.fr"
    with pytest.raises(NotFound):
        await axi.notifier.notify("Personne Inconnue", "x", key="k")
    for bad in ("a@b.fr\nBcc: victime@x.fr", "a@b.fr,c@d.fr", "telegram:", "x y@z.fr"):
        with pytest.raises(NotFound):
            await axi.notifier.notify(bad, "x", key=f"bad:{bad}")
    with pytest.raises(InvalidInput):
        await axi.notifier.notify("sms:0600000000", "x", key="sms")  # not configured
    with pytest.raises(InvalidInput):
        await axi.notifier.notify("Ludo", "x", key="cc", cc=["a@b.fr\nBcc: x@y.fr"])
    with pytest.raises(InvalidInput):  # questions with buttons go through Confirmations
        await axi.notifier.notify("Ludo", "Choisis", key="q", kind="confirmation")


async def test_a_name_that_looks_like_an_address_is_the_person(axi: Axi) -> None:
    await axi.store.add_person("Agence:Vergt", relation="équipe",
                               identities=[("telegram", "4004")])
    ids = await axi.notifier.notify("Agence:Vergt", "Bonjour l'équipe", key="k", urgent=True)
    assert (await axi.store.get_message(ids[0])).adresse == "4004"


async def test_an_empty_attachment_is_still_attached(axi: Axi) -> None:
    await axi.notifier.notify("Ludo", "Rapport vide", key="k0", urgent=True,
                              attachments=[OutgoingFile("vide.csv", "text/csv", b"")])
    await run_all(axi)
    assert sent(axi)[0].attachments == (OutgoingFile("vide.csv", "text/csv", b""),)


def test_quiet_hours_refuse_utc_offsets() -> None:
    with pytest.raises(ValueError, match="without a UTC offset"):
        QuietHours.parse("21:00+02:00-07:30")
