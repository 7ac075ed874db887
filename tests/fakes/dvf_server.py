"""A loopback files.data.gouv.fr for geo-DVF: serves CSV and .csv.gz files under
`/geo-dvf/latest/csv/{year}/departements/{dep}.csv[.gz]` as the real site does (the
gzip file as application/gzip bytes, no Content-Encoding), with failure modes:

    fake.put("/geo-dvf/latest/csv/2025/departements/24.csv.gz", data)
    fake.fail(path, 500)           # an error status
    fake.truncate(path, 0.5)       # the body cut at half (Content-Length of what is sent)
    fake.requests                  # every path asked, in order

Any path not put answers 404. `synthetic_rows` writes geo-DVF rows in the exact format
(the header of the real excerpt, tests/jobs/data/), for the tests and
bench/veilles.py.
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer, loopback_fixtures

HEADER = (
    "id_mutation,date_mutation,numero_disposition,nature_mutation,valeur_fonciere,"
    "adresse_numero,adresse_suffixe,adresse_nom_voie,adresse_code_voie,code_postal,"
    "code_commune,nom_commune,code_departement,ancien_code_commune,ancien_nom_commune,"
    "id_parcelle,ancien_id_parcelle,numero_volume,lot1_numero,lot1_surface_carrez,"
    "lot2_numero,lot2_surface_carrez,lot3_numero,lot3_surface_carrez,lot4_numero,"
    "lot4_surface_carrez,lot5_numero,lot5_surface_carrez,nombre_lots,code_type_local,"
    "type_local,surface_reelle_bati,nombre_pieces_principales,code_nature_culture,"
    "nature_culture,code_nature_culture_speciale,nature_culture_speciale,surface_terrain,"
    "longitude,latitude"
)
COMMUNES = [("24510", "24312", "Limeuil"), ("24260", "24067", "Le Bugue"),
            ("24330", "24571", "Vergt"), ("24150", "24256", "Lalinde"),
            ("24480", "24101", "Le Buisson-de-Cadouin"), ("24110", "24464", "Saint-Astier")]
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
VOIES = ["RUE DU PORT", "AV DE LA GARE", "CHE DES VIGNES", "RTE DE PERIGUEUX", "LE BOURG",
         "RUE DES ECOLES", "ALL DES CHENES"]


def synthetic_rows(n_rows: int, *, departement: str = "24", year: int = 2025,
                   seed: int = 1, start: int = 0) -> Iterator[str]:
    """`n_rows` CSV lines (no header) in the exact geo-DVF format: mutations of 1 to 4
    rows (a house and its outbuilding on two cultures, a flat with its cellar…)."""
    rng = random.Random(seed)
    written = 0
    m = start
    while written < n_rows:
        m += 1
        cp, commune, nom = COMMUNES[m % len(COMMUNES)]
        mid = f"{year}-{m}"
        day = f"{year}-{1 + m % 12:02d}-{1 + m % 28:02d}"
        price = rng.choice(["", str(rng.randrange(20_000, 900_000)),
                            f"{rng.randrange(20_000, 900_000)}.5"] + ["95000"] * 3)
        section = LETTERS[m // 10_000 % 26] + LETTERS[m // 260_000 % 26]
        parcel = f"{commune}000{section}{m % 10_000:04d}"  # unique up to 6.76 M mutations
        numero = str(rng.randrange(1, 120))
        voie = VOIES[m % len(VOIES)]
        lon, lat = f"{0.5 + rng.random():.6f}", f"{44.8 + rng.random() / 2:.6f}"
        kind = m % 4
        # (code_type_local, type_local, surface bâtie, pièces, culture, its name, terrain, lot)
        if kind == 0:  # a flat with its cellar, two lots, no land
            locals_ = [("2", "Appartement", str(rng.randrange(20, 120)), "3", "", "", "",
                        str(rng.randrange(1, 200))),
                       ("3", "Dépendance", "", "0", "", "", "", str(rng.randrange(200, 400)))]
        else:  # a house (and an outbuilding) on one or two cultures
            bati, pieces = str(rng.randrange(50, 250)), str(rng.randrange(2, 8))
            cultures = [("S", "sols", str(rng.randrange(100, 3000)))]
            if kind == 2:
                cultures.append(("J", "jardins", str(rng.randrange(100, 1000))))
            locals_ = [("1", "Maison", bati, pieces, *c, "") for c in cultures]
            if kind == 3:
                locals_.append(("3", "Dépendance", "", "0", *cultures[0], ""))
        for code, type_local, bati, pieces, c_code, c_name, terrain, lot in locals_:
            if written >= n_rows:
                return
            yield (f"{mid},{day},000001,Vente,{price},{numero},,{voie},B0{m % 90:02d},{cp},"
                   f"{commune},{nom},{departement},,,{parcel},,,{lot},,,,,,,,,,"
                   f"{1 if lot else 0},{code},{type_local},{bati},{pieces},{c_code},{c_name},"
                   f",,{terrain},{lon},{lat}\n")
            written += 1


def synthetic_file(path: Path, n_rows: int, **kwargs: object) -> Path:
    """Write a geo-DVF file (gzip when the name ends in .gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:  # type: ignore[operator]
        f.write(HEADER + "\n")
        f.writelines(synthetic_rows(n_rows, **kwargs))  # type: ignore[arg-type]
    return path


class FakeDvfFiles:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.failures: dict[str, int] = {}
        self.cuts: dict[str, float] = {}
        self.requests: list[str] = []
        self.server = LoopbackServer(Starlette(routes=[Route("/{path:path}", self._serve)]))

    @property
    def url(self) -> str:
        return self.server.url

    def put(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url + path

    def fail(self, path: str, status: int) -> str:
        self.failures[path] = status
        return self.url + path

    def truncate(self, path: str, fraction: float) -> str:
        self.cuts[path] = fraction
        return self.url + path

    def reset(self) -> None:
        self.files.clear()
        self.failures.clear()
        self.cuts.clear()
        self.requests.clear()

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    async def _serve(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        self.requests.append(path)
        if path in self.failures:
            return Response("Internal error", status_code=self.failures[path])
        data = self.files.get(path)
        if data is None:
            return Response("<html><body>404 Not Found</body></html>", status_code=404,
                            media_type="text/html")
        if path in self.cuts:
            data = data[: int(len(data) * self.cuts[path])]
        kind = "application/gzip" if path.endswith(".gz") else "text/csv"
        return Response(data, media_type=kind)


dvf_files_session, dvf_files = loopback_fixtures(FakeDvfFiles, "dvf_files")
