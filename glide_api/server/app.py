"""The app factory: `create_app(config)` builds the APIFlask app, its service and its blueprints.

flask --app glide_api.server run           # development server, settings from the environment
glide-api serve                             # production: waitress (server/production.py)
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from apiflask import APIFlask
from flask import Response, abort, g, request, send_from_directory

from .. import __version__
from ..config import ServiceConfig
from ..pipeline.glide_pipeline import GlidePipeline
from . import auth, errors, health, idempotency, legacy, openai_images, openapi, ui, v1
from .service import Service

logger = logging.getLogger(__name__)

DOCS_ASSETS = (
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "swagger-ui.css",
    "favicon-32x32.png",
)


def create_app(
    config: ServiceConfig | None = None, *, pipeline: GlidePipeline | None = None, load_models: bool = True
) -> APIFlask:
    """Build the app. Without `pipeline`, the configured models load in a background thread (the
    app answers at once; `/readyz` tells when it is ready). `config` defaults to the environment
    and `GLIDE_API_CONFIG` file."""
    config = config or ServiceConfig.load()
    # static_folder=None: the UI blueprint serves /static itself (with its own caching headers).
    app = APIFlask(
        "glide_api.server",
        title="glide-api",
        version=__version__,
        docs_path="/docs",
        spec_path="/openapi.json",
        docs_ui="swagger-ui",
        static_folder=None,
    )
    app.config.update(
        VALIDATION_ERROR_STATUS_CODE=400,
        DESCRIPTION="Self-hosted GLIDE text-to-image: the original Glide-Api routes, a jobs API with "
        "progress events, and the OpenAI Images API. Every error is "
        '`{"error": {"message", "type", "param", "code"}}` (`ErrorOut`); each operation lists the '
        "statuses it can answer and, for each, its `code`s. A method a path does not take is a 405 "
        "with `Allow`.",
        SWAGGER_UI_BUNDLE_JS="/docs/assets/swagger-ui-bundle.js",
        SWAGGER_UI_STANDALONE_PRESET_JS="/docs/assets/swagger-ui-standalone-preset.js",
        SWAGGER_UI_CSS="/docs/assets/swagger-ui.css",
        DOCS_FAVICON="/docs/assets/favicon-32x32.png",
        # Multipart bodies: an image and a mask at most max_upload_bytes each, plus form fields.
        MAX_CONTENT_LENGTH=2 * config.max_upload_bytes + (1 << 20),
    )
    app.json.sort_keys = False
    openapi.install(app, config)
    service = Service(config, pipeline=pipeline)
    app.extensions["glide_api"] = service
    errors.register(app)
    idempotency.install(app)
    _log_requests(app)
    auth.install(app, config)
    for blueprint in (legacy.bp, v1.bp, openai_images.bp, health.bp, ui.bp):
        app.register_blueprint(blueprint)
    app.get("/docs/assets/<path:name>")(app.doc(hide=True)(_docs_asset))
    if pipeline is None and load_models:
        service.start_loading()
    logger.info(
        "glide-api %s: %s",
        __version__,
        {
            k: v
            for k, v in config.public_dict().items()
            if k in ("host", "port", "device", "precision", "base", "upsample", "api_keys", "admin_keys")
        },
    )
    return app


def _log_requests(app: APIFlask) -> None:
    """One access-log line per request: method, path, status, milliseconds, client (never a key)."""
    access = logging.getLogger("glide_api.access")

    @app.before_request
    def start_clock() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def log_request(response: Response) -> Response:
        started = g.get("request_started")
        ms = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        client = g.get("client") or request.remote_addr or "-"
        access.info("%s %s %d %.1f ms %s", request.method, request.path, response.status_code, ms, client)
        return response


def _docs_asset(name: str) -> Response:
    """Swagger UI's files, from the installed flask-swagger-ui package (no CDN: users may be offline)."""
    if name not in DOCS_ASSETS:
        abort(404)
    import flask_swagger_ui

    return send_from_directory(Path(flask_swagger_ui.__file__).parent / "dist", name, max_age=86400)
