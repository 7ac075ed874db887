"""What bench/model_time.py measures during a day, and its analysis into the numbers.

`Day` collects when each message was accepted, handled, asked to the router and first
answered; `instrument` wraps a running Axi's instances (no Axi code changed) to fill it;
`analyse` turns the day, the simulated server's records and request bodies, and the
database's call log into the results the report prints against `TARGETS`: Ludo's time to
first token next to the floor of the same run, the cache and local shares, background
delays, and that nothing was lost; `report` prints the variants side by side. Split
from bench/model_time.py to keep each module readable.
"""

from __future__ import annotations

import contextvars
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import text

import bench.model_time_sim as world
from bot.app import Axi

TARGETS = {"p95_over_floor": 1.5, "cache_share": 0.85, "local_share": 0.80}


@dataclass
class Sent:
    person: Any  # bench.model_time.Person
    text: str
    accepted: float  # time.monotonic() when accept returned


@dataclass
class Day:
    """What happened during one variant's day (times: time.monotonic())."""

    sent: dict[int, Sent] = field(default_factory=dict)
    # per message id (stamped even before `sent` knows it): a worker lane started on it,
    # the responder asked the router, the first chunk of the reply
    handled: dict[int, float] = field(default_factory=dict)
    asked: dict[int, float] = field(default_factory=dict)
    first_chunk: dict[int, float] = field(default_factory=dict)
    finished: dict[int, tuple[str, float]] = field(default_factory=dict)  # souvenir → state, t
    veilles: list[dict[str, Any]] = field(default_factory=list)
    vectors: list[tuple[float, float]] = field(default_factory=list)  # embedding messages
    end_of_day_queue: int = 0

    def vector_time(self, start: float, end: float) -> float:
        """Wall time spent embedding messages (the model's time) within [start, end]."""
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b in self.vectors)


CURRENT: contextvars.ContextVar[int | None] = contextvars.ContextVar("message", default=None)


def instrument(app: Axi, day: Day) -> None:
    """Instance wrappers only (no Axi code changed): the message a lane works on, when it
    asks the router, its first chunk, embedding messages, and each extraction's end."""
    responder, router, store = app.pipeline.responder, app.router, app.store
    handle, stream, finish = responder.handle, router.stream, store.finish_extraction

    async def handled(claim: Any, *, live: Any = None) -> None:
        mid = claim.message.id
        token = CURRENT.set(mid)
        day.handled.setdefault(mid, time.monotonic())

        def chunk(piece: str) -> None:
            if piece:
                day.first_chunk.setdefault(mid, time.monotonic())
            live(piece)
        try:
            await handle(claim, live=None if live is None else chunk)
        finally:
            CURRENT.reset(token)

    def streamed(messages: Any, **kw: Any) -> Any:
        mid = CURRENT.get()
        if kw.get("task", "conversation") == "conversation" and mid is not None:
            day.asked.setdefault(mid, time.monotonic())
        return stream(messages, **kw)

    async def finished(claim: Any, souvenir_id: int, **kw: Any) -> None:
        await finish(claim, souvenir_id, **kw)
        day.finished[souvenir_id] = (kw.get("state", ""), time.monotonic())

    vectors = responder.recaller.vectors
    if vectors is not None:
        vector = vectors.vector

        async def timed_vector(text_: str) -> Any:
            start = time.monotonic()
            try:
                return await vector(text_)
            finally:
                day.vectors.append((start, time.monotonic()))
        vectors.vector = timed_vector  # type: ignore[method-assign]
    responder.handle = handled  # type: ignore[method-assign]
    router.stream = streamed  # type: ignore[method-assign]
    store.finish_extraction = finished  # type: ignore[method-assign]



async def analyse(app: Axi, channels: dict[str, world.StandIn], v: Any, day: Day,
                  server: world.SharedCpuOllama, first: int, sim: Any, end_sim: float
                  ) -> dict[str, Any]:
    cfg, bodies = server.config, server.bodies
    records = [r for r in server.records[first:] if r.kind in ("chat", "generate")]
    kinds = {r.index: world.kind_of(bodies.get(r.index, {})) for r in records}
    replied = {mid: t for c in channels.values() for mid, t in c.replied.items()}
    ttft, floor, own, lane, prompt, evaluated, turns_detail = [], [], [], [], [], [], []
    ttft_local: list[float] = []
    ludo_cached = [0, 0]
    for mid, s in day.sent.items():
        handled, asked = day.handled.get(mid), day.asked.get(mid)
        if s.person.kind != "ludo" or mid not in replied or not handled or not asked:
            continue
        rec = next((r for r in records if kinds[r.index] == "ludo" and r.arrival_s >= sim(
            asked) - 1 and str(bodies[r.index]["messages"][-1]["content"]).endswith(
                "\n" + s.text.strip())), None)  # his turn's request (none: fallback)
        # waiting for a worker lane is waiting for the model (simulated time); from the
        # lane to the router is Axi's own work (real time) but for embedding the message
        vec = day.vector_time(handled, asked)
        own.append(asked - handled - vec)
        lane.append(sim(handled) - sim(s.accepted))
        before_model = lane[-1] + own[-1] + sim(asked) - sim(asked - vec)
        if rec is not None and rec.finished_s is not None:
            model_s = rec.arrival_s + rec.ttft_s - sim(asked)
            floor.append(world.last_message_tokens(bodies[rec.index], cfg.system_last)
                         / cfg.prompt_rate)
            prompt.append(rec.prompt_tokens)
            evaluated.append(rec.evaluated_tokens)
            ludo_cached = [ludo_cached[0] + rec.cached_tokens, ludo_cached[1] + rec.prompt_tokens]
            ttft_local.append(before_model + model_s)
        else:  # answered by the fallback: its first chunk
            model_s = sim(day.first_chunk.get(mid, replied[mid])) - sim(asked)
        ttft.append(before_model + model_s)
        turns_detail.append({"message": mid, "at": sim(s.accepted), "ttft": ttft[-1],
                             "lane": lane[-1], "own_ms": own[-1] * 1000, "model": model_s,
                             "record": rec.index if rec else None})
    waits: dict[str, list[float]] = {"client": [], "email": []}  # accepted → first word
    for mid, s in day.sent.items():
        if s.person.kind in waits and mid in replied:
            waits[s.person.kind].append(sim(day.first_chunk.get(mid, replied[mid]))
                                        - sim(s.accepted))
    done = [r for r in records if r.finished_s is not None]
    cut = [r for r in records if r.finished_s is None]
    cache = sum(r.cached_tokens for r in done) / max(sum(r.prompt_tokens for r in done), 1)
    async with app.db.engine.connect() as conn:
        calls = (await conn.execute(text(
            "SELECT fournisseur, tache, coalesce(raison_repli, '') AS r, count(*) AS n "
            "FROM appels_llm WHERE succes AND tache <> 'warm' GROUP BY 1, 2, 3"))).all()
        items = (await conn.execute(text(
            "SELECT id, metadata->>'extraction', (metadata->>'message_id')::bigint "
            "FROM souvenirs WHERE metadata ? 'extraction'"))).all()
        turns = int(await conn.scalar(text(
            "SELECT count(*) FROM messages WHERE sens = 'entrant' AND etat = 'traite'")) or 0)
        unvectored = int(await conn.scalar(text(
            "SELECT count(*) FROM souvenirs s WHERE NOT EXISTS (SELECT 1 FROM "
            "souvenirs_vecteurs v WHERE v.souvenir_id = s.id)")) or 0) if v.embed else None
    states = dict(Counter(str(state) for _, state, _ in items))
    # delay: reply sent → extraction done; an item still queued counts with its age
    delays = [(sim(day.finished[sid][1]) if state == "faite" and sid in day.finished
               else end_sim) - sim(replied[msg]) for sid, state, msg in items if msg in replied]
    vdelay = [(w["done"] or end_sim) - w["asked"] for w in day.veilles]
    lost = states.get("echec", 0) + max(turns - len(items), 0)  # a veille job never gives up
    unanswered = sum(1 for mid in day.sent if mid not in replied)
    local = sum(c.n for c in calls if c.fournisseur == "ollama") / max(sum(c.n for c in calls), 1)
    fl95 = world.pct(floor, 95)
    ratio = world.pct(ttft, 95) / fl95 if fl95 else float("nan")
    return {
        "variant": asdict(v), "sim_seconds": end_sim, "messages": len(day.sent),
        "unanswered": unanswered, "requests": dict(Counter(kinds.values())),
        "ludo": {"ttft_s": world.dist(ttft), "floor_s": world.dist(floor),
                 "ttft_local_s": world.dist(ttft_local), "by_fallback": len(ttft) - len(ttft_local),
                 "own_ms": world.dist([x * 1000 for x in own]), "lane_wait_s": world.dist(lane),
                 "prompt_tokens": world.dist(prompt), "evaluated_tokens": world.dist(evaluated),
                 "cache_share": ludo_cached[0] / max(ludo_cached[1], 1),
                 "p95_over_floor": ratio, "turns": turns_detail},
        "clients": {"live_first_word_s": world.dist(waits["client"]),
                    "email_reply_s": world.dist(waits["email"])},
        "cache_share": cache, "local_share": local, "calls": [dict(c._mapping) for c in calls],
        "extraction": {"states": states, "turns": turns, "delay_s": world.dist(delays),
                       "queued_end_of_day": day.end_of_day_queue,
                       "continued": getattr(app.extractor, "continued", None),
                       "warmed": getattr(app.extractor, "warmed", None),
                       "foreseen": getattr(app.extractor, "foreseen", None)},
        "veilles": {"delay_s": world.dist(vdelay), "asked": len(day.veilles),
                    "done": sum(1 for w in day.veilles if w["done"] is not None),
                    "preempted": sum(w["preempted"] for w in day.veilles),
                    "providers": dict(Counter(str(w["provider"]) for w in day.veilles))},
        "cancelled_requests": {"n": len(cut), "evaluated_tokens": sum(
            r.evaluated_tokens for r in cut)},
        "preempted": app.gate.stats.preempted if v.gate else 0, "lost": lost,
        "embeddings": {"requests": sum(1 for r in server.records[first:] if r.kind == "embed"),
                       "souvenirs_without_vector": unvectored} if v.embed else None,
        "timeline": [(r.index, kinds[r.index], round(r.arrival_s, 1), r.slot,
                      round(r.queue_s, 1), r.prompt_tokens, r.cached_tokens, round(r.ttft_s, 1),
                      round(r.total_s, 1), r.finished_s is not None) for r in records],
        "targets": {"p95_over_floor": ratio <= TARGETS["p95_over_floor"],
                    "cache_share": cache >= TARGETS["cache_share"],
                    "local_share": local >= TARGETS["local_share"],
                    "none_lost": lost == 0 and unanswered == 0},
    }


# ----------------------------------------------------------------------------- report
def f(x: float, digits: int = 1) -> str:
    return "-" if x != x else f"{x:,.{digits}f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(results: dict[str, dict[str, Any]]) -> None:
    """The variants side by side, targets with PASS/FAIL."""
    names = list(results)
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, get: Any) -> None:
        rows.append((label, [get(results[n]) for n in names]))

    row("CPU sharing (slots of one model)", lambda r: str(r.get("sharing", "-")))
    row("Ludo: accepted → first token p50 (s)", lambda r: f(r["ludo"]["ttft_s"]["p50"]))
    row("Ludo: accepted → first token p95 (s)", lambda r: f(r["ludo"]["ttft_s"]["p95"]))
    row("  floor p50 / p95 (s)", lambda r: f"{f(r['ludo']['floor_s']['p50'])} / "
        f"{f(r['ludo']['floor_s']['p95'])}")
    row("  p95 / floor p95 (≤ 1.5)", lambda r: f"{f(r['ludo']['p95_over_floor'], 2)} "
        f"{verdict(r['targets']['p95_over_floor'])}")
    row("  max (s)", lambda r: f(r["ludo"]["ttft_s"]["max"]))
    row("  answered by the fallback / p95 local only", lambda r: f"{r['ludo']['by_fallback']} / "
        f"{f(r['ludo']['ttft_local_s']['p95'])}")
    row("  Axi's own work p50 (ms, unscaled)", lambda r: f(r["ludo"]["own_ms"]["p50"], 0))
    row("  waiting for a worker lane p95 (s)", lambda r: f(r["ludo"]["lane_wait_s"]["p95"]))
    row("clients live: accepted → first word p50/p95 (s)", lambda r: " / ".join(
        f(r["clients"]["live_first_word_s"][k]) for k in ("p50", "p95")))
    row("emails: accepted → reply p50/max (s)", lambda r: " / ".join(
        f(r["clients"]["email_reply_s"][k], 0) for k in ("p50", "max")))
    row("Ludo prompt tokens / turn (mean)", lambda r: f(r["ludo"]["prompt_tokens"]["mean"], 0))
    row("  evaluated / turn mean (p95)", lambda r: f"{f(r['ludo']['evaluated_tokens']['mean'], 0)}"
        f" ({f(r['ludo']['evaluated_tokens']['p95'], 0)})")
    row("  Ludo's cache share", lambda r: f(r["ludo"]["cache_share"], 2))
    row("cache share, all chat (≥ 0.85)", lambda r: f"{f(r['cache_share'], 2)} "
        f"{verdict(r['targets']['cache_share'])}")
    row("local share of calls (≥ 80 %)", lambda r: f"{r['local_share']:.0%} "
        f"{verdict(r['targets']['local_share'])}")
    row("extraction delay p50/p95 (s)", lambda r: f"{f(r['extraction']['delay_s']['p50'], 0)} / "
        f"{f(r['extraction']['delay_s']['p95'], 0)}")
    row("  queued at end of day → at end", lambda r: f"{r['extraction']['queued_end_of_day']} → "
        f"{r['extraction']['states'].get('a_faire', 0)}")
    row("  done / turns / continuations", lambda r: f"{r['extraction']['states'].get('faite', 0)}"
        f" / {r['extraction']['turns']} / {r['extraction']['continued']}")
    row("veille delay p50/max (s)", lambda r: f"{f(r['veilles']['delay_s']['p50'], 0)} / "
        f"{f(r['veilles']['delay_s']['max'], 0)} ({r['veilles']['done']}/"
        f"{r['veilles']['asked']} done)")
    row("preemptions / cancelled tokens", lambda r: f"{r['preempted']} / "
        f"{r['cancelled_requests']['evaluated_tokens']}")
    row("lost background items (= 0)", lambda r: f"{r['lost']} {verdict(r['targets']['none_lost'])}")
    row("unanswered messages", lambda r: str(r["unanswered"]))
    row("server requests", lambda r: " ".join(f"{k[:6]}={n}"
                                              for k, n in sorted(r["requests"].items())))
    row("simulated day + drain (s)", lambda r: f(r["sim_seconds"], 0))
    width = max(len(label) for label, _ in rows) + 2
    cols = [max(len(n), *(len(vals[i]) for _, vals in rows)) + 2 for i, n in enumerate(names)]
    print("\n" + " " * width + "".join(n.rjust(c) for n, c in zip(names, cols, strict=True)))
    for label, vals in rows:
        print(label.ljust(width) + "".join(x.rjust(c) for x, c in zip(vals, cols, strict=True)))
    for n in names:
        if results[n]["embeddings"]:
            print(f"{n}: embeddings {results[n]['embeddings']}")
        calls = [(c["fournisseur"], c["tache"], c["r"], c["n"]) for c in results[n]["calls"]]
        print(f"{n}: successful calls (provider, task, fallback reason, n) {calls}")
    def key(n: str, *path: str) -> float:
        value: Any = results[n]
        for step in path:
            value = value[step]
        return float(value) if value == value else float("inf")

    print(f"lowest Ludo p95: {min(names, key=lambda n: key(n, 'ludo', 'ttft_s', 'p95'))}; "
          f"highest cache share: {max(names, key=lambda n: key(n, 'cache_share'))}; "
          f"most local: {max(names, key=lambda n: key(n, 'local_share'))}")
