"""The DPE veille's fetch against a loopback data-fair "lines" API: paging with `next` /
`after`, the overlap window from the watermarks, deduplication, a postcode that breaks
while the others are read, 429 with Retry-After, 500, malformed JSON, and the cap."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from bot.config import Settings
from jobs.dpe import DpeVeille
from jobs.types import RunContext, VeilleRecord
from tests.fakes import ademe_server as _fake
from tests.fakes.ademe_server import dpe_row, synthetic_rows
from tests.fakes.loopback import LoopbackServer

ademe_server_session = _fake.ademe_server_session
ademe_server = _fake.ademe_server

NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
TODAY = NOW.date()


def veille(**config: Any) -> VeilleRecord:
    base: dict[str, Any] = {"dataset": "dpe03existant", "codes_postaux": ["24260", "24510"],
                            "recouvrement_jours": 60, "taille_page": 3}
    base.update(config)
    return VeilleRecord(1, "dpe", "dpe", base, "0 8 * * *", {}, True)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=2.0) as client:
        yield client


def context(fake: Any, http: httpx.AsyncClient, record: VeilleRecord | None = None,
            watermarks: dict[str, str] | None = None) -> RunContext:
    settings = Settings(_env_file=None, AXI_ADEME_API_URL=fake.url)  # type: ignore[call-arg]
    progress: list[tuple[int, int | None, str]] = []
    ctx = RunContext(veille=record or veille(), http=http, store=None, settings=settings,
                     now=NOW, watermarks=watermarks or {},
                     progress=lambda d, t, w: progress.append((d, t, w)))
    ctx.progress_log = progress  # type: ignore[attr-defined]
    return ctx


def rows(postcode: str, count: int, start: int = 0, day: date = date(2026, 11, 20)) -> list[dict]:
    return [dpe_row(f"2624E{postcode}{i:04d}", day, postcode) for i in range(start, start + count)]


async def test_follows_next_links_and_sets_watermarks(ademe_server: Any, http: Any) -> None:
    ademe_server.add(rows("24260", 7))
    ademe_server.add([dpe_row("2624E9999999", date(2026, 11, 28), "24510")])
    ademe_server.add([dpe_row("2624E0000OLD", date(2026, 9, 1), "24260")])  # before window
    ctx = context(ademe_server, http)
    fetched = await DpeVeille().fetch(ctx)
    assert sorted(i.key for i in fetched.items) == sorted(
        [f"2624E24260{i:04d}" for i in range(7)] + ["2624E9999999"])
    assert {i.source for i in fetched.items} == {"24260", "24510"}
    assert fetched.healthy == {"24260", "24510"} and not fetched.broken
    assert fetched.partial is None
    assert fetched.watermarks == {"reception:24260": "2026-11-20", "reception:24510": "2026-11-28",
                                  "reception": "2026-11-28"}
    first = ademe_server.requests[0]
    assert first["date_reception_dpe_gte"] == "2026-10-02"  # today − 60 days (first run)
    assert first["code_postal_ban_in"] == "24260" and first["size"] == "3"
    assert first["sort"] == "date_reception_dpe,numero_dpe"
    assert "numero_dpe" in first["select"].split(",")
    # 7 rows by pages of 3: 3 requests for 24260 (2 with `after`), 1 for 24510
    assert len(ademe_server.requests) == 4
    assert sum("after" in r for r in ademe_server.requests) == 2
    item = next(i for i in fetched.items if i.key == "2624E9999999")
    assert item.data["classe"] == "F" and item.data["surface"] == 95.0
    assert item.data["latitude"] == pytest.approx(44.884)
    assert [p[2] for p in ctx.progress_log] == ["DPE 24260", "DPE 24510", "DPE"]  # type: ignore[attr-defined]


async def test_window_from_watermark_minus_overlap(ademe_server: Any, http: Any) -> None:
    ademe_server.add(rows("24260", 2, day=date(2026, 6, 1)))
    ctx = context(ademe_server, http, veille(recouvrement_jours=30),
                  {"reception:24260": "2026-07-01", "reception": "2026-08-31"})
    fetched = await DpeVeille().fetch(ctx)
    assert len(fetched.items) == 2  # 2026-06-01 ≥ 2026-07-01 − 30 days
    by_code = {r["code_postal_ban_in"]: r["date_reception_dpe_gte"] for r in ademe_server.requests}
    assert by_code == {"24260": "2026-06-01", "24510": "2026-08-01"}  # 24510: the veille's


async def test_duplicates_across_pages_are_kept_once(ademe_server: Any, http: Any) -> None:
    ademe_server.add(rows("24260", 4))
    ademe_server.add(rows("24260", 2))  # the same numbers again (a republished line)
    fetched = await DpeVeille().fetch(context(ademe_server, http, veille(codes_postaux=["24260"])))
    assert sorted(i.key for i in fetched.items) == [f"2624E24260{i:04d}" for i in range(4)]


async def test_a_failing_postcode_is_broken_while_others_are_read(ademe_server: Any,
                                                                  http: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr("jobs.dpe_http._sleep", _no_sleep)
    ademe_server.add(rows("24260", 2) + rows("24510", 5) + rows("24150", 1))
    ademe_server.fail(postcode="24510", status=500, times=99, skip=1)  # page 2 onwards
    record = veille(codes_postaux=["24260", "24510", "24150"])
    fetched = await DpeVeille().fetch(context(ademe_server, http, record))
    assert fetched.healthy == {"24260", "24150"}
    assert set(fetched.broken) == {"24510"}
    assert "HTTP 500" in fetched.broken["24510"] and "3 essais" in fetched.broken["24510"]
    assert sum(i.source == "24510" for i in fetched.items) == 3  # its first page is kept
    assert "reception" not in fetched.watermarks  # a broken postcode: no global watermark
    assert fetched.watermarks["reception:24510"] == "2026-11-20"  # ascending: safe to resume


async def test_429_with_retry_after_is_retried(ademe_server: Any, http: Any,
                                               monkeypatch: Any) -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr("jobs.dpe_http._sleep", record)
    ademe_server.add(rows("24260", 2))
    ademe_server.fail(status=429, times=1, headers={"Retry-After": "7"})
    ademe_server.fail(status=429, times=1, headers={"Retry-After": "3600"})  # capped
    fetched = await DpeVeille().fetch(context(ademe_server, http, veille(codes_postaux=["24260"])))
    assert waits == [7.0, 30.0]
    assert len(fetched.items) == 2 and fetched.healthy == {"24260"}
    assert len(ademe_server.requests) == 3


async def test_retry_after_is_really_waited(ademe_server: Any, http: Any) -> None:
    ademe_server.add(rows("24260", 1))
    ademe_server.fail(status=429, times=1, headers={"Retry-After": "1"})
    started = time.monotonic()
    fetched = await DpeVeille().fetch(context(ademe_server, http, veille(codes_postaux=["24260"])))
    assert time.monotonic() - started >= 0.95 and len(fetched.items) == 1


async def test_500_then_recovery(ademe_server: Any, http: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr("jobs.dpe_http._sleep", _no_sleep)
    ademe_server.add(rows("24260", 1))
    ademe_server.fail(status=503, times=1)
    fetched = await DpeVeille().fetch(context(ademe_server, http, veille(codes_postaux=["24260"])))
    assert len(fetched.items) == 1 and not fetched.broken


async def _no_sleep(_seconds: float) -> None:
    return None


@pytest.mark.parametrize(("body", "reason"), [
    ("{not json", "JSON invalide"),
    ('{"total": 3, "results": "nope"}', "results"),
    ("[1, 2, 3]", "results"),
])
async def test_malformed_answers_break_the_postcode(ademe_server: Any, http: Any, body: str,
                                                    reason: str) -> None:
    ademe_server.add(rows("24260", 1) + rows("24510", 1))
    ademe_server.fail(postcode="24260", status=200, body=body, times=1)
    fetched = await DpeVeille().fetch(context(ademe_server, http))
    assert reason in fetched.broken["24260"]
    assert fetched.healthy == {"24510"} and [i.source for i in fetched.items] == ["24510"]


async def test_timeouts_break_the_postcode(ademe_server: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr("jobs.dpe_http._sleep", _no_sleep)
    ademe_server.delay_s = 0.5
    async with httpx.AsyncClient(timeout=0.1) as client:
        fetched = await DpeVeille().fetch(
            context(ademe_server, client, veille(codes_postaux=["24260"])))
    assert fetched.broken == {"24260": "délai dépassé, après 3 essais"}


async def test_unknown_dataset_and_foreign_next_links(ademe_server: Any, http: Any) -> None:
    fetched = await DpeVeille().fetch(context(ademe_server, http, veille(dataset="nope")))
    assert fetched.broken["24260"] == "réponse inattendue (HTTP 404)"
    ademe_server.add(rows("24260", 5))
    ademe_server.next_host = "http://attacker.example"
    fetched = await DpeVeille().fetch(context(ademe_server, http, veille(codes_postaux=["24260"])))
    assert "autre site" in fetched.broken["24260"] and len(fetched.items) == 3


async def test_ten_thousand_at_once_hits_the_cap(ademe_server: Any, http: Any) -> None:
    ademe_server.add(synthetic_rows(["24260", "24510"], 5_000, TODAY, days=50))
    record = veille(taille_page=10_000, max_par_passage=6_000)
    fetched = await DpeVeille().fetch(context(ademe_server, http, record))
    assert len(fetched.items) == 6_000
    assert fetched.partial is not None and "plafond de 6000" in fetched.partial
    assert fetched.healthy == {"24260"}
    assert "reception" not in fetched.watermarks and "reception:24510" in fetched.watermarks
    # next run resumes 24510 from its watermark (minus the overlap); dedup is the engine's


async def test_a_dpe_dated_in_the_future_never_blinds_the_veille(
        ademe_server: Any, http: httpx.AsyncClient) -> None:
    """One row dated 2099 (a source's error) must not become the watermark: every later
    window would start in 2098 and find nothing, with no alert. A watermark already
    poisoned is read as today."""
    from jobs.dpe import window_start

    ademe_server.add([dpe_row("2624E0000001", date(2026, 11, 20), "24260"),
                      dpe_row("2624E0000BAD", date(2099, 1, 1), "24260")])
    fetched = await DpeVeille().fetch(context(ademe_server, http, veille(codes_postaux=["24260"])))
    assert {i.key for i in fetched.items} == {"2624E0000001", "2624E0000BAD"}  # still reported
    assert fetched.watermarks["reception:24260"].startswith("2026-11-20")
    assert window_start(fetched.watermarks, "24260", TODAY, 60) <= date(2026, 12, 2)
    poisoned = {"reception:24260": "2099-01-01", "reception": "2099-01-01"}
    assert window_start(poisoned, "24260", TODAY, 60) == date(2026, 10, 2)


async def test_an_unreadable_line_in_one_postcode_does_not_cut_the_next_ones(
        ademe_server: Any, http: Any) -> None:
    """A line without a number in 24260 makes the run partial; 24510, read after it, must
    still be read to its end: it stopped after its first page (the cap's stop took any
    partial run for its own), and its watermark went back to that page's last date, so a
    postcode with more DPEs in the overlap than a page never reached its new ones."""
    ademe_server.add([*rows("24260", 2), dpe_row("", date(2026, 11, 21), "24260")])
    ademe_server.add(rows("24510", 4, day=date(2026, 11, 1))
                     + rows("24510", 3, start=4, day=date(2026, 11, 27)))
    ctx = context(ademe_server, http, watermarks={"reception:24510": "2026-11-25"})
    fetched = await DpeVeille().fetch(ctx)
    assert fetched.partial is not None and "24260 : 1 ligne(s) illisible(s)" in fetched.partial
    assert sorted(i.key for i in fetched.items if i.source == "24510") == [
        f"2624E24510{i:04d}" for i in range(7)]
    assert "24510" in fetched.healthy and not fetched.broken
    assert fetched.watermarks["reception:24510"] == "2026-11-27"


def _streaming_source(chunks: Callable[[], AsyncIterator[bytes]]) -> LoopbackServer:
    async def lines(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks(), media_type="application/json")

    return LoopbackServer(Starlette(routes=[Route("/{dataset}/lines", lines)]))


async def test_an_oversized_answer_breaks_the_postcode_unread_past_the_cap() -> None:
    """A JSON answer was read whole into memory, whatever its size (a broken proxy, an
    endless stream): the run grew until the machine ran out of memory. An ADEME page of
    10,000 DPEs is a few megabytes; past MAX_BYTES the postcode is broken."""
    async def huge() -> AsyncIterator[bytes]:
        yield b'{"results": [], "x": "'
        for _ in range(40):  # 40 MB of padding in one valid JSON document
            yield b" " * 1_000_000
        yield b'"}'

    server = _streaming_source(huge)
    server.start()
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            fetched = await DpeVeille().fetch(
                context(server, client, veille(codes_postaux=["24260"])))
    finally:
        server.stop()
    assert "trop volumineuse" in fetched.broken.get("24260", ""), fetched.broken


async def test_an_answer_trickling_for_ever_breaks_the_postcode(monkeypatch: Any) -> None:
    """Each byte arriving within the client's read timeout, an answer that never ends held
    the run — and the veille's lock, so every later run was skipped — for ever."""
    monkeypatch.setattr("jobs.dpe_http._sleep", _no_sleep)
    monkeypatch.setattr("jobs.dpe_http.TOTAL_S", 1.0, raising=False)

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"results": [], "x": "'
        while True:
            await asyncio.sleep(0.05)
            yield b" "

    server = _streaming_source(trickle)
    server.start()
    try:
        async with httpx.AsyncClient(timeout=0.5) as client:
            fetched = await asyncio.wait_for(DpeVeille().fetch(
                context(server, client, veille(codes_postaux=["24260"]))), 15)
    finally:
        server.stop()
    assert fetched.broken == {"24260": "délai dépassé, après 3 essais"}
