"""HTTP to the service: one keep-alive connection pool (urllib3), answers sorted into outcomes.

An answer is `accepted` (2xx), `rejected` (a 4xx that the same request would get again:
not retried) or `retry`: no answer at all, 5xx, 408, 429, and 401/403 too, since a key
can be fixed and the events are kept until then rather than thrown away.
"""

from __future__ import annotations

import random
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import urllib3

from crucible_client.wire import Batch
from schemas.telemetry import IngestResponse

INGEST_PATH = "/api/v1/telemetry/events"
RETRIED_STATUSES = frozenset({401, 403, 408, 425, 429})
UPLOAD_BLOCK_BYTES = 1 << 20
USER_AGENT = "crucible-client/0.1"
ERROR_TEXT_CHARS = 1000  # of an error answer, in the log

OutcomeKind = Literal["accepted", "rejected", "retry"]

_ingest_response = msgspec.json.Decoder(IngestResponse)


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    status: int | None  # None: no answer (connection refused, reset, timeout)
    detail: str = ""
    retry_after: float | None = None  # seconds, from the Retry-After header
    body: bytes = b""

    @property
    def reason(self) -> str:
        """What went wrong, for the log."""
        return self.detail if self.status is None else f"{self.status} {self.detail}"


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^attempt)],
    so that workers that lost the server together do not come back together."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 30)))


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None  # an HTTP date: rare for this service; the backoff applies


def _error_message(body: bytes) -> str:
    """The message and details of the API's error shape, or the start of the body."""
    try:
        error = msgspec.json.decode(body)["error"]
        message = str(error["message"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return body[:ERROR_TEXT_CHARS].decode(errors="replace")
    details = error.get("details")
    if details:
        message += " " + msgspec.json.encode(details)[:ERROR_TEXT_CHARS].decode(errors="replace")
    return message


def _outcome(response: urllib3.BaseHTTPResponse) -> Outcome:
    status = response.status
    body = response.data
    if 200 <= status < 300:
        return Outcome("accepted", status, body=body)
    kind: OutcomeKind = "retry" if status >= 500 or status in RETRIED_STATUSES else "rejected"
    return Outcome(kind, status, _error_message(body), _retry_after(response.headers.get("Retry-After")), body)


class Transport:
    """Requests to one service; safe to use from several threads (one connection each)."""

    def __init__(self, url: str, api_key: str, timeout: float, connections: int = 2) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"the service URL must be http(s)://host[:port][/prefix], not {url!r}")
        self._prefix = parsed.path.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}
        self._pool = urllib3.connection_from_url(
            f"{parsed.scheme}://{parsed.netloc}",
            maxsize=connections,
            retries=False,  # the client retries whole batches itself, with the same Idempotency-Key
            timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout),
            blocksize=UPLOAD_BLOCK_BYTES,
        )

    def _request(self, method: str, path: str, body: Any, headers: dict[str, str]) -> Outcome:
        try:
            response = self._pool.urlopen(
                method, self._prefix + path, body=body, headers={**self._headers, **headers}, redirect=False
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return Outcome("retry", None, f"{type(exc).__name__}: {exc}")
        return _outcome(response)

    def send_batch(self, batch: Batch) -> Outcome:
        """POST one batch with its Idempotency-Key (the same on every attempt)."""
        headers = {"Content-Type": "application/json", "Idempotency-Key": batch.key}
        return self._request("POST", INGEST_PATH, batch.body, headers)

    def put_checkpoint(self, run_id: str, checkpoint_id: str, path: Path, size: int, sha256: str) -> Outcome:
        """PUT a checkpoint file, streamed from disk, with its length and SHA-256."""
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
            "X-Content-SHA256": sha256,
        }
        url = f"/api/v1/runs/{urllib.parse.quote(run_id)}/checkpoints/{urllib.parse.quote(checkpoint_id)}"
        try:
            with open(path, "rb") as file:
                return self._request("PUT", url, file, headers)
        except OSError as exc:
            return Outcome("rejected", None, f"cannot read {path}: {exc}")

    def close(self) -> None:
        self._pool.close()


def ingest_result(body: bytes) -> IngestResponse | None:
    """The decoded 202 answer, or None if it is not the documented shape."""
    try:
        return _ingest_response.decode(body)
    except msgspec.DecodeError:
        return None
