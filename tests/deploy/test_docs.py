"""The documentation points nowhere outside the repository: the README links the three
docs, and every link in the README and in docs/ names a file of the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s)`'\"]+", re.IGNORECASE)
LOOPBACK = re.compile(r"^[a-z+]+://([^@/\s]*@)?(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(/|$)")


def links(path: Path) -> list[str]:
    return LINK.findall(path.read_text(encoding="utf-8"))


def inside_repository(source: Path, target: str) -> bool:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("/"):
        return False  # a URL (http:, mailto:…) or an absolute path
    resolved = (source.parent / target.split("#", 1)[0]).resolve()
    return resolved.is_relative_to(ROOT) and resolved.exists()


def test_the_readme_links_the_three_docs() -> None:
    found = set(links(ROOT / "README.md"))
    assert {"docs/architecture.md", "docs/exploitation.md", "docs/proxmox.md"} <= found


def test_every_documentation_link_stays_in_the_repository() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    bad = [f"{page.relative_to(ROOT)}: {target}" for page in pages for target in links(page)
           if not inside_repository(page, target)]
    assert not bad, "links leaving the repository (or to nothing):\n" + "\n".join(bad)


def test_the_readme_names_no_outside_address_or_path() -> None:
    """No URL but loopback (the web chat on 127.0.0.1, the test database server) or the
    placeholder example of a database URL; no path above the repository (the shared
    workspace, a sibling checkout)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    urls = [u for u in URL.findall(text)
            if not LOOPBACK.match(u)
            and not u.startswith("postgresql://user:password@host")]  # pragma: allowlist secret
    assert not urls, urls
    assert "../" not in text


def test_the_checker_sees_what_leaves(tmp_path: Path) -> None:
    page = ROOT / "README.md"
    assert not inside_repository(page, "https://example.org/doc")
    assert not inside_repository(page, "../shared/DESIGN.md")
    assert not inside_repository(page, "/etc/passwd")
    assert not inside_repository(page, "docs/missing.md")
    assert inside_repository(page, "docs/exploitation.md#santé")
    assert LOOPBACK.match("postgresql://postgres@127.0.0.1:5432/test")
    assert not LOOPBACK.match("https://127.0.0.1.example.org/")
    assert LINK.findall("see [the guide](docs/x.md) and [site](https://a.b)") == [
        "docs/x.md", "https://a.b"]
