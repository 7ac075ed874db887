"""One run of a veille (jobs/engine.py) on the real database, with the `essai` plug-in
type fetching from a loopback server and the real Notifier queuing into the outbox: every
new item is reported once, a failed or killed run loses nothing, a rerun repeats nothing,
two processes never run the same veille at once, a broken source alerts Ludo once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from jobs import kinds
from jobs.engine import SKIPPED, Engine
from memory.database import open_database
from memory.store import MemoryStore
from tests.jobs.conftest import Env, job_services
from tests.jobs.kind_double import EssaiVeille


def items(*keys: str, source: str = "s1") -> list[dict[str, str]]:
    return [{"key": k, "source": source, "titre": f"Maison {k}"} for k in keys]


async def test_a_run_reports_new_items_once_and_a_rerun_repeats_nothing(env: Env) -> None:
    env.source.items = items("a", "b")
    first = await env.engine.run("essai", trigger="planifie")
    assert (first.state, first.seen, first.new) == ("ok", 2, 2)
    sent = await env.notifications()
    assert [n.destinataire for n in sent] == ["agence@example.fr", "Ludo"]
    assert "Maison a" in sent[0].texte and "Maison b" in sent[0].texte
    assert sent[0].sujet.startswith("Veille essai : 2 nouveauté(s)")
    assert sent[1].texte == "2 nouveauté(s)"
    assert env.source.user_agents == [env.services.settings.veille_user_agent]
    assert await env.store.read_watermarks("essai") == {"dernier": "b"}
    assert await env.store.unreported_items(1) == []
    stored = await env.store.known_keys(1, ["a", "b"])
    assert stored == {"a", "b"}

    env.source.items = items("a", "b", "c")
    second = await env.engine.run("essai")
    assert (second.state, second.seen, second.new) == ("ok", 3, 1)
    sent = await env.notifications()
    assert len(sent) == 4 and sent[2].texte == "Maison c"

    third = await env.engine.run("essai")
    assert (third.state, third.new, third.digest) == ("ok", 0, None)
    assert len(await env.notifications()) == 4
    history = await env.store.run_history(1)
    assert [(r.etat, r.vus, r.nouveaux, r.declenchement) for r in history] == [
        ("ok", 3, 0, "manuel"), ("ok", 3, 1, "manuel"), ("ok", 2, 2, "planifie")]
    async with env.store.db.sessions() as session:
        enriched = await session.scalar(text(
            "SELECT bool_and((donnees->>'enrichi')::boolean AND passage_id IS NOT NULL) "
            "FROM elements_veille"))
    assert enriched


async def test_a_failed_run_keeps_its_items_and_the_next_reports_them_once(env: Env) -> None:
    env.source.items = items("a", "b")
    env.source.extra = {"render_fails": True}
    failed = await env.engine.run("essai")
    assert failed.state == "echec" and failed.error == "RuntimeError : gabarit cassé"
    assert [i.cle for i in await env.store.unreported_items(1)] == ["a", "b"]
    [broken_run] = await env.notifications()  # a run failing after its fetch: told once
    assert broken_run.destinataire == "Ludo" and broken_run.cle.startswith(
        "veille:essai:panne:passage:")
    assert ("le passage est en panne depuis le 30/11/2026 à 08:00 (RuntimeError : gabarit "
            "cassé)") in broken_run.texte

    env.source.status = 500  # the whole fetch fails: one alert for Ludo
    down = await env.engine.run("essai")
    assert down.state == "echec" and (down.error or "").startswith("la récupération a échoué : ")
    env.clock.advance(days=1)
    assert (await env.engine.run("essai")).state == "echec"
    alerts = (await env.notifications())[1:]
    assert len(alerts) == 1 and alerts[0].destinataire == "Ludo"
    assert "en panne" in alerts[0].texte and alerts[0].cle.startswith("veille:essai:panne:*:")

    env.source.status = 200
    env.source.extra = {}
    env.source.items = items("a", "b", "c")
    ok = await env.engine.run("essai")
    assert (ok.state, ok.new) == ("ok", 1)
    assert [i.key for i in ok.reported] == ["a", "b", "c"]
    sent = (await env.notifications())[1:]
    assert [n.destinataire for n in sent] == ["Ludo", "Ludo", "agence@example.fr", "Ludo",
                                              "Ludo"]
    assert "la récupération refonctionne" in sent[1].texte
    assert sent[2].texte == "Maison a\nMaison b\nMaison c"
    assert "le passage refonctionne" in sent[4].texte
    assert (await env.engine.run("essai")).digest is None
    assert len(await env.notifications()) == 6


class Crash(BaseException):
    """The process dies (as SIGKILL would) right after the digest was queued."""


async def test_a_run_killed_between_queuing_and_marking_sends_nothing_twice(env: Env) -> None:
    real = env.services.notify
    calls = []

    async def notify_then_die(*args, **kwargs):  # type: ignore[no-untyped-def]
        ids = await real(*args, **kwargs)
        calls.append(kwargs["key"])
        if len(calls) == 2:
            raise Crash
        return ids

    env.services.notify = notify_then_die
    env.source.items = items("a", "b")
    with pytest.raises(Crash):
        await Engine(env.services).run("essai")
    assert len(await env.store.unreported_items(1)) == 2
    assert (await env.store.run_history(1))[0].etat == "en_cours"

    env.services.notify = real
    env.source.items = items("a", "b", "c")  # the rerun fetches more: still once each
    rerun = await Engine(env.services).run("essai")
    assert rerun.state == "ok"
    sent = await env.notifications()
    # the agency had a and b (recorded before the kill): it gets c alone; Ludo's summary
    # was queued but not recorded when the process died: his next one says all three
    assert [n.texte for n in sent] == ["Maison a\nMaison b", "2 nouveauté(s)",
                                       "Maison c", "3 nouveauté(s)"]
    history = await env.store.run_history(1)
    assert [r.etat for r in history] == ["ok", "echec"]
    assert (history[1].erreur or "").startswith("interrompu")
    # killed before queuing anything: the rerun queues the same digest once
    env.source.items = items("d")
    calls.clear()

    async def die_before(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise Crash

    env.services.notify = die_before
    with pytest.raises(Crash):
        await Engine(env.services).run("essai")
    env.services.notify = real
    await Engine(env.services).run("essai")
    await Engine(env.services).run("essai")
    assert [n.texte for n in await env.notifications()][4:] == ["Maison d", "1 nouveauté(s)"]


async def test_two_processes_never_run_the_same_veille_at_once(
        env: Env, database_url: str | None, test_data_dir: Path) -> None:
    env.source.items = items("a")
    env.source.delay_s = 0.5
    async with open_database(database_url, test_data_dir) as other_db:
        other = MemoryStore(other_db)
        other_engine = Engine(job_services(other, env.clock))
        results = await asyncio.gather(env.engine.run("essai", trigger="planifie"),
                                       other_engine.run("essai", trigger="planifie"))
    assert sorted(r.state for r in results) == ["ignore", "ok"]
    assert len(env.source.user_agents) == 1  # one fetch only
    skipped = [r for r in await env.store.run_history(1) if r.etat == "ignore"]
    assert len(skipped) == 1 and skipped[0].erreur == SKIPPED == (
        "une autre instance d'Axi l'exécute déjà")
    assert len(await env.notifications()) == 2


async def test_a_broken_source_alerts_ludo_once_and_once_when_it_recovers(env: Env) -> None:
    env.source.items = items("a")
    env.source.extra = {"broken": {"s2": "la page ne contient plus aucune annonce"},
                        "healthy": ["s1"]}
    for _ in range(3):
        result = await env.engine.run("essai")
        assert result.state == "partiel"
        assert result.error == "source s2 en panne : la page ne contient plus aucune annonce"
        env.clock.advance(days=1)
    alerts = [n for n in await env.notifications() if ":panne:" in n.cle]
    assert len(alerts) == 1 and "« s2 »" in alerts[0].texte
    states = {s.source: s for s in await env.store.source_states(1)}
    assert states["s2"].en_panne and states["s2"].alerte_le is not None

    env.source.extra = {"healthy": ["s1", "s2"]}
    for _ in range(2):
        assert (await env.engine.run("essai")).state == "ok"
        env.clock.advance(days=1)
    back = [n for n in await env.notifications() if ":retour:" in n.cle]
    assert len(back) == 1 and "refonctionne" in back[0].texte

    env.source.extra = {"broken": {"s2": "HTTP 500"}}  # a new outage: told again
    await env.engine.run("essai")
    await env.engine.run("essai")
    assert len([n for n in await env.notifications() if ":panne:" in n.cle]) == 2


class BaselineVeille(EssaiVeille):
    type = "essai-base"
    baseline_new_sources = True


async def test_a_new_source_of_a_baseline_type_is_stored_silently(env: Env) -> None:
    kinds.register("essai-base", BaselineVeille)
    try:
        await env.store.add_veille("base", "essai-base", "0 7 * * *", config={"url": env.url})
        env.source.items = items("a", "b")
        first = await env.engine.run("base")
        assert (first.state, first.new, first.digest) == ("ok", 2, None)
        env.source.items = items("a", "b", "c") + items("x", "y", source="s2")
        second = await env.engine.run("base")
        assert [i.key for i in second.reported] == ["c"]  # s2 is new: its baseline
        env.source.items += items("z", source="s2")
        assert [i.key for i in (await env.engine.run("base")).reported] == ["z"]
    finally:
        kinds.unregister("essai-base")


async def test_a_dry_run_fetches_and_renders_but_touches_nothing(env: Env) -> None:
    env.source.items = items("a", "b")
    env.source.extra = {"broken": {"s2": "HTTP 500"}}
    result = await env.engine.run("essai", dry_run=True)
    assert result.state == "essai" and result.digest is not None
    assert result.digest.text == "Maison a\nMaison b"
    for table in ("passages_veille", "elements_veille", "notifications", "etat_sources",
                  "curseurs_canal"):
        assert await env.count(table) == 0, table


async def test_a_partial_fetch_and_a_ras_digest_once_a_day(env: Env) -> None:
    await env.store.edit_veille("essai", config={"url": env.url, "ras": True})
    env.source.extra = {"partial": "plafond de 10 000 éléments atteint"}
    result = await env.engine.run("essai")
    assert result.state == "partiel" and "plafond" in (result.error or "")
    await env.engine.run("essai")
    assert [n.texte for n in await env.notifications()] == ["RAS", "0 nouveauté(s)"]
    env.clock.advance(days=1)
    await env.engine.run("essai")
    assert len(await env.notifications()) == 4


async def test_a_missing_type_module_fails_that_veille_only(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(kinds.BUILT_IN, "absent", "jobs.absent_type:AbsentVeille")
    await env.store.add_veille("absente", "absent", "0 8 * * *")
    result = await env.engine.run("absente")
    assert result.state == "echec"
    assert result.error == ("le module jobs.absent_type du type 'absent' est absent "
                            "(jobs.absent_type)")
    assert (await env.engine.run("essai")).state == "ok"


async def test_without_an_agency_address_the_digest_goes_to_ludo(env: Env) -> None:
    engine = Engine(job_services(env.store, env.clock, AXI_AGENCY_EMAIL=None,
                                 AXI_AGENCY_CC=None))
    env.source.items = items("a")
    assert (await engine.run("essai")).state == "ok"
    assert [n.destinataire for n in await env.notifications()] == ["Ludo", "Ludo"]


async def test_an_email_that_cannot_reach_every_recipient_keeps_its_items_and_tells_ludo(
        env: Env) -> None:
    """A misspelt recipient: Ludo's summary went out, but the agency's email did not — the
    items stay unreported (sent next run to whoever misses them) and Ludo is told once, and
    once more when the email goes out again (found by an adversarial review: they were
    marked reported and the agency never had them)."""
    await env.store.edit_veille("essai", destinataires={"courriel": ["agnece"],
                                                        "resume": ["créateur"]})
    env.source.items = items("a", "b")
    first = await env.engine.run("essai")
    second = await env.engine.run("essai")
    assert first.state == second.state == "partiel"
    assert len(await env.store.unreported_items(1)) == 2
    alerts = [n for n in await env.notifications()
              if n.destinataire == "Ludo" and "l'envoi du résumé" in (n.texte or "")]
    assert len(alerts) == 1 and "agnece" in alerts[0].texte  # once, not every run

    await env.store.edit_veille("essai", destinataires={"courriel": ["agence@example.fr"],
                                                        "resume": ["créateur"]})
    fixed = await env.engine.run("essai")
    assert fixed.state == "ok" and await env.store.unreported_items(1) == []
    back = [n for n in await env.notifications()
            if "l'envoi du résumé refonctionne" in (n.texte or "")]
    assert len(back) == 1


async def test_a_digest_no_recipient_can_get_fails_the_run_and_tells_ludo_once(
        env: Env) -> None:
    await env.store.edit_veille("essai", destinataires={"courriel": ["agnece"]})
    env.source.items = items("a")
    results = [await env.engine.run("essai") for _ in range(3)]
    assert [r.state for r in results] == ["echec"] * 3
    told = [n for n in await env.notifications()
            if n.destinataire == "Ludo" and "l'envoi du résumé" in (n.texte or "")]
    assert len(told) == 1


async def test_the_local_models_summary_opens_the_digest_and_its_absence_delays_nothing(
        env: Env) -> None:
    """`JobServices.summarize` stands for the local model (bot/digest_summary.py is tested
    against the loopback Ollama): its text opens the email and the Telegram summary,
    labelled and escaped; no summary, or a summarizer that fails, sends the digest as is."""
    from dataclasses import replace as dc_replace

    asked: list[str] = []

    async def summarize(text_: str) -> str | None:
        asked.append(text_)
        return "Deux maisons <b>nouvelles</b>."

    env.engine.services = dc_replace(env.services, summarize=summarize)
    env.source.items = items("a", "b")
    assert (await env.engine.run("essai")).state == "ok"
    email, telegram = await env.notifications()
    label = "Résumé automatique (modèle local, à vérifier) : Deux maisons <b>nouvelles</b>."
    assert email.texte.startswith(label) and "Maison a" in email.texte
    assert telegram.texte == f"{label}\n\n2 nouveauté(s)"
    assert len(asked) == 1 and "Maison a" in asked[0] and "Résumé" not in asked[0]

    async def silent(text_: str) -> str | None:
        return None

    async def broken(text_: str) -> str | None:
        raise RuntimeError("model gone")

    for summarizer, key in ((silent, "c"), (broken, "d")):
        env.engine.services = dc_replace(env.services, summarize=summarizer)
        env.source.items = items(key)
        assert (await env.engine.run("essai")).state == "ok"
        assert (await env.notifications())[-2].texte == f"Maison {key}"
