"""The fuzz package's one fixture: falsifying examples printed in full.

The schemathesis pytest plugin (loaded for tests/channels/test_web_schema.py) swaps
Hypothesis's printer, for the whole session, for one that prints nothing, so a failure
would read `data=,`. Each fuzz test gets Hypothesis's own printer back while it runs."""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest
from hypothesis import core
from hypothesis.vendor import pretty


@pytest.fixture(autouse=True)
def readable_examples() -> Iterator[None]:
    patched = core.RepresentationPrinter
    core.RepresentationPrinter = pretty.RepresentationPrinter  # type: ignore[misc]
    try:
        yield
    finally:
        core.RepresentationPrinter = patched  # type: ignore[misc]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing fuzz test also says its random seed (Hypothesis prints it only for flaky
    or aborted runs): `--hypothesis-seed=N` replays the whole run, not just one example."""
    report: pytest.TestReport = yield
    if report.failed and call.when == "call":
        for holder in (getattr(item, "obj", None), getattr(item, "function", None)):
            seed = getattr(holder, "_hypothesis_internal_use_generated_seed", None)
            if seed is not None:
                report.sections.append(("hypothesis seed", f"rerun with --hypothesis-seed={seed}"))
                break
    return report
