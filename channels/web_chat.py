"""The web chat for Ludo at `/` (issue 11, item 3): plain HTML, CSS and JavaScript from
channels/web_static/, served by Axi itself, with no build step and no outside resource.

Why it is a module of its own: the page is the one part of the HTTP channel a browser
runs, so it carries the browser's guards — a Content-Security-Policy that allows only
this origin (no inline script, no CDN: a message's text can never become code), no
framing, no referrer, no MIME sniffing — and caching that never leaves an old script
with a new server: `/` is revalidated on every load and names each static file with its
content's hash (`static/app.js?v=…`), so that only a hash-named file is cached for good.
Every URL the page uses is relative (`static/…`, `api/…`), so it works behind the
Cloudflare tunnel and under any path prefix. It talks only to the token API
(channels/web_api.py); nothing here reads a token or the database.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from channels.web_guard import WebConfig, WebPart, error

STATIC_DIR = Path(__file__).resolve().parent / "web_static"
PAGE = "index.html"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".webmanifest": "application/manifest+json",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

CSP = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "manifest-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}

REVALIDATE = "no-cache"
FOREVER = "public, max-age=31536000, immutable"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")


@dataclass(frozen=True)
class Asset:
    """One file of the page, read once at start-up."""

    name: str
    body: bytes
    content_type: str
    version: str
    """The first hex digits of the content's SHA-256: the `?v=` that may be cached."""

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


def _asset(name: str, body: bytes) -> Asset:
    content_type = CONTENT_TYPES[Path(name).suffix]
    return Asset(name, body, content_type, hashlib.sha256(body).hexdigest()[:16])


def load_assets(directory: Path = STATIC_DIR) -> tuple[Asset, dict[str, Asset]]:
    """The page and the static files (by name). The page's references to a static file
    (`"static/NAME"`) get the file's version, so a new release is fetched at once."""
    files: dict[str, Asset] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix in CONTENT_TYPES and path.name != PAGE \
                and _NAME.match(path.name):
            files[path.name] = _asset(path.name, path.read_bytes())
    html = (directory / PAGE).read_text("utf-8")
    for asset in files.values():
        html = html.replace(f'"static/{asset.name}"', f'"static/{asset.name}?v={asset.version}"')
    return _asset(PAGE, html.encode("utf-8")), files


def _respond(request: Request, asset: Asset, cache_control: str) -> Response:
    headers = {**SECURITY_HEADERS, "Cache-Control": cache_control, "ETag": asset.etag}
    inm = request.headers.get("if-none-match", "")
    if asset.etag in (tag.strip().removeprefix("W/") for tag in inm.split(",")):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


def part(config: WebConfig) -> WebPart:
    page, files = load_assets()

    async def index(request: Request) -> Response:
        return _respond(request, page, REVALIDATE)

    async def static(request: Request) -> Response:
        asset = files.get(request.path_params["name"])
        if asset is None:
            response = error(404, "introuvable", "Ce fichier n'existe pas.")
            response.headers.update(SECURITY_HEADERS)
            return response
        versioned = request.query_params.get("v") == asset.version
        return _respond(request, asset, FOREVER if versioned else REVALIDATE)

    return WebPart(routes=[Route("/", index, methods=["GET"]),
                           Route("/static/{name}", static, methods=["GET"])])
