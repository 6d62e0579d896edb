"""API keys: `crucible keys`, /api/v1/api-keys, the first-run admin key, and `crucible replay`."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.cli.log_commands import open_resources
from service.core.errors import ApiError
from service.resources.credentials import secret_sha256
from service.resources.keys import revoke_key
from tests.conftest import make_settings
from tests.keys_support import (
    EVENTS_URL,
    EXPERIMENTS_URL,
    KEYS_URL,
    auth,
    batch,
    create_key,
    crucible,
    data_dir_of,
    log_values,
)
from tests.support import ServerProcess, free_port


def secret_of(stdout: str) -> str:
    """The secret `crucible keys create` prints on its last line."""
    return stdout.strip().splitlines()[-1].strip()


async def cli_create(data_dir: Path, *args: str) -> str:
    code, out, err = await crucible("keys", "create", *args, "--data-dir", str(data_dir))
    assert code == 0, err
    return secret_of(out)


def key_id_of(secret: str) -> str:
    return secret.split(".")[1]


WALK_ATTEMPTS = 20


def every_file_under(directory: Path) -> dict[Path, bytes]:
    """Every file below `directory` with its bytes, from one walk in which no file vanished.

    The warehouse writes a new part in a temporary folder and renames it while the service
    runs: a file listed then gone means the walk missed its new name, so it starts again."""
    for _ in range(WALK_ATTEMPTS):
        try:
            return {path: path.read_bytes() for path in directory.rglob("*") if path.is_file()}
        except FileNotFoundError:
            continue
    raise AssertionError(f"files under {directory} kept moving during {WALK_ATTEMPTS} walks")


# -- crucible keys -----------------------------------------------------------------------------


async def test_keys_create_prints_the_secret_once(tmp_path: Path) -> None:
    code, out, err = await crucible(
        "keys", "create", "--name", "ci", "--scopes", "read,ingest", "--data-dir", str(tmp_path)
    )
    assert code == 0, err
    secret = secret_of(out)
    assert secret.startswith("crucible.key_")
    assert out.count(secret) == 1
    assert key_id_of(secret) in out.splitlines()[0]
    code, listed, _ = await crucible("keys", "list", "--data-dir", str(tmp_path))
    assert code == 0
    assert secret not in listed  # never shown again


async def test_keys_list_shows_each_key_without_its_secret(tmp_path: Path) -> None:
    reader = await cli_create(tmp_path, "--name", "dashboards", "--scopes", "read")
    admin = await cli_create(tmp_path, "--name", "ops", "--scopes", "admin")
    code, out, err = await crucible("keys", "list", "--data-dir", str(tmp_path))
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == {key_id_of(reader), key_id_of(admin)}
    assert "dashboards" in rows[key_id_of(reader)] and " read " in rows[key_id_of(reader)]
    assert "ops" in rows[key_id_of(admin)] and " admin " in rows[key_id_of(admin)]
    assert rows[key_id_of(reader)].rstrip().endswith("-")  # not revoked
    assert reader not in out and admin not in out


async def test_keys_revoke_marks_the_key_revoked(tmp_path: Path) -> None:
    secret = await cli_create(tmp_path, "--name", "old", "--scopes", "read")
    code, out, err = await crucible("keys", "revoke", key_id_of(secret), "--data-dir", str(tmp_path))
    assert code == 0, err
    assert key_id_of(secret) in out
    _, listed, _ = await crucible("keys", "list", "--data-dir", str(tmp_path))
    [row] = [line for line in listed.splitlines() if line.startswith(key_id_of(secret))]
    assert not row.rstrip().endswith(" -")  # a revocation time


async def test_keys_revoke_of_an_unknown_key_fails(tmp_path: Path) -> None:
    code, _, err = await crucible("keys", "revoke", "key_0000000000000000", "--data-dir", str(tmp_path))
    assert code == 1
    assert "not found" in err


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--scopes", "read,superuser"], "unknown scope 'superuser'"),
        (["--scopes", ","], "at least one scope"),
        (["--rate-limits", "read=0"], "bad rate limit"),
        (["--rate-limits", "reads=5"], "bad rate limit"),
        (["--rate-limits", "read=many"], "bad rate limit"),
    ],
)
async def test_keys_create_refuses_bad_arguments_and_creates_nothing(
    tmp_path: Path, args: list[str], problem: str
) -> None:
    code, out, err = await crucible("keys", "create", "--name", "bad", *args, "--data-dir", str(tmp_path))
    assert code == 1
    assert problem in err
    assert "crucible." not in out
    _, listed, _ = await crucible("keys", "list", "--data-dir", str(tmp_path))
    assert len(listed.strip().splitlines()) == 1  # the header only


async def test_keys_create_stores_only_the_hash_of_the_secret(tmp_path: Path) -> None:
    secret = await cli_create(tmp_path, "--name", "hashed", "--scopes", "read")
    values = b"\n".join(log_values(tmp_path))
    assert secret_sha256(secret).encode() in values
    assert secret.encode() not in values
    for path, content in every_file_under(tmp_path).items():
        assert secret.encode() not in content, path


async def test_a_key_created_by_the_cli_works_with_its_scopes_and_limits(app_client: Any) -> None:
    client = await app_client()
    secret = await cli_create(data_dir_of(client), "--name", "cli", "--scopes", "read", "--rate-limits", "read=2")

    async def known() -> int:
        return (await client.get(EXPERIMENTS_URL, headers=auth(secret))).status

    deadline = time.monotonic() + 5
    while await known() == 401 and time.monotonic() < deadline:  # the app folds the CLI's event
        await asyncio.sleep(0.05)
    got = (await (await client.get(f"{KEYS_URL}/{key_id_of(secret)}")).json())["data"]
    assert got["scopes"] == ["read"]
    assert got["rate_limits"]["read"] == 2
    answer = await client.post(EXPERIMENTS_URL, json={"experiment": {"name": "x"}}, headers=auth(secret))
    assert answer.status == 403


async def test_a_key_revoked_by_the_cli_is_refused_by_a_running_api_within_a_second(client: TestClient) -> None:
    key = await create_key(client, "read")
    assert (await client.get(EXPERIMENTS_URL, headers=auth(key["secret"]))).status == 200
    code, _, err = await crucible("keys", "revoke", key["id"], "--data-dir", str(data_dir_of(client)))
    assert code == 0, err
    revoked_at = time.monotonic()
    while (await client.get(EXPERIMENTS_URL, headers=auth(key["secret"]))).status != 401:
        assert time.monotonic() - revoked_at < 1.5, "the revoked key still works"
        await asyncio.sleep(0.02)
    assert time.monotonic() - revoked_at < 1.5


@pytest.mark.kafka
async def test_keys_create_list_and_revoke_on_kafka(kafka_bootstrap: str) -> None:
    log_args = ["--kafka", kafka_bootstrap, "--no-kafka-idempotence"]
    code, out, err = await crucible("keys", "create", "--name", "on kafka", "--scopes", "ingest", *log_args)
    assert code == 0, err
    key_id = key_id_of(secret_of(out))
    code, listed, err = await crucible("keys", "list", *log_args)
    assert code == 0, err
    assert key_id in listed
    code, _, err = await crucible("keys", "revoke", key_id, *log_args)
    assert code == 0, err


# -- /api/v1/api-keys ----------------------------------------------------------------------------


async def test_creating_a_key_answers_its_secret_once(client: TestClient) -> None:
    key = await create_key(client, "read", "ingest", name="pipeline")
    assert key["id"].startswith("key_")
    assert key["name"] == "pipeline"
    assert key["scopes"] == ["read", "ingest"]
    assert key["revoked_at"] is None
    assert key["secret"].startswith(f"crucible.{key['id']}.")
    got = (await (await client.get(f"{KEYS_URL}/{key['id']}")).json())["data"]
    assert got["secret"] is None
    assert {k: v for k, v in got.items() if k != "secret"} == {k: v for k, v in key.items() if k != "secret"}


async def test_the_key_list_has_every_key_and_no_secret(client: TestClient) -> None:
    made = [await create_key(client, "read", name=f"key {i}") for i in range(3)]
    answer = await client.get(KEYS_URL)
    assert answer.status == 200
    listed = (await answer.json())["data"]
    assert {k["id"] for k in made} <= {k["id"] for k in listed}
    assert all(k["secret"] is None for k in listed)
    text = await answer.text()
    assert not any(k["secret"] in text for k in made)


async def test_an_unknown_key_is_404(client: TestClient) -> None:
    for method in ("GET", "DELETE"):
        answer = await client.request(method, f"{KEYS_URL}/key_0000000000000000")
        assert answer.status == 404
        assert (await answer.json())["error"]["code"] == "not_found"


async def test_revoking_a_key_over_the_api(client: TestClient) -> None:
    key = await create_key(client, "read")
    answer = await client.delete(f"{KEYS_URL}/{key['id']}")
    assert answer.status == 204
    got = (await (await client.get(f"{KEYS_URL}/{key['id']}")).json())["data"]
    assert got["revoked_at"] is not None
    assert (await client.get(EXPERIMENTS_URL, headers=auth(key["secret"]))).status == 401


async def test_revoking_a_revoked_key_is_409(client: TestClient) -> None:
    key = await create_key(client, "read")
    assert (await client.delete(f"{KEYS_URL}/{key['id']}")).status == 204
    again = await client.delete(f"{KEYS_URL}/{key['id']}")
    assert again.status == 409
    assert (await again.json())["error"]["code"] == "conflict"


async def active_admins(client: TestClient, secret: str | None = None) -> set[str]:
    headers = auth(secret or client.secret)
    listed = (await (await client.get(KEYS_URL, params={"per_page": "100"}, headers=headers)).json())["data"]
    return {k["id"] for k in listed if "admin" in k["scopes"] and k["revoked_at"] is None}


async def test_revoking_the_last_admin_key_is_409_even_by_itself(client: TestClient) -> None:
    [admin] = await active_admins(client)
    reader = await create_key(client, "read")
    assert (await client.delete(f"{KEYS_URL}/{reader['id']}")).status == 204  # other keys still go
    answer = await client.delete(f"{KEYS_URL}/{admin}")
    assert answer.status == 409
    error = (await answer.json())["error"]
    assert error["code"] == "conflict"
    assert "last active admin key" in error["message"]
    assert await active_admins(client) == {admin}


async def test_an_admin_key_may_revoke_itself_while_another_admin_key_remains(client: TestClient) -> None:
    [first] = await active_admins(client)
    second = await create_key(client, "admin")
    assert (await client.delete(f"{KEYS_URL}/{second['id']}", headers=auth(second["secret"]))).status == 204
    third = await create_key(client, "admin")
    assert (await client.delete(f"{KEYS_URL}/{first}", headers=auth(third["secret"]))).status == 204
    assert await active_admins(client, third["secret"]) == {third["id"]}


async def test_two_admin_keys_revoking_each_other_at_once_leave_one_of_them(client: TestClient) -> None:
    [original] = await active_admins(client)
    one, two = await create_key(client, "admin"), await create_key(client, "admin")
    assert (await client.delete(f"{KEYS_URL}/{original}", headers=auth(one["secret"]))).status == 204
    answers = await asyncio.gather(
        client.delete(f"{KEYS_URL}/{two['id']}", headers=auth(one["secret"])),
        client.delete(f"{KEYS_URL}/{one['id']}", headers=auth(two["secret"])),
    )
    statuses = sorted(a.status for a in answers)
    # The loser is refused by the fold (409), or finds its own key already revoked (401).
    assert statuses in ([204, 401], [204, 409]), statuses
    survivor = one if answers[0].status == 204 else two
    assert await active_admins(client, survivor["secret"]) == {survivor["id"]}


async def test_concurrent_revocations_that_both_pass_their_check_are_decided_by_the_fold(tmp_path: Path) -> None:
    """Both commands check the same state before either event is folded, as two API processes
    would; the log's order keeps the first and refuses the second."""
    settings = make_settings(tmp_path / "data")
    await cli_create(settings.data_path, "--name", "a", "--scopes", "admin")
    await cli_create(settings.data_path, "--name", "b", "--scopes", "admin")
    async with open_resources(settings) as (log, projector):
        a, b = sorted(projector.state.api_keys)
        outcomes = await asyncio.gather(
            revoke_key(log, projector, a, "test"), revoke_key(log, projector, b, "test"), return_exceptions=True
        )
        refused = [o for o in outcomes if isinstance(o, ApiError)]
        assert len(refused) == 1, outcomes
        assert refused[0].status == 409 and "last active admin key" in refused[0].message
        assert len(projector.state.active_admin_keys()) == 1


async def test_keys_revoke_refuses_the_last_admin_key(tmp_path: Path) -> None:
    secret = await cli_create(tmp_path, "--name", "only", "--scopes", "admin")
    code, _, err = await crucible("keys", "revoke", key_id_of(secret), "--data-dir", str(tmp_path))
    assert code == 1
    assert "last active admin key" in err


@pytest.mark.parametrize(
    "body",
    [
        {"name": "k", "scopes": ["root"]},
        {"name": "k", "scopes": []},
        {"name": "k"},
        {"scopes": ["read"]},
        {"name": "", "scopes": ["read"]},
        {"name": "k", "scopes": ["read"], "rate_limits": {"read": "lots"}},
        {"name": "k", "scopes": ["read"], "owner": "me"},
    ],
    ids=["unknown scope", "no scopes", "no scopes field", "no name", "blank name", "bad limit", "unknown field"],
)
async def test_a_bad_key_is_422_and_creates_nothing(client: TestClient, body: dict[str, Any]) -> None:
    before = len((await (await client.get(KEYS_URL)).json())["data"])
    answer = await client.post(KEYS_URL, json={"api_key": body})
    assert answer.status == 422, await answer.text()
    assert (await answer.json())["error"]["code"] == "validation_error"
    assert len((await (await client.get(KEYS_URL)).json())["data"]) == before


@pytest.mark.parametrize("limit", [0, -5])
async def test_a_rate_limit_below_one_is_422(client: TestClient, limit: int) -> None:
    body = {"name": "k", "scopes": ["read"], "rate_limits": {"read": limit}}
    answer = await client.post(KEYS_URL, json={"api_key": body})
    assert answer.status == 422, await answer.text()


async def test_an_unknown_rate_limit_class_is_422(client: TestClient) -> None:
    body = {"name": "k", "scopes": ["read"], "rate_limits": {"reads": 5}}
    answer = await client.post(KEYS_URL, json={"api_key": body})
    assert answer.status == 422, await answer.text()


async def test_a_retried_create_with_an_idempotency_key_returns_the_same_key_without_its_secret(
    client: TestClient,
) -> None:
    body = {"api_key": {"name": "retried", "scopes": ["read"]}}
    headers = {"Idempotency-Key": "create-retried"}
    first = await client.post(KEYS_URL, json=body, headers=headers)
    retry = await client.post(KEYS_URL, json=body, headers=headers)
    assert (first.status, retry.status) == (201, 201)
    made, replayed = (await first.json())["data"], (await retry.json())["data"]
    assert replayed["id"] == made["id"]
    assert made["secret"] is not None
    assert replayed["secret"] is None
    assert retry.headers.get("Idempotent-Replayed") == "true"
    listed = (await (await client.get(KEYS_URL)).json())["data"]
    assert [k["id"] for k in listed].count(made["id"]) == 1
    assert sum(k["name"] == "retried" for k in listed) == 1
    assert (await client.get(EXPERIMENTS_URL, headers=auth(made["secret"]))).status == 200


async def test_an_idempotency_key_reused_for_another_key_is_422(client: TestClient) -> None:
    headers = {"Idempotency-Key": "create-once"}
    first = await client.post(KEYS_URL, json={"api_key": {"name": "a", "scopes": ["read"]}}, headers=headers)
    assert first.status == 201
    other = await client.post(KEYS_URL, json={"api_key": {"name": "b", "scopes": ["read"]}}, headers=headers)
    assert other.status == 422


async def test_a_key_created_over_the_api_is_stored_only_as_its_hash(client: TestClient) -> None:
    key = await create_key(client, "read", "write", "ingest")
    data_dir = data_dir_of(client)
    values = b"\n".join(log_values(data_dir))
    assert secret_sha256(key["secret"]).encode() in values
    assert key["secret"].encode() not in values
    for path, content in every_file_under(data_dir).items():
        assert key["secret"].encode() not in content, path


async def test_a_replayed_create_stores_no_secret_either(client: TestClient) -> None:
    body = {"api_key": {"name": "retried", "scopes": ["read"]}}
    headers = {"Idempotency-Key": "create-hash"}
    key = (await (await client.post(KEYS_URL, json=body, headers=headers)).json())["data"]
    await client.post(KEYS_URL, json=body, headers=headers)
    for path, content in every_file_under(data_dir_of(client)).items():
        assert key["secret"].encode() not in content, path


# -- crucible replay -----------------------------------------------------------------------------


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_replay_prints_the_resource_log_as_json_lines(client: TestClient) -> None:
    answer = await client.post(EXPERIMENTS_URL, json={"experiment": {"name": "replayed"}})
    assert answer.status == 201
    experiment_id = (await answer.json())["data"]["id"]
    code, out, err = await crucible("replay", "--data-dir", str(data_dir_of(client)))
    assert code == 0, err
    lines = json_lines(out)
    assert all({"topic", "offset", "value"} <= set(line) for line in lines)
    assert [line["offset"] for line in lines] == list(range(len(lines)))
    assert {line["topic"] for line in lines} == {"crucible.resources"}
    [created] = [line for line in lines if line["value"].get("event") == "ExperimentCreated"]
    assert created["value"]["experiment_id"] == experiment_id
    assert created["value"]["name"] == "replayed"


async def test_replay_from_an_offset(client: TestClient) -> None:
    for name in ("one", "two"):
        assert (await client.post(EXPERIMENTS_URL, json={"experiment": {"name": name}})).status == 201
    _, everything, _ = await crucible("replay", "--data-dir", str(data_dir_of(client)))
    total = len(json_lines(everything))
    code, out, err = await crucible("replay", "--from", "1", "--data-dir", str(data_dir_of(client)))
    assert code == 0, err
    lines = json_lines(out)
    assert [line["offset"] for line in lines] == list(range(1, total))
    assert lines[-1]["value"]["event"] == "ExperimentCreated"
    assert lines[-1]["value"]["name"] == "two"


async def test_replay_of_the_telemetry_topic(client: TestClient) -> None:
    assert (await client.post(EVENTS_URL, json=batch(2, "exp_replayed"))).status == 202
    code, out, err = await crucible("replay", "--topic", "crucible.telemetry", "--data-dir", str(data_dir_of(client)))
    assert code == 0, err
    lines = json_lines(out)
    assert len(lines) >= 1
    assert {line["topic"] for line in lines} == {"crucible.telemetry"}
    assert "exp_replayed" in out


async def test_replay_never_shows_a_secret(client: TestClient) -> None:
    key = await create_key(client, "admin")
    code, out, _ = await crucible("replay", "--data-dir", str(data_dir_of(client)))
    assert code == 0
    assert key["secret"] not in out
    assert secret_sha256(key["secret"]) in out


# -- the first-run admin key ---------------------------------------------------------------------


def get_status(url: str, secret: str) -> int:
    request = urllib.request.Request(url, headers=auth(secret))
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.slow
def test_the_first_serve_on_an_empty_data_dir_creates_an_admin_key_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first_output, second_output = tmp_path / "first.log", tmp_path / "second.log"
    server = ServerProcess(["serve", "--data-dir", str(data_dir)], free_port(), log=first_output)
    try:
        server.start()
        key_file = data_dir / "admin.key"
        assert key_file.exists()
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        secret = key_file.read_text().strip()
        assert secret in first_output.read_text()  # shown at start-up
        assert get_status(server.url + KEYS_URL, secret) == 200  # an admin key
        assert get_status(server.url + KEYS_URL, "crucible.nope") == 401
    finally:
        server.stop()

    again = ServerProcess(["serve", "--data-dir", str(data_dir)], free_port(), log=second_output)
    try:
        again.start()
        assert key_file.read_text().strip() == secret
        assert secret not in second_output.read_text()
        assert "created an admin API key" not in second_output.read_text()
        assert get_status(again.url + KEYS_URL, secret) == 200
    finally:
        again.stop()
    keys = subprocess.run(
        [sys.executable, "-m", "service", "keys", "list", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert len(keys.stdout.strip().splitlines()) == 2  # the header and the one admin key
