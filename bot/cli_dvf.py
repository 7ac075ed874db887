"""`axi dvf import [FILE|URL]…` (issue 12)."""

from __future__ import annotations

import typer

dvf_app = typer.Typer(help="DVF: property sales open data (geo-DVF).", no_args_is_help=True)
