"""Finished spans as OTLP-JSON lines under ``<home>/traces``, the record ``sophia trace`` reads.

Each process appends to a file of its own, ``<service>-<pid>.jsonl``: one line per exported
batch, an OTLP/JSON ``ExportTraceServiceRequest`` (hex ids, enums as numbers: the encoding of
the OpenTelemetry specification's file exporter, which the collector's ``otlpjsonfile``
receiver reads too). The line is built here from the SDK's public span fields, since the OTLP
exporter's protobuf encoder followed by protobuf's JSON mapping costs about ten times as much
per span, and every message sent or handled is a span.

Guarantees: each line goes out in one ``write`` on a file opened for appending, so readers
see whole lines (a last line still being written is skipped by :func:`read_lines`); a file
past its share (an eighth of the cap) becomes ``….jsonl.1``, replacing the earlier one; at
start and after each rotation the oldest files of the directory are removed until it holds at
most the cap. The file is opened for every batch, so one removed by another process's pruning
simply starts again. Export never raises into the SDK: a failed write answers FAILURE and is
logged once per process.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanContext

log = logging.getLogger("sophia.bus")

SUFFIX = ".jsonl"
#: how much of the directory's cap one process's current file may take before it rotates
FILE_SHARE = 8
_json = msgspec.json.Encoder()
HAS_IS_REMOTE, IS_REMOTE = 0x100, 0x200  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK, …IS_REMOTE…


def traces_dir(home: Path) -> Path:
    """Where the spans of the stack at ``home`` are recorded."""
    return home / "traces"


def encode_batch(spans: Sequence[ReadableSpan]) -> bytes:
    """``spans`` as one OTLP/JSON ``ExportTraceServiceRequest`` line (ending in a newline)."""
    grouped: dict[int, tuple[Any, dict[int, tuple[Any, list[dict[str, Any]]]]]] = {}
    for span in spans:
        _, scopes = grouped.setdefault(id(span.resource), (span.resource, {}))
        scope = span.instrumentation_scope
        scopes.setdefault(id(scope), (scope, []))[1].append(_span(span))
    request = {
        "resourceSpans": [
            {
                "resource": {"attributes": _attributes(resource.attributes)},
                "scopeSpans": [
                    {"scope": _scope(scope), "spans": items} for scope, items in scopes.values()
                ],
            }
            for resource, scopes in grouped.values()
        ]
    }
    return _json.encode(request) + b"\n"


def _scope(scope: Any) -> dict[str, str]:
    if scope is None:
        return {}
    found = {"name": scope.name}
    if scope.version:
        found["version"] = scope.version
    return found


def _span(span: ReadableSpan) -> dict[str, Any]:
    context = span.context
    item: dict[str, Any] = {
        "traceId": _trace_id(context),
        "spanId": _span_id(context),
        "name": span.name,
        "kind": span.kind.value + 1,  # OTLP counts from SPAN_KIND_UNSPECIFIED = 0
        "startTimeUnixNano": str(span.start_time or 0),
        "endTimeUnixNano": str(span.end_time or 0),
        "attributes": _attributes(span.attributes),
        "status": _status(span),
        "flags": _flags(span.parent),
    }
    if span.parent is not None:
        item["parentSpanId"] = _span_id(span.parent)
    events, links = span.events, span.links  # each read builds a new tuple
    if events:
        item["events"] = [_event(e) for e in events]
    if links:
        item["links"] = [_link(link) for link in links]
    return item


def _trace_id(context: SpanContext | None) -> str:
    return format(context.trace_id, "032x") if context is not None else ""


def _span_id(context: SpanContext | None) -> str:
    return format(context.span_id, "016x") if context is not None else ""


def _flags(parent: SpanContext | None) -> int:
    """OTLP's span flags: whether the parent is known to be remote, and whether it is."""
    return HAS_IS_REMOTE | (IS_REMOTE if parent is not None and parent.is_remote else 0)


def _status(span: ReadableSpan) -> dict[str, Any]:
    status = span.status
    found: dict[str, Any] = {"code": status.status_code.value}  # UNSET 0, OK 1, ERROR 2
    if status.description:
        found["message"] = status.description
    return found


def _event(event: Event) -> dict[str, Any]:
    return {
        "timeUnixNano": str(event.timestamp),
        "name": event.name,
        "attributes": _attributes(event.attributes),
    }


def _link(link: Link) -> dict[str, Any]:
    return {
        "traceId": _trace_id(link.context),
        "spanId": _span_id(link.context),
        "attributes": _attributes(link.attributes),
        "flags": _flags(link.context),
    }


def _attributes(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [{"key": k, "value": _any_value(v)} for k, v in (attributes or {}).items()]


def _any_value(value: Any) -> dict[str, Any]:
    """An attribute value as OTLP/JSON's ``AnyValue`` (64-bit integers as text)."""
    kind = type(value)  # the usual two first: this runs for every attribute of every span
    if kind is str:
        return {"stringValue": value}
    if kind is int:
        return {"intValue": str(value)}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode()}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [_any_value(v) for v in value]}}
    return {"stringValue": str(value)}


class SpanFileExporter(SpanExporter):
    """Writes each batch it is given as one line of ``<directory>/<service>-<pid>.jsonl``."""

    def __init__(self, directory: Path, service: str, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.file_bytes = max(max_bytes // FILE_SHARE, 1)
        self.path = directory / f"{service}-{os.getpid()}{SUFFIX}"
        self._warned = False
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        prune(directory, max_bytes)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            line = encode_batch(spans)
            with self.path.open("ab") as out:
                out.write(line)
                written = out.tell()
            if written >= self.file_bytes:
                self._rotate()
        except (OSError, ValueError) as exc:
            if not self._warned:
                self._warned = True
                log.warning("span_file_failed", extra={"path": str(self.path), "error": str(exc)})
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _rotate(self) -> None:
        try:
            self.path.replace(self.path.with_name(self.path.name + ".1"))
        except FileNotFoundError:
            pass  # another process's pruning took it first
        prune(self.directory, self.max_bytes)

    def shutdown(self) -> None:
        """Nothing is held open between batches."""


def recorded_files(directory: Path) -> list[Path]:
    """The span files in ``directory`` (rotated ones included), oldest first."""
    try:
        found = [p for p in directory.iterdir() if _is_span_file(p.name)]
    except OSError:
        return []
    return sorted(found, key=_mtime)


def _is_span_file(name: str) -> bool:
    return name.endswith(SUFFIX) or name.endswith(SUFFIX + ".1")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def prune(directory: Path, max_bytes: int) -> None:
    """Remove the oldest span files until ``directory`` holds at most ``max_bytes`` of them."""
    files = recorded_files(directory)
    sizes = {p: _size(p) for p in files}
    total = sum(sizes.values())
    for path in files:
        if total <= max_bytes:
            return
        try:
            path.unlink()
        except OSError:
            continue
        total -= sizes[path]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_lines(directory: Path) -> Iterator[bytes]:
    """Every whole line of every span file in ``directory``, oldest file first."""
    for path in recorded_files(directory):
        try:
            data = path.read_bytes()
        except OSError:
            continue  # pruned or rotated while listed
        *whole, _partial = data.split(b"\n")  # what follows the last newline is unfinished
        yield from (line for line in whole if line)
