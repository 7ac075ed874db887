"""A loopback geo.api.gouv.fr and service-public "annuaire de l'administration" (Opendatasoft
Explore v2.1) in one server, for the DPE veille's town-hall lookup:

    GET /communes?codePostal=24260&nom=…&fields=nom,code   → [{"nom", "code", …}]
    GET /communes/{code}?fields=…                           → {"nom", "code", "codesPostaux"}
    GET /catalog/datasets/api-lannuaire-administration/records?where=
        code_insee_commune="24067" and pivot LIKE "mairie"&limit=&select=
                                                            → {"total_count", "results"}

Annuaire records are shaped like the real ones: `telephone`, `site_internet` and `pivot`
are JSON *strings* of lists, `adresse_courriel` a string (several separated by ";").
Use the same URL for AXI_GEO_API_URL and AXI_ANNUAIRE_API_URL. `fail_geo` / `fail_annuaire`
(an HTTP status) break one side; `requests` records the paths asked.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer, loopback_fixtures

COMMUNES: list[dict[str, Any]] = [
    {"nom": "Le Bugue", "code": "24067", "codesPostaux": ["24260"]},
    {"nom": "Limeuil", "code": "24240", "codesPostaux": ["24510"]},
    {"nom": "Journiac", "code": "24217", "codesPostaux": ["24260"]},
    {"nom": "Vergt", "code": "24571", "codesPostaux": ["24380"]},
]


def mairie(code: str, nom: str, phone: str | None, email: str | None) -> dict[str, Any]:
    return {
        "nom": nom, "code_insee_commune": code,
        "pivot": json.dumps([{"type_service_local": "mairie", "code_insee_commune": [code]}]),
        "telephone": json.dumps([{"valeur": phone, "description": ""}] if phone else []),
        "adresse_courriel": email,
        "site_internet": json.dumps([{"valeur": f"https://www.mairie-{code}.fr"}]),
    }


RECORDS = [
    # a merged commune: its delegated town hall comes first in the answer, and is skipped
    mairie("24067", "Mairie déléguée - Campagne", "05 53 00 00 99", "deleguee@example.fr"),
    mairie("24067", "Mairie - Le Bugue", "05 53 07 20 00", "mairie@ville-lebugue.fr;autre@x.fr"),
    mairie("24240", "Mairie - Limeuil", "05 53 63 29 00", None),
    mairie("24571", "Mairie - Vergt", "05 53 54 90 12", "mairie.vergt@wanadoo.fr"),
]


class FakeCommunes:
    def __init__(self) -> None:
        self.server = LoopbackServer(self._app())
        self.reset()

    def reset(self) -> None:
        self.communes: list[dict[str, Any]] = [dict(c) for c in COMMUNES]
        self.annuaire_records = [dict(r) for r in RECORDS]
        self.requests: list[str] = []
        self.fail_geo: int | None = None
        self.fail_annuaire: int | None = None
        self.annuaire_body: str | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    async def communes_search(self, request: Request) -> Response:
        self.requests.append(str(request.url.path) + "?" + request.url.query)
        if self.fail_geo:
            return JSONResponse({"message": "error"}, status_code=self.fail_geo)
        cp, nom = request.query_params.get("codePostal"), request.query_params.get("nom")
        found = [c for c in self.communes if (not cp or cp in c["codesPostaux"])
                 and (not nom or nom.lower() in c["nom"].lower())]
        return JSONResponse(found)

    async def commune(self, request: Request) -> Response:
        self.requests.append(str(request.url.path))
        if self.fail_geo:
            return JSONResponse({"message": "error"}, status_code=self.fail_geo)
        code = request.path_params["code"]
        for c in self.communes:
            if c["code"] == code:
                return JSONResponse(c)
        return JSONResponse({"code": 404, "message": "Commune non trouvée"}, status_code=404)

    async def annuaire(self, request: Request) -> Response:
        self.requests.append(str(request.url.path) + "?" + request.url.query)
        if self.fail_annuaire:
            return JSONResponse({"error_code": "Error"}, status_code=self.fail_annuaire)
        if self.annuaire_body is not None:
            return Response(self.annuaire_body, media_type="application/json")
        where = request.query_params.get("where", "")
        match = re.search(r'code_insee_commune\s*=\s*"(\w+)"', where)
        code = match[1] if match else None
        mairie_only = 'pivot LIKE "mairie"' in where
        found = [r for r in self.annuaire_records
                 if (code is None or r["code_insee_commune"] == code)
                 and (not mairie_only or "mairie" in r["pivot"])]
        limit = int(request.query_params.get("limit", "10"))
        return JSONResponse({"total_count": len(found), "results": found[:limit]})

    def _app(self) -> Starlette:
        return Starlette(routes=[
            Route("/communes", self.communes_search, methods=["GET"]),
            Route("/communes/{code}", self.commune, methods=["GET"]),
            Route("/catalog/datasets/api-lannuaire-administration/records", self.annuaire,
                  methods=["GET"]),
        ])


communes_server_session, communes_server = loopback_fixtures(FakeCommunes, "communes_server")
