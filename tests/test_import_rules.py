"""The layering of the packages, checked on the source (with `ast`, nothing is imported):

- `llm/` and `memory/` sit below the core: they import nothing from `bot/`, `channels/` or
  each other, so either can be used, tested and benchmarked on its own;
- `channels/` reaches the core only through the channel contract (`bot/channel.py`, with
  its services object, and `bot/inbound.py`); the composition root also reads the settings;
- code outside `channels/` reaches a channel module only through the composition root, and
  only lazily (inside a function), so `axi --help` loads no transport library.

Every import counts, including those under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("bot", "channels", "jobs", "llm", "memory")
PACKAGES = tuple(name for name in FIRST_PARTY if (ROOT / name).is_dir())

# -------------------------------------------------------------------------------------
# COMPOSITION ROOT — adjust here when the composition root lands (issue 7, item 1).
# Files outside channels/ allowed to import a channel module (always lazily): the CLI
# commands that run channels. Computed from what exists; list others explicitly.
CHANNEL_IMPORTERS: frozenset[str] = frozenset(
    path.relative_to(ROOT).as_posix() for path in (ROOT / "bot").glob("cli*.py")
)
# The only channel modules code outside channels/ may import: the composition root that
# builds the configured channels from the settings.
COMPOSITION_ROOTS: frozenset[str] = frozenset({"channels.registry"})
# What the composition root may import from the core beyond the channel contract: it
# builds the channels from the settings (DESIGN "How a message flows", step 0).
COMPOSITION_ROOT_ALSO_IMPORTS: tuple[str, ...] = ("bot.config",)
# -------------------------------------------------------------------------------------

# What channels/ may import from the core: the channel contract.
CHANNEL_CONTRACT = ("bot.channel", "bot.inbound", "bot.web_contract", "bot.axis_contract",
                    "bot.site_contract")


@dataclass(frozen=True)
class Import:
    path: str  # the importing file, relative to the repository root
    target: str  # the imported module, e.g. "channels.console"
    line: int
    lazy: bool  # inside a function body

    def __str__(self) -> str:
        where = "inside a function" if self.lazy else "at module level"
        return f"{self.path}:{self.line} imports {self.target} ({where})"


def _is_module(dotted: str) -> bool:
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _package_of(path: Path) -> list[str]:
    """The package a file belongs to (for bot/__init__.py: bot itself)."""
    return list(path.relative_to(ROOT).with_suffix("").parts)[:-1]


class _Collector(ast.NodeVisitor):
    def __init__(self, path: Path, relative: str):
        self.path = path
        self.relative = relative
        self.depth = 0
        self.found: list[Import] = []

    def _add(self, target: str, node: ast.stmt) -> None:
        if target.split(".")[0] in FIRST_PARTY:
            self.found.append(Import(self.relative, target, node.lineno, self.depth > 0))

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function
    visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:  # relative: resolve against the importing file's package
            package = _package_of(self.path)
            base = package[: len(package) - (node.level - 1)]
            module = ".".join([*base, module] if module else base)
        for alias in node.names:
            # `from bot import tokens` imports the module bot.tokens, not just bot
            candidate = f"{module}.{alias.name}"
            self._add(candidate if _is_module(candidate) else module, node)


def collect(path: Path) -> list[Import]:
    relative = path.relative_to(ROOT).as_posix()
    collector = _Collector(path, relative)
    collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=relative))
    return collector.found


def imports_of(*packages: str) -> list[Import]:
    found: list[Import] = []
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            found.extend(collect(path))
    return found


def _within(target: str, prefixes: tuple[str, ...] | frozenset[str]) -> bool:
    return any(target == p or target.startswith(p + ".") for p in prefixes)


def _top(target: str) -> str:
    return target.split(".")[0]


# --------------------------------------------------------------------------- the rules
def test_llm_imports_nothing_above_or_beside_it() -> None:
    bad = [i for i in imports_of("llm") if _top(i.target) in {"bot", "channels", "memory"}]
    assert not bad, "llm/ must not import bot/, channels/ or memory/:\n" + "\n".join(
        map(str, bad))


def test_memory_imports_nothing_above_or_beside_it() -> None:
    bad = [i for i in imports_of("memory") if _top(i.target) in {"bot", "channels", "llm"}]
    assert not bad, "memory/ must not import bot/, channels/ or llm/:\n" + "\n".join(
        map(str, bad))


def _module_of(path: str) -> str:
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def test_channels_reach_the_core_only_through_the_contract() -> None:
    def allowed(i: Import) -> tuple[str, ...]:
        if _module_of(i.path) in COMPOSITION_ROOTS:
            return CHANNEL_CONTRACT + COMPOSITION_ROOT_ALSO_IMPORTS
        return CHANNEL_CONTRACT

    bad = [
        i for i in imports_of("channels")
        if (_top(i.target) == "bot" and not _within(i.target, allowed(i)))
        or _top(i.target) in {"memory", "llm", "jobs"}
    ]
    assert not bad, (
        "channels/ may import from the core only " + ", ".join(CHANNEL_CONTRACT) + ":\n"
        + "\n".join(map(str, bad))
    )


def _channel_imports_from_outside() -> list[Import]:
    outside = [p for p in PACKAGES if p != "channels"]
    return [i for i in imports_of(*outside) if _top(i.target) == "channels"]


def test_only_the_composition_commands_import_channels() -> None:
    bad = [i for i in _channel_imports_from_outside() if i.path not in CHANNEL_IMPORTERS]
    assert not bad, (
        "outside channels/, only " + ", ".join(sorted(CHANNEL_IMPORTERS))
        + " may import a channel module (see CHANNEL_IMPORTERS):\n" + "\n".join(map(str, bad))
    )


def test_channel_imports_outside_channels_are_lazy() -> None:
    bad = [i for i in _channel_imports_from_outside() if not i.lazy]
    assert not bad, (
        "a channel module is imported at module level (import it inside the command that "
        "runs it):\n" + "\n".join(map(str, bad))
    )


def test_outside_code_reaches_channels_only_through_the_composition_root() -> None:
    bad = [i for i in _channel_imports_from_outside()
           if not _within(i.target, COMPOSITION_ROOTS)]
    assert not bad, (
        "outside channels/, only " + ", ".join(sorted(COMPOSITION_ROOTS))
        + " may be imported (see COMPOSITION_ROOTS):\n" + "\n".join(map(str, bad))
    )


# --------------------------------------------------------------------------- the checker
def test_every_package_is_parsed() -> None:
    for package in ("bot", "channels", "llm", "memory"):
        assert package in PACKAGES
        assert imports_of(package), f"no first-party import found in {package}/"
    assert "llm.router" in {i.target for i in collect(ROOT / "bot" / "app.py")}


def test_collector_sees_lazy_relative_and_module_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import channels.console\n"
        "from llm import router\n"
        "from . import config\n"
        "from .nothing_here import x\n"
        "if TYPE_CHECKING:\n"
        "    from memory.store import MemoryStore\n"
        "def run():\n"
        "    from channels import web\n"
        "    return lambda: __import__('os')\n"
        "async def go():\n"
        "    import bot.app\n"
    )
    tree = ast.parse(source)
    collector = _Collector(ROOT / "bot" / "example.py", "bot/example.py")
    collector.visit(tree)
    seen = {(i.target, i.lazy) for i in collector.found}
    assert seen == {
        ("channels.console", False), ("llm.router", False), ("bot.config", False),
        ("bot.nothing_here", False), ("memory.store", False), ("channels.web", True),
        ("bot.app", True),
    }


JOBS_MAY_IMPORT_FROM_THE_CORE = ("bot.jobs_contract", "bot.config")


def test_jobs_reach_the_core_only_through_their_contract() -> None:
    """jobs/ (httpx, APScheduler) gets what it needs through bot/jobs_contract.py; it
    never reaches channels/ or the core's internals."""
    bad = [i for i in imports_of("jobs")
           if (_top(i.target) == "bot" and not _within(i.target, JOBS_MAY_IMPORT_FROM_THE_CORE))
           or _top(i.target) in {"channels", "llm"}]
    assert not bad, "jobs/ may import from the core only " + ", ".join(
        JOBS_MAY_IMPORT_FROM_THE_CORE) + ":\n" + "\n".join(map(str, bad))


def test_the_core_reaches_jobs_only_lazily_from_the_commands() -> None:
    outside = [p for p in PACKAGES if p != "jobs"]
    found = [i for i in imports_of(*outside) if _top(i.target) == "jobs"]
    bad = [i for i in found if not i.lazy or i.path not in CHANNEL_IMPORTERS]
    assert not bad, ("jobs/ is imported only inside the commands that run it:\n"
                     + "\n".join(map(str, bad)))
