"""Erasing a person on request and the site's visitors' data after
AXI_VISITOR_RETENTION_DAYS (RGPD); filled in by issue 11, item 6.
"""

from __future__ import annotations

from typing import Any


class ForgetMixin:
    db: Any
