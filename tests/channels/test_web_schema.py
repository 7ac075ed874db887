"""The published schema of the token API (`GET /openapi.json`) against the real server:
schemathesis 4 generates requests from it (valid ones with a good token, invalid ones,
none with a token of another scope or without one) and checks every answer — never a
500, status codes, content types, headers and bodies as the schema says, and valid
requests accepted.

How it runs: the server is a whole Axi (real PostgreSQL, the loopback Ollama) on a real
uvicorn in the test session's event loop. schemathesis's pytest integration and its
ASGI transport would drive the app from another event loop than the one holding the
database pool, so its Python API runs in a worker thread instead (`asyncio.to_thread`),
sending real HTTP requests to the loopback port while the loop serves them. About 100
examples in all, so it stays within seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.definitions import OPENAPI_31

from channels.web_guard import WebConfig
from channels.web_openapi import schema as api_schema
from memory.database import Database
from tests.channels.test_web_api import web_axi
from tests.fakes.ollama_server import FakeOllama

CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance,
               response_headers_conformance, response_schema_conformance]
RUNS: list[tuple[str | None, GenerationMode, int, list[Any]]] = [
    # (whose token, mode, examples per operation, checks)
    ("ludo", GenerationMode.POSITIVE, 8,
     [*CONFORMANCE, positive_data_acceptance, ignored_auth]),
    ("ludo", GenerationMode.NEGATIVE, 6, CONFORMANCE),
    ("axis", GenerationMode.POSITIVE, 3, CONFORMANCE),
    (None, GenerationMode.POSITIVE, 3, CONFORMANCE),
]


def fuzz(base_url: str, tokens: dict[str, str]) -> dict[str, int]:
    """Every run of RUNS over every operation (in a worker thread: blocking HTTP). Raises
    the first failed check; returns the status codes seen."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=10)
    statuses: dict[str, int] = {}
    for who, mode, examples, checks in RUNS:
        headers = {"Authorization": f"Bearer {tokens[who]}"} if who else {}
        for result in schema.get_all_operations():
            if not isinstance(result, Ok):
                raise AssertionError(f"schemathesis cannot read an operation: {result}")
            operation = result.ok()  # all but /openapi.json itself, which it loaded
            run_one(operation.as_strategy(generation_mode=mode), examples, base_url,
                    headers, checks, statuses)
    return statuses


def run_one(strategy: Any, examples: int, base_url: str, headers: dict[str, str],
            checks: list[Any], statuses: dict[str, int]) -> None:
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def test(case: Any) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=10)
        key = f"{case.method} {case.operation.path} {response.status_code}"
        statuses[key] = statuses.get(key, 0) + 1
        case.validate_response(response, checks=checks, headers=headers)

    test()


async def test_the_schema_is_valid_openapi_3_1_and_describes_the_guards() -> None:
    document = api_schema(WebConfig())
    jsonschema.Draft202012Validator(OPENAPI_31).validate(document)
    assert document["components"]["securitySchemes"]["jeton"] == {
        "type": "http", "scheme": "bearer", "description": document["components"][
            "securitySchemes"]["jeton"]["description"]}
    for path, methods in document["paths"].items():
        for operation in methods.values():
            codes = set(operation["responses"])
            if path == "/openapi.json":
                assert operation["security"] == [] and codes == {"200"}
                continue
            assert {"401", "403", "413", "429"} <= codes, path
            too_many = document["components"]["responses"]["TropDeRequetes"]
            assert "Retry-After" in too_many["headers"]
    # every schema the responses use is itself valid JSON Schema
    for sub in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(sub)


async def test_schemathesis_finds_no_500_and_no_answer_off_the_schema(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama) -> None:
    # replies come at once; a generated message the model has not answered within the
    # short wait gets its documented 202; the rate limit is out of the way (its own test)
    async with web_axi(db, database_url, test_data_dir, ollama_server,
                       reply_timeout_s=0.5, rate_per_minute=100_000) as web:
        call: Callable[[], dict[str, int]] = lambda: fuzz(web.url, web.tokens)  # noqa: E731
        statuses = await asyncio.to_thread(call)
    seen = {key.rsplit(" ", 1)[1] for key in statuses}
    # not vacuous: answers of every kind were checked
    assert {"200", "401", "403", "404"} <= seen, statuses
    assert any(key.startswith("POST /api/chat 200") for key in statuses), statuses
    assert any(key.startswith("POST /api/chat 400") or key.startswith("POST /api/chat 415")
               for key in statuses), statuses
    assert sum(statuses.values()) <= 200, sum(statuses.values())
