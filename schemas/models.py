"""Models as the API shows them (API.md "Model Endpoints"), and their usage statistics."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import Meta

ModelName = Annotated[str, Meta(min_length=1, max_length=255)]
ModelText = Annotated[str, Meta(max_length=255)]
ModelStatus = Literal["active", "inactive", "deprecated"]
MODEL_STATUSES: tuple[str, ...] = get_args(ModelStatus)


class ModelInput(msgspec.Struct, kw_only=True):
    """The fields a client sets (POST: `name` required; PATCH: any of them)."""

    name: ModelName
    provider: ModelText = ""
    type: ModelText = ""
    config: dict[str, Any] = {}
    status: ModelStatus = "active"


class ModelBody(msgspec.Struct, kw_only=True):
    model: ModelInput


class ModelOut(msgspec.Struct, kw_only=True):
    id: str
    name: str
    provider: str
    type: str
    config: dict[str, Any]
    status: str
    created_at: dt.datetime
    updated_at: dt.datetime


class ModelStatistics(msgspec.Struct, kw_only=True):
    """Usage over `period` from the model's `crucible.model.inference` telemetry.

    The period is `[since, until]`: `until` is the time of the request, so events dated
    ahead of it (ingest accepts up to a day ahead) are not counted. Latency figures are
    null when no event in the period carried a latency. Tokens are counts: their sum is
    an integer (a fractional measurement is rounded once, after summing).
    """

    period: str
    since: dt.datetime
    until: dt.datetime
    total_requests: int
    success_rate: float | None
    avg_latency_ms: float | None
    p99_latency_ms: float | None
    total_tokens: int
    error_breakdown: dict[str, int]
