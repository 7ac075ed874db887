"""What waits in the inbox never blocks a conversation for good: a message no allowed
model can read is given up with a true explanation, stuck messages show in /health and
`axi inbox`, the operator can drop one, and two `axi ask` in one conversation each get
their own answer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from bot.app import Axi
from memory.store import MemoryStore
from tests.bot.test_cli_chat import axi as run_axi
from tests.bot.test_pipeline import run_all, sent, telegram
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama
from tests.waiting import until

HERE = Path(__file__).parent
LONG = "Voici le détail de la succession, pièce par pièce. " * 800  # ~13k tokens > 4096


async def test_too_long_for_the_only_allowed_model_is_given_up_truthfully(
    axi: Axi, ollama_server: FakeOllama, anthropic_server: FakeAnthropic
) -> None:
    big = await axi.pipeline.accept(telegram("1001", LONG, local_only=True))
    after = await axi.pipeline.accept(telegram("1001", "Et la maison de Vergt ?"))
    await run_all(axi)
    assert (await axi.store.get_message(big)).etat == "abandonne"
    [notice] = [d for d in sent(axi) if d.in_reply_to == big]
    assert notice.kind == "notice" and "trop long pour mon moteur local" in notice.text
    assert "ne doit pas quitter le serveur" in notice.text and "Peux-tu" in notice.text
    assert anthropic_server.requests == []
    assert all(LONG[:60] not in json.dumps(b, ensure_ascii=False)
               for b in ollama_server.chat_bodies)
    # the conversation moved on
    assert (await axi.store.get_message(after)).etat == "traite"
    assert (await axi.health())["components"]["queues"]["stuck"] == 0


async def test_too_long_but_allowed_out_goes_to_the_fallback(
    axi: Axi, anthropic_server: FakeAnthropic
) -> None:
    anthropic_server.reply = "Bien reçu, je regarde la succession."
    big = await axi.pipeline.accept(telegram("1001", LONG))
    await run_all(axi)
    assert (await axi.store.get_message(big)).etat == "traite"
    assert len(anthropic_server.requests) == 1


async def test_stuck_messages_show_in_health_and_can_be_dropped(
    axi: Axi, ollama_server: FakeOllama, anthropic_server: FakeAnthropic
) -> None:
    ollama_server.stop()
    anthropic_server.stop()
    stuck = await axi.pipeline.accept(telegram("2002", "Avez-vous du nouveau ?"))
    await run_all(axi)
    async with axi.db.engine.begin() as conn:  # as if it had waited an hour, tried 5 times
        await conn.execute(text("UPDATE messages SET recu_le = now() - interval '1 hour', "
                                "tentatives = 5 WHERE id = :i"), {"i": stuck})
    report = await axi.health()
    assert report["components"]["queues"]["stuck"] == 1 and report["status"] == "error"
    [entry] = await axi.store.list_inbox()
    assert entry.message.id == stuck and entry.stuck
    from bot.notices import dropped_notice
    await axi.store.drop_inbound(stuck, dropped_notice("vous"))
    await run_all(axi)
    assert (await axi.store.get_message(stuck)).etat == "abandonne"
    notices = [d.text for d in sent(axi) if d.in_reply_to == stuck]
    assert any("mis de côté" in n and "renvoyez-le-moi" in n for n in notices)
    assert (await axi.health())["components"]["queues"]["stuck"] == 0 and await axi.store.list_inbox() == []
    from memory.errors import InvalidInput
    try:
        await axi.store.drop_inbound(stuck, "x")
    except InvalidInput as exc:
        assert "not pending" in str(exc)
    else:
        raise AssertionError("a closed message was dropped twice")


async def test_inbox_and_confirm_commands(cli_env, store: MemoryStore,
                                          ollama_server: FakeOllama) -> None:
    ludo = await store.add_person("Ludo", relation="créateur", comment_interagir="tutoie")
    ollama_server.stop()
    assert run_axi(cli_env, "ask", "--as", "Ludo", "Premier message").returncode == 4
    listed = json.loads(run_axi(cli_env, "inbox", "list", "--json").stdout)
    assert [m["text"] for m in listed] == ["Premier message"] and not listed[0]["stuck"]
    dropped = run_axi(cli_env, "inbox", "drop", str(listed[0]["id"]))
    assert dropped.returncode == 0, dropped.stderr
    assert json.loads(run_axi(cli_env, "inbox", "list", "--json").stdout) == []
    for bad in ("99999999999", "0", str(listed[0]["id"])):
        r = run_axi(cli_env, "inbox", "drop", bad)
        assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1
    # a confirmation answered from the terminal, as the person asked, through the inbox
    await store.add_consigne("Ancienne consigne")
    from datetime import UTC, datetime, timedelta
    record, _ = await store.create_confirmation(
        action="consignes.remplacer", texte="Remplacer les consignes ?",
        payload={"textes": ["Nouvelle consigne"]}, choix=["oui", "non"], labels=["Oui", "Non"],
        demande_a=ludo.id, demande_par=None, expire_le=datetime.now(UTC) + timedelta(days=1),
        routes=[("console", "operateur")])
    pending = json.loads(run_axi(cli_env, "confirm", "list", "--json").stdout)
    assert [c["id"] for c in pending] == [record.id] and pending[0]["asked"] == "Ludo"
    wrong = run_axi(cli_env, "confirm", "answer", str(record.id), "oui")  # no --as
    assert wrong.returncode == 2
    other = run_axi(cli_env, "confirm", "answer", str(record.id), "peut-être", "--as", "Ludo")
    assert "ne fait pas partie" in other.stdout
    ok = run_axi(cli_env, "confirm", "answer", str(record.id), "oui", "--as", "Ludo")
    assert ok.returncode == 0, ok.stderr
    assert "C'est fait" in ok.stdout
    assert [c.texte for c in await store.list_consignes()] == ["Nouvelle consigne"]
    assert json.loads(run_axi(cli_env, "confirm", "list", "--json").stdout) == []
    missing = run_axi(cli_env, "confirm", "answer", "4242", "oui", "--as", "Ludo")
    assert missing.returncode == 1 and "no confirmation #4242" in missing.stderr


async def test_two_asks_in_one_conversation_each_print_their_own_reply(
    cli_env, store: MemoryStore, ollama_server: FakeOllama
) -> None:
    ollama_server.delay_s = 1.0
    ollama_server.reply = lambda body: "Vu : " + body["messages"][-1]["content"].split(
        "Message :\n")[-1]

    def ask(message: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "bot.cli", "ask", "--no-extract", message],
                                env=cli_env, cwd=HERE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    first = ask("Premier")
    await until(lambda: ollama_server.chat_bodies, 60, message="the first ask never reached the model")
    second = ask("Second")
    out1, err1 = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert (first.returncode, second.returncode) == (0, 0), (err1, err2)
    assert out1.strip() == "Vu : Premier" and out2.strip() == "Vu : Second"


async def test_a_second_ask_behind_a_waiting_message_says_so_at_once(
    cli_env, store: MemoryStore, ollama_server: FakeOllama
) -> None:
    import time
    await store.add_person("Ludo", relation="créateur", comment_interagir="tutoie")
    ollama_server.stop()
    assert run_axi(cli_env, "ask", "--as", "Ludo", "Tu es là ?").returncode == 4
    started = time.monotonic()
    second = run_axi(cli_env, "ask", "--as", "Ludo", "Encore là ?")
    assert second.returncode == 4 and "waiting in the inbox" in second.stderr
    assert time.monotonic() - started < 30  # not the one-shot timeout (600 s)


async def test_drop_tells_each_sender_in_their_own_form(
    cli_env, store: MemoryStore
) -> None:
    await store.add_person("Ludo", relation="créateur", comment_interagir="tutoie",
                           identities=[("telegram", "1001")])
    client = await store.add_person("Mme Durand", relation="client")
    from channels.console import person_address
    senders = [("telegram", "1001", "ton dernier message"),
               ("console", person_address(client.id), "votre dernier message"),
               ("console", "operateur", "ton dernier message")]
    for n, (canal, adresse, expected) in enumerate(senders):
        accepted = await store.accept_inbound(canal=canal, adresse=adresse, texte="Bonjour",
                                              identifiant_externe=f"d{n}",
                                              conversation=f"{canal}:{adresse}", verifie=True)
        r = run_axi(cli_env, "inbox", "drop", str(accepted.message.id))
        assert r.returncode == 0, r.stderr
        [notice] = await store.replies_to(accepted.message.id)
        assert expected in notice.texte, (canal, adresse, notice.texte)


async def test_confirm_answer_fails_when_nothing_was_settled(
    cli_env, store: MemoryStore
) -> None:
    from datetime import UTC, datetime, timedelta
    ludo = await store.add_person("Ludo", relation="créateur")
    await store.add_person("Mme Durand", relation="client")
    record, _ = await store.create_confirmation(
        action="consignes.remplacer", texte="Remplacer ?", payload={"textes": ["x"]},
        choix=["oui", "non"], labels=["Oui", "Non"], demande_a=ludo.id, demande_par=None,
        expire_le=datetime.now(UTC) + timedelta(days=1), routes=[("console", "operateur")])
    wrong_person = run_axi(cli_env, "confirm", "answer", str(record.id), "oui",
                           "--as", "Mme Durand")
    assert wrong_person.returncode == 1 and "pas adressée" in wrong_person.stdout
    assert run_axi(cli_env, "confirm", "answer", str(record.id), "non", "--as",
                   "Ludo").returncode == 0
    again = run_axi(cli_env, "confirm", "answer", str(record.id), "oui", "--as", "Ludo")
    assert again.returncode == 1 and "déjà été traitée" in again.stdout


async def test_an_attachment_alone_gets_a_true_notice_without_a_model(
    axi: Axi, ollama_server: FakeOllama
) -> None:
    from datetime import UTC, datetime

    from bot.inbound import Attachment, Inbound
    photo = await axi.pipeline.accept(Inbound(
        channel="telegram", sender="1001", verified=True, text="", external_id="photo-1",
        received_at=datetime.now(UTC),
        attachments=(Attachment("maison.jpg", "image/jpeg", 1234, ref="f1"),)))
    after = await axi.pipeline.accept(telegram("1001", "Tu as vu la photo ?"))
    await run_all(axi)
    assert (await axi.store.get_message(photo)).etat == "traite"
    [notice] = [d for d in sent(axi) if d.in_reply_to == photo]
    assert "maison.jpg" in notice.text and "pièces jointes" in notice.text
    assert (await axi.store.get_message(after)).etat == "traite"
    assert len([b for b in ollama_server.chat_bodies if not b.get("format")]) == 1
