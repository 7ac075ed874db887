"""Fuzzing (hypothesis) of every parser that reads the outside world (issue 14, item 3).

One module per area, each saying in its docstring what it proves: MIME (test_mime),
Telegram updates (test_telegram_updates), HTTP payloads and the legacy site shapes
(test_http_app through the real app, test_http_rules for the pure rules), the veille
sources (test_veille_sources, test_veille_config, test_dvf) and the legacy importer
(test_legacy). The contract everywhere: no crash, nothing lost, each bad input refused or
quarantined with a reason.

A crash found here is kept as an explicit `@example` in a test marked
`xfail(strict=True, reason="DEFECT: …")` that runs that example only: the suite stays
green, and turns red the day the defect is fixed (then drop the mark).

Examples per test are tuned so the package runs in about a minute on two shared cores;
`AXI_FUZZ_EXAMPLES=10` runs ten times as many (any positive number: a multiplier), e.g.

    AXI_FUZZ_EXAMPLES=10 python -m pytest tests/fuzz -q

Runs are random (not derandomized): a failure prints its falsifying example and an
`@reproduce_failure(…)` line to replay it.
"""
