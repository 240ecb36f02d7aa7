"""Finished spans as OTLP-JSON lines under ``<home>/traces``, the record ``sophia trace`` reads.

Each process appends to a file of its own, ``<service>-<pid>.jsonl``: one line per exported
batch, an OTLP/JSON ``ExportTraceServiceRequest`` (hex ids, enums as numbers: the encoding of
the OpenTelemetry specification's file exporter, which the collector's ``otlpjsonfile``
receiver reads too). Guarantees: each line goes out in one ``write`` on a file opened for
appending, so readers see whole lines (a last line still being written is skipped by
:func:`read_lines`); a file past its share (an eighth of the cap) becomes ``….jsonl.1``,
replacing the earlier one; at start and after each rotation the oldest files of the directory
are removed until it holds at most the cap. The file is opened for every batch, so one removed
by another process's pruning simply starts again. Export never raises into the SDK: a failed
write answers FAILURE and is logged once per process.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger("sophia.bus")

SUFFIX = ".jsonl"
#: how much of the directory's cap one process's current file may take before it rotates
FILE_SHARE = 8
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def traces_dir(home: Path) -> Path:
    """Where the spans of the stack at ``home`` are recorded."""
    return home / "traces"


def encode_batch(spans: Sequence[ReadableSpan]) -> bytes:
    """``spans`` as one OTLP/JSON line (ending in a newline)."""
    request = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for resource in request.get("resourceSpans", ()):
        for scope in resource.get("scopeSpans", ()):
            for span in scope.get("spans", ()):
                _hex_ids(span)
                for link in span.get("links", ()):
                    _hex_ids(link)
    return json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _hex_ids(item: dict[str, Any]) -> None:
    """OTLP/JSON writes ids in hex, where protobuf's JSON mapping writes bytes in base64."""
    for name in _ID_FIELDS:
        value = item.get(name)
        if value:
            item[name] = base64.b64decode(value).hex()


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
