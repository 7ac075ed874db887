"""`axi dvf import` as Anthony runs it: a real subprocess on the test database, files and
the loopback geo-DVF server, its report, its exit status."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from dataclasses import dataclass
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
async def axi(db: Database, database_url: str | None, test_data_dir: Path, tmp_path: Path):
    await empty_tables(db)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AXI_", "ANTHROPIC"))}
    if database_url:
        env["AXI_DATABASE_URL"] = database_url
    else:
        env["AXI_DATA_DIR"] = str(test_data_dir)

    def run(*args: str, extra_env: dict[str, str] | None = None) -> Run:
        """The command's output, status and peak RSS: the real CLI in a Python that, as it
        exits, writes its /proc/self/status (VmHWM: this process's own high-water mark;
        getrusage's would include the pytest process it was forked from)."""
        status = tmp_path / "status"
        status.unlink(missing_ok=True)
        result = subprocess.run(
            [sys.executable, "-c", PEAK_RSS_WRAPPER, str(status), "dvf", "import", *args],
            capture_output=True, text=True, timeout=120, env={**env, **(extra_env or {})},
            cwd=Path(__file__).parent)
        peak = next(int(line.split()[1]) for line in status.read_text().splitlines()
                    if line.startswith("VmHWM:"))
        return Run(result.returncode, result.stdout, result.stderr, peak / 1024)

    return run


PEAK_RSS_WRAPPER = """
import atexit, pathlib, runpy, sys
path = sys.argv.pop(1)
atexit.register(lambda: pathlib.Path(path).write_text(open("/proc/self/status").read()))
sys.argv[0] = "axi"
runpy.run_module("bot.cli", run_name="__main__")
"""


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float


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


def test_a_gzip_bomb_is_one_line_and_bounded_memory(axi, tmp_path: Path) -> None:
    """8 GiB of zeros in 8 MB after a few good rows: refused after its first MiB, the
    command's memory stays about that of an import of a small file (the old code: 5 GB)."""
    good = gzip.compress(("".join([HEADER + "\n", *synthetic_rows(300)])).encode())
    member = gzip.compress(b"\0" * (16 << 20), compresslevel=9)
    bomb = tmp_path / "24.csv.gz"
    bomb.write_bytes(good + member * 512)
    result = axi(str(bomb))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"Error: {bomb}: the gzip data inflates "
                                                     "more than 100 times (")
    assert errors[0].endswith("refused as a likely decompression bomb; the sales before it "
                              "are kept")
    assert "301 rows read" in result.stdout  # 300 and the zeros: a line too long, skipped
    assert result.peak_rss_mb < 200
    reference = axi(str(EXCERPT))
    assert reference.returncode == 0
    assert result.peak_rss_mb < reference.peak_rss_mb + 40


def test_a_truncated_download_says_what_it_kept(axi, tmp_path: Path) -> None:
    whole = gzip.compress(("".join([HEADER + "\n", *synthetic_rows(6_000)])).encode(),
                          compresslevel=1)
    cut = tmp_path / "24.csv.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    result = axi(str(cut), "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    report = json.loads(result.stdout)["sources"][0]
    assert report["sales_new"] > 1_000 and 2_000 < report["rows_read"] < 4_000
    assert report["rows_skipped"]["truncated last line"] == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: {cut}: truncated gzip: the file ends before its compressed data does (the "
        "sales before the cut are kept; import the whole file again for the rest)"]
    cut.write_bytes(whole)
    again = json.loads(axi(str(cut), "--json").stdout)
    assert again["sales_known"] == report["sales_new"] and not again["failed"]


def test_a_departement_that_is_not_one_is_refused(axi) -> None:
    """`--departement x` (or '', -1, 999999) kept no row and said 'ok', exit 0."""
    for bad in ("", "x", "-1", "999999", "20", "Ludo"):
        result = axi(str(EXCERPT), "--departement", bad)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip() == (
            f"Error: --departement is a French département code (e.g. 24, 2A, 971) or "
            f"'all', not {bad!r}")
    corse = json.loads(axi(str(EXCERPT), "--departement", "2a", "--json").stdout)
    assert corse["departement"] == "2A"
