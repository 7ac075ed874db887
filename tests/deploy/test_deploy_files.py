"""The Docker path is validated by parsing (no Docker engine on the dev/CI machines):
the compose file is valid YAML with the services, health checks and wiring Axi needs,
the Dockerfile copies every package and runs migrations before `axi run`, and every
variable the compose file sets is a real setting."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import yaml

from bot.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_compose_services_and_wiring() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "ollama", "axi"}
    assert services["postgres"]["image"].startswith("pgvector/pgvector:pg16")
    assert "healthcheck" in services["postgres"]
    axi = services["axi"]
    assert axi["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert axi["environment"]["OLLAMA_HOST"] == "http://ollama:11434"
    assert axi["environment"]["AXI_DATABASE_URL"].startswith("postgresql://axi:")
    assert "@postgres:5432/axi" in axi["environment"]["AXI_DATABASE_URL"]
    assert axi["ports"] == ["127.0.0.1:5000:5000"]  # never exposed beyond the host
    aliases = {f.alias for f in Settings.model_fields.values()}
    assert set(axi["environment"]) <= aliases
    for volume in ("postgres-data", "ollama-models", "axi-data"):
        assert volume in compose["volumes"]


def test_ollama_keeps_a_cache_per_conversation_and_runs_what_axi_gives_it() -> None:
    """Axi's gate hands the local model AXI_LOCAL_SLOTS requests at once (1: the CPU is
    never shared); Ollama must have at least that many slots (its own queue has no
    priorities), and more of them keep more conversations' prompts cached — chosen by
    prefix, least recently used first (OLLAMA_MULTIUSER_CACHE), not the first slot."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    ollama = compose["services"]["ollama"]["environment"]
    parallel = int(ollama["OLLAMA_NUM_PARALLEL"])
    example = (DEPLOY.parent / ".env.example").read_text()
    slots = re.search(r"^AXI_LOCAL_SLOTS=(\d+)$", example, re.MULTILINE)
    assert slots is not None and int(slots.group(1)) == 1
    assert Settings.model_fields["local_slots"].default == 1
    assert parallel >= 8
    assert str(ollama["OLLAMA_MULTIUSER_CACHE"]) == "1"


def test_compose_has_no_secret_values() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"API_KEY|TOKEN|PASSWORD", key):
                assert str(value).startswith("${"), f"{key} must come from the environment"
        url = (service.get("environment") or {}).get("AXI_DATABASE_URL", "")
        assert not url or "${POSTGRES_PASSWORD}" in url


def test_dockerfile_copies_packages_and_migrates_first() -> None:
    lines = [line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines()]
    assert lines[0].startswith("#") or lines[0].startswith("FROM")
    assert any(line.startswith("FROM python:3.1") for line in lines)
    copied = {line.split()[1] for line in lines if line.startswith("COPY")}
    assert {"bot", "channels", "memory", "llm", "jobs"} <= copied
    cmd = [line for line in lines if line.startswith("CMD")][-1]
    assert cmd.index("axi db upgrade") < cmd.index("axi run")
    assert any(line.startswith("USER ") and "root" not in line for line in lines)
    assert any(line.startswith("HEALTHCHECK") for line in lines)


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string((DEPLOY / "axi.service").read_text())
    service = unit["Service"]
    assert service["ExecStartPre"].endswith("axi db upgrade")
    assert service["ExecStart"].endswith("axi run")
    assert service["Restart"] == "on-failure"
