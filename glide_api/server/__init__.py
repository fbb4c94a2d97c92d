"""The HTTP service: `create_app(config)` (also found by `flask --app glide_api.server run`)."""

from .app import create_app

__all__ = ["create_app"]
