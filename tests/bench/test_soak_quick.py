"""bench/soak.py --quick as the suite runs it (issue 14 §1): the whole assistant — `axi
run` with every channel, on a PostgreSQL 16 of the soak's own — under a SIGKILL, a local
model outage, a PostgreSQL restart and an SMTP cut; exit 0, every "must be 0" figure 0,
in under 180 s. It uses none of the suite's database fixtures, so it runs in the first
(`nodb`) pass. The seed comes from AXI_TEST_SOAK_SEED, else a random one, printed so
that a failure can be replayed (`bench/soak.py --quick --seed N`)."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT_S = 180.0
MUST_BE_ZERO = re.compile(r"^(?P<what>.+?)\s{2,}(?P<n>[\d,]+)  \(must be 0", re.MULTILINE)


def test_the_quick_soak_loses_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("AXI_TEST_SOAK_SEED") or random.randrange(2**31))
    print(f"soak seed {seed} (replay: AXI_TEST_SOAK_SEED={seed})")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--quick", "--seed", str(seed),
         "--results", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=LIMIT_S + 120)
    took = time.monotonic() - started
    said = done.stdout + done.stderr
    figures = {m["what"].strip(): int(m["n"].replace(",", ""))
               for m in MUST_BE_ZERO.finditer(said)}
    assert done.returncode == 0, f"seed {seed}, exit {done.returncode}:\n{said[-6000:]}"
    assert len(figures) >= 7, f"seed {seed}: the figures were not printed:\n{said[-3000:]}"
    assert {k: v for k, v in figures.items() if v} == {}, f"seed {seed}:\n{said[-6000:]}"
    assert took < LIMIT_S, f"seed {seed}: {took:.0f} s (limit {LIMIT_S:.0f} s)"
