"""API key secrets and session tokens: how they are made, stored and checked.

A key's secret is `crucible.<key id>.<random>`; only its SHA-256 is stored (in the
`ApiKeyCreated` event). A secret has 256 random bits, so a fast hash is enough,
and the key id inside it finds the one stored hash to compare, in constant time.

A session token is `<payload>.<HMAC-SHA256>` where the payload names the session,
its key and its expiry. It is valid while the key is and until it expires or the
session logs out (`SessionEnded`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from service.resources.fold import ApiKey, Resources

SECRET_PREFIX = "crucible"
SCOPES = ("read", "write", "ingest", "admin")
SESSION_COOKIE = "_crucible_ui_key"


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def new_secret(key_id: str) -> str:
    return f"{SECRET_PREFIX}.{key_id}.{secrets.token_urlsafe(32)}"


def secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_for_secret(state: Resources, secret: str) -> ApiKey | None:
    """The live key whose secret this is, or None."""
    prefix, _, rest = secret.partition(".")
    key_id, _, _ = rest.partition(".")
    if prefix != SECRET_PREFIX:
        return None
    key = state.api_keys.get(key_id)
    if key is None or key.revoked_at is not None:
        return None
    if not hmac.compare_digest(key.secret_sha256, secret_sha256(secret)):
        return None
    return key


class SessionClaims(msgspec.Struct, array_like=True, frozen=True):
    session_id: str
    key_id: str
    expires: int  # Unix seconds


_claims_encoder = msgspec.json.Encoder()
_claims_decoder = msgspec.json.Decoder(SessionClaims)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class SessionSigner:
    """Signs and checks session tokens with one server secret."""

    secret: bytes

    def issue(self, key_id: str, ttl_seconds: int) -> tuple[str, SessionClaims]:
        claims = SessionClaims("ses_" + secrets.token_hex(12), key_id, int(time.time()) + ttl_seconds)
        payload = _b64(_claims_encoder.encode(claims))
        return f"{payload}.{self._sign(payload)}", claims

    def verify(self, token: str) -> SessionClaims | None:
        """The token's claims if its signature is ours and it has not expired."""
        payload, _, signature = token.partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return None
        try:
            claims = _claims_decoder.decode(_unb64(payload))
        except (ValueError, msgspec.DecodeError):
            return None
        return claims if claims.expires > time.time() else None

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.secret, payload.encode(), hashlib.sha256).digest())


def load_session_secret(configured: str | None, data_dir: Path) -> bytes:
    """The configured secret (shared by every replica), else one kept in the data dir."""
    if configured:
        return configured.encode()
    path = data_dir / "session.secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        write_private(path, secrets.token_hex(32) + "\n")
    return path.read_text().strip().encode()


def write_private(path: Path, text: str) -> None:
    """Create `path` readable by its owner only (0600) before anything is written to it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


ANY_SCOPE = "any"  # any valid key or session, whatever its scopes


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an API key, directly or through a session."""

    key: ApiKey
    session_id: str | None = None
    session_expires: int | None = None  # Unix seconds, for a session

    def allows(self, scope: str) -> bool:
        return scope == ANY_SCOPE or scope in self.key.scopes or "admin" in self.key.scopes
