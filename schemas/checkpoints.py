"""A checkpoint's uploaded file, as PUT /api/v1/runs/:id/checkpoints/:checkpoint_id answers it."""

from __future__ import annotations

import datetime as dt

import msgspec


class CheckpointFile(msgspec.Struct, kw_only=True):
    """The file held for a checkpoint: its size, SHA-256 (also its download's ETag) and where to get it."""

    id: str
    run_id: str
    size: int
    sha256: str
    uploaded_at: dt.datetime
    download_url: str
