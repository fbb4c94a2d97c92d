"""Production serving: waitress, in the one process that owns the models.

The serving model, and why it keeps health checks answering under load:

- waitress's event loop reads each request whole before a thread takes it, so a slow or half-sent
  request costs a socket, not a thread; a connection idle or half-sent for `client_timeout`
  seconds is closed, and at most `max_connections` are open at once.
- Only two kinds of request hold a thread for long: event streams and synchronous waits. Each kind
  has its own threads (`max_open_streams`, `max_sync_waits`) and is refused with 503 +
  `Retry-After` beyond them (`capacity.py`), so the `threads` for short requests (health, status,
  submissions, images) are never all taken by waiting.
- One process, because each would hold its own copy of the models (gigabytes of device memory)
  and its own queue.

SIGTERM or SIGINT shuts down gracefully (`Service.shutdown`): readiness turns 503 and new jobs are
refused at once, the running batch gets `shutdown_grace` seconds, every job left ends with a final
event saying the server stopped, and then the listener closes.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from typing import Any

from ..config import ServiceConfig
from .errors import error_body

logger = logging.getLogger(__name__)


class Server:
    """The app on its listener: `run()` serves until `stop()` (or a signal) has shut it down."""

    def __init__(self, app: Any, config: ServiceConfig) -> None:
        import waitress

        self.app = app
        self.config = config
        self._server = waitress.create_server(
            app,
            host=config.host,
            port=config.port,
            threads=config.threads + config.max_open_streams + config.max_sync_waits,
            connection_limit=config.max_connections,
            channel_timeout=config.client_timeout,
            cleanup_interval=max(1, round(config.client_timeout / 4)),
            # poll(), not select(): select cannot watch more than 1024 sockets.
            asyncore_use_poll=True,
            # Keep reading while a request runs, so a client that hangs up is seen at once
            # (`waitress.client_disconnected`), not at the next write.
            channel_request_lookahead=1,
            max_request_body_size=app.config["MAX_CONTENT_LENGTH"],
            ident="glide-api",
        )
        self._server.channel_class = _json_errors_channel()
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    @property
    def url(self) -> str:
        return f"http://{self._server.effective_host}:{self.port}"

    def run(self) -> None:
        """Serve until `stop()` has finished; then every thread is given back."""
        logger.info("listening on %s", self.url)
        try:
            self._server.run()
        finally:
            self._server.task_dispatcher.shutdown(timeout=5)

    def stop(self, *, grace: float | None = None) -> None:
        """Shut down gracefully (see the module's docs), then close the listener; `grace` defaults
        to `shutdown_grace`. Idempotent: a second call returns at once."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        service = self.app.extensions["glide_api"]
        service.shutdown(grace=self.config.shutdown_grace if grace is None else grace)
        # In the loop's own thread: close the listener and every connection (kept-alive ones
        # too), which ends `run()`.
        from waitress import wasyncore

        def close_all() -> None:
            wasyncore.close_all(self._server._map, ignore_all=True)

        try:
            self._server.trigger.pull_trigger(close_all)
        except OSError:  # the loop has closed its wake-up pipe (it is ending): close from here
            close_all()

    def stop_on_signals(self) -> None:
        """SIGTERM and SIGINT call `stop()` on a thread of its own (a handler must return at once)."""

        def handle(signum: int, frame: Any) -> None:
            logger.info("%s received: shutting down", signal.Signals(signum).name)
            threading.Thread(target=self.stop, name="glide-shutdown", daemon=True).start()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, handle)


def _json_errors_channel() -> type:
    """waitress's connection, answering the errors it finds itself (a malformed request, headers
    past their limit) in the API's JSON error shape instead of plain text."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        def execute(self) -> None:
            error = self.request.error
            message = f"request: {error.reason.lower()} ({error.body})"
            body = json.dumps(error_body(error.code, message)).encode()
            self.status = f"{error.code} {error.reason}"
            self.response_headers.append(("Content-Type", "application/json"))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonErrorsChannel(HTTPChannel):
        error_task_class = JsonErrorTask

    return JsonErrorsChannel


def serve(config: ServiceConfig) -> None:
    """`glide-api serve`: build the app (the models load in the background) and serve it."""
    from .app import create_app

    server = Server(create_app(config), config)
    server.stop_on_signals()
    server.run()
