"""`axi dvf import` as Anthony runs it: a real subprocess on the test database, files and
the loopback geo-DVF server, its report, its exit status."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from memory.database import Database
from tests.conftest import empty_tables
from tests.fakes import dvf_server
from tests.fakes.dvf_server import HEADER, FakeDvfFiles, synthetic_file, synthetic_rows

dvf_files_session = dvf_server.dvf_files_session
dvf_files = dvf_server.dvf_files
EXCERPT = Path(__file__).parents[1] / "jobs" / "data" / "geo-dvf_69043_2025_excerpt.csv"


@pytest.fixture
async def axi(db: Database, database_url: str | None, test_data_dir: Path):
    await empty_tables(db)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AXI_", "ANTHROPIC"))}
    if database_url:
        env["AXI_DATABASE_URL"] = database_url
    else:
        env["AXI_DATA_DIR"] = str(test_data_dir)

    def run(*args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bot.cli", "dvf", "import", *args],
                              capture_output=True, text=True, timeout=120,
                              env={**env, **(extra_env or {})}, cwd=Path(__file__).parent)

    return run


def test_import_files_report_and_reimport(axi, tmp_path: Path) -> None:
    gz = synthetic_file(tmp_path / "24.csv.gz", 1_000)
    result = axi(str(gz), str(EXCERPT))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "1,087 rows read (87 outside the département)" in result.stdout
    assert "already known" in result.stdout
    again = json.loads(axi(str(gz), "--json").stdout)
    assert again["sales_new"] == 0 and again["sales_known"] > 400 and not again["failed"]
    assert again["rows_read"] == 1_000 and again["sources"][0]["error"] is None
    everything = json.loads(axi(str(EXCERPT), "--departement", "69", "--json").stdout)
    assert everything["sales_new"] == 42 and everything["departement"] == "69"


def test_a_broken_file_fails_the_command_not_the_others(axi, tmp_path: Path,
                                                        dvf_files: FakeDvfFiles) -> None:
    changed = tmp_path / "changed.csv"
    changed.write_text(HEADER.replace("id_parcelle", "parcelle") + "\n", encoding="utf-8")
    good = dvf_files.put("/ok/24.csv.gz", gzip.compress(
        ("".join([HEADER + "\n", *synthetic_rows(500)])).encode()))
    result = axi(str(changed), good, dvf_files.url + "/missing.csv", "--json")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert report["sales_new"] > 200
    assert report["failed"] == [str(changed), dvf_files.url + "/missing.csv"]
    errors = result.stderr.strip().splitlines()
    assert errors == [
        f"Error: {changed}: not a geo-DVF header: missing column(s) id_parcelle",
        f"Error: {dvf_files.url}/missing.csv: not found (HTTP 404)"]


def test_no_argument_reads_the_configured_release(axi, dvf_files: FakeDvfFiles) -> None:
    path = "/geo-dvf/latest/csv/{year}/departements/24.csv.gz"
    year = date.today().year
    dvf_files.put(path.format(year=year - 1), gzip.compress(
        ("".join([HEADER + "\n", *synthetic_rows(300)])).encode()))
    result = axi(extra_env={"AXI_DVF_URL": dvf_files.url + path})
    assert result.returncode == 0, result.stderr
    assert "not published yet, skipped" in result.stdout
    assert dvf_files.requests == [path.format(year=y) for y in range(year - 4, year + 1)]
    assert "5 file(s), 300 rows read" in result.stdout
