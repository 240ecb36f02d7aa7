"""An OTLP/HTTP receiver on 127.0.0.1 that keeps what it is sent, as JSON text.

Agents export with ``OTEL_EXPORTER_OTLP_ENDPOINT=<url>``: protobuf ``POST``s to
``/v1/traces`` and ``/v1/metrics`` (gzip or not). Each body is decoded with the
``opentelemetry-proto`` message types and kept as its JSON form, where every span name,
attribute, event and status message is plain text to search. The server answers every
export 200 with an empty response of the same kind, runs in a daemon thread, and
:meth:`OtlpReceiver.stop` returns within a few seconds.
"""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

_KINDS: dict[str, tuple[Any, Any]] = {
    "/v1/traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "/v1/metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
}


class OtlpReceiver:
    """Collects every export; :attr:`exports` is ``[(path, JSON text)]`` in arrival order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._exports: list[tuple[str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                kinds = _KINDS.get(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if kinds is None:
                    self.send_error(404)
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = kinds[0]()
                request.ParseFromString(body)
                receiver._keep(self.path, json_format.MessageToJson(request))
                reply = kinds[1]().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # no access log

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _keep(self, path: str, text: str) -> None:
        with self._lock:
            self._exports.append((path, text))

    @property
    def exports(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._exports)

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
