"""Resource events are copied into the warehouse's resource_events table, once each."""

from __future__ import annotations

from typing import Any

import msgspec

from service.http.appkeys import PROJECTOR, WAREHOUSE
from tests.support import eventually


async def copied_rows(client: Any) -> int:
    answer = msgspec.json.decode(await client.app[WAREHOUSE].query("resource_events_resume"))
    return int(answer["rows"])


async def create_experiment(client: Any, name: str) -> None:
    async with client.post("/api/v1/experiments", json={"experiment": {"name": name}}) as answer:
        assert answer.status == 201, await answer.text()


async def test_every_resource_event_is_copied_once_across_a_restart(app_client: Any) -> None:
    client = await app_client()
    for n in range(3):
        await create_experiment(client, f"audit {n}")
    position = client.app[PROJECTOR].state.position

    async def all_copied() -> bool:
        return await copied_rows(client) == position

    await eventually(all_copied)
    await client.close()

    restarted = await app_client()
    await create_experiment(restarted, "after restart")
    position = restarted.app[PROJECTOR].state.position

    async def all_copied_again() -> bool:
        rows = await copied_rows(restarted)
        assert rows <= position, "an event was copied twice"
        return rows == position

    await eventually(all_copied_again)
