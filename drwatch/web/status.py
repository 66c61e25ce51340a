"""The status page: one HTML page, a script and a stylesheet, served from package data.

The page polls the JSON API (`/api/v1/status`, `/api/v1/incidents`) itself, so this
module only serves files. Nothing comes from a CDN: the page works on a host with no
internet, which is when it is needed most.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

_FILES = {
    "index.html": "text/html",
    "status.js": "text/javascript",
    "status.css": "text/css",
}
# Only this origin's scripts, styles and API: a hostile value in the API's JSON cannot
# load or run anything even if it reached the DOM as markup (it does not: textContent).
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The page is tiny and changes with releases: always revalidate.
    "Cache-Control": "no-cache",
}


def _load() -> dict[str, bytes]:
    static = resources.files("drwatch.web") / "static"
    return {name: (static / name).read_bytes() for name in _FILES}


class StatusPage:
    """Serves `/` and `/static/{status.js,status.css}`; files are read once, at build."""

    def __init__(self) -> None:
        self._files = _load()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)

    async def _index(self, _request: web.Request) -> web.Response:
        return self._response("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "index.html" or name not in self._files:
            raise web.HTTPNotFound()
        return self._response(name)

    def _response(self, name: str) -> web.Response:
        return web.Response(
            body=self._files[name],
            content_type=_FILES[name],
            charset="utf-8",
            headers=_HEADERS,
        )


def add_routes(app: web.Application) -> None:
    """Serve the status page at `/` on `app`."""
    StatusPage().add_routes(app)
