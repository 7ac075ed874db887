"""A plug-in double for the veilles' engine: the `essai` type, fetching its items from a
loopback JSON server (`config["url"]`), as a real type fetches its source. The server's
`state` scripts what it answers (items, broken sources, a partial run, a 500, a delay)
and records each request's User-Agent. `python -m tests.jobs.kind_double ARGS…` is the
real `axi` command with this type plugged in (for the CLI tests' subprocesses).
"""

from __future__ import annotations

import asyncio
import html
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jobs.types import Digest, DigestFile, Fetched, RunContext, SourceItem, VeilleRecord


class EssaiVeille:
    type = "essai"
    baseline_new_sources = False

    def __init__(self) -> None:
        self.render_fails = False

    async def fetch(self, ctx: RunContext) -> Fetched:
        response = await ctx.http.get(str(ctx.veille.config["url"]))
        response.raise_for_status()
        body = response.json()
        items = body.get("items", [])
        for done, _ in enumerate(items, 1):
            ctx.progress(done, len(items), "éléments")
        self.render_fails = bool(body.get("render_fails"))
        return Fetched(
            items=[SourceItem(i["key"], i.get("source", "s1"), {"titre": i.get("titre", "")})
                   for i in items],
            broken=dict(body.get("broken", {})), healthy=set(body.get("healthy", [])),
            partial=body.get("partial"),
            watermarks={"dernier": max((i["key"] for i in items), default="")} if items else {})

    async def enrich(self, ctx: RunContext, new: list[SourceItem]) -> list[SourceItem]:
        return [SourceItem(i.key, i.source, {**i.data, "enrichi": True}) for i in new]

    def render(self, veille: VeilleRecord, new: list[SourceItem], *, when: datetime,
               broken: Mapping[str, str]) -> Digest | None:
        if self.render_fails:
            raise RuntimeError("gabarit cassé")
        if not new and not veille.config.get("ras"):
            return None
        titles = [str(i.data.get("titre", i.key)) for i in new]
        return Digest(
            subject=f"Veille {veille.nom} : {len(new)} nouveauté(s) — {when:%d/%m/%Y}",
            text="\n".join(titles) or "RAS",
            html="<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in titles) + "</ul>",
            attachments=(DigestFile("liste.txt", "text/plain", "\n".join(titles).encode()),),
            summary=f"{len(new)} nouveauté(s)")


class SourceState:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {}
        self.status = 200
        self.delay_s = 0.0
        self.user_agents: list[str] = []


def source_app(state: SourceState) -> Starlette:
    async def items(request: Request) -> JSONResponse:
        state.user_agents.append(request.headers.get("user-agent", ""))
        if state.delay_s:
            await asyncio.sleep(state.delay_s)
        if state.status != 200:
            return JSONResponse({"error": "boom"}, status_code=state.status)
        return JSONResponse({"items": state.items, **state.extra})

    return Starlette(routes=[Route("/items", items)])


def main() -> None:
    from bot.cli import main as axi_main
    from jobs import kinds

    kinds.register("essai", EssaiVeille)
    sys.argv = ["axi", *sys.argv[1:]]
    axi_main()


if __name__ == "__main__":
    main()
