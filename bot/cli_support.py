"""What every `axi` command shares: loading settings once, opening memory, refusing an
unmigrated database, rendering tables or JSON, and turning typed errors into one
clear line on stderr with a non-zero exit code (never a traceback)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bot.config import ConfigError, Settings, load_settings
from memory import migrate
from memory.database import Database, open_database
from memory.errors import DataDirectoryError, MemoryStoreError, NotMigrated
from memory.store import MemoryStore

T = TypeVar("T")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class CommandError(Exception):
    """A user error detected by the CLI itself (bad option combination…)."""


def fail(message: str, code: int = 1) -> None:
    """One line on stderr (the message may quote the user's input: never markup)."""
    err.print(f"[bold red]Error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail(f"{exc}. Fix the environment or .env (see .env.example), then retry.", code=2)
        raise  # unreachable


@contextlib.asynccontextmanager
async def opened(cfg: Settings, *, require_schema: bool = True) -> AsyncIterator[Database]:
    url = cfg.database_url.get_secret_value() if cfg.database_url else None
    async with open_database(url, cfg.data_dir) as db:
        if require_schema:
            await migrate.require_current(db.engine)
        yield db


def run_with_store(work: Callable[[MemoryStore], Awaitable[T]]) -> T:
    """Open memory (refusing an unmigrated schema), run `work`, close everything."""
    cfg = settings()

    async def main() -> T:
        async with opened(cfg) as db:
            return await work(MemoryStore(db))

    return run(main())


def run(coro: Awaitable[T]) -> T:
    """asyncio.run with our typed errors turned into clean exits."""
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except NotMigrated as exc:
        fail(str(exc), code=3)
    except DataDirectoryError as exc:  # AXI_DATA_DIR: a configuration error
        fail(str(exc), code=2)
    except MemoryStoreError as exc:
        fail(str(exc))
    except (CommandError, ConfigError) as exc:
        fail(str(exc), code=2)
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    raise AssertionError("unreachable")


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n")


_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(value: str) -> str:
    """Text for the terminal: control characters (ESC sequences that would recolour,
    retitle or plant hyperlinks in the operator's terminal) removed; newlines and tabs
    kept."""
    return _CONTROLS.sub("", value)


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Cells are plain text (a source's "[/b]" is shown, never read as markup); a cell
    that must be styled is given as a rich `Text`."""
    table = Table(title=title, show_lines=False, header_style="bold")
    for col in columns:
        table.add_column(col, overflow="fold")
    count = 0
    for row in rows:
        table.add_row(*(v if isinstance(v, Text) else Text(printable("" if v is None else str(v)))
                        for v in row))
        count += 1
    if count == 0:
        out.print("(nothing)")
    else:
        out.print(table)


def read_text_argument(value: str) -> str:
    """`-` means: read the text from standard input (for long or multi-line text), which
    must be UTF-8 (a byte-order mark is dropped): refused, not silently mangled."""
    if value == "-":
        data = sys.stdin.buffer.read()
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            fail(f"standard input is not UTF-8 text (byte {data[exc.start]:#04x} at offset "
                 f"{exc.start:,}); convert it first, e.g. `iconv -f latin1 -t utf-8`")
    return value


def check_arguments(args: Sequence[str]) -> None:
    """Refuse, before any command runs, an argument that is not valid UTF-8 (Python hands
    such bytes over as lone surrogates, which no text column, prompt or terminal takes)."""
    for arg in args:
        if any("\udc80" <= ch <= "\udcff" for ch in arg):
            shown = os.fsencode(arg).decode("utf-8", errors="backslashreplace")
            err.print(f"[bold red]Error:[/] the argument '{escape(shown)}' is not UTF-8 text; "
                      "check the terminal's or the script's encoding", highlight=False)
            raise SystemExit(1)


def check_tls_environment() -> None:
    """Refuse, before any command runs, an SSL_CERT_FILE that points nowhere: httpx (under
    the Ollama client, Telegram, the veilles) loads it whenever a client is built, one of
    them at import, and Axi would stop with a traceback."""
    value = os.environ.get("SSL_CERT_FILE")
    if value and not (os.path.isfile(value) and os.access(value, os.R_OK)):
        err.print(f"[bold red]Error:[/] SSL_CERT_FILE is set to '{escape(value)}', which is not "
                  "a readable file; fix it, or unset it to use the bundled certificates",
                  highlight=False)
        raise SystemExit(2)


def short(text: str, width: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        fail(f"{question} — not confirmed; pass --yes to confirm without a terminal", code=2)
    if not typer.confirm(question, default=False):
        fail("cancelled", code=1)
