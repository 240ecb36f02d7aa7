"""The LiteLLM proxy as a baseline gateway: one process on 127.0.0.1 in front of an upstream.

``litellm_proxy(upstream_base_url, model)`` starts ``litellm --config ...`` (the ``litellm``
next to this interpreter, else the one on PATH) on a free port with one uvicorn worker, waits
(bounded, :data:`START_TIMEOUT_S`) until ``GET /health/liveliness`` answers, yields its base
URL ``http://127.0.0.1:<port>/v1``, and stops it on exit (SIGTERM to its process group, a
bounded wait, then SIGKILL). What it guarantees:

- ``model`` is served as ``openai/<model>`` with ``api_base`` = ``upstream_base_url`` (an
  OpenAI-compatible upstream; LiteLLM sends it the key ``sk-upstream``), with no retries, no
  fallbacks and no cooldowns, so each proxied call is exactly one upstream call and a fault
  never takes the model out of rotation;
- no database; the master key is ``master_key`` (:data:`MASTER_KEY`, ``sk-bench``, unless
  given): clients send ``Authorization: Bearer sk-bench`` (LiteLLM refuses to start without
  a master key, and no virtual keys exist without a database);
- nothing is fetched from the network: the model cost map, Anthropic beta headers, blog
  posts, policy templates and auto-router presets come from the package
  (``LITELLM_LOCAL_*``), telemetry is off, ``LITELLM_MODE=PRODUCTION`` keeps it from reading a
  ``.env``, and it runs in a temporary directory;
- its logs (errors only) go to a file in that directory, whose tail is in the error raised
  when it fails to start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from ops.natsserver import free_port

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
UPSTREAM_KEY = "sk-upstream"
MASTER_KEY = "sk-bench"

OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_TELEMETRY_DISABLED": "True",
    "LITELLM_MODE": "PRODUCTION",
    "LITELLM_LOG": "ERROR",
    "DISABLE_ADMIN_UI": "True",
    "HF_HUB_OFFLINE": "1",
    "NO_COLOR": "1",
}
# Settings of the caller's environment that would point the proxy elsewhere.
_DROPPED_ENV = ("DATABASE_URL", "LITELLM_MASTER_KEY", "LITELLM_CONFIG", "CONFIG_FILE_PATH")


def _litellm_bin() -> str:
    beside = Path(sys.executable).with_name("litellm")
    if beside.is_file():
        return str(beside)
    found = shutil.which("litellm")
    if found is None:
        raise RuntimeError("the litellm CLI is not installed: pip install 'litellm[proxy]'")
    return found


def proxy_config(
    upstream_base_url: str, model: str, master_key: str = MASTER_KEY
) -> dict[str, object]:
    """The proxy's config: ``model`` as an OpenAI-compatible model at the upstream."""
    return {
        "model_list": [
            {
                "model_name": model,
                "litellm_params": {
                    "model": f"openai/{model}",
                    "api_base": upstream_base_url,
                    "api_key": UPSTREAM_KEY,
                },
            }
        ],
        "litellm_settings": {"num_retries": 0, "request_timeout": 600},
        # one deployment that a fault must not take out of rotation
        "router_settings": {"num_retries": 0, "disable_cooldowns": True},
        "general_settings": {
            "master_key": master_key,
            "disable_spend_logs": True,
            "disable_error_logs": True,
        },
    }


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the proxy's process group, a bounded wait, then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"litellm exited with {proc.returncode}:\n{_tail(log)}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"litellm did not answer within {START_TIMEOUT_S} s:\n{_tail(log)}")


@contextmanager
def litellm_proxy(
    upstream_base_url: str, model: str, *, master_key: str = MASTER_KEY
) -> Iterator[str]:
    """The LiteLLM proxy's base URL (``http://127.0.0.1:<port>/v1``) for the block; clients
    authenticate with ``Authorization: Bearer <master_key>``."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="litellm-proxy-") as tmp:
        workdir = Path(tmp)
        config = workdir / "config.yaml"  # JSON is YAML
        config.write_text(json.dumps(proxy_config(upstream_base_url, model, master_key)))
        log = workdir / "litellm.log"
        env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
        env.update(OFFLINE_ENV)
        command = [
            _litellm_bin(),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=workdir,
                start_new_session=True,  # its own process group, stopped as a whole
            )
        try:
            _wait_ready(f"http://127.0.0.1:{port}/health/liveliness", proc, log)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            _stop(proc)
