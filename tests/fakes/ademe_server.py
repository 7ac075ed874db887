"""A loopback ADEME data-fair server: the datasets "lines" API the DPE veille reads.

    GET /{dataset}/lines?size=&code_postal_ban_in=24260,24510&date_reception_dpe_gte=
        2026-01-01&sort=date_reception_dpe,numero_dpe&select=a,b&after=…

answers like data-fair: `{"total": N, "results": [...], "next": "<absolute URL with
after=…>"}` (`next` only while rows remain; `after` carries the last row's sort values;
`page` paging refuses size × page > 10,000, like the real API). Rows are plain dicts with
the dataset's column names (`synthetic_rows` makes realistic ones; `_geopoint` is "lat,lon").

Failure modes, per test:

    fake.fail(status=429, times=2, headers={"Retry-After": "0"})   # the next 2 requests
    fake.fail(postcode="24510", status=500, times=99)             # only that postcode
    fake.fail(postcode="24510", body="{not json", skip=1)         # its 2nd request
    fake.delay_s = 2.0                                            # slow: timeouts
    fake.next_host = "http://elsewhere.example"                   # hostile next links

For the benchmark (`bench/veilles.py`): `FakeAdeme(rows=synthetic_rows(codes, 500,
date(2026, 11, 1)))` then `fake.start()`, `fake.url` as AXI_ADEME_API_URL, and
`len(fake.requests)` afterwards.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer, loopback_fixtures

DATASET = "dpe03existant"
MAX_WINDOW = 10_000


@dataclass
class Failure:
    postcode: str | None
    status: int
    body: str
    headers: dict[str, str]
    times: int
    skip: int


def _by(name: str) -> Callable[[dict[str, Any]], str]:
    return lambda row: str(row.get(name, ""))


class FakeAdeme:
    def __init__(self, rows: Iterable[dict[str, Any]] = (), *, dataset: str = DATASET,
                 port: int = 0) -> None:
        self.dataset = dataset
        self.server = LoopbackServer(self._app())
        self.server.port = port
        self._initial = list(rows)
        self.reset()

    # ------------------------------------------------------------------ control
    def reset(self) -> None:
        self.rows: list[dict[str, Any]] = [dict(r) for r in self._initial]
        self.requests: list[dict[str, str]] = []
        self.failures: list[Failure] = []
        self.delay_s = 0.0
        self.next_host: str | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        self.rows.extend(dict(r) for r in rows)

    def fail(self, *, postcode: str | None = None, status: int = 500, times: int = 1,
             body: str | None = None, headers: dict[str, str] | None = None,
             skip: int = 0) -> None:
        """The next `times` matching requests (after `skip` of them) get this answer."""
        self.failures.append(Failure(postcode, status,
                                     body if body is not None else '{"error": "boom"}',
                                     headers or {}, times, skip))

    # ------------------------------------------------------------------ behaviour
    def _failure(self, postcodes: list[str]) -> Failure | None:
        for failure in self.failures:
            if failure.times <= 0:
                continue
            if failure.postcode is not None and failure.postcode not in postcodes:
                continue
            if failure.skip > 0:
                failure.skip -= 1
                continue
            failure.times -= 1
            return failure
        return None

    async def lines(self, request: Request) -> Response:
        params = dict(request.query_params)
        self.requests.append(params)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if request.path_params["dataset"] != self.dataset:
            return JSONResponse({"error": "dataset not found"}, status_code=404)
        postcodes = [p for p in params.get("code_postal_ban_in", "").split(",") if p]
        failure = self._failure(postcodes)
        if failure is not None:
            return Response(failure.body, status_code=failure.status, headers=failure.headers,
                            media_type="application/json")
        try:
            size = int(params.get("size", "12"))
            page = int(params.get("page", "1"))
        except ValueError:
            return JSONResponse({"error": "bad size"}, status_code=400)
        if size > MAX_WINDOW or ("after" not in params and size * page > MAX_WINDOW):
            return JSONResponse({"error": "size × page > 10000, use after"}, status_code=400)
        rows = [r for r in self.rows
                if (not postcodes or r.get("code_postal_ban") in postcodes)
                and r.get("date_reception_dpe", "") >= params.get("date_reception_dpe_gte", "")]
        sort = [s for s in params.get("sort", "").split(",") if s] or ["numero_dpe"]
        for field in reversed(sort):
            desc = field.startswith("-")
            name = field.lstrip("-")
            rows.sort(key=_by(name), reverse=desc)
        total = len(rows)
        if "after" in params:
            after = params["after"].split(",")
            keys = [f.lstrip("-") for f in sort]
            rows = [r for r in rows if [str(r.get(k, "")) for k in keys] > after]
            start = 0
        else:
            start = (page - 1) * size
        chunk = rows[start:start + size]
        select = [s for s in params.get("select", "").split(",") if s]
        results = [{k: r.get(k) for k in select} if select else dict(r) for r in chunk]
        body: dict[str, Any] = {"total": total, "results": results}
        if start + size < len(rows) and chunk:
            last = chunk[-1]
            nxt = dict(params)
            nxt.pop("page", None)
            nxt["after"] = ",".join(str(last.get(f.lstrip("-"), "")) for f in sort)
            base = self.next_host or f"{request.url.scheme}://{request.url.netloc}"
            body["next"] = f"{base}{request.url.path}?{urlencode(nxt)}"
        text = json.dumps(body, ensure_ascii=False)
        if re.search("[\ud800-\udfff]", text):  # a lone surrogate travels as a "\ud800" escape
            text = json.dumps(body)
        return Response(text, media_type="application/json")

    def _app(self) -> Starlette:
        return Starlette(routes=[Route("/{dataset}/lines", self.lines, methods=["GET"])])


# ---------------------------------------------------------------------- data
COMMUNES = {
    "24260": ("24067", "Le Bugue", 44.918, 0.927), "24510": ("24362", "Limeuil", 44.884, 0.889),
    "24150": ("24256", "Lalinde", 44.838, 0.743), "24480": ("24035", "Le Buisson-de-Cadouin",
                                                           44.823, 0.905),
    "24620": ("24172", "Les Eyzies", 44.936, 1.012), "24220": ("24479", "Saint-Cyprien",
                                                              44.868, 1.041),
    "24330": ("24572", "Saint-Pierre-de-Chignac", 45.117, 0.863),
    "24110": ("24487", "Saint-Astier", 45.145, 0.528), "24520": ("24361", "Mouleydier",
                                                                 44.856, 0.599),
    "24140": ("24571", "Vergt", 45.027, 0.718), "24380": ("24571", "Vergt", 45.027, 0.718),
    "24750": ("24053", "Boulazac", 45.177, 0.760),
}
STREETS = ("Rue de la Paix", "Avenue de la Libération", "Chemin des Vignes", "Route de Périgueux",
           "Place du Marché", "Impasse des Tilleuls", "Lieu-dit La Borie")


def dpe_row(numero: str, reception: date, postcode: str = "24260", *, classe: str = "F",
            surface: float | None = 95.0, address: str | None = None,
            point: tuple[float, float] | None = None, commune: str | None = None,
            insee: str | None = None, **extra: Any) -> dict[str, Any]:
    """One line of dpe03existant, with the real column names."""
    code, name, lat, lon = COMMUNES.get(postcode, ("24067", "Le Bugue", 44.918, 0.927))
    name = commune or name
    row: dict[str, Any] = {
        "numero_dpe": numero,
        "date_reception_dpe": reception.isoformat(),
        "date_etablissement_dpe": (reception - timedelta(days=2)).isoformat(),
        "etiquette_dpe": classe, "etiquette_ges": classe,
        "adresse_ban": address or f"12 Rue de la Paix {postcode} {name}",
        "code_postal_ban": postcode, "nom_commune_ban": name, "code_insee_ban": insee or code,
        "surface_habitable_logement": surface, "type_batiment": "maison",
        "annee_construction": 1962,
        "_geopoint": f"{point[0]},{point[1]}" if point else f"{lat},{lon}",
        "coordonnee_cartographique_x_ban": 517000.5, "coordonnee_cartographique_y_ban": 6425000.2,
        "_score": None, "_i": zlib.crc32(numero.encode()),
    }
    row.update(extra)
    return row


def synthetic_rows(postcodes: Iterable[str], per_postcode: int, until: date, *,
                   days: int = 60, seed: int = 24) -> list[dict[str, Any]]:
    """`per_postcode` realistic rows per postcode, received over the `days` before
    `until` (numbers like the real ones: 13 characters, year + département + serial)."""
    rng = random.Random(seed)
    rows = []
    for p_index, postcode in enumerate(postcodes):
        code, name, lat, lon = COMMUNES.get(postcode, ("24067", "Le Bugue", 44.918, 0.927))
        for i in range(per_postcode):
            numero = f"2624E{p_index:02d}{i:06d}"
            street = STREETS[i % len(STREETS)]
            rows.append(dpe_row(
                numero, until - timedelta(days=rng.randrange(days)), postcode,
                classe=rng.choice("ABCDEFG"), surface=float(rng.randrange(25, 250)),
                address=f"{i + 1} {street} {postcode} {name}",
                point=(lat + rng.uniform(-0.02, 0.02), lon + rng.uniform(-0.02, 0.02)),
                commune=name, insee=code))
    return rows


# ---------------------------------------------------------------------- fixtures
ademe_server_session, ademe_server = loopback_fixtures(FakeAdeme, "ademe_server")
