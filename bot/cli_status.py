"""`axi status`: Anthony's one screen — every component, the queues, the last alerts, the
local model's share over 7 days, the last backup and verification, each veille.

Why it asks the running Axi first: only `axi run` knows its channels' and scheduler's
live state, so the status is its own `/health` report, read over loopback (a loopback
client gets the details). When `axi run` does not answer, the same report is computed
from the database (everything but the live parts) and the screen says so.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text

from bot.cli_support import opened, out, print_json, print_table, run, settings
from memory.store import MemoryStore

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
_STYLE = {"ok": "green", "degraded": "yellow", "error": "bold red", "disabled": "dim",
          "unknown": "yellow"}
_DETAILS = ("age_hours", "last_ok_at", "model", "breaker", "state", "restarts", "polling",
            "latency_ms", "depths", "oldest_waiting_s", "stuck")


def status(json_out: JsonOpt = False) -> None:
    """One screen: components, queues, last alerts, local share (7 days), backups,
    veilles. Exit 1 when Axi is in error or `axi run` does not answer."""
    cfg = settings()
    host = "127.0.0.1" if cfg.http_host in {"0.0.0.0", "::", ""} else cfg.http_host
    url = f"http://{host}:{cfg.http_port}/health"

    async def main() -> dict[str, Any]:
        live = await _live_report(url)
        if live is not None:  # the running Axi reported: the store alone is enough
            async with opened(cfg) as db:
                report, store = live, MemoryStore(db)
                usage = await store.llm_usage(7)
                alerts = await store.list_notifications(limit=5, urgent_only=True)
        else:
            from bot.app import Axi

            async with Axi(cfg) as axi:
                report = await axi.health()
                usage = await axi.store.llm_usage(7)
                alerts = await axi.store.list_notifications(limit=5, urgent_only=True)
        return {"running": live is not None, "url": url, "report": report,
                "local_share_7d": usage.get("local_share"), "replies_7d": usage.get("replies"),
                "last_alerts": [{"at": a.cree_le.isoformat(), "text": a.texte}
                                for a in alerts]}

    found = run(main())
    report = found["report"]
    code = 1 if (not found["running"] or report.get("status") == "error") else 0
    if json_out:
        print_json(found)
        raise typer.Exit(code)
    state = report.get("status", "unknown")
    head = Text("Axi: ")
    head.append(state, style=_STYLE.get(state, ""))
    if found["running"]:
        head.append(f" — axi run answering at {url}, up since {report.get('since', '?')}")
    else:
        head.append(f" — axi run is NOT answering at {url}: live parts (channels, "
                    "scheduler) unknown; the rest read from the database", style="yellow")
    out.print(head)
    from bot.health_rules import walk

    rows = []
    for path, leaf in walk(report.get("components") or {}):
        extra = ", ".join(f"{k}={leaf[k]}" for k in _DETAILS if leaf.get(k) not in (None, {}))
        rows.append((path, Text(leaf["status"], style=_STYLE.get(leaf["status"], "")),
                     leaf.get("reason") or "", extra))
    print_table("Components", ["component", "status", "reason", "details"], rows)
    share = found["local_share_7d"]
    out.print(f"Local model share over 7 days: "
              f"{'—' if share is None else f'{100 * share:.0f} %'} of "
              f"{found['replies_7d'] or 0} replies (target ≥ 80 %)", highlight=False)
    if found["last_alerts"]:
        print_table("Last alerts", ["when", "text"],
                    [(a["at"][:16].replace("T", " "), a["text"][:160])
                     for a in found["last_alerts"]])
    else:
        out.print("No alert raised.")
    raise typer.Exit(code)


async def _live_report(url: str) -> dict[str, Any] | None:
    """The running Axi's /health report (details: asked from loopback), or None."""
    import httpx

    try:
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
            response = await client.get(url)
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return body if isinstance(body, dict) and "components" in body else None
