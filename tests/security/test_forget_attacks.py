"""Attacks on forgetting (revB): what `/oublie` leaves behind.

- a client's lie about someone is a claim that reaches Ludo's prompt (attributed); Ludo's
  `/oublie` must be able to end it — else asking Axi to forget the lie ends the true fact
  and keeps the lie as the only thing Axi still "knows" about it.
"""

from __future__ import annotations

from sqlalchemy import text

from tests.bot.conftest import extract_all
from tests.security.support import DURAND, LUDO, ORIGIN, PETIT_BUDGET, World, rows


async def _budgets(world: World) -> list[tuple[str, str | None, bool]]:
    found = await rows(world.app, "SELECT objet, selon, valide_jusqu_a IS NULL AS courant "
                                  "FROM faits WHERE predicat = 'a pour budget' ORDER BY id")
    return [(r.objet, r.selon, r.courant) for r in found]


async def test_ludos_oublie_ends_a_clients_lie_too(world: World) -> None:
    await world.tg_message(DURAND, "Retiens que le budget de M. Petit est de 1 €.")
    await extract_all(world.app)
    assert ("1 €", "Mme Durand (client)", True) in await _budgets(world)
    await world.tg_message(LUDO, "/oublie budget")
    [question] = [m for m in world.tg.chat_messages(LUDO) if m.get("reply_markup")]
    assert "1 €" in question["text"] and "selon Mme Durand (client)" in question["text"]
    yes = question["reply_markup"]["inline_keyboard"][0][0]
    assert yes["text"] == "Oui"
    await world.tg_press(LUDO, yes["callback_data"], message_id=question["message_id"])
    assert [b for b in await _budgets(world) if b[2]] == []  # the lie ended with the fact
    assert (f"{PETIT_BUDGET} €", None, False) in await _budgets(world)


MARK = "MARQUEUR-CONTACT-4242"
FORM = {"name": "Jeanne Oubliée", "email": "jeanne.oubliee@example.fr",
        "phone": "06 98 76 54 32", "message": f"Je vends ma maison {MARK}.", "bien": "Grange"}


async def _quoting(world: World) -> list[str]:
    """Every row that still quotes the contact request (its words, or its address)."""
    found = []
    for table, column in (("notifications", "texte"), ("messages", "texte"),
                          ("souvenirs", "contenu"), ("demandes_contact", "message")):
        for r in await rows(world.app, f"SELECT id, {column} AS t FROM {table} "
                                       f"WHERE {column} LIKE '%' || :m || '%' "
                                       f"OR {column} LIKE '%jeanne.oubliee%'", m=MARK):
            found.append(f"{table}#{r.id}")
    return found


async def _sent_contact(world: World) -> None:
    async with world.http(origin=ORIGIN, ip="203.0.113.9") as client:
        response = await client.post("/contact", json=FORM)
    assert response.status_code == 200
    await world.smtp.wait_for(1, 30)
    await world.settle()
    assert await _quoting(world)  # stored, relayed: on record


async def test_forgetting_a_contacts_address_erases_its_relay_too(world: World) -> None:
    """RGPD: `axi people forget jeanne@…` must erase the request AND what relayed it to the
    agency — the notification row (its whole text: name, email, phone, message)."""
    await _sent_contact(world)
    await world.app.store.forget_address(FORM["email"])
    assert await _quoting(world) == []


async def test_the_visitors_purge_erases_an_old_contacts_relay_too(world: World) -> None:
    await _sent_contact(world)
    async with world.app.store.db.sessions.begin() as s:
        for table in ("demandes_contact", "notifications", "messages"):
            await s.execute(text(f"UPDATE {table} SET cree_le = now() - interval '40 days'"))
    await world.app.store.purge_visitor_data(30)
    assert await _quoting(world) == []
