"""Cluster benchmark: what a 3-node NATS cluster with R3 streams costs durable work, in one run.

Prints one JSON object. The baseline is one nats-server with an R1 stream; against it, the
3-node cluster of ``ops/nats/`` (started from those files on loopback ports, as the tests
start it, logged in as ``admin``) with an R3 stream, the replication ``SOPHIA_WORK`` gets with
``SOPHIA_STREAM_REPLICAS=3``. Both measured with the same nats-py client: acknowledged
publishes one at a time (latency: the stream leader waits for a quorum of copies) and 64 in
flight (throughput), then a pull consumer draining what was published (fetch 64, ack each).
Rounds alternate which setup goes first; each ratio is the median of the rounds' own ratios.
On one 2-core machine the three nodes share the cores, so the figures are an upper bound on
replication's cost, not a production figure.

    python bench/cluster.py [--messages 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import RetentionPolicy, StreamConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ops.natsserver import NatsServer
from tests.fixtures.nats_cluster import NatsCluster

PAYLOAD = b'{"id": 1, "text": "work item payload"}'
IN_FLIGHT = 64


async def one_round(
    url: str, user: dict[str, str], replicas: int, name: str, n: int
) -> dict[str, float]:
    nc = await nats.connect(url, **user)
    js = nc.jetstream()
    subject = f"{name}.items"
    await js.add_stream(
        StreamConfig(
            name=name,
            subjects=[subject],
            retention=RetentionPolicy.WORK_QUEUE,
            num_replicas=replicas,
        )
    )
    samples = []
    for _ in range(n // 4):
        started = time.perf_counter()
        await js.publish(subject, PAYLOAD)
        samples.append(time.perf_counter() - started)
    started = time.perf_counter()
    pending = [js.publish(subject, PAYLOAD) for _ in range(n)]
    for start in range(0, n, IN_FLIGHT):
        await asyncio.gather(*pending[start : start + IN_FLIGHT])
    publish_s = time.perf_counter() - started
    psub = await js.pull_subscribe(subject, durable="bench", stream=name)
    total, done = n + n // 4, 0
    started = time.perf_counter()
    while done < total:
        for msg in await psub.fetch(IN_FLIGHT, timeout=10):
            await msg.ack()
            done += 1
    consume_s = time.perf_counter() - started
    await js.delete_stream(name)
    await nc.drain()
    return {
        "publish_p50_us": statistics.median(samples) * 1e6,
        "publish_per_s": n / publish_s,
        "consume_per_s": total / consume_s,
    }


async def measure(
    single: str, cluster: str, admin: dict[str, str], args: argparse.Namespace
) -> dict[str, object]:
    rounds: dict[str, list[dict[str, float]]] = {"single": [], "cluster": []}
    for r in range(args.rounds):
        order = ["single", "cluster"] if r % 2 == 0 else ["cluster", "single"]
        for side in order:
            if side == "single":
                result = await one_round(single, {}, 1, f"BENCH_R1_{r}", args.messages)
            else:
                result = await one_round(cluster, admin, 3, f"BENCH_R3_{r}", args.messages)
            rounds[side].append(result)
    keys = ("publish_p50_us", "publish_per_s", "consume_per_s")
    report: dict[str, object] = {"rounds": args.rounds, "messages": args.messages}
    for key in keys:
        single_values = [x[key] for x in rounds["single"]]
        cluster_values = [x[key] for x in rounds["cluster"]]
        report[f"single_r1_{key}"] = round(statistics.median(single_values), 1)
        report[f"cluster_r3_{key}"] = round(statistics.median(cluster_values), 1)
        pairs = zip(cluster_values, single_values, strict=True)
        report[f"{key}_ratio_r3_over_r1"] = round(statistics.median(c / s for c, s in pairs), 3)
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sophia-bench-cluster-") as tmp:
        root = Path(tmp)
        server = NatsServer(store_dir=root / "single", log_file=root / "single.log")
        cluster = NatsCluster(root / "cluster")
        cluster.root.mkdir()
        server.start()
        try:
            cluster.start()
            admin = {"user": "admin", "password": cluster.passwords["admin"]}
            report = asyncio.run(measure(server.url, cluster.nodes[0].url, admin, args))
        finally:
            cluster.stop()
            server.stop()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
