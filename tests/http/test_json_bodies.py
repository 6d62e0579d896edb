"""Routes that take a JSON body refuse one not declared JSON (415): a page of another site
can send text/plain or a form without a CORS preflight, never application/json."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient

from tests.http.test_auth import every_route
from tests.keys_support import EVENTS_URL, EXPERIMENTS_URL, KEYS_URL, SESSIONS_URL, batch
from tests.resource_helpers import assert_error, create_experiment, experiment_count

TEXT = {"Content-Type": "text/plain"}
NEW_EXPERIMENT = b'{"experiment": {"name": "from a page"}}'


async def test_a_json_route_refuses_a_body_that_is_not_declared_json(client: TestClient) -> None:
    before = await experiment_count(client)
    for headers in (TEXT, {"Content-Type": "application/x-www-form-urlencoded"}, {}):
        answer = await client.post(
            EXPERIMENTS_URL, data=NEW_EXPERIMENT, headers=headers, skip_auto_headers=["Content-Type"]
        )
        error = await assert_error(answer, 415, "unsupported_media_type")
        assert "application/json" in error["message"]
        assert error["details"] == {"Content-Type": ["must be application/json"]}
    assert await experiment_count(client) == before


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/vnd.crucible+json"],
)
async def test_json_media_types_are_accepted(client: TestClient, content_type: str) -> None:
    answer = await client.post(EXPERIMENTS_URL, data=NEW_EXPERIMENT, headers={"Content-Type": content_type})
    assert answer.status == 201, await answer.text()


async def test_an_action_without_a_body_needs_no_content_type(client: TestClient) -> None:
    experiment = await create_experiment(client)
    start = f"{EXPERIMENTS_URL}/{experiment['id']}/start"
    answer = await client.post(start, skip_auto_headers=["Content-Type"])
    assert answer.status == 200, await answer.text()
    pause = f"{EXPERIMENTS_URL}/{experiment['id']}/pause"
    answer = await client.post(pause, data=b"", headers=TEXT)  # an empty body has nothing to misread
    assert answer.status == 200, await answer.text()
    resume = f"{EXPERIMENTS_URL}/{experiment['id']}/resume"
    await assert_error(await client.post(resume, data=b"{}", headers=TEXT), 415, "unsupported_media_type")


async def test_ingest_refuses_a_batch_that_is_not_declared_json(client: TestClient) -> None:
    body = json.dumps(batch(3)).encode()
    error = await assert_error(await client.post(EVENTS_URL, data=body, headers=TEXT), 415, "unsupported_media_type")
    assert error["details"] == {"Content-Type": ["must be application/json"]}
    answer = await client.post(EVENTS_URL, data=body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert answer.status == 202, await answer.text()


async def test_every_route_that_takes_a_json_body_refuses_text_plain(client: TestClient) -> None:
    """Each POST and PATCH route but the checkpoint upload (a file, not JSON)."""
    checked = []
    for method, path, canonical in await every_route(client.app):
        if method not in ("POST", "PATCH"):
            continue
        answer = await client.request(method, path, data=b'{"x": 1}', headers=TEXT)
        assert answer.status == 415, (method, canonical, answer.status, await answer.text())
        assert (await answer.json())["error"]["code"] == "unsupported_media_type"
        checked.append(canonical)
    assert SESSIONS_URL in checked and EVENTS_URL in checked and KEYS_URL in checked


async def test_a_checkpoint_upload_takes_any_content_type(client: TestClient) -> None:
    upload = "/api/v1/runs/run_missing/checkpoints/ckpt_1"
    answer = await client.put(upload, data=b"weights", headers={"Content-Type": "application/octet-stream"})
    assert answer.status == 404  # the run is unknown: the body's type was not what stopped it
