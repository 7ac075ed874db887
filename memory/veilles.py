"""Veilles, their runs, the items they saw and their sources' states (issue 12); filled in
by the engine work.
"""

from __future__ import annotations

from typing import Any


class VeillesMixin:
    db: Any
