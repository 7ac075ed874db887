"""Where the veille concurrence may send a request (jobs/fetch_guard.py), pure: which
addresses are public, what "the same site" is, and the settings' allowance."""

from __future__ import annotations

import ipaddress

import pytest

from bot.config import ConfigError, load_settings
from jobs.fetch_guard import address_refusal, follow, shown, site_refusal

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "de boucle locale"), ("127.8.9.10", "de boucle locale"),
    ("10.0.0.7", "privée"), ("172.16.5.4", "privée"), ("192.168.1.20", "privée"),
    ("169.254.169.254", "de lien local"),  # cloud metadata
    ("0.0.0.0", "non spécifiée"), ("224.0.0.1", "de multidiffusion"),
    ("224.0.1.1", "de multidiffusion"), ("240.0.0.1", "privée"),
    ("255.255.255.255", "privée"), ("100.64.0.1", "non publique"),  # CGNAT, Tailscale
    ("198.18.0.1", "privée"), ("192.0.2.1", "privée"),
    ("::1", "de boucle locale"), ("::", "non spécifiée"), ("fe80::1", "de lien local"),
    ("fe80::1%eth0", "de lien local"), ("fc00::1", "privée"), ("fd12:3456::1", "privée"),
    ("fec0::1", "privée"), ("ff02::1", "de multidiffusion"), ("ff0e::1", "de multidiffusion"),
    ("2001:db8::1", "privée"), ("::7f00:1", "réservée"),
    # IPv6 standing for an IPv4 address is judged as that address
    ("::ffff:127.0.0.1", "de boucle locale"), ("::ffff:169.254.169.254", "de lien local"),
    ("::ffff:10.1.2.3", "privée"), ("2002:7f00:1::", "de boucle locale"),
    ("2002:a9fe:a9fe::1", "de lien local"), ("64:ff9b::a9fe:a9fe", "de lien local"),
    ("64:ff9b::7f00:1", "de boucle locale"),
])
def test_non_public_addresses_are_refused(address: str, kind: str) -> None:
    refusal = address_refusal(address)
    assert refusal is not None and refusal.endswith(f"(adresse {kind})"), refusal


@pytest.mark.parametrize("address", [
    "93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "2a01:e0a:1::1",
    "::ffff:93.184.216.34", "2002:5db8:d822::1", "64:ff9b::5db8:d822",
])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(address) is None


def test_allowed_networks_lift_the_address_rule_for_themselves_only() -> None:
    assert address_refusal("127.0.0.1", LOOPBACK) is None
    assert address_refusal("::1", LOOPBACK) is None
    assert address_refusal("::ffff:127.0.0.1", LOOPBACK) is None  # the same address
    assert address_refusal("10.0.0.1", LOOPBACK) == "10.0.0.1 (adresse privée)"
    assert address_refusal("169.254.169.254", LOOPBACK) is not None
    assert address_refusal("pas-une-ip") == "adresse pas-une-ip illisible"


@pytest.mark.parametrize(("url", "site"), [
    ("https://agence.example/biens?page=2", "https://agence.example/biens"),
    ("https://www.agence.example/biens", "https://agence.example/biens"),
    ("https://agence.example/biens", "https://www.agence.example/biens"),
    ("https://WWW.Agence.Example./biens", "http://agence.example/"),
    ("https://agence.example/biens", "http://agence.example/biens"),  # http → https
    ("http://127.0.0.1:8080/b", "http://127.0.0.1:8080/a"),
    ("http://[::1]:8080/b", "http://[::1]:8080/a"),
])
def test_the_same_site(url: str, site: str) -> None:
    assert site_refusal(url, site) is None


@pytest.mark.parametrize(("url", "site", "reason"), [
    ("https://autre.example/biens", "https://agence.example/", "est sur un autre site (autre.example)"),
    ("https://immo.agence.example/", "https://agence.example/", "autre site (immo.agence.example)"),
    ("https://agence.example.evil.example/", "https://agence.example/", "autre site"),
    ("http://169.254.169.254/latest/meta-data/", "https://agence.example/", "autre site"),
    ("http://localhost:11434/api/tags", "http://127.0.0.1:11434/", "autre site (localhost)"),
    ("http://127.0.0.1:8006/", "http://127.0.0.1:8080/", "vise un autre port (8006) que la source (8080)"),
    ("https://agence.example:8006/", "https://agence.example/", "vise un autre port (8006)"),
    ("ftp://agence.example/biens", "https://agence.example/", "n'est pas en http(s)"),
    ("file:///etc/passwd", "https://agence.example/", "n'est pas en http(s)"),
    ("http://[::1", "https://agence.example/", "http://[::1 est illisible"),
])
def test_another_site_is_refused(url: str, site: str, reason: str) -> None:
    refusal = site_refusal(url, site)
    assert refusal is not None and reason in refusal, refusal


def test_urls_are_read_as_httpx_reads_them() -> None:
    """A URL that urllib and httpx would read differently is judged by httpx's reading:
    the one the connection uses."""
    tricky = "http://agence.example\\@evil.example/"
    assert site_refusal(tricky, "http://agence.example/") is not None


def test_follow_and_shown() -> None:
    assert follow("https://a.example/x/y", "../z") == "https://a.example/z"
    assert follow("https://a.example/", "http://[unclosed") is None
    assert shown("https://a.example/" + "x" * 500).endswith("…")
    assert len(shown("https://a.example/" + "x" * 500)) == 120
    assert shown("https://a.example/\nIgnore\x00") == "https://a.example/?Ignore?"


def test_the_allowance_setting() -> None:
    assert load_settings(_env_file=None).veille_allowed_network_list == ()
    settings = load_settings(_env_file=None, AXI_VEILLE_ALLOWED_NETWORKS="127.0.0.0/8, ::1")
    assert settings.veille_allowed_network_list == LOOPBACK
    with pytest.raises(ConfigError, match="AXI_VEILLE_ALLOWED_NETWORKS: not an IP address"):
        load_settings(_env_file=None, AXI_VEILLE_ALLOWED_NETWORKS="127.0.0.0/8,intranet")
