"""`axi veille list|show|add|edit|enable|disable|history|run` (issue 12)."""

from __future__ import annotations

import typer

veille_app = typer.Typer(help="Veilles: the agency's scheduled watches (DPE, competitors, DVF).",
                         no_args_is_help=True)
