"""Production serving: gunicorn with one worker process that owns the models, and threads for the
many clients that wait on jobs or follow event streams.

One process, because each holds its own copy of the models (gigabytes of device memory) and the
engine's queue; the app (and so CUDA) is created in the worker, after the fork.
"""

from __future__ import annotations

from typing import Any

from ..config import ServiceConfig


def serve(config: ServiceConfig) -> None:
    from gunicorn.app.base import BaseApplication

    class GlideApplication(BaseApplication):
        def load_config(self) -> None:
            settings = {
                "bind": f"{config.host}:{config.port}",
                "workers": 1,
                "worker_class": "gthread",
                "threads": config.threads,
                # Requests may wait for a job or stream events for minutes: the gthread worker's own
                # heartbeat keeps it alive meanwhile, so the timeout only catches a hung process.
                "timeout": 120,
                "graceful_timeout": 30,
                "keepalive": 5,
                "accesslog": "-",
                "errorlog": "-",
                "loglevel": config.log_level,
                "proc_name": "glide-api",
            }
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from .app import create_app

            return create_app(config)

    GlideApplication().run()
