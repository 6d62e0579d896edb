"""GET /api/v1/openapi.json: a valid OpenAPI 3.1 document describing every route."""

from __future__ import annotations

from typing import Any

from openapi_spec_validator import validate

from service.openapi import _PATH_PARAMETER


async def openapi(client: Any) -> dict[str, Any]:
    async with client.get("/api/v1/openapi.json") as answer:
        assert answer.status == 200, await answer.text()
        document: dict[str, Any] = await answer.json()
        return document


async def test_the_document_is_valid_openapi_3_1(client: Any) -> None:
    document = await openapi(client)
    assert document["openapi"] == "3.1.0"
    validate(document)  # an independent validator of the OpenAPI specification


async def test_every_route_is_described(client: Any) -> None:
    paths = (await openapi(client))["paths"]
    for route in client.app.router.routes():
        if route.method == "HEAD":
            continue
        path = _PATH_PARAMETER.sub(r"{\1}", route.resource.canonical)
        assert route.method.lower() in paths.get(path, {}), f"{route.method} {path} is not in the document"


async def test_bodies_and_answers_name_their_schemas(client: Any) -> None:
    document = await openapi(client)
    create = document["paths"]["/api/v1/experiments"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ExperimentBody"
    }
    assert "201" in create["responses"]
    experiment = document["components"]["schemas"]["ExperimentInput"]
    assert experiment["required"] == ["name"]
    assert experiment["properties"]["name"]["maxLength"] == 255
    ingest = document["paths"]["/api/v1/telemetry/events"]["post"]
    assert "202" in ingest["responses"]
    assert document["paths"]["/healthz"]["get"]["security"] == []
    assert create["security"] == [{"bearer": []}, {"session": []}]


async def test_the_document_needs_a_key(client: Any) -> None:
    async with client.get("/api/v1/openapi.json", headers={"Authorization": ""}) as answer:
        assert answer.status == 401
