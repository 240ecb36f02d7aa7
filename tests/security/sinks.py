"""Reading every place a secret could end up, as a user or an operator would see it.

Each reader returns ``[(sink name, content)]``: the name says exactly where (a file's path
under ``SOPHIA_HOME``, a stream's subject and sequence, a process's ``/metrics``), so a leak
check can say which sink held which canary.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import nats
from nats.js.errors import NotFoundError

#: under SOPHIA_HOME, the user's own code by design: git worktrees of the repository a task
#: works on (their files are the repository's files) and their scratch copies
USER_CODE = ("worktrees", "scratch")


def home_files(home: Path) -> list[tuple[str, bytes]]:
    """Every regular file under ``home`` except the user's code (:data:`USER_CODE`), with
    its NUL bytes removed: the tiers pre-allocate pages of zeros (hundreds of MB), and a
    value split only by NULs is still found."""
    found = []
    for path in sorted(home.rglob("*")):
        relative = path.relative_to(home)
        if relative.parts[0] in USER_CODE or not path.is_file() or path.is_symlink():
            continue
        found.append((str(relative), path.read_bytes().translate(None, b"\0")))
    return found


async def stream_messages(nats_url: str) -> list[tuple[str, bytes]]:
    """Every message still in every JetStream stream (events, KV buckets, work, DLQ): its
    subject, headers and payload, named ``STREAM #seq subject``."""
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=2)
    found: list[tuple[str, bytes]] = []
    try:
        js = nc.jetstream(timeout=5)
        for info in await js.streams_info():
            name, state = info.config.name, info.state
            for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
                try:
                    msg = await js.get_msg(name, seq)
                except NotFoundError:
                    continue  # deleted or acknowledged work
                headers = json.dumps(msg.headers or {}).encode()
                found.append((f"{name} #{seq} {msg.subject}", headers + b"\n" + (msg.data or b"")))
    finally:
        await nc.close()
    return found


def metrics_pages(home: Path) -> list[tuple[str, str]]:
    """``/metrics`` of every process registered under ``home/metrics`` (Prometheus text)."""
    pages = []
    for entry in sorted((home / "metrics").glob("*.json")):
        for group in json.loads(entry.read_text()):
            process = group.get("labels", {}).get("process", entry.stem)
            for target in group["targets"]:
                reply = httpx.get(f"http://{target}/metrics", timeout=10)
                reply.raise_for_status()
                pages.append((f"{process} ({entry.stem}) /metrics", reply.text))
    return pages


def s3_objects(env: dict[str, str]) -> list[tuple[str, bytes]]:
    """Every object in the archive tier's S3 bucket (``SOPHIA_S3_*`` of ``env``)."""
    import boto3  # moto's dependency; only the full run has an S3 tier

    client = boto3.client(
        "s3",
        endpoint_url=env["SOPHIA_S3_ENDPOINT_URL"],
        region_name=env["SOPHIA_S3_REGION"],
        aws_access_key_id=env["SOPHIA_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=env["SOPHIA_S3_SECRET_ACCESS_KEY"],
    )
    bucket = env["SOPHIA_S3_BUCKET"]
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for entry in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
            found.append((f"s3://{bucket}/{entry['Key']}", body))
    return found
