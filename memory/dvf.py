"""DVF sales (ventes_dvf): the import's writes and the DPE enrichment's lookups (issue 12);
filled in by the DVF work.
"""

from __future__ import annotations

from typing import Any


class DvfMixin:
    db: Any
