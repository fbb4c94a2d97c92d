"""The web UI: one page at `/` plus its script and style sheet.

The page holds no server-side state and renders nothing per user: everything it shows comes from
the public APIs (`/v1/settings`, `/v1/models`, `/v1/generations`, `/v1/inpaint`, `/v1/jobs/...`,
`/readyz`, and the original `/basemodel` and `/upmodel`), called by `static/app.js` with the user's
API key when the server asks for one. All assets are local: no CDN, no web fonts.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template

from .. import __version__


class _UiBlueprint(Blueprint):
    def get_send_file_max_age(self, filename: str | None) -> int:
        # Revalidate every time (a cheap 304): the modules import each other by plain name, so a
        # cached old module could meet a new one after an upgrade.
        return 0


bp = _UiBlueprint(
    "ui", __name__, template_folder="templates", static_folder="static", static_url_path="/static"
)

# Scripts and styles only from this origin (no inline code); images also as data: (previews) and
# blob: URLs (results fetched with the API key, the uploaded picture and its mask).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@bp.get("/")
def index() -> Response:
    """The single page (generate, inpaint, gallery, models and settings)."""
    response = Response(render_template("ui/index.html", version=__version__))
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
