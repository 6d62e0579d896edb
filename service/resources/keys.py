"""API key commands, shared by the REST endpoints, `crucible keys` and the first-run admin key."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import msgspec

from schemas.keys import ApiKeyOut
from schemas.resources import ApiKeyCreated, ApiKeyRevoked, RateLimits, RequestRef
from service.core.errors import validation_error
from service.core.ratelimit import LIMIT_CLASSES
from service.log.interface import EventLog
from service.resources.commands import Done, Envelope, submit
from service.resources.credentials import SCOPES, new_key_id, new_secret, secret_sha256, write_private
from service.resources.fold import ApiKey
from service.resources.projector import Projector

logger = logging.getLogger(__name__)

ADMIN_KEY_FILE = "admin.key"
BOOTSTRAP_ACTOR = "crucible"


def check_scopes(scopes: Sequence[str]) -> list[str]:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        problem = f"unknown scope {unknown[0]!r}" if unknown else "at least one scope is needed"
        raise validation_error(f"{problem}; scopes are {', '.join(SCOPES)}", {"scopes": [problem]})
    return sorted(set(scopes), key=SCOPES.index)


def parse_rate_limits(text: str) -> RateLimits:
    """`read=5000,ingest=1000000` (classes not named keep API.md's defaults)."""
    values: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, number = part.partition("=")
        if name not in LIMIT_CLASSES or not number.isdigit() or int(number) < 1:
            raise validation_error(
                f"bad rate limit {part!r}: use CLASS=PER_MINUTE with CLASS one of {', '.join(LIMIT_CLASSES)}",
                {"rate_limits": [f"bad rate limit {part!r}"]},
            )
        values[name] = int(number)
    return msgspec.convert(values, RateLimits)


async def create_key(
    log: EventLog,
    projector: Projector,
    name: str,
    scopes: Sequence[str],
    rate_limits: RateLimits,
    actor: str,
    ref: RequestRef | None = None,
) -> tuple[Done, str | None]:
    """Create a key; returns the command's outcome and the secret (None for a replayed request:
    the secret is shown once and never stored)."""
    key_id = new_key_id()
    secret = new_secret(key_id)

    def make_event(env: Envelope) -> ApiKeyCreated:
        return ApiKeyCreated(
            **env.fields(),
            key_id=key_id,
            name=name,
            scopes=check_scopes(scopes),
            secret_sha256=secret_sha256(secret),
            rate_limits=rate_limits,
        )

    done = await submit(log, projector, make_event, actor, ref)
    return done, None if done.replayed else secret


async def revoke_key(log: EventLog, projector: Projector, key_id: str, actor: str) -> Done:
    """Revoke a key; 409 when it is the last active admin key (the fold decides, see resources)."""
    return await submit(
        log, projector, lambda env: ApiKeyRevoked(**env.fields(), key_id=key_id, keep_an_admin=True), actor
    )


def key_out(key: ApiKey, secret: str | None = None) -> ApiKeyOut:
    return ApiKeyOut(
        id=key.id,
        name=key.name,
        scopes=sorted(key.scopes, key=SCOPES.index),
        rate_limits=key.rate_limits,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
        secret=secret,
    )


async def bootstrap_admin_key(log: EventLog, projector: Projector, data_dir: Path) -> str | None:
    """On a log with no keys at all, create an admin key, keep it in a 0600 file and return it."""
    if projector.state.api_keys:
        return None
    done, secret = await create_key(log, projector, "admin (first run)", ["admin"], RateLimits(), BOOTSTRAP_ACTOR)
    assert secret is not None
    path = data_dir / ADMIN_KEY_FILE
    write_private(path, secret + "\n")
    logger.info("created the first admin key %s; its secret is in %s", done.resource_id, path)
    return secret
