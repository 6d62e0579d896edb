"""Checkpoint files: PUT /api/v1/runs/:id/checkpoints/:checkpoint_id and GET .../download.

An upload streams the body into the artifact store (never whole in memory), hashing
it on the way, and only once the file is complete, synced and in place appends
`CheckpointUploaded` to the resources log, so a recorded checkpoint always has its
file. One checkpoint id holds one file: the same bytes again answer 200, other
bytes 409 and replace nothing.

Uploads of one checkpoint are serialised within the process, so two different
files racing for one id cannot both be placed. API processes that share one
store (several replicas on S3) are not serialised with each other: the log still
records one winner, but the loser's bytes may have replaced the file in that
instant; uploaders should use ids that only one worker writes.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

import msgspec
from aiohttp import web

from schemas.checkpoints import CheckpointFile
from schemas.resources import CheckpointUploaded
from service.artifacts.store import ArtifactKey, Staged, StorageError, TooLarge, UnsafePath
from service.core.errors import ApiError, validation_error
from service.http.appkeys import ARTIFACTS, CHECKPOINT_LOCKS, LOG, PROJECTOR, SETTINGS, WAREHOUSE
from service.http.auth import principal_of, requires
from service.http.downloads import attachment, entity_tag, none_match, requested_span, safe_extension, send_file
from service.http.responses import done_response, found, json_response, state_of
from service.resources.commands import Envelope, request_ref, submit
from service.resources.fold import Run, Upload, run_missing
from service.resources.run_events import ID_RULE, SAFE_ID
from service.warehouse.client import WarehouseError

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

CHECKPOINT = "/api/v1/runs/{run_id}/checkpoints/{checkpoint_id}"
SHA256_HEADER = "X-Content-SHA256"
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class _ReportedCheckpoint(msgspec.Struct):
    id: str
    path: str | None = None


_reported_decoder = msgspec.json.Decoder(_ReportedCheckpoint)


def key_of(request: web.Request) -> ArtifactKey:
    """The run and checkpoint ids of the path; 422 naming each one that is not a safe id."""
    ids = {name: request.match_info[name] for name in ("run_id", "checkpoint_id")}
    problems = {name: [ID_RULE] for name, value in ids.items() if not SAFE_ID.fullmatch(value)}
    if problems:
        first = next(iter(problems))
        raise validation_error(f"{first} {ID_RULE}", problems)
    return ArtifactKey(ids["run_id"], ids["checkpoint_id"])


def checkpoint_file(key: ArtifactKey, upload: Upload) -> CheckpointFile:
    return CheckpointFile(
        id=key.checkpoint_id,
        run_id=key.run_id,
        size=upload.size,
        sha256=upload.sha256,
        uploaded_at=upload.uploaded_at,
        download_url=f"/api/v1/runs/{key.run_id}/checkpoints/{key.checkpoint_id}/download",
    )


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """The store's failures as answers: unsafe paths are 500 (and logged), the rest 503 to retry."""
    try:
        yield
    except UnsafePath as exc:
        logger.error("artifact store: %s", exc)  # where and what: for the operator, not the client
        raise ApiError(
            500, "storage_error", "the artifact store holds something unexpected at this path (a symlink?): refused"
        ) from None
    except StorageError as exc:
        logger.warning("artifact store: %s", exc)
        raise ApiError(503, "unavailable", f"the artifact store failed: {exc}", headers={"Retry-After": "1"}) from None


def _run_of(request: web.Request, key: ArtifactKey) -> Run:
    return found(state_of(request).runs, key.run_id, run_missing(key.run_id).message)


def _claimed_sha256(request: web.Request) -> str | None:
    value = request.headers.get(SHA256_HEADER)
    if value is None:
        return None
    if not _SHA256_HEX.fullmatch(value.strip()):
        raise validation_error(
            f"{SHA256_HEADER} must be 64 hexadecimal digits", {SHA256_HEADER: ["must be 64 hexadecimal digits"]}
        )
    return value.strip().lower()


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"the checkpoint is larger than {limit} bytes")


@routes.put(CHECKPOINT)
@requires("ingest", limit="write")
async def upload_checkpoint(request: web.Request) -> web.Response:
    """Upload a checkpoint's file: the raw bytes as the body (optional X-Content-SHA256 to verify)."""
    key = key_of(request)
    _run_of(request, key)  # before a byte of the body is read
    claimed = _claimed_sha256(request)
    limit = request.app[SETTINGS].checkpoint_max_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    with storage_errors():
        try:
            staged = await request.app[ARTIFACTS].receive(key, request.content.iter_any(), limit)
        except TooLarge:
            raise _too_large(limit) from None
    try:
        if claimed is not None and claimed != staged.sha256:
            raise validation_error(
                f"the body's SHA-256 is {staged.sha256}, not the {SHA256_HEADER} sent; nothing was kept",
                {SHA256_HEADER: [f"does not match the body (sha256 {staged.sha256})"]},
            )
        async with request.app[CHECKPOINT_LOCKS].hold(key):
            return await _place(request, key, staged)
    finally:
        with storage_errors():
            await staged.discard()  # nothing once committed


async def _place(request: web.Request, key: ArtifactKey, staged: Staged) -> web.Response:
    """Put the staged file in place and record it, unless the checkpoint already has a file."""
    run = _run_of(request, key)  # again: the run may have gone while the body streamed
    actor = principal_of(request).key.id
    # The body's fingerprint for Idempotency-Key is its size and hash, not its bytes.
    ref = request_ref(request, actor, f"{staged.size} {staged.sha256}".encode())
    retried = ref is not None and ref.key in state_of(request).requests
    existing = run.uploads.get(key.checkpoint_id)
    if existing is not None and not retried:
        if existing.sha256 != staged.sha256:
            raise ApiError(
                409,
                "conflict",
                f"checkpoint {key.checkpoint_id} of run {key.run_id} already has another file"
                f" (sha256 {existing.sha256}); nothing was replaced",
            )
        return json_response({"data": checkpoint_file(key, existing)})

    def uploaded(envelope: Envelope) -> CheckpointUploaded:
        return CheckpointUploaded(
            **envelope.fields(),
            run_id=key.run_id,
            experiment_id=run.experiment_id,
            reported_at=envelope.at,
            checkpoint_id=key.checkpoint_id,
            size=staged.size,
            sha256=staged.sha256,
        )

    if not retried:  # a retry's first attempt placed its file already
        with storage_errors():
            await staged.commit()
    try:
        done = await submit(request.app[LOG], request.app[PROJECTOR], uploaded, actor, ref)
    except ApiError as error:
        # Refused by the fold (the run or its experiment went meanwhile): the file is no
        # checkpoint's. On 503 the event may be in the log, so the file stays.
        if not retried and error.status in (404, 409):
            with storage_errors():
                await request.app[ARTIFACTS].remove(key)
        raise
    upload = done.state.runs[key.run_id].uploads[key.checkpoint_id]
    return done_response(done, checkpoint_file(key, upload), 201)


@routes.get(CHECKPOINT + "/download")
@requires("read")
async def download_checkpoint(request: web.Request) -> web.StreamResponse:
    """Download a checkpoint's file (Range, If-None-Match and HEAD supported)."""
    key = key_of(request)
    run = _run_of(request, key)
    upload = found(
        run.uploads, key.checkpoint_id, f"checkpoint {key.checkpoint_id} of run {key.run_id} has no uploaded file"
    )
    etag = entity_tag(upload.sha256)
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "private, no-cache"}
    if none_match(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    span = requested_span(request.headers, upload.size, etag)
    extension = safe_extension(await _reported_path(request, run, key.checkpoint_id))
    headers["Content-Disposition"] = attachment(key.checkpoint_id + extension)
    with storage_errors():
        stored = await request.app[ARTIFACTS].open(key)
    if stored is None or stored.size != upload.size:
        found_size = "missing" if stored is None else f"{stored.size} bytes, not {upload.size}"
        logger.error("artifact store: the file of %s/%s is %s", key.run_id, key.checkpoint_id, found_size)
        if stored is not None:
            await stored.close()
        raise ApiError(500, "storage_error", f"the file of checkpoint {key.checkpoint_id} is {found_size}")
    try:
        return await send_file(request, stored, span, headers)
    finally:
        await stored.close()


async def _reported_path(request: web.Request, run: Run, checkpoint_id: str) -> str | None:
    """The path the worker reported for the checkpoint (`crucible.run.checkpoint`), latest first;
    None when it reported none or the warehouse does not answer: the name is a nicety."""
    parameters: dict[str, Any] = {"experiment_ids": [run.experiment_id], "run_ids": [run.id]}
    try:
        body = await request.app[WAREHOUSE].query("run_checkpoints", parameters)
    except WarehouseError:
        return None
    rows = [_reported_decoder.decode(line) for line in body.splitlines() if line]
    paths = [row.path for row in rows if row.id == checkpoint_id]
    return paths[-1] if paths else None
