"""The distributed topology on one machine, for tests/test_topology.py and benchmarks/topology.py:
a tansu broker, a ClickHouse HTTP endpoint over chDB, `crucible migrate --clickhouse`, API
processes (`serve --no-writer`) and writers, as deploy/compose.yaml runs them, with checkpoint
files in one S3-compatible store (moto)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import clickhouse_connect

from tests.kafka_support import EVENTS_URL, kafka_args
from tests.support import ClickHouseEndpoint, ServerProcess, TansuBroker, create_admin_key, free_port

PARTITIONS = 4
AGGREGATE_URL = "/api/v1/telemetry/aggregate"
# Event ids of KeyedIngest's batches start with "evt_" and this.
KEYED_PREFIX = "batch-"
SESSION_SECRET = "topology-test-session-secret-of-32-bytes"


@dataclass
class Topology:
    broker: str
    clickhouse: ClickHouseEndpoint
    root: Path
    artifact_store: str
    env: dict[str, str]
    admin: str = ""
    apis: list[ServerProcess] = field(default_factory=list)
    writers: list[ServerProcess] = field(default_factory=list)

    def api_args(self, name: str) -> list[str]:
        return kafka_args(
            "serve",
            self.broker,
            self.root / name,
            PARTITIONS,
            "--no-writer",
            "--clickhouse",
            self.clickhouse.url,
            "--session-secret",
            SESSION_SECRET,
            "--artifact-store",
            self.artifact_store,
        )

    def writer_args(self, name: str) -> list[str]:
        return kafka_args("writer", self.broker, self.root / name, PARTITIONS, "--clickhouse", self.clickhouse.url)

    def start(self, name: str, args: list[str], wait_ready: bool = True) -> ServerProcess:
        server = ServerProcess(args, free_port(), env=self.env, log=self.root / f"{name}.log")
        return server.start(wait_ready=wait_ready, timeout=120)

    def stored(self, id_prefix: str = "") -> tuple[int, int]:
        """(rows, distinct event ids) in the warehouse, of the events whose ids start with
        `id_prefix`, read through the endpoint."""
        client = clickhouse_connect.get_client(host="127.0.0.1", port=self.clickhouse.port)
        try:
            rows, ids = client.query(
                "SELECT count(), uniqExact(id) FROM telemetry_events WHERE startsWith(id, {prefix:String})",
                parameters={"prefix": id_prefix},
            ).result_rows[0]
        finally:
            client.close()
        return int(rows), int(ids)

    def stop(self) -> None:
        for server in [*self.apis, *self.writers]:
            server.kill()
        self.clickhouse.kill()


@contextlib.contextmanager
def s3_store() -> Iterator[tuple[str, dict[str, str]]]:
    """A moto S3 server with a bucket; the artifact store URL and the credentials' variables."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    endpoint = f"http://127.0.0.1:{port}"
    import boto3  # moto's own dependency

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket="checkpoints")  # fmt: skip
    try:
        yield f"s3://checkpoints/runs?endpoint={endpoint}&region=us-east-1", env
    finally:
        server.stop()


def durable_broker(s3: tuple[str, dict[str, str]]) -> TansuBroker:
    """tansu keeping its topics, groups and commits in a bucket of the S3 store: a broker
    killed and started again has lost nothing, as a Kafka broker with its disks."""
    import boto3

    endpoint = s3[0].split("endpoint=")[1].split("&")[0]
    bucket = f"tansu-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=bucket)  # fmt: skip
    env = {**s3[1], "AWS_ENDPOINT": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1"}
    return TansuBroker(storage=f"s3://{bucket}/", env=env)


def build(root: Path, broker: str, s3: tuple[str, dict[str, str]], apis: int = 2, writers: int = 2) -> Topology:
    clickhouse = ClickHouseEndpoint(root / "clickhouse").start()
    topology = Topology(broker, clickhouse, root, s3[0], {**os.environ, **s3[1]})
    migrate = [sys.executable, "-m", "service", "migrate", "--clickhouse", clickhouse.url, "--data-dir", str(root)]
    # The migration (on the warehouse) and the admin key (on the log) at the same time.
    migrating = subprocess.Popen(migrate, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    topology.admin = create_admin_key(
        ["--kafka", broker, "--kafka-partitions", str(PARTITIONS), "--no-kafka-idempotence"]
    )
    output, _ = migrating.communicate(timeout=120)
    if migrating.returncode != 0:
        raise subprocess.CalledProcessError(migrating.returncode, migrate, output)
    # Every API process and writer starts at once, as compose starts the replicas: their
    # imports overlap, and the writers join the group in one round instead of one after
    # the other (a join takes ~5 s on tansu). Then each must become ready.
    names = [f"api-{n}" for n in range(1, apis + 1)]
    topology.apis = [topology.start(name, topology.api_args(name), wait_ready=False) for name in names]
    names = [f"writer-{n}" for n in range(1, writers + 1)]
    topology.writers = [topology.start(name, topology.writer_args(name), wait_ready=False) for name in names]
    for server in [*topology.apis, *topology.writers]:
        server.wait_ready(timeout=120)
    return topology


def events(experiment_id: str, count: int, run: str = "") -> dict[str, Any]:
    tag = run or uuid.uuid4().hex[:8]
    return {
        "events": [
            {
                "id": f"evt_{tag}_{experiment_id}_{i}",
                "event_name": ["crucible", "model", "inference"],
                "measurements": {"latency_ms": float(i % 50)},
                "metadata": {"experiment_id": experiment_id, "model": ["a", "b"][i % 2]},
            }
            for i in range(count)
        ]
    }


async def post(session: Any, api: ServerProcess, body: dict[str, Any], key: str | None = None) -> int:
    headers = {"Idempotency-Key": key} if key else {}
    async with session.post(api.url + EVENTS_URL, json=body, headers=headers) as answer:
        return answer.status


class KeyedIngest:
    """Posts keyed batches of unique events to the API processes in turn, as a worker
    client does: a batch refused (503) or unanswered is retried with its key on the next
    process until one acknowledges it. Counts what was acknowledged, by event id."""

    def __init__(self, session: Any, topology: Topology) -> None:
        self.session = session
        self.topology = topology
        self.acknowledged: set[str] = set()
        self.refusals = 0
        self._stop = asyncio.Event()
        self._sent = 0

    async def run(self) -> None:
        while not self._stop.is_set():
            key = f"{KEYED_PREFIX}{self._sent}"
            body = events(f"exp_fault_{self._sent % 5}", 50, run=key)
            for attempt in range(1000):
                api = self.topology.apis[(self._sent + attempt) % len(self.topology.apis)]
                try:
                    status = await asyncio.wait_for(post(self.session, api, body, key=key), 30)
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                if status == 202:
                    self.acknowledged.update(e["id"] for e in body["events"])
                    break
                self.refusals += 1
                await asyncio.sleep(0.1)
            self._sent += 1
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
