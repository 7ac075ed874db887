"""`python3 deploy/local.py test`: the second pass narrows the user's `-m` to the database
tests, and tests/conftest.py marks `nodb` exactly the tests that use no database fixture."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from memory.store import MemoryStore

LOCAL = Path(__file__).resolve().parents[2] / "deploy" / "local.py"


def _local():
    spec = importlib.util.spec_from_file_location("axi_deploy_local", LOCAL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("args", "expected"), [
    ([], ["-m", "not nodb"]),
    (["tests/memory", "-x"], ["tests/memory", "-x", "-m", "not nodb"]),
    (["-m", "slow", "-q"], ["-q", "-m", "(slow) and not nodb"]),
    (["-mslow or fast"], ["-m", "(slow or fast) and not nodb"]),
    (["-m", "a", "-k", "b", "-m", "c"], ["-k", "b", "-m", "(c) and not nodb"]),  # pytest keeps the last
])
def test_second_pass_excludes_nodb(args: list[str], expected: list[str]) -> None:
    assert _local().with_marker_excluded(args, "nodb") == expected


def test_the_suite_needs_debian_packages_in_one_list() -> None:
    packages = _local().DEBIAN_PACKAGES
    assert {"dovecot-imapd", "restic", "chromium", "chromium-driver"} <= set(packages)


def test_a_test_without_database_is_nodb(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("nodb") is not None


async def test_a_database_test_is_not_nodb(request: pytest.FixtureRequest,
                                           store: MemoryStore) -> None:
    assert request.node.get_closest_marker("nodb") is None


@pytest.fixture
def cli_env_like(database_url: str | None) -> dict[str, str]:
    """Like the CLI tests' env: a subprocess reaches the database through this URL."""
    return {"AXI_DATABASE_URL": database_url} if database_url else {}


def test_a_fixture_reaching_the_database_makes_a_database_test(
    request: pytest.FixtureRequest, cli_env_like: dict[str, str]
) -> None:
    assert request.node.get_closest_marker("nodb") is None
