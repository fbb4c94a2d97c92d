"""`glide-api worker`: one process of a fleet that runs jobs (docs/scaling.md).

It loads the configured models (text-to-image, then inpainting if its files are there), joins the
fleet on `config.queue` and runs jobs until SIGTERM or SIGINT; then the running batch gets
`shutdown_grace` seconds, and every job it still holds goes back to the queue for another worker.
Webhooks of the jobs it finishes are sent from here (so set the same `webhook_secret` on every
process of the fleet).
"""

from __future__ import annotations

import logging
import signal
import threading

from ..config import ServiceConfig
from ..engine.fleet import Fleet
from ..errors import WeightsNotFound
from ..model_selection import TASK_LABELS, TASK_ROLES
from ..models.weights_source import WeightsSource
from ..pipeline.glide_pipeline import GlidePipeline
from .job_webhooks import JobWebhooks
from .service import engine_config

logger = logging.getLogger(__name__)


def load_pipeline(config: ServiceConfig) -> GlidePipeline:
    """Text-to-image's models, plus inpainting's where they are configured and their files found."""
    pipeline = GlidePipeline.from_selection(config, task="text2im")
    specs = config.specs(TASK_ROLES["inpaint"])
    if specs[TASK_ROLES["inpaint"][0]] is not None:
        try:
            source = WeightsSource.from_env(offline=config.offline, cache=config.cache_dir)
            pipeline.load_more(specs, source=source)
        except WeightsNotFound as e:
            logger.warning("%s not served by this worker: %s", TASK_LABELS["inpaint"], e)
    return pipeline


def run(config: ServiceConfig, *, stop: threading.Event | None = None) -> None:
    """Serve as a worker until `stop` is set or a signal arrives."""
    stop = stop or threading.Event()
    pipeline = load_pipeline(config)
    webhooks = JobWebhooks(config)
    fleet = Fleet.worker(
        config.queue or "",
        pipeline,
        engine_config(config),
        worker_id=config.worker_id,
        claim_timeout=config.claim_timeout,
        max_attempts=config.max_attempts,
        on_change=webhooks.changed,
    )
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda s, f: stop.set())
    # A status a killed process recorded but had not enqueued its webhook for is enqueued now
    # (the shared outbox refuses the ones enqueued already).
    for job in fleet.store.jobs():
        webhooks.changed(job)
    fleet.start()
    served = ", ".join(TASK_LABELS[t] for t in pipeline.capabilities())
    logger.info("worker %s: serving %s for %s", fleet.presence.worker_id, served, fleet.store.link.where)
    stop.wait()
    logger.info(
        "worker %s: stopping; the running batch has %g s", fleet.presence.worker_id, config.shutdown_grace
    )
    fleet.close(grace=config.shutdown_grace)
    webhooks.close()
    logger.info("worker %s: stopped", fleet.presence.worker_id)
