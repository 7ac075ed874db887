"""The Docker path is validated by parsing (no Docker engine on the dev/CI machines): the
compose file is valid YAML with the services, volumes, health checks and wiring Axi needs;
every variable it hands Axi is a real setting (or a third-party tool's, listed below); no
secret is written in it; its ports and addresses agree with the settings, the Dockerfile
and the tunnel's configuration; the Dockerfile's health check and pg_dump check actually
work; the systemd unit migrates before it runs Axi."""

from __future__ import annotations

import configparser
import ipaddress
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import DEFAULT_LOCAL_MODEL, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# Variables the compose file may pass to Axi that are not Axi's settings: they belong to
# the tools Axi drives, which read them themselves.
THIRD_PARTY_ALLOWED = frozenset({
    # restic: the repository's password (or a file holding it)
    "RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE",
    # restic's remote backends (AXI_BACKUP_REMOTE_REPOSITORY): Backblaze B2, S3
    "B2_ACCOUNT_ID", "B2_ACCOUNT_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    # the PostgreSQL image's own settings
    "POSTGRES_PASSWORD", "POSTGRES_USER", "POSTGRES_DB",
    # cloudflared's own settings (TUNNEL_TOKEN must never appear: see the tunnel test)
    "TUNNEL_METRICS", "TUNNEL_LOGLEVEL",
})
# Services that keep state: each has a named volume and a health check (Axi's is in the
# Dockerfile). The others, and why they need neither:
STATEFUL = frozenset({"postgres", "ollama", "uptime-kuma", "axi"})
STATELESS = {
    "ollama-pull": "one-shot: asks the ollama service to pull the model, then exits",
    "cloudflared": "config only (read-only mounts); its image has no shell for a health "
                   "check: Uptime Kuma watches its /ready",
}
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY|_KEY$|PUSH_URL|CREDENTIAL")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def tunnel() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "cloudflared" / "config.yml").read_text())


def dockerfile_lines() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    return [" ".join(line.split()) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in dockerfile_lines():
        if line.startswith("ENV "):
            for part in shlex.split(line[4:]):
                name, _, value = part.partition("=")
                env[name] = value
    return env


def volumes_of(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """target → (source, mode) for each short-syntax volume."""
    out = {}
    for entry in service.get("volumes", []):
        parts = entry.split(":")
        out[parts[1]] = (parts[0], parts[2] if len(parts) > 2 else "rw")
    return out


def interpolation_default(value: str) -> str:
    match = re.fullmatch(r"\$\{\w+:-(.+)\}", value)
    assert match, f"{value!r} is not ${{NAME:-default}}"
    return match.group(1)


def settings_default(alias: str) -> Any:
    for field in Settings.model_fields.values():
        if field.alias == alias:
            return field.default
    raise KeyError(alias)


# ------------------------------------------------------------------------ compose file
def test_compose_has_every_service_and_each_is_classified(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == STATEFUL | set(STATELESS)
    assert services["postgres"]["image"].startswith("pgvector/pgvector:pg16")
    assert services["ollama"]["image"].startswith("ollama/ollama")
    assert services["cloudflared"]["image"].startswith("cloudflare/cloudflared")
    assert services["uptime-kuma"]["image"].startswith("louislam/uptime-kuma")
    assert services["axi"]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}


def test_every_stateful_service_has_a_named_volume_and_a_health_check(
        compose: dict[str, Any]) -> None:
    named = set(compose["volumes"])
    for name in STATEFUL:
        service = compose["services"][name]
        sources = {source for source, _ in volumes_of(service).values()}
        assert sources & named, f"{name} keeps its state in no named volume"
        if name == "axi":
            assert any(line.startswith("HEALTHCHECK ") for line in dockerfile_lines())
            assert "healthcheck" not in service  # one place: the image's
        else:
            check = service["healthcheck"]["test"]
            assert check[0] in {"CMD", "CMD-SHELL"} and len(check) > 1
    used = {source for s in compose["services"].values() for source, _ in volumes_of(s).values()}
    assert named <= used, f"declared but unused volumes: {named - used}"
    for name in STATELESS:
        service = compose["services"][name]
        assert not (set(source for source, _ in volumes_of(service).values()) & named)
        assert all(mode == "ro" for _, mode in volumes_of(service).values())


def test_restart_policies_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        expected = "no" if name == "ollama-pull" else "unless-stopped"
        assert service["restart"] == expected, name
    axi = services["axi"]["depends_on"]
    assert axi["postgres"]["condition"] == "service_healthy"
    assert axi["ollama"]["condition"] == "service_healthy"
    assert axi["ollama-pull"]["condition"] == "service_completed_successfully"
    assert services["ollama-pull"]["depends_on"]["ollama"]["condition"] == "service_healthy"
    assert services["cloudflared"]["depends_on"]["axi"]["condition"] == "service_started"


def test_the_one_shot_pulls_axis_model_only_when_missing(compose: dict[str, Any]) -> None:
    pull = compose["services"]["ollama-pull"]
    assert pull["environment"]["OLLAMA_HOST"] == compose["services"]["axi"]["environment"][
        "OLLAMA_HOST"]
    assert interpolation_default(pull["environment"]["AXI_LOCAL_MODEL"]) == DEFAULT_LOCAL_MODEL
    assert DEFAULT_LOCAL_MODEL == "mistral:7b-instruct-q4_K_M"
    assert pull["entrypoint"] == ["/bin/sh", "-c"]
    script = pull["command"][0].replace("$$", "$")  # Compose's escape for a literal $
    show, _, pull_cmd = script.partition(" || ")
    assert show.startswith('ollama show "$AXI_LOCAL_MODEL"')
    assert pull_cmd == 'ollama pull "$AXI_LOCAL_MODEL"'
    assert "ports" not in compose["services"]["ollama"]  # the model server stays inside


def test_every_variable_passed_to_axi_is_a_setting_or_allowed(compose: dict[str, Any]) -> None:
    aliases = {f.alias for f in Settings.model_fields.values() if f.alias}
    axi = compose["services"]["axi"]
    passed = set(axi["environment"])
    unknown = passed - aliases - THIRD_PARTY_ALLOWED
    assert not unknown, f"not settings of Axi: {sorted(unknown)}"
    assert axi["env_file"] == ["../.env"]
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    assert aliases <= listed, f"settings missing from .env.example: {sorted(aliases - listed)}"
    # what Compose itself reads from .env is documented there too
    text = (DEPLOY / "docker-compose.yml").read_text()
    interpolated = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    assert interpolated <= listed, sorted(interpolated - listed)


def test_compose_has_no_secret_values(compose: dict[str, Any]) -> None:
    text = (DEPLOY / "docker-compose.yml").read_text()
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{\w+(:\?[^}]*)?\}", str(value)), (
                    f"{name}: {key} must come from the environment, not be written here")
            assert key != "TUNNEL_TOKEN"
    url = compose["services"]["axi"]["environment"]["AXI_DATABASE_URL"]
    assert re.fullmatch(r"postgresql://axi:\$\{POSTGRES_PASSWORD(:\?[^}]*)?\}@postgres:5432/axi",
                        url)
    assert compose["services"]["postgres"]["environment"]["POSTGRES_USER"] == "axi"
    assert compose["services"]["postgres"]["environment"]["POSTGRES_DB"] == "axi"
    # no user:password@ written anywhere but through ${…}
    for match in re.finditer(r"://[^/\s:@]+:([^@\s]+)@", text):
        assert match.group(1).startswith("${"), match.group(0)


def test_ports_and_addresses_agree_with_the_settings(compose: dict[str, Any]) -> None:
    port = Settings.model_fields["http_port"].default
    assert port == 5000
    axi = compose["services"]["axi"]
    env = axi["environment"]
    assert env["AXI_HTTP_PORT"] == str(port) == dockerfile_env()["AXI_HTTP_PORT"]
    assert env["AXI_HTTP_HOST"] == "0.0.0.0"  # inside its container; published on loopback
    assert axi["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert f"EXPOSE {port}" in dockerfile_lines()
    assert env["OLLAMA_HOST"] == "http://ollama:11434"
    assert "@postgres:5432/axi" in env["AXI_DATABASE_URL"]
    for name, service in compose["services"].items():  # nothing beyond the host
        for published in service.get("ports", []):
            assert published.startswith("127.0.0.1:"), f"{name} publishes {published}"
    assert compose["services"]["uptime-kuma"]["ports"] == ["127.0.0.1:3001:3001"]


def test_data_dir_and_backup_repository_are_volumes_owned_by_axi(
        compose: dict[str, Any]) -> None:
    axi = compose["services"]["axi"]
    mounts = volumes_of(axi)
    env = axi["environment"]
    assert mounts[env["AXI_DATA_DIR"]] == ("axi-data", "rw")
    assert mounts[env["AXI_BACKUP_REPOSITORY"]] == ("axi-backups", "rw")
    image = dockerfile_env()
    assert image["AXI_DATA_DIR"] == env["AXI_DATA_DIR"]
    assert image["AXI_BACKUP_REPOSITORY"] == env["AXI_BACKUP_REPOSITORY"]
    lines = dockerfile_lines()
    chown = next(line for line in lines if "chown" in line)
    for path in (env["AXI_DATA_DIR"], env["AXI_BACKUP_REPOSITORY"]):
        assert "mkdir -p" in chown and path in chown.split("chown", 1)[1]
    volume = next(line for line in lines if line.startswith("VOLUME "))
    assert env["AXI_DATA_DIR"] in volume and env["AXI_BACKUP_REPOSITORY"] in volume


def test_only_cloudflared_is_a_trusted_proxy(compose: dict[str, Any]) -> None:
    """Axi believes CF-Connecting-IP from cloudflared only: its fixed address in the
    compose network, plus loopback (the default). Not the bridge's gateway (the host's
    own requests through docker-proxy), not the whole subnet (any other container)."""
    subnet = ipaddress.ip_network(
        compose["networks"]["default"]["ipam"]["config"][0]["subnet"])
    tunnel_ip = ipaddress.ip_address(
        compose["services"]["cloudflared"]["networks"]["default"]["ipv4_address"])
    assert tunnel_ip in subnet and tunnel_ip != next(subnet.hosts())  # not the gateway
    trusted = [ipaddress.ip_network(part.strip()) for part in
               compose["services"]["axi"]["environment"]["AXI_TRUSTED_PROXIES"].split(",")]
    beyond_loopback = [net for net in trusted if not net.is_loopback]
    assert beyond_loopback == [ipaddress.ip_network(f"{tunnel_ip}/32")]
    assert Settings(AXI_TRUSTED_PROXIES=compose["services"]["axi"]["environment"][
        "AXI_TRUSTED_PROXIES"]).trusted_proxy_networks  # a value the settings accept
    others = [name for name, s in compose["services"].items()
              if name != "cloudflared" and "networks" in s]
    assert not others  # no other service pinned (or sharing) an address


def test_ollama_keeps_a_cache_per_conversation_and_runs_what_axi_gives_it(
        compose: dict[str, Any]) -> None:
    """Axi's gate hands the local model AXI_LOCAL_SLOTS requests at once (2, decoded in
    one batch; the settings' default stays 1, right for an Ollama with one slot); Ollama
    must have at least that many slots (its own queue has no priorities), and more of
    them keep more conversations' prompts cached — chosen by prefix, least recently used
    first (OLLAMA_MULTIUSER_CACHE), not the first slot."""
    ollama = compose["services"]["ollama"]["environment"]
    parallel = int(ollama["OLLAMA_NUM_PARALLEL"])
    example = (ROOT / ".env.example").read_text()
    slots = re.search(r"^AXI_LOCAL_SLOTS=(\d+)$", example, re.MULTILINE)
    assert slots is not None and int(slots.group(1)) == 2 <= parallel
    assert Settings.model_fields["local_slots"].default == 1
    assert parallel >= 16
    assert str(ollama["OLLAMA_MULTIUSER_CACHE"]) == "1"
    # the wait estimate knows how many prompts Ollama keeps cached (llm/wait_estimate.py)
    caches = re.search(r"^AXI_LOCAL_CACHES=(\d+)$", example, re.MULTILINE)
    assert caches is not None and int(caches.group(1)) == parallel


# ------------------------------------------------------------------------ the tunnel
def test_the_tunnel_is_locally_managed_with_a_read_only_credentials_file(
        compose: dict[str, Any], tunnel: dict[str, Any]) -> None:
    service = compose["services"]["cloudflared"]
    command = service["command"]
    assert command[0] == "tunnel" and command[-1] == "run"
    config_path = command[command.index("--config") + 1]
    assert not any("token" in part.lower() for part in command)  # a token run ignores config
    mounts = volumes_of(service)
    assert mounts[config_path] == ("./cloudflared/config.yml", "ro")
    assert tunnel["tunnel"] == "axis-station"
    source, mode = mounts[tunnel["credentials-file"]]
    assert mode == "ro"
    assert source.startswith("/") and not source.startswith(str(ROOT))  # never in the repo
    assert "environment" not in service  # no TUNNEL_TOKEN or other secret here


def test_the_tunnel_routes_axi_and_proxmox_and_nothing_else(
        compose: dict[str, Any], tunnel: dict[str, Any]) -> None:
    rules = tunnel["ingress"]
    by_host = {rule["hostname"]: rule for rule in rules if "hostname" in rule}
    assert set(by_host) == {"axi.icidordogne.fr", "admin.icidordogne.fr"}
    assert Settings.model_fields["public_host"].default == "axi.icidordogne.fr"
    axi_service = by_host["axi.icidordogne.fr"]["service"]
    assert axi_service == f"http://axi:{Settings.model_fields['http_port'].default}"
    assert "axi" in compose["services"]
    proxmox = by_host["admin.icidordogne.fr"]
    assert proxmox["service"] == "https://proxmox:8006"
    hosts = compose["services"]["cloudflared"]["extra_hosts"]
    assert [h for h in hosts if h.startswith("proxmox:")] == [
        "proxmox:${PROXMOX_HOST_IP:?set PROXMOX_HOST_IP in .env}"]
    assert rules[-1] == {"service": "http_status:404"}  # the catch-all: everything else
    assert all("hostname" in rule for rule in rules[:-1])
    assert str(tunnel["metrics"]).rsplit(":", 1)[1] == "2000"  # /ready for Uptime Kuma


def test_the_runbook_puts_cloudflare_access_in_front_of_proxmox() -> None:
    text = (ROOT / "docs" / "proxmox.md").read_text()
    assert "admin.icidordogne.fr" in text and "Cloudflare Access" in text
    for layout in ("8 vCPU", "32 Go", "4 vCPU", "16 Go", "2 vCPU", "8 Go"):
        assert layout in text


# ------------------------------------------------------------------------ Dockerfile
def test_dockerfile_builds_a_non_root_image_with_restic_and_pg_dump_16() -> None:
    lines = dockerfile_lines()
    assert lines[0] == "FROM python:3.12-slim"
    copied = {line.split()[1] for line in lines if line.startswith("COPY")}
    assert {"bot", "channels", "memory", "llm", "jobs", "pyproject.toml"} <= copied
    cmd = [line for line in lines if line.startswith("CMD")][-1]
    assert cmd.index("axi db upgrade") < cmd.index("axi run")
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] == "axi"
    apt = next(line for line in lines if "apt-get install" in line)
    assert re.search(r"\brestic\b", apt) and "--no-install-recommends" in apt
    assert "rm -rf /var/lib/apt/lists" in apt
    project = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^\s*"pgserver[>=<]', project, re.MULTILINE)  # its pg_dump 16


def _python_c(line: str) -> str:
    match = re.search(r'python -c "(.+?)"(?:\s|$)', line)
    assert match, line
    return match.group(1)


def test_dockerfile_pg_dump_check_runs() -> None:
    """The image's build step that refuses a pgserver without pg_dump/pg_restore 16, run
    here against this environment's pgserver."""
    line = next(line for line in dockerfile_lines() if "POSTGRES_BIN_PATH" in line)
    done = subprocess.run([sys.executable, "-c", _python_c(line)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pg_dump (PostgreSQL) 16." in done.stdout
    assert "pg_restore (PostgreSQL) 16." in done.stdout


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[HTTPServer, type[_Health]]]:
    handler = type("Health", (_Health,), {"status": 200})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, handler
    finally:
        server.shutdown()
        server.server_close()


def test_dockerfile_health_check_passes_on_200_only(
        health_server: tuple[HTTPServer, type[_Health]]) -> None:
    """The HEALTHCHECK's own command, pointed at a loopback server in place of Axi."""
    server, handler = health_server
    line = next(line for line in dockerfile_lines() if line.startswith("HEALTHCHECK"))
    port = Settings.model_fields["http_port"].default
    url = f"http://127.0.0.1:{port}/health"
    assert url in line
    code = _python_c(line).replace(url, f"http://127.0.0.1:{server.server_port}/health")

    def check() -> int:
        return subprocess.run([sys.executable, "-c", code], capture_output=True,
                              timeout=30).returncode

    assert check() == 0
    handler.status = 503
    assert check() != 0
    server.shutdown()
    server.server_close()  # the same URL with nobody listening
    assert check() != 0


# ------------------------------------------------------------------------ systemd
def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string((DEPLOY / "axi.service").read_text())
    service = unit["Service"]
    assert service["User"] == "axi"
    assert service["ExecStartPre"].endswith("axi db upgrade")
    assert service["ExecStart"].endswith("axi run")
    assert service["ExecStartPre"].split()[0].rsplit("/", 1)[0] == \
        service["ExecStart"].split()[0].rsplit("/", 1)[0]
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"].lstrip("-").endswith("/.env")
    assert service["TimeoutStartSec"] != "" and service["TimeoutStartSec"] not in {"90", "90s"}
    assert service["KillSignal"] == "SIGTERM"
    assert service["NoNewPrivileges"] == "true"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit["Unit"]["After"]
