"""The web chat's page and static files, without a browser: what `/` serves (French, the
security headers, caching), the static files' types, and what the page's code must never
do (absolute URLs, outside resources, HTML built from text). The browser itself is
driven in tests/channels/test_web_chat_browser.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from channels import web_chat
from channels.web_guard import WebConfig

STATIC = Path(web_chat.__file__).resolve().parent / "web_static"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=web_chat.part(WebConfig()).routes)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://axi.test") as http:
        yield http


class Tags(HTMLParser):
    """Every start tag of a page with its attributes, and the text inside scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data


def parse(html: str) -> Tags:
    tags = Tags()
    tags.feed(html)
    return tags


def assert_guarded(response: httpx.Response) -> None:
    csp = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "connect-src", "img-src"):
        assert directives[name] == "'self'", name
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in csp and "*" not in csp and "http" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"


async def test_the_page_is_french_guarded_and_revalidated(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert_guarded(response)
    assert response.headers["cache-control"] == "no-cache"
    page = response.text
    assert '<html lang="fr">' in page
    for words in ("Votre jeton d'accès", "Se connecter", "Se déconnecter", "Envoyer",
                  "Ce message ne quitte pas le serveur", "Axi réfléchit…",
                  "Messages plus anciens"):
        assert words in page, words
    assert 'name="viewport"' in page
    again = await client.get("/", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert_guarded(again)


async def test_the_page_has_no_inline_code_and_only_relative_urls(
        client: httpx.AsyncClient) -> None:
    tags = parse((await client.get("/")).text)
    assert tags.script_text.strip() == ""  # the CSP would block it anyway
    urls = []
    for tag, attrs in tags.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)  # no onclick=…
        assert "style" not in attrs, (tag, attrs)
        urls += [v for a, v in attrs.items() if a in ("src", "href", "action") and v]
    assert urls, "the page loads no script or style?"
    for url in urls:
        assert url.startswith("static/"), url  # no host, no leading slash: any prefix works
    scripts = [a.get("src") or "" for t, a in tags.tags if t == "script"]
    assert scripts and all(re.fullmatch(r"static/app\.js\?v=[0-9a-f]{16}", s) for s in scripts)


async def test_static_files_have_their_types_and_cache_by_version(
        client: httpx.AsyncClient) -> None:
    tags = parse((await client.get("/")).text)
    urls = [a.get("src") or a.get("href") for t, a in tags.tags if t in ("script", "link")]
    expected = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".svg": "image/svg+xml", ".webmanifest": "application/manifest+json"}
    seen = set()
    for url in urls:
        assert url is not None
        response = await client.get(url)
        name = url.split("?")[0].removeprefix("static/")
        suffix = Path(name).suffix
        seen.add(suffix)
        assert response.status_code == 200, url
        assert response.headers["content-type"] == expected[suffix], url
        assert response.content == (STATIC / name).read_bytes()
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert_guarded(response)
        # without the version (or an old one), a file is revalidated, never kept for good
        for stale in (f"static/{name}", f"static/{name}?v=0123456789abcdef"):
            assert (await client.get(stale)).headers["cache-control"] == "no-cache"
    assert seen == set(expected)


@pytest.mark.parametrize("path", ["/static/nope.js", "/static/index.html",
                                  "/static/../web_chat.py", "/static/%2e%2e%2fweb_chat.py",
                                  "/static/sub/app.js", "/static/", "/index.html"])
async def test_unknown_static_paths_are_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert "import" not in response.text  # no Python source, ever
    if path in ("/static/nope.js", "/static/index.html"):
        assert response.json()["message"] == "Ce fichier n'existe pas."
        assert response.headers["x-content-type-options"] == "nosniff"


def test_the_script_uses_relative_urls_and_never_builds_html() -> None:
    code = (STATIC / "app.js").read_text("utf-8")
    assert not re.search(r"""["'`]/+api""", code), "an absolute /api URL breaks behind a prefix"
    assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}", code, re.I), "a hard-coded host"
    assert re.search(r"""["'`]api/chat["'`]""", code)
    assert re.search(r"""["'`]api/history\?""", code)
    assert re.search(r"""["'`]api/me["'`]""", code)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "new EventSource"):
        assert sink not in code, sink
    assert "textContent" in code


def test_no_outside_resource_and_large_type() -> None:
    css = (STATIC / "style.css").read_text("utf-8")
    assert "@import" not in css and "url(" not in css and "@font-face" not in css
    root = re.search(r"html\s*\{[^}]*font-size:\s*(\d+)px", css)
    assert root is not None
    base = int(root.group(1))
    assert base >= 18
    sizes = re.findall(r"font-size:\s*([\d.]+)(rem|em|px)", css)
    for value, unit in sizes:  # `em` is relative to rem-sized parents here
        px = float(value) * (1 if unit == "px" else base)
        assert px >= 18, f"font-size {value}{unit} is {px} px: too small to read in the sun"
    heights = [int(h) for h in re.findall(r"min-height:\s*(\d+)px", css)]
    assert heights and min(heights) >= 48  # touch targets


def test_every_static_file_is_packaged() -> None:
    pyproject = (STATIC.parents[1] / "pyproject.toml").read_text("utf-8")
    assert '"channels" = ["web_static/*"]' in pyproject
    page, files = web_chat.load_assets(STATIC)
    assert {p.name for p in STATIC.iterdir()} == {page.name, *files}
