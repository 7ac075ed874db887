"""Every benchmark starts the way the README runs it (`python bench/NAME.py`).

Run as a script, a file's own folder comes first on `sys.path`, so bench/email.py and
bench/telegram.py once shadowed the standard library's `email` and python-telegram-bot
for every other benchmark: `bench/pipeline.py` died on import. Each script's `--help`
is run from another directory, as a fresh process, exactly as a person would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = ("pipeline", "memory_scale", "model_time", "locomo", "telegram", "email", "web",
           "veilles", "backup", "soak")


def test_every_entry_script_is_listed() -> None:
    entry = {p.stem for p in BENCH_DIR.glob("*.py") if 'if __name__ == "__main__"' in p.read_text()}
    assert entry == set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_script_starts(name: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(BENCH_DIR / f"{name}.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
