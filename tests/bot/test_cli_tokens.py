"""`axi tokens create|list|revoke` as scripts and Anthony use them: the real command on the
test database. The token is printed once, alone on stdout; never listed; revoking it ends
it; garbage in any argument is one clear line on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from memory.database import Database
from memory.store import MemoryStore
from tests.bot.test_cli_errors import one_line

Run = Callable[..., subprocess.CompletedProcess]
HERE = Path(__file__).parent  # no .env from the project root


@pytest.fixture
def axi(cli_env: dict[str, str]) -> Run:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True,
                              text=True, env=cli_env, timeout=120, cwd=HERE,
                              stdin=subprocess.DEVNULL)
    return run


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    return r.stdout


async def test_create_prints_once_list_never_revoke_ends(axi: Run, db: Database) -> None:
    store = MemoryStore(db)
    ludo = await store.add_person("Ludo", relation="créateur")
    r = axi("tokens", "create", "ludo", "--scope", "axis", "--name", "Axis [mcp]")
    secret = ok(r)
    assert secret.count("\n") == 1 and secret.startswith("axi_")  # the token alone
    secret = secret.strip()
    assert "will not be shown again" in r.stderr and secret not in r.stderr
    found = await store.find_token(secret)
    assert found is not None and (found.relation_id, found.portee, found.nom) == (
        ludo.id, "axis", "Axis [mcp]")
    # by id too, scope chat by default
    second = ok(axi("tokens", "create", str(ludo.id))).strip()
    assert second != secret

    listed = json.loads(ok(axi("tokens", "list", "--json")))
    assert [(t["id"], t["person"], t["scope"], t["name"]) for t in listed] == [
        (found.id, "Ludo", "axis", "Axis [mcp]"), (found.id + 1, "Ludo", "chat", None)]
    assert listed[0]["last_used_at"] is not None and listed[0]["revoked_at"] is None
    table = ok(axi("tokens", "list"))
    assert "[mcp]" in table and "axis" in table  # escaped, not taken for markup
    hashes = [t.empreinte for t in await _rows(store)]
    for shown in (json.dumps(listed), table):
        assert secret not in shown and second not in shown
        assert not any(h in shown for h in hashes)

    out = ok(axi("tokens", "revoke", str(found.id)))
    assert f"Revoked token #{found.id}" in out and "Ludo" in out
    assert await store.find_token(secret) is None
    assert await store.find_token(second) is not None
    assert "already revoked" in ok(axi("tokens", "revoke", str(found.id)))
    assert [t["id"] for t in json.loads(ok(axi("tokens", "list", "--json")))] == [found.id + 1]
    everything = json.loads(ok(axi("tokens", "list", "--all", "--json")))
    assert everything[0]["revoked_at"] is not None


async def _rows(store: MemoryStore) -> list:  # type: ignore[type-arg]
    from sqlalchemy import text

    async with store.db.sessions() as s:
        return list((await s.execute(text("SELECT empreinte FROM jetons"))).all())


async def test_garbage_in_every_argument(axi: Run, db: Database) -> None:
    await MemoryStore(db).add_person("Ludo", relation="créateur")
    one_line(axi("tokens", "create", "Ludo", "--scope", "root"), 1, "unknown scope",
             "chat, axis, site, admin")
    one_line(axi("tokens", "create", "Ludo", "--scope", ""), 1, "unknown scope")
    one_line(axi("tokens", "create", "Ludo", "--name", ""), 1, "token name is empty")
    # the longest argument Linux passes (128 KiB); the store refuses 10 MB the same way
    one_line(axi("tokens", "create", "Ludo", "--name", "n" * 131_000), 1, "too long")
    one_line(axi("tokens", "create", "Personne"), 1, "no person 'Personne'")
    one_line(axi("tokens", "create", "9" * 5000), 1, "no person #")
    one_line(axi("tokens", "create", "[/x]"), 1, "[/x]")
    for bad in ("-5", str(2**63)):
        one_line(axi("tokens", "revoke", bad), 1, f"no token #{bad}")
    for bad in ("abc", "--force"):
        one_line(axi("tokens", "revoke", bad), 1, "whole number")
    one_line(axi("tokens", "revoke", "7"), 1, "no token #7")
    assert json.loads(ok(axi("tokens", "list", "--all", "--json"))) == []


async def test_an_admin_token_only_for_ludo_or_an_administrateur(axi: Run, db: Database) -> None:
    """`--scope admin` (the details of /health and /metrics from outside the server)."""
    store = MemoryStore(db)
    anthony = await store.add_person("Anthony", relation="administrateur")
    await store.add_person("Mme Durand", relation="client")
    secret = ok(axi("tokens", "create", "Anthony", "--scope", "admin")).strip()
    found = await store.find_token(secret)
    assert found is not None and (found.relation_id, found.portee) == (anthony.id, "admin")
    refused = axi("tokens", "create", "Mme Durand", "--scope", "admin")
    assert refused.stdout == ""  # no token printed
    one_line(refused, 1, "admin token is only for the créateur or an administrateur",
             "Mme Durand is client")
    assert [t.portee for t in await store.list_tokens()] == ["admin"]
