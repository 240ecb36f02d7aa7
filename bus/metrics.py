"""OpenTelemetry metrics of every Sophia process: the instrument names, the provider, the scrape.

Requests are one histogram, ``sophia.request.duration`` labelled with the outcome: its
``_count`` is the request rate and, where ``code`` is not ``ok``, the error rate, as the
semantic conventions do it for ``rpc.server.call.duration``; one measurement per request,
since the SDK spends some microseconds on each (a separate counter would double that).

Names. Every instrument is declared once in :data:`INSTRUMENTS` (OTel name, kind, unit, labels);
the dashboard (``ops/grafana/dashboards/sophia.json``) queries the Prometheus names they become
after the standard OTel→Prometheus translation (dots to ``_``, the unit as a suffix, ``_total``
on counters, ``_bucket|_sum|_count`` on histograms), and :func:`prometheus_series` computes
exactly those, so a test fails on any dashboard query naming a series the code does not emit.
The names live under ``sophia.`` rather than the semantic conventions' ``rpc.server.*`` and
``gen_ai.client.*`` because one process can host several services (the ``service`` label says
which) and the dashboard then needs one prefix; each spec's description names the convention it
follows where one exists. Labels are bounded by construction: service and endpoint names come
from the code, ``code`` is ``ok`` or one of the error codes of :mod:`bus.errors`, ``model`` is a
configured model name, task ``state`` a literal of the schema. Never an id, user text or secret.

Exposition. On by default: a counter add or a histogram record costs a few microseconds next
to a NATS round trip of a hundred, and an idle scrape server is one thread, so metrics are
there when someone first looks. ``SOPHIA_METRICS_BIND`` (``host:port``; port 0 picks a free
one, the default ``127.0.0.1:0``; ``off`` serves nothing) binds one Prometheus endpoint per
*process* (``/metrics``). So that Prometheus finds the many processes ``sophia up`` starts on one
machine, each process writes its address to ``$SOPHIA_HOME/metrics/<pid>.json`` in
Prometheus' ``file_sd_configs`` format (written atomically, removed at exit; files whose process
is gone are pruned at the next start). In compose or Kubernetes a fixed port per container
(``SOPHIA_METRICS_BIND=0.0.0.0:9464``) and the static targets of ``ops/prometheus/prometheus.yml``
do the same. When ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, metrics are also pushed over OTLP/HTTP
every :data:`OTLP_INTERVAL_S` (to the collector of ``ops/otel/collector.yaml``, which hands them
to Prometheus), unless the standard ``OTEL_METRICS_EXPORTER`` leaves ``otlp`` out. Use one
path per process, not both, or every series is counted twice: where traces go over OTLP and
Prometheus scrapes the process, set ``OTEL_METRICS_EXPORTER=none``.

Gauges that need the server (consumer lag, DLQ depth) are read by :mod:`bus.backlog` on a
bounded interval and cached; a scrape only reads the cache.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from bus.config import Settings
from bus.errors import ConfigError
from bus.processes import pid_alive

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader

log = logging.getLogger("sophia.bus")

Kind = Literal["counter", "histogram", "gauge"]

#: seconds between OTLP pushes, when OTLP is configured
OTLP_INTERVAL_S = 10.0
#: histogram bucket bounds in seconds: a cache hit (1 ms) to a long model call (2 min)
SECONDS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)


@dataclass(frozen=True, slots=True)
class Spec:
    """One instrument: its OTel name, kind, unit (UCUM) and the labels it may carry."""

    name: str
    kind: Kind
    unit: str
    labels: tuple[str, ...]
    description: str


REQUEST_DURATION = "sophia.request.duration"
WORK_ITEMS = "sophia.work.items"
WORK_IN_FLIGHT = "sophia.work.in_flight"
CONSUMER_LAG = "sophia.consumer.lag"
CONSUMER_ACK_PENDING = "sophia.consumer.ack_pending"
DLQ_DEPTH = "sophia.dlq.depth"
MEMORY_SEARCH_DURATION = "sophia.memory.search.duration"
MEMORY_CACHE_LOOKUPS = "sophia.memory.cache.lookups"
LLM_CALLS = "sophia.llm.calls"
LLM_TOKENS = "sophia.llm.tokens"
LLM_COST = "sophia.llm.cost_usd"
LLM_DURATION = "sophia.llm.call.duration"
TASK_TRANSITIONS = "sophia.task.transitions"

INSTRUMENTS: tuple[Spec, ...] = (
    Spec(REQUEST_DURATION, "histogram", "s", ("service", "endpoint", "code"),
         "Time to handle a request, by outcome (as rpc.server.call.duration)"),
    Spec(WORK_ITEMS, "counter", "{item}", ("service", "outcome"),
         "Durable work items finished: acked, retried or dead_lettered"),
    Spec(WORK_IN_FLIGHT, "gauge", "{item}", ("service",),
         "Work items being handled by this process now"),
    Spec(CONSUMER_LAG, "gauge", "{message}", ("service",),
         "Work items waiting on the server for the service's consumer (num_pending)"),
    Spec(CONSUMER_ACK_PENDING, "gauge", "{message}", ("service",),
         "Work items delivered and not yet acked (num_ack_pending)"),
    Spec(DLQ_DEPTH, "gauge", "{message}", ("service",),
         "Dead letters kept for the service"),
    Spec(MEMORY_SEARCH_DURATION, "histogram", "s", (),
         "Time of one hybrid memory search"),
    Spec(MEMORY_CACHE_LOOKUPS, "counter", "{lookup}", ("result",),
         "Model-call cache lookups: hit or miss"),
    Spec(LLM_CALLS, "counter", "{call}", ("model", "outcome", "cached"),
         "Model calls through the gateway"),
    Spec(LLM_TOKENS, "counter", "{token}", ("model", "type"),
         "Tokens, type input or output (as gen_ai.client.token.usage)"),
    Spec(LLM_COST, "counter", "", ("model",),
         "US dollars spent on model calls"),
    Spec(LLM_DURATION, "histogram", "s", ("model", "outcome"),
         "Time of one gateway call (as gen_ai.client.operation.duration)"),
    Spec(TASK_TRANSITIONS, "counter", "{transition}", ("state",),
         "Task state changes, by the state entered"),
)  # fmt: skip

SPECS: dict[str, Spec] = {spec.name: spec for spec in INSTRUMENTS}

_UNIT_SUFFIX = {"s": "seconds", "By": "bytes", "": ""}


def prometheus_name(spec: Spec) -> str:
    """The metric family name Prometheus sees for ``spec`` (before ``_total``/``_bucket``)."""
    base = spec.name.replace(".", "_")
    unit = "" if spec.unit.startswith("{") else _UNIT_SUFFIX.get(spec.unit, spec.unit)
    return f"{base}_{unit}" if unit and not base.endswith(f"_{unit}") else base


def prometheus_series(spec: Spec) -> tuple[str, ...]:
    """Every series name ``spec`` is scraped as."""
    name = prometheus_name(spec)
    if spec.kind == "counter":
        return (f"{name}_total",)
    if spec.kind == "histogram":
        return (f"{name}_bucket", f"{name}_sum", f"{name}_count")
    return (name,)


def emitted_series() -> frozenset[str]:
    """Every Prometheus series name the code emits (what a dashboard may query)."""
    return frozenset(s for spec in INSTRUMENTS for s in prometheus_series(spec))


# ---- instruments: API proxies until configure() installs the SDK (no-ops when it never does)

_meter = metrics.get_meter("sophia")


def _counter(name: str) -> metrics.Counter:
    spec = SPECS[name]
    return _meter.create_counter(name, unit=spec.unit, description=spec.description)


def _histogram(name: str) -> metrics.Histogram:
    spec = SPECS[name]
    return _meter.create_histogram(
        name,
        unit=spec.unit,
        description=spec.description,
        explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
    )


request_duration = _histogram(REQUEST_DURATION)
work_items = _counter(WORK_ITEMS)
memory_search_duration = _histogram(MEMORY_SEARCH_DURATION)
memory_cache_lookups = _counter(MEMORY_CACHE_LOOKUPS)
llm_calls = _counter(LLM_CALLS)
llm_tokens = _counter(LLM_TOKENS)
llm_cost = _counter(LLM_COST)
llm_duration = _histogram(LLM_DURATION)
task_transitions = _counter(TASK_TRANSITIONS)

#: gauge name -> {service: read the current value}; filled by :mod:`bus.backlog`
_gauges: dict[str, dict[str, Callable[[], float | None]]] = {
    WORK_IN_FLIGHT: {},
    CONSUMER_LAG: {},
    CONSUMER_ACK_PENDING: {},
    DLQ_DEPTH: {},
}
_gauges_lock = threading.Lock()  # scrapes run in the exposition server's thread


def _observe(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        with _gauges_lock:
            readers = list(_gauges[name].items())
        found = []
        for service, read in readers:
            value = read()
            if value is not None:
                found.append(Observation(value, {"service": service}))
        return found

    return observe


for _name in _gauges:
    _meter.create_observable_gauge(
        _name,
        callbacks=[_observe(_name)],
        unit=SPECS[_name].unit,
        description=SPECS[_name].description,
    )


def watch(name: str, service: str, read: Callable[[], float | None]) -> None:
    """Report gauge ``name`` for ``service`` from ``read()`` at each collection (None: skip)."""
    with _gauges_lock:
        _gauges[name][service] = read


def unwatch(service: str) -> None:
    """Stop reporting every gauge of ``service``."""
    with _gauges_lock:
        for readers in _gauges.values():
            readers.pop(service, None)


# ---- set-up --------------------------------------------------------------------------------


@dataclass(slots=True)
class _State:
    address: tuple[str, int] | None = None
    registration: Path | None = None
    stop_server: Callable[[], None] | None = None


_state: _State | None = None
_configure_lock = threading.Lock()


def configure(settings: Settings, service: str) -> tuple[str, int] | None:
    """Install the SDK once per process: the scrape endpoint unless ``metrics_bind`` is
    ``off``, OTLP when :func:`otlp_wanted`. Returns the scrape address (None when off).

    Idempotent: later calls (more agents in the same process) return the first answer.
    Raises ConfigError when the address cannot be bound.
    """
    global _state
    with _configure_lock:
        if _state is not None:
            return _state.address
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource

        state = _State()
        readers: list[MetricReader] = []
        if settings.metrics_bind != "off":
            try:
                reader, state.address, state.stop_server = _serve(settings.metrics_bind)
            except OSError as exc:
                raise ConfigError(
                    f"SOPHIA_METRICS_BIND: cannot serve on {settings.metrics_bind} ({exc.strerror})"
                ) from None
            readers.append(reader)
            state.registration = _register(settings.home_path, state.address, service)
        if otlp_wanted():
            readers.append(_otlp_reader())
        if readers:
            resource = Resource.create({"service.name": f"sophia-{service}"})
            metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
        _state = state
        atexit.register(shutdown)
        return state.address


def address() -> tuple[str, int] | None:
    """Where this process serves ``/metrics`` (None before :func:`configure`, or when off)."""
    return _state.address if _state is not None else None


def shutdown() -> None:
    """Remove this process's registration and stop its scrape endpoint (also run at exit)."""
    if _state is None:
        return
    if _state.registration is not None:
        _state.registration.unlink(missing_ok=True)
        _state.registration = None
    if _state.stop_server is not None:
        _state.stop_server()
        _state.stop_server = None


def _serve(bind: str) -> tuple[MetricReader, tuple[str, int], Callable[[], None]]:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    reader = PrometheusMetricReader(scope_info_enabled=False, registry=registry)
    host, _, port = bind.rpartition(":")
    server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)

    return reader, (host.strip("[]"), int(server.server_port)), stop


def otlp_wanted(env: Mapping[str, str] | None = None) -> bool:
    """Whether metrics are pushed over OTLP: an OTLP endpoint is set and the standard
    ``OTEL_METRICS_EXPORTER`` (default ``otlp``) does not leave ``otlp`` out."""
    env = os.environ if env is None else env
    endpoint = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    exporters = {e.strip() for e in env.get("OTEL_METRICS_EXPORTER", "otlp").split(",")}
    return bool(endpoint) and "otlp" in exporters


def _otlp_reader() -> MetricReader:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    return PeriodicExportingMetricReader(
        OTLPMetricExporter(), export_interval_millis=OTLP_INTERVAL_S * 1000
    )


def registry_dir(home: Path) -> Path:
    """Where processes register their scrape addresses (Prometheus ``file_sd_configs``)."""
    return home / "metrics"


def _register(home: Path, bound: tuple[str, int], service: str) -> Path:
    """Write ``<pid>.json`` for file-based discovery; prune files of processes that are gone."""
    folder = registry_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.json"):
        if old.stem.isdigit() and not pid_alive(int(old.stem)):
            old.unlink(missing_ok=True)
    host, port = bound
    if host in ("", "0.0.0.0", "::"):  # bound everywhere: loopback reaches it on this machine
        host = "127.0.0.1"
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    entry = [{"targets": [target], "labels": {"process": service}}]
    path = folder / f"{os.getpid()}.json"
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(entry))
    partial.replace(path)  # Prometheus never reads half a file
    return path
