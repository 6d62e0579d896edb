"""GET /api/v1/openapi.json: a valid OpenAPI 3.1 document describing every route."""

from __future__ import annotations

from typing import Any

from openapi_spec_validator import validate

from service.api.openapi import _PATH_PARAMETER
from service.http.auth import is_page


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
        if route.method == "HEAD" or is_page(route.handler):  # the web UI's pages are not API operations
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


def sample(schema: dict[str, Any]) -> str:
    """A valid value of a declared query parameter, as query text."""
    if "enum" in schema:
        return str(schema["enum"][0])
    if schema.get("type") == "integer":
        return str(schema["minimum"])
    if schema.get("format") == "date-time":
        return "2024-01-15T10:00:00Z"
    if "pattern" in schema and "metadata" in schema["pattern"]:
        return "model"
    return "x"


def declared_query(operation: dict[str, Any]) -> dict[str, str]:
    """One valid value of each query parameter `operation` declares; filters as filter[field]."""
    values: dict[str, str] = {}
    for parameter in operation["parameters"]:
        if parameter["in"] != "query" or parameter["name"] == "cursor":  # a cursor must be one the API gave
            continue
        if parameter.get("style") == "deepObject":
            for field, schema in parameter["schema"]["properties"].items():
                values[f"{parameter['name']}[{field}]"] = sample(schema)
        else:
            values[parameter["name"]] = sample(parameter["schema"])
    return values


async def test_list_endpoints_declare_their_parameters_with_types(client: Any) -> None:
    paths = (await openapi(client))["paths"]
    parameters = {p["name"]: p for p in paths["/api/v1/experiments"]["get"]["parameters"]}
    assert parameters["per_page"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 25}
    assert "-created_at" in parameters["sort"]["schema"]["enum"]
    assert parameters["filter"]["style"] == "deepObject"
    filters = parameters["filter"]["schema"]["properties"]
    assert "cancelled" in filters["status"]["enum"] and filters["created_after"]["format"] == "date-time"
    aggregate = {p["name"]: p for p in paths["/api/v1/telemetry/aggregate"]["get"]["parameters"]}
    assert aggregate["agg"]["required"] is True and "p99" in aggregate["agg"]["schema"]["enum"]
    assert aggregate["interval"]["schema"]["enum"] == ["1m", "5m", "1h", "1d"]
    logs = {p["name"]: p for p in paths["/api/v1/runs/{id}/logs"]["get"]["parameters"]}
    assert logs["level"]["schema"]["enum"] == ["debug", "info", "warning", "error"] and "tail" in logs
    statistics = {p["name"] for p in paths["/api/v1/models/{id}/statistics"]["get"]["parameters"]}
    assert "period" in statistics
    assert "as_of" in {p["name"] for p in paths["/api/v1/experiments/{id}"]["get"]["parameters"]}


async def test_answers_declare_every_error_status_and_the_real_export_document(client: Any) -> None:
    paths = (await openapi(client))["paths"]
    create = paths["/api/v1/experiments"]["post"]["responses"]
    assert {"400", "401", "403", "409", "413", "415", "422", "429", "503"} <= set(create)
    assert "default" not in create
    assert "202" in paths["/api/v1/telemetry/events"]["post"]["responses"]
    export = paths["/api/v1/experiments/{id}/export"]["post"]["responses"]["200"]["content"]
    assert export["application/json"]["schema"] == {"$ref": "#/components/schemas/ExperimentExportDocument"}
    assert export["application/zip"]["schema"]["format"] == "binary"
    components = (await openapi(client))["components"]["schemas"]
    assert components["ExperimentInput"]["additionalProperties"] is False  # unknown fields are refused
    assert "additionalProperties" not in components["TelemetryEvent"]  # events may carry fields of later versions
    events = paths["/api/v1/telemetry/events"]["get"]["responses"]["200"]["content"]["application/json"]
    assert len(events["schema"]["anyOf"]) == 2  # a page of events, or aggregates with `agg`


async def test_every_declared_parameter_is_taken_and_undeclared_ones_are_refused(client: Any) -> None:
    """The handlers check their queries against the declarations the document is built from;
    this holds them to it for every list and aggregate endpoint (those without path parameters)."""
    from service.api.telemetry import EVENTS_AGGREGATE_QUERY

    paths = (await openapi(client))["paths"]
    checked = 0
    for path, methods in paths.items():
        operation = methods.get("get")
        # The event stream never ends; the WebSocket's query is declared, not checked (see SOCKET_QUERY).
        if operation is None or "{" in path or path.endswith(("/stream", "/websocket")):
            continue
        values = declared_query(operation)
        if not values:
            continue
        for name, value in values.items():
            # GET /telemetry/events takes its aggregate parameters only alongside `agg`.
            mode = (
                {"agg": "count"} if path.endswith("/telemetry/events") and name in EVENTS_AGGREGATE_QUERY.names else {}
            )
            if path.endswith("/aggregate"):
                mode = {"agg": "count"}
            async with client.get(path, params={**mode, name: value}) as answer:
                body = await answer.json()
                assert answer.status == 200, (path, name, value, body)
        async with client.get(path, params={"undeclared": "1"}) as answer:
            assert answer.status == 422, path
            assert "undeclared" in (await answer.json())["error"]["details"]
        checked += 1
    assert checked >= 6


def answer_validator(document: dict[str, Any], path: str, method: str, status: str, media: str) -> Any:
    """A JSON Schema validator of one declared answer, its $refs resolved in the document."""
    from jsonschema import Draft202012Validator

    schema = document["paths"][path][method]["responses"][status]["content"][media]["schema"]
    return Draft202012Validator({**schema, "components": document["components"]})


async def test_a_json_experiment_export_matches_its_declared_document(client: Any) -> None:
    """It was declared a binary string while it answers a JSON object (schemathesis: 103 violations)."""
    document = await openapi(client)
    async with client.post("/api/v1/experiments", json={"experiment": {"name": "exported"}}) as answer:
        experiment_id = (await answer.json())["data"]["id"]
    validator = answer_validator(document, "/api/v1/experiments/{id}/export", "post", "200", "application/json")
    for include in (["config", "results", "runs", "telemetry"], ["config"]):
        body = {"format": "json", "include": include}
        async with client.post(f"/api/v1/experiments/{experiment_id}/export", json=body) as answer:
            assert answer.status == 200 and answer.content_type == "application/json"
            exported = await answer.json()
        assert not list(validator.iter_errors(exported)), list(validator.iter_errors(exported))


async def test_aggregates_from_the_events_list_match_the_declared_answer(client: Any) -> None:
    document = await openapi(client)
    validator = answer_validator(document, "/api/v1/telemetry/events", "get", "200", "application/json")
    event = {"event_name": ["crucible", "model", "inference"], "measurements": {"duration_ms": 5.0}}
    async with client.post("/api/v1/telemetry/events", json={"events": [event]}) as answer:
        assert answer.status == 202
    for params in ({"agg": "count"}, {}):
        async with client.get("/api/v1/telemetry/events", params=params) as answer:
            assert answer.status == 200
            body = await answer.json()
        assert not list(validator.iter_errors(body)), body
