"""Exports: telemetry as CSV, JSON lines and Parquet (streamed or as a job), export jobs,
an experiment as a canonical JSON document or zip, their errors and rate-limit class."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import threading
import zipfile
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp.test_utils import TestClient

from service.exports.jobs import JOBS_DIRECTORY, SIDECAR_SUFFIX
from service.exports.query import STANDARD_FIELDS
from service.http.appkeys import EXPORT_JOBS
from tests.conftest import AppClientFactory
from tests.keys_support import auth, create_key
from tests.support import eventually

EVENTS = "/api/v1/telemetry/events"
EXPORT = "/api/v1/telemetry/export"
JOBS = "/api/v1/exports"
BASE_TIME = dt.datetime(2024, 1, 15, 10, 0, tzinfo=dt.UTC)
TRICKY_NOTE = 'said "hi",\nthen left'  # a quote, a comma and a line break inside a CSV cell


def iso(value: dt.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def sample_events(count: int, experiments: tuple[str, ...] = ("exp_a", "exp_b")) -> list[dict[str, Any]]:
    events = []
    for i in range(count):
        measurements = {"tokens": float(i * 3)}
        if i % 4:  # some events lack latency: an empty cell / null, never 0
            measurements["latency"] = 10.5 + i / 8
        metadata = {
            "experiment_id": experiments[i % len(experiments)],
            "model": "gpt-4" if i % 2 else "claude-3",
            "run_id": f"run_{i % 3}",
        }
        if i % 5 == 0:
            metadata["note"] = TRICKY_NOTE
        if i % 7 == 0:  # keys JSON must escape
            measurements['naïve "quoted" \\ key'] = -1e-7
            metadata['ключ "q"'] = "\\ \t"
        if i == 1:
            measurements.clear()
        event: dict[str, Any] = {
            "id": f"evt_export_{i:04d}",
            "event_name": ["crucible", "model", "inference"] if i % 3 else ["crucible", "run", "progress"],
            "measurements": measurements,
            "metadata": metadata,
            "timestamp": iso(BASE_TIME + dt.timedelta(seconds=37 * i, microseconds=i)),
        }
        if i % 6 == 0:
            event["data"] = {"step": i, "labels": ["a", "b"], "nested": {"ok": True}}
        events.append(event)
    return events


async def count_stored(client: TestClient, **filters: str) -> int:
    params = {"agg": "count", **{f"filter[{k}]": v for k, v in filters.items()}}
    answer = await client.get("/api/v1/telemetry/aggregate", params=params)
    assert answer.status == 200, await answer.text()
    return sum(int(point["count"]) for point in (await answer.json())["data"])


async def ingest(client: TestClient, events: list[dict[str, Any]]) -> None:
    """Send the events and wait until the warehouse holds them all."""
    before = await count_stored(client)
    answer = await client.post(EVENTS, json={"events": events})
    assert answer.status == 202, await answer.text()

    async def stored() -> bool:
        return await count_stored(client) == before + len(events)

    await eventually(stored)


@pytest.fixture
async def loaded(client: TestClient) -> tuple[TestClient, list[dict[str, Any]]]:
    events = sample_events(60)
    await ingest(client, events)
    return client, events


async def export(client: TestClient, body: dict[str, Any], status: int = 200, **kwargs: Any) -> Any:
    answer = await client.post(EXPORT, json=body, **kwargs)
    assert answer.status == status, await answer.text()
    return answer


def by_id(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["id"]: e for e in events}


def read_csv(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode(), newline="")))


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


# -- telemetry exports -------------------------------------------------------------------------


async def test_a_csv_export_reads_back_as_the_events_ingested(loaded: Any) -> None:
    client, events = loaded
    answer = await export(client, {"format": "csv"})
    assert answer.headers["Content-Type"].startswith("text/csv")
    disposition = answer.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="crucible-events-') and disposition.endswith('.csv"')
    assert "X-RateLimit-Limit" in answer.headers
    rows = read_csv(await answer.read())
    assert list(rows[0]) == list(STANDARD_FIELDS)  # id, event_name, timestamp, ... data
    sent = by_id(events)
    assert sorted(row["id"] for row in rows) == sorted(sent)
    for row in rows:
        event = sent[row["id"]]
        assert row["event_name"] == ".".join(event["event_name"])
        assert parse_time(row["timestamp"]) == parse_time(event["timestamp"])
        assert parse_time(row["received_at"]) >= parse_time(row["timestamp"])
        assert json.loads(row["measurements"]) == event["measurements"]
        assert json.loads(row["metadata"]) == event["metadata"]
        assert row["experiment_id"] == event["metadata"]["experiment_id"]
        assert row["run_id"] == event["metadata"]["run_id"]
        assert row["model"] == event["metadata"]["model"]
        assert (json.loads(row["data"]) if row["data"] else None) == event.get("data")


async def test_a_json_lines_export_reads_back_as_the_events_ingested(loaded: Any) -> None:
    client, events = loaded
    answer = await export(client, {"format": "jsonl"})
    assert answer.headers["Content-Type"] == "application/x-ndjson"
    assert answer.headers["Content-Disposition"].endswith('.jsonl"')
    lines = (await answer.read()).decode().splitlines()
    rows = [json.loads(line) for line in lines]
    sent = by_id(events)
    assert sorted(row["id"] for row in rows) == sorted(sent)
    for row in rows:
        event = sent[row["id"]]
        assert row["event_name"] == event["event_name"]
        assert parse_time(row["timestamp"]) == parse_time(event["timestamp"])
        assert row["measurements"] == event["measurements"]
        assert row["metadata"] == event["metadata"]
        assert (json.loads(row["data"]) if row["data"] else None) == event.get("data")


async def test_a_parquet_export_has_typed_columns(loaded: Any) -> None:
    client, events = loaded
    body = {"format": "parquet", "fields": ["id", "timestamp", "event_name", "measurements", "measurements.latency"]}
    answer = await export(client, body)
    assert answer.headers["Content-Type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(await answer.read()))
    schema = table.schema
    assert schema.names == ["id", "timestamp", "event_name", "measurements", "measurements.latency"]
    assert schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    measurements = schema.field("measurements").type
    assert pa.types.is_map(measurements)
    assert (measurements.key_type, measurements.item_type) == (pa.string(), pa.float64())
    assert schema.field("measurements.latency").type == pa.float64()
    sent = by_id(events)
    rows = table.to_pylist()
    assert sorted(row["id"] for row in rows) == sorted(sent)
    for row in rows:
        event = sent[row["id"]]
        assert row["timestamp"] == parse_time(event["timestamp"])
        assert dict(row["measurements"]) == event["measurements"]
        assert row["measurements.latency"] == event["measurements"].get("latency")
        assert row["event_name"] == ".".join(event["event_name"])


async def test_an_empty_parquet_export_still_has_its_schema(loaded: Any) -> None:
    client, _ = loaded
    answer = await export(client, {"format": "parquet", "filters": {"experiment_id": "exp_none"}})
    table = pq.read_table(io.BytesIO(await answer.read()))
    assert table.num_rows == 0
    assert table.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")


async def test_fields_pick_columns_and_map_entries(loaded: Any) -> None:
    client, events = loaded
    fields = ["timestamp", "id", "measurements.latency", "metadata.note", "metadata.model", "measurements.absent"]
    csv_rows = read_csv(await (await export(client, {"format": "csv", "fields": fields})).read())
    assert list(csv_rows[0]) == fields
    json_rows = [
        json.loads(line)
        for line in (await (await export(client, {"format": "jsonl", "fields": fields})).read()).splitlines()
    ]
    assert list(json_rows[0]) == fields
    sent = by_id(events)
    for row in csv_rows:
        event = sent[row["id"]]
        latency = event["measurements"].get("latency")
        assert row["measurements.latency"] == ("" if latency is None else row["measurements.latency"])
        if latency is not None:
            assert float(row["measurements.latency"]) == latency
        assert row["metadata.note"] == event["metadata"].get("note", "")
        assert row["metadata.model"] == event["metadata"]["model"]
        assert row["measurements.absent"] == ""
    for row in json_rows:
        event = sent[row["id"]]
        assert row["measurements.latency"] == event["measurements"].get("latency")
        assert row["metadata.note"] == event["metadata"].get("note")
        assert row["measurements.absent"] is None


async def test_filters_choose_the_events(loaded: Any) -> None:
    client, events = loaded
    after = BASE_TIME + dt.timedelta(minutes=10)
    before = BASE_TIME + dt.timedelta(minutes=30)
    cases: list[tuple[dict[str, str], Any]] = [
        ({"experiment_id": "exp_b"}, lambda e: e["metadata"]["experiment_id"] == "exp_b"),
        (
            {"model": "gpt-4", "run_id": "run_1"},
            lambda e: e["metadata"]["model"] == "gpt-4" and e["metadata"]["run_id"] == "run_1",
        ),
        ({"event_name": "crucible.run.progress"}, lambda e: e["event_name"] == ["crucible", "run", "progress"]),
        (
            {"after": iso(after), "before": "2024-01-15T10:30:00"},  # a time without a zone is UTC
            lambda e: after <= parse_time(e["timestamp"]) < before,
        ),
    ]
    for filters, keep in cases:
        rows = read_csv(await (await export(client, {"format": "csv", "filters": filters, "fields": ["id"]})).read())
        expected = sorted(e["id"] for e in events if keep(e))
        assert expected, filters
        assert sorted(row["id"] for row in rows) == expected, filters


async def test_a_client_that_goes_away_lets_go_of_the_warehouse(client: TestClient) -> None:
    await ingest(client, sample_events(3000))
    answer = await export(client, {"format": "jsonl"})
    assert await answer.content.read(1000)
    answer.close()  # gone mid-download

    async def streams_ended() -> bool:
        return not [t for t in threading.enumerate() if t.name == "export-stream"]

    await eventually(streams_ended)
    rows = read_csv(await (await export(client, {"format": "csv", "fields": ["id"]})).read())
    assert len(rows) == 3000


# -- export jobs -------------------------------------------------------------------------------


async def wait_finished(client: TestClient, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = {}

    async def finished() -> bool:
        nonlocal job
        answer = await client.get(f"{JOBS}/{job_id}")
        assert answer.status == 200, await answer.text()
        job = (await answer.json())["data"]
        return job["status"] in ("completed", "failed")

    await eventually(finished)
    return job


async def test_an_async_export_is_a_job_whose_file_equals_the_stream(loaded: Any) -> None:
    client, events = loaded
    streamed = await (await export(client, {"format": "jsonl", "fields": ["id", "measurements"]})).read()
    answer = await export(client, {"format": "jsonl", "fields": ["id", "measurements"], "async": True}, 202)
    accepted = (await answer.json())["data"]
    job_id = accepted["job_id"]
    assert accepted["status"] in ("queued", "running", "completed")
    assert accepted["status_url"] == f"{JOBS}/{job_id}" == answer.headers["Location"]
    job = await wait_finished(client, job_id)
    assert job["status"] == "completed", job
    assert job["total_rows"] == job["rows_written"] == len(events)
    assert job["progress"] == 1.0
    assert job["error"] is None
    assert job["download_url"] == f"{JOBS}/{job_id}/download"
    assert job["bytes_written"] == len(streamed)  # the same rows, maybe in another order
    assert parse_time(job["expires_at"]) > parse_time(job["finished_at"])
    download = await client.get(job["download_url"])
    assert download.status == 200
    assert download.headers["Content-Disposition"] == f'attachment; filename="crucible-events-{job_id}.jsonl"'
    assert sorted((await download.read()).splitlines()) == sorted(streamed.splitlines())


async def test_a_csv_job_counts_records_not_lines(loaded: Any) -> None:
    client, events = loaded
    answer = await export(client, {"format": "csv", "async": True}, 202)
    job = await wait_finished(client, (await answer.json())["data"]["job_id"])
    assert job["rows_written"] == len(events)  # the notes' line breaks are inside fields
    rows = read_csv(await (await client.get(job["download_url"])).read())
    assert len(rows) == len(events)


async def test_an_export_over_the_row_threshold_becomes_a_job(app_client: AppClientFactory) -> None:
    client = await app_client(export_async_rows=10)
    await ingest(client, sample_events(12))
    answer = await export(client, {"format": "parquet"}, 202)
    job = await wait_finished(client, (await answer.json())["data"]["job_id"])
    assert job["status"] == "completed"
    table = pq.read_table(io.BytesIO(await (await client.get(job["download_url"])).read()))
    assert table.num_rows == 12
    # Asked to stream, it streams whatever its size.
    streamed = await export(client, {"format": "csv", "async": False, "fields": ["id"]})
    assert len(read_csv(await streamed.read())) == 12


async def test_a_job_not_finished_cannot_be_downloaded(app_client: AppClientFactory) -> None:
    client = await app_client(export_jobs=1)
    await ingest(client, sample_events(5))
    jobs = client.app[EXPORT_JOBS]
    async with jobs._slots:  # the one slot taken: the next job waits, queued
        answer = await export(client, {"format": "csv", "async": True}, 202)
        job_id = (await answer.json())["data"]["job_id"]
        status = await client.get(f"{JOBS}/{job_id}")
        assert (await status.json())["data"]["status"] == "queued"
        download = await client.get(f"{JOBS}/{job_id}/download")
        assert download.status == 409
        error = (await download.json())["error"]
        assert error["code"] == "conflict"
        assert "queued" in error["message"]
    assert (await wait_finished(client, job_id))["status"] == "completed"


async def test_unknown_jobs_and_other_keys_jobs_are_not_found(loaded: Any) -> None:
    client, _ = loaded
    for path in (f"{JOBS}/export_0000000000000000", f"{JOBS}/export_0000000000000000/download"):
        answer = await client.get(path)
        assert answer.status == 404
        assert (await answer.json())["error"]["code"] == "not_found"
    answer = await export(client, {"format": "csv", "async": True}, 202)
    job_id = (await answer.json())["data"]["job_id"]
    await wait_finished(client, job_id)
    reader = await create_key(client, "read")
    answer = await client.get(f"{JOBS}/{job_id}", headers=auth(reader["secret"]))
    assert answer.status == 404


async def test_jobs_outlive_a_restart_and_an_interrupted_one_is_failed(
    app_client: AppClientFactory, tmp_path: Path
) -> None:
    client = await app_client()
    await ingest(client, sample_events(8))
    answer = await export(client, {"format": "csv", "async": True}, 202)
    done_id = (await answer.json())["data"]["job_id"]
    done = await wait_finished(client, done_id)
    content = await (await client.get(done["download_url"])).read()
    await client.close()
    # A job the previous process was running when it died: its sidecar says so.
    jobs_dir = tmp_path / "data" / JOBS_DIRECTORY
    sidecar = json.loads((jobs_dir / (done_id + SIDECAR_SUFFIX)).read_text())
    sidecar.update(id="export_1111111111111111", status="running", finished_at=None)
    (jobs_dir / ("export_1111111111111111" + SIDECAR_SUFFIX)).write_text(json.dumps(sidecar))
    (jobs_dir / "export_1111111111111111.csv.partial").write_bytes(b"half a file")

    client = await app_client()
    again = await client.get(f"{JOBS}/{done_id}")
    assert (await again.json())["data"]["status"] == "completed"
    assert await (await client.get(done["download_url"])).read() == content
    interrupted = (await (await client.get(f"{JOBS}/export_1111111111111111")).json())["data"]
    assert interrupted["status"] == "failed"
    assert "restart" in interrupted["error"]
    download = await client.get(f"{JOBS}/export_1111111111111111/download")
    assert download.status == 409
    assert not (jobs_dir / "export_1111111111111111.csv.partial").exists()


async def test_finished_jobs_are_deleted_after_their_retention(loaded: Any) -> None:
    client, _ = loaded
    answer = await export(client, {"format": "csv", "async": True}, 202)
    job_id = (await answer.json())["data"]["job_id"]
    job = await wait_finished(client, job_id)
    jobs = client.app[EXPORT_JOBS]
    path = jobs.file_of(jobs.get(job_id))
    assert path.exists()
    assert jobs.sweep(parse_time(job["expires_at"]) - dt.timedelta(seconds=1)) == []
    assert jobs.sweep(parse_time(job["expires_at"])) == [job_id]
    assert not path.exists()
    assert (await client.get(f"{JOBS}/{job_id}")).status == 404


# -- experiment exports ------------------------------------------------------------------------


async def create_experiment(client: TestClient, name: str) -> dict[str, Any]:
    body = {"experiment": {"name": name, "config": {"metric": "f1", "lr": 0.001, "layers": [64, 32]}, "tags": ["t"]}}
    answer = await client.post("/api/v1/experiments", json=body)
    assert answer.status == 201, await answer.text()
    experiment: dict[str, Any] = (await answer.json())["data"]
    return experiment


async def export_experiment(client: TestClient, experiment_id: str, body: dict[str, Any] | None = None) -> bytes:
    answer = await client.post(f"/api/v1/experiments/{experiment_id}/export", json=body or {})
    assert answer.status == 200, await answer.text()
    return await answer.read()


def signed_content(document: bytes) -> tuple[bytes, str]:
    """The exact bytes of `content`, and the sha256 the document gives for them."""
    prefix = b'{"content":'
    assert document.startswith(prefix)
    content, _, tail = document[len(prefix) :].rpartition(b',"sha256":"')
    assert tail.endswith(b'"}')
    return content, tail[:-2].decode()


@pytest.fixture
async def experiment_with_telemetry(client: TestClient) -> tuple[TestClient, dict[str, Any], list[dict[str, Any]]]:
    experiment = await create_experiment(client, "Export me")
    events = sample_events(30, experiments=(experiment["id"], "exp_other"))
    await ingest(client, events)
    return client, experiment, [e for e in events if e["metadata"]["experiment_id"] == experiment["id"]]


async def test_an_experiment_exports_to_the_same_bytes_with_a_true_sha256(experiment_with_telemetry: Any) -> None:
    client, experiment, events = experiment_with_telemetry
    first = await export_experiment(client, experiment["id"])
    # Other resources and other experiments' telemetry change: this experiment's document does not.
    await create_experiment(client, "Another")
    await ingest(client, sample_events(5, experiments=("exp_elsewhere",)))
    second = await export_experiment(client, experiment["id"])
    assert first == second
    content_bytes, sha256 = signed_content(first)
    assert hashlib.sha256(content_bytes).hexdigest() == sha256
    document = json.loads(first)
    content = document["content"]
    # Canonical: sorted keys, no spaces, shortest round-trip floats (1e-7, not Python's 1e-07).
    assert msgspec.json.encode(content, order="sorted") == content_bytes
    assert content["experiment_id"] == experiment["id"]
    assert content["format_version"] == 1
    assert content["include"] == ["config", "results", "runs", "telemetry"]
    assert content["experiment"]["name"] == "Export me"
    assert content["experiment"]["tags"] == ["t"]
    assert "config" not in content["experiment"]
    assert content["config"] == {"metric": "f1", "lr": 0.001, "layers": [64, 32]}
    got = await client.get(f"/api/v1/experiments/{experiment['id']}")
    assert content["results"] == (await got.json())["data"]["results_summary"]
    assert content["runs"], "the sample telemetry reports runs"
    for run in content["runs"]:  # each as GET /runs/:id shows it
        assert run == (await (await client.get(f"/api/v1/runs/{run['id']}")).json())["data"]
    positions = content["positions"]
    history = await client.get(f"/api/v1/experiments/{experiment['id']}/history")
    assert positions["resources"] == (await history.json())["data"][-1]["offset"] + 1
    assert [p["partition"] for p in positions["telemetry"]] == [0]
    assert positions["telemetry"][0]["next_offset"] >= 1
    exported = content["telemetry"]
    expected = sorted(events, key=lambda e: (parse_time(e["timestamp"]), e["id"]))
    assert [e["id"] for e in exported] == [e["id"] for e in expected]
    for got_event, sent in zip(exported, expected, strict=True):
        assert got_event["event_name"] == sent["event_name"]
        assert got_event["measurements"] == sent["measurements"]
        assert got_event["metadata"] == sent["metadata"]
        assert got_event["data"] == sent.get("data")
        assert parse_time(got_event["timestamp"]) == parse_time(sent["timestamp"])


async def test_an_experiment_export_includes_only_what_is_asked(experiment_with_telemetry: Any) -> None:
    client, experiment, _ = experiment_with_telemetry
    document = json.loads(
        await export_experiment(client, experiment["id"], {"include": ["results", "config", "config"]})
    )
    content = document["content"]
    assert content["include"] == ["config", "results"]
    assert "telemetry" not in content and "runs" not in content
    assert set(content["positions"]) == {"resources"}


async def test_an_experiment_zip_is_canonical_and_its_manifest_true(experiment_with_telemetry: Any) -> None:
    client, experiment, events = experiment_with_telemetry
    answer = await client.post(f"/api/v1/experiments/{experiment['id']}/export", json={"format": "zip"})
    assert answer.status == 200, await answer.text()
    assert answer.headers["Content-Type"] == "application/zip"
    assert answer.headers["Content-Disposition"] == f'attachment; filename="{experiment["id"]}.zip"'
    first = await answer.read()
    assert await export_experiment(client, experiment["id"], {"format": "zip"}) == first
    archive = zipfile.ZipFile(io.BytesIO(first))
    names = archive.namelist()
    assert names == ["experiment.csv", "config.csv", "results.csv", "runs.csv", "telemetry.csv", "manifest.json"]
    assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    manifest_bytes = archive.read("manifest.json")
    content_bytes, sha256 = signed_content(manifest_bytes)
    assert hashlib.sha256(content_bytes).hexdigest() == sha256
    manifest = json.loads(manifest_bytes)["content"]
    assert set(manifest["files"]) == set(names) - {"manifest.json"}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256(archive.read(name)).hexdigest() == digest
    assert read_csv(archive.read("experiment.csv"))[0]["id"] == experiment["id"]
    config = {row["key"]: json.loads(row["value"]) for row in read_csv(archive.read("config.csv"))}
    assert config == {"metric": "f1", "lr": 0.001, "layers": [64, 32]}
    runs = read_csv(archive.read("runs.csv"))
    listed = (await (await client.get(f"/api/v1/experiments/{experiment['id']}/runs")).json())["data"]
    assert sorted(row["id"] for row in runs) == sorted(run["id"] for run in listed) and runs
    telemetry = read_csv(archive.read("telemetry.csv"))
    assert sorted(row["id"] for row in telemetry) == sorted(e["id"] for e in events)


# -- errors and limits -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"format": "xlsx"}, "format"),
        ({"fields": ["timestamp", "colour"]}, "fields"),
        ({"fields": ["measurements."]}, "fields"),
        ({"fields": ["metadata.a`b"]}, "fields"),
        ({"fields": ["id", "id"]}, "fields"),
        ({"fields": []}, "fields"),
        ({"fields": "id"}, "fields"),
        ({"filters": {"colour": "red"}}, "filters"),
        ({"filters": {"after": "yesterday"}}, "filters.after"),
        ({"filters": {"experiment_id": 7}}, "filters"),
        ({"filters": []}, "filters"),
        ({"async": "yes"}, "async"),
        ({"compress": True}, "compress"),
    ],
)
async def test_a_bad_events_export_is_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    answer = await client.post(EXPORT, json=body)
    assert answer.status == 422, await answer.text()
    error = (await answer.json())["error"]
    assert error["code"] == "validation_error"
    assert field in error["details"], error


async def test_a_malformed_export_body_is_400(client: TestClient) -> None:
    answer = await client.post(EXPORT, data=b"{not json", headers={"Content-Type": "application/json"})
    assert answer.status == 400


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"format": "xml"}, "format"),
        ({"include": ["config", "secrets"]}, "include"),
        ({"include": "config"}, "include"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_a_bad_experiment_export_is_422(client: TestClient, body: dict[str, Any], field: str) -> None:
    experiment = await create_experiment(client, "Bad export")
    answer = await client.post(f"/api/v1/experiments/{experiment['id']}/export", json=body)
    assert answer.status == 422, await answer.text()
    assert field in (await answer.json())["error"]["details"]


async def test_an_unknown_experiment_is_404(client: TestClient) -> None:
    answer = await client.post("/api/v1/experiments/exp_000000000000/export", json={})
    assert answer.status == 404
    assert (await answer.json())["error"]["code"] == "not_found"


async def test_exports_count_in_the_export_rate_limit_class(client: TestClient) -> None:
    experiment = await create_experiment(client, "Limited")
    key = await create_key(client, "read", export=1)
    headers = auth(key["secret"])
    first = await client.post(EXPORT, json={"format": "csv"}, headers=headers)
    assert first.status == 200, await first.text()
    assert first.headers["X-RateLimit-Limit"] == "1"
    await first.read()
    for path in (EXPORT, f"/api/v1/experiments/{experiment['id']}/export"):
        refused = await client.post(path, json={}, headers=headers)
        assert refused.status == 429
        assert (await refused.json())["error"]["code"] == "rate_limited"
        assert "Retry-After" in refused.headers
    # Reads are another class: the key still reads.
    assert (await client.get(EVENTS, headers=headers)).status == 200


async def test_exports_need_the_read_scope(client: TestClient) -> None:
    key = await create_key(client, "ingest")
    answer = await client.post(EXPORT, json={}, headers=auth(key["secret"]))
    assert answer.status == 403
