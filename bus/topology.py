"""Streams, consumers and KV buckets, created or brought up to date idempotently.

``ensure_streams`` is what ``sophia up`` runs once; every agent also runs it at
start (cheap when all exists) so a bare nats-server is enough to serve.
"""

from __future__ import annotations

import logging

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from bus.config import Settings
from bus.errors import UnavailableError
from bus.subjects import Subjects

log = logging.getLogger("sophia.bus")

DUPLICATE_WINDOW_S = 120.0
EVENTS_MAX_AGE_S = 7 * 24 * 3600.0
DLQ_MAX_AGE_S = 30 * 24 * 3600.0
SESSION_MAX_AGE_S = 24 * 3600.0  # an MCP session record expires a day after it was opened;
# the client then gets 404 and initialises again, as the MCP specification has it
PULL_MAX_WAITING = 512


def stream_configs(subjects: Subjects, replicas: int = 1) -> list[StreamConfig]:
    """The three streams of one install: work (work-queue), events and dead letters, each
    kept on ``replicas`` servers (``SOPHIA_STREAM_REPLICAS``: 3 on a cluster)."""
    common = {
        "storage": StorageType.FILE,
        "duplicate_window": DUPLICATE_WINDOW_S,
        "num_replicas": replicas,
    }
    return [
        StreamConfig(
            name=subjects.work_stream,
            subjects=[subjects.work_all],
            retention=RetentionPolicy.WORK_QUEUE,
            description="Durable work items, one durable pull consumer per service",
            **common,
        ),
        StreamConfig(
            name=subjects.events_stream,
            subjects=[subjects.events_all],
            retention=RetentionPolicy.LIMITS,
            max_age=EVENTS_MAX_AGE_S,
            discard=DiscardPolicy.OLD,
            description="Task and audit events, replayable",
            **common,
        ),
        StreamConfig(
            name=subjects.dlq_stream,
            subjects=[subjects.dlq_all],
            retention=RetentionPolicy.LIMITS,
            max_age=DLQ_MAX_AGE_S,
            description="Work items that exhausted their deliveries or were refused",
            **common,
        ),
    ]


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.stream_info(config.name)
    except nats.js.errors.NotFoundError:
        await js.add_stream(config)
        log.info("stream_created", extra={"stream": config.name})
        return
    await js.update_stream(config)


def jetstream_missing(url: str) -> UnavailableError:
    """The error for a NATS server at ``url`` (shown as given: pass it redacted) whose
    JetStream does not answer: started without ``-js``, or still electing its leader."""
    return UnavailableError(f"JetStream does not answer at {url}; is it enabled (-js)?")


async def ensure_streams(js: JetStreamContext, settings: Settings) -> None:
    """Create or update the streams and KV buckets of ``settings.prefix``.

    Raises UnavailableError naming the server when its JetStream does not answer.
    """
    try:
        await _ensure_all(js, settings)
    except nats.js.errors.ServiceUnavailableError as exc:
        raise jetstream_missing(settings.safe_nats_url) from exc


async def _ensure_all(js: JetStreamContext, settings: Settings) -> None:
    subjects = Subjects(settings.prefix)
    for config in stream_configs(subjects, settings.stream_replicas):
        await _ensure_stream(js, config)
    for bucket, history, ttl in (
        (subjects.tasks_bucket, 5, None),
        (subjects.sessions_bucket, 1, SESSION_MAX_AGE_S),
        (subjects.config_bucket, 10, None),
        (subjects.budgets_bucket, 1, None),  # holds expire by their own field, not by TTL
    ):
        try:
            await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            await js.create_key_value(
                KeyValueConfig(
                    bucket=bucket,
                    history=history,
                    ttl=ttl,
                    storage=StorageType.FILE,
                    replicas=settings.stream_replicas,
                )
            )
            log.info("bucket_created", extra={"bucket": bucket})


def consumer_config(subjects: Subjects, service: str, settings: Settings) -> ConsumerConfig:
    """The durable pull consumer of ``service`` on the work stream.

    Its MaxDeliver is one above the runtime's limit: the runtime dead-letters on the
    last allowed delivery, and the spare delivery catches an item whose last attempt
    died with its process, so it is dead-lettered instead of stranded.
    """
    return ConsumerConfig(
        durable_name=subjects.consumer(service),
        description=f"Work items for the {service} service",
        filter_subject=subjects.work(service),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.work_ack_wait_s,
        max_deliver=settings.work_max_deliver + 1,
        max_ack_pending=20_000,
        max_waiting=PULL_MAX_WAITING,
    )


async def ensure_consumer(js: JetStreamContext, settings: Settings, service: str) -> None:
    subjects = Subjects(settings.prefix)
    config = consumer_config(subjects, service, settings)
    await js.add_consumer(subjects.work_stream, config)
