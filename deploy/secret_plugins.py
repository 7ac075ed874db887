"""Detectors the secret scan (deploy/secret_scan.py) adds to detect-secrets' own.

detect-secrets finds quoted high-entropy strings, passwords in URLs and `password = …`
assignments, but always what the earlier Axi published: an Anthropic API key (its Base64
detector skips the `sk-ant-…` form), a Trello key or token written unquoted
(`AXI_TRELLO_KEY=…` in a shell line, a YAML value, a Markdown note), and a password in an
env file once anything else was found in that file (detect-secrets reads a file's
unquoted values only when its first pass found nothing). Loaded by
detect-secrets from this file's path (its `plugins_used` entry in `.secrets.baseline`).
"""

from __future__ import annotations

import re

from detect_secrets.plugins.base import RegexBasedDetector


class AnthropicKeyDetector(RegexBasedDetector):
    """An Anthropic API or admin key: `sk-ant-api03-…`, `sk-ant-admin01-…`."""

    secret_type = "Anthropic API Key"  # pragma: allowlist secret
    denylist = (re.compile(r"\bsk-ant-[a-z]{2,12}\d{2}-[A-Za-z0-9_-]{32,}"),)


class HexKeyAssignmentDetector(RegexBasedDetector):
    """A long hex string given to something named key, token, secret or password, quoted
    or not (Trello's 32-hex key and 64-hex token), and Trello's `ATTA…` tokens anywhere."""

    secret_type = "Hex Key Assignment"  # pragma: allowlist secret
    denylist = (
        re.compile(r"(?i)(?:key|token|secret|passw(?:or)?d|cl[eé]|jeton)[\w.\-]*[\"']?\s*[:=]\s*"
                   r"[\"']?((?:ATTA)?[0-9a-fA-F]{32,})\b"),
        re.compile(r"\b(ATTA[0-9a-fA-F]{60,})\b"),
    )


class EnvAssignmentDetector(RegexBasedDetector):
    """`NAME_PASSWORD=value`, `…_TOKEN=`, `…_SECRET=`, `…_KEY=` as env files and shell
    lines write them (an upper-case name, `=` without spaces); an empty value, a
    `$VARIABLE` or a `<placeholder>` is not a secret."""

    secret_type = "Env Secret Assignment"  # pragma: allowlist secret
    denylist = (
        re.compile(r"(?:^|[\s;])(?:export\s+)?[A-Z][A-Z0-9_]*(?:PASSWORD|PASSWD|TOKEN|SECRET|KEY)="
                   r"[\"']?([^\s\"'$<{][^\s\"']{5,})"),
    )
