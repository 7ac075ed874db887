"""The optional Trello sink against a loopback Trello: P1 leads become cards once (a rerun
finds them on the list), nothing without the three settings or in a dry run, source text
inert in Markdown, and a Trello failure never fails the enrichment."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from bot.config import Settings
from jobs.trello import card_fields, push_leads
from jobs.types import RunContext, SourceItem, VeilleRecord
from tests.fakes import trello_server as _fake
from tests.fakes.trello_server import KEY, LIST_ID, TOKEN

trello_server_session = _fake.trello_server_session
trello_server = _fake.trello_server
NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=2.0) as client:
        yield client


@pytest.fixture(autouse=True)
def no_retry_wait(monkeypatch: Any) -> None:
    async def instant(_seconds: float) -> None:
        return None

    monkeypatch.setattr("jobs.dpe_http._sleep", instant)


def context(fake: Any, http: httpx.AsyncClient, *, dry_run: bool = False,
            env: dict[str, str] | None = None) -> RunContext:
    values = {"AXI_TRELLO_API_URL": fake.url, "AXI_TRELLO_KEY": KEY, "AXI_TRELLO_TOKEN": TOKEN,
              "AXI_TRELLO_LIST_ID": LIST_ID, **(env or {})}
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    return RunContext(veille=VeilleRecord(1, "dpe", "dpe", {}, "0 8 * * *", {}, True),
                      http=http, store=None, settings=settings, now=NOW, dry_run=dry_run)


def lead(numero: str, priorite: str = "P1", adresse: str = "12 Rue de la Paix 24260 Le Bugue"
         ) -> SourceItem:
    return SourceItem(numero, "24260", {
        "numero_dpe": numero, "classe": "G", "adresse": adresse, "priorite": priorite,
        "points": 90, "raisons": ["passoire thermique (classe G) (+50)"],
        "date_reception": "2026-11-20", "liens": {"carte": "https://www.openstreetmap.org/x"}})


async def test_p1_leads_become_cards_once(trello_server: Any, http: Any) -> None:
    items = [lead("DPE1"), lead("DPE2", "P2"), lead("DPE3")]
    out = await push_leads(context(trello_server, http), items)
    assert [c["name"] for c in trello_server.cards] == [
        "DPE G · 12 Rue de la Paix 24260 Le Bugue · DPE1",
        "DPE G · 12 Rue de la Paix 24260 Le Bugue · DPE3"]
    assert all(c["pos"] == "top" for c in trello_server.cards)
    assert out[0].data["trello"].startswith("https://trello.com/c/")
    assert "trello" not in out[1].data
    again = await push_leads(context(trello_server, http), items)  # the rerun of a failed run
    assert len(trello_server.cards) == 2
    assert again[2].data["trello"] == out[2].data["trello"]


async def test_nothing_without_settings_or_in_a_dry_run(trello_server: Any, http: Any) -> None:
    items = [lead("DPE1")]
    assert await push_leads(context(trello_server, http, env={"AXI_TRELLO_LIST_ID": ""}), items) == items
    assert await push_leads(context(trello_server, http, dry_run=True), items) == items
    assert trello_server.requests == []


@pytest.mark.parametrize("env", [{"AXI_TRELLO_TOKEN": "wrong"}, {"AXI_TRELLO_LIST_ID": "nope"}])
async def test_trello_failures_never_fail(trello_server: Any, http: Any,
                                          env: dict[str, str]) -> None:
    items = [lead("DPE1")]
    assert await push_leads(context(trello_server, http, env=env), items) == items
    trello_server.fail_status = 503
    assert await push_leads(context(trello_server, http), items) == items
    assert trello_server.cards == []


def test_source_text_is_inert_markdown() -> None:
    _name, desc = card_fields(lead("X", adresse="[cliquez](http://evil.example) **urgent**").data)
    assert r"\[cliquez\]\(http://evil.example\) \*\*urgent\*\*" in desc
    assert desc.startswith("**Priorité P1** (90 points)")
