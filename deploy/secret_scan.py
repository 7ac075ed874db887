#!/usr/bin/env python3
"""Fail the build on a new secret: detect-secrets over every file git would commit,
compared with the audited `.secrets.baseline`.

    .venv/bin/python deploy/secret_scan.py                    # exit 1 on a new secret
    .venv/bin/python deploy/secret_scan.py --update-baseline  # record findings, then audit

`python3 deploy/local.py test` runs it before pytest, so `.ci/run` does. The earlier Axi
published its mail password and its Trello key and token in its code; here a secret lives
only in `.env` (git-ignored) or the environment.

What is scanned: the files `git ls-files --cached --others --exclude-standard` lists
(tracked files and new ones that are not ignored — never .git/, .venv/, build artefacts or
a local .env); outside a git checkout, the tree minus those directories. What is found:
detect-secrets' own detectors (passwords in URLs and assignments, high-entropy strings,
private keys, cloud and Telegram tokens…) and deploy/secret_plugins.py's (Anthropic keys,
Trello-like hex keys and tokens, quoted or not). Nothing is sent anywhere: no detector's
online verification runs.

A finding is new unless the baseline has the same secret in the same file with the same
type (line numbers may move). Every baseline entry must be audited as a false positive
(`"is_secret": false`): an unaudited entry or one marked as a real secret fails the scan
too. A false positive is either marked on its line (`# pragma: allowlist secret`) or
recorded with --update-baseline and then audited (edit the entry, or run
`.venv/bin/detect-secrets audit .secrets.baseline`). Exit 0: clean; 1: a secret; 2: the
scan could not run (detect-secrets missing, unreadable baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASELINE_NAME = ".secrets.baseline"
PLUGINS = HERE / "secret_plugins.py"
PLUGINS_IN_BASELINE = "file://deploy/secret_plugins.py"
"""How the baseline names the extra detectors: relative to the repository's root, so that
`detect-secrets audit .secrets.baseline` run from there finds them."""
CUSTOM_PLUGINS = ("AnthropicKeyDetector", "EnvAssignmentDetector", "HexKeyAssignmentDetector")
SKIP_DIRS = frozenset({".git", ".venv", "venv", "build", "dist", "__pycache__", "node_modules",
                       ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"})
HELP = ("remove it (secrets belong in .env or the environment) or, if it is a false "
        "positive, audit it: docs/architecture.md, \"Secrets\"")


def say(message: str) -> None:
    print(f"[axi] secret scan: {message}", flush=True)


def _skipped(relative: str) -> bool:
    return any(part in SKIP_DIRS or part.endswith(".egg-info") for part in Path(relative).parts)


def git_files(root: Path) -> list[str] | None:
    """What git would commit under `root` (None when `root` is not in a git checkout)."""
    if shutil.which("git") is None:
        return None
    listed = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=False)
    if listed.returncode != 0:
        return None
    return [p for p in listed.stdout.decode("utf-8", "surrogateescape").split("\0") if p]


def walked_files(root: Path) -> list[str]:
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        found.extend(os.path.relpath(os.path.join(folder, name), root) for name in names)
    return found


def files_to_scan(root: Path, baseline: Path) -> list[str]:
    listed = git_files(root)
    if listed is None:
        listed = walked_files(root)
    baseline = baseline.resolve()
    return sorted(
        relative for relative in set(listed)
        if not _skipped(relative)
        and (root / relative).is_file() and not (root / relative).is_symlink()
        and (root / relative).resolve() != baseline)


def plugins_used() -> list[dict[str, Any]]:
    """Every detector detect-secrets ships, plus ours (loaded from this checkout)."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

    builtin = sorted(cls.__name__ for cls in get_mapping_from_secret_type_to_class().values())
    get_mapping_from_secret_type_to_class.cache_clear()  # ours join once configured
    return ([{"name": name} for name in builtin]
            + [{"name": name, "path": f"file://{PLUGINS}"} for name in CUSTOM_PLUGINS])


def filters_used() -> list[dict[str, Any]]:
    """detect-secrets' default filters but one: `is_indirect_reference` drops every finding
    on a line that calls something (an Anthropic key passed to the client's constructor
    would pass unseen)."""
    from detect_secrets.settings import Settings

    return [{"path": path} for path in sorted(Settings().filters)
            if path not in Settings.DEFAULT_FILTERS and not path.endswith(".is_indirect_reference")]


def load_baseline(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"results": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SystemExit(f"[axi] secret scan: cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise SystemExit(f"[axi] secret scan: {path} is not a detect-secrets baseline")
    return data


def scan(root: Path, files: list[str]) -> Any:
    """The findings (a detect-secrets SecretsCollection), with the settings applied."""
    from detect_secrets import SecretsCollection

    found = SecretsCollection(root=str(root))
    if files:
        found.scan_files(*files, num_processors=max(1, min(4, os.cpu_count() or 1)))
    return found


def baseline_json(found: Any) -> dict[str, Any]:
    """The baseline to write (under the scan's settings), its paths relative to the root."""
    from detect_secrets.core.baseline import format_for_output

    output = format_for_output(found)
    output.pop("generated_at", None)  # no churn in the committed file
    for plugin in output.get("plugins_used", []):
        if "path" in plugin:
            plugin["path"] = PLUGINS_IN_BASELINE
    for items in output.get("results", {}).values():
        for item in items:
            item.pop("filename", None)  # the key names the file, relative to the root
    return output


def baseline_secrets(baseline: dict[str, Any], root: Path) -> Any:
    """The baseline's findings named as this checkout's scan names them (absolute paths
    under `root`), whatever checkout wrote the baseline."""
    from detect_secrets import SecretsCollection

    results = {name: [{**item, "filename": str(root / name)} for item in items]
               for name, items in baseline["results"].items()}
    return SecretsCollection.load_from_baseline({**baseline, "results": results})


def run(root: Path, baseline_path: Path, update: bool) -> int:
    try:
        import detect_secrets  # noqa: F401  (installed?)
        from detect_secrets.settings import transient_settings
    except ImportError:
        say("detect-secrets is not installed in this Python: pip install -e '.[test]' "
            "(python3 deploy/local.py test does it)")
        return 2
    started = time.monotonic()
    files = files_to_scan(root, baseline_path)
    baseline = load_baseline(baseline_path)
    with transient_settings({"plugins_used": plugins_used(),
                             "filters_used": filters_used()}):
        found = scan(root, files)
        if update:
            found.merge(baseline_secrets(baseline, root))
            output = baseline_json(found)
            baseline_path.write_text(json.dumps(output, indent=2, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
            unaudited = sum(1 for items in output["results"].values() for item in items
                            if item.get("is_secret") is not False)
            say(f"{baseline_path.name} written: {sum(map(len, output['results'].values()))} "
                f"entries, {unaudited} to audit (set \"is_secret\": false once checked)")
            return 0
    elapsed = time.monotonic() - started
    problems = 0
    for filename, secret in found - baseline_secrets(baseline, root):
        say(f"NEW SECRET in {filename}:{secret.line_number} ({secret.type}): {HELP}")
        problems += 1
    for filename, items in sorted(baseline["results"].items()):
        for item in items:
            verdict = item.get("is_secret")
            if verdict is True:
                say(f"{filename}:{item.get('line_number')} ({item.get('type')}) is audited as a "
                    f"REAL secret in {baseline_path.name}: remove it from the code and rotate it")
                problems += 1
            elif verdict is not False:
                say(f"{filename}:{item.get('line_number')} ({item.get('type')}) is not audited "
                    f"in {baseline_path.name}: check it, then set \"is_secret\": false")
                problems += 1
    if problems:
        say(f"{problems} problem(s) in {len(files)} files ({elapsed:.1f} s): the build fails")
        return 1
    say(f"no new secret in {len(files)} files ({elapsed:.1f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the tree to scan")
    parser.add_argument("--baseline", type=Path, default=None,
                        help=f"default: ROOT/{BASELINE_NAME}")
    parser.add_argument("--update-baseline", action="store_true",
                        help="rewrite the baseline with today's findings (audits kept)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    return run(root, args.baseline or root / BASELINE_NAME, args.update_baseline)


if __name__ == "__main__":
    sys.exit(main())
