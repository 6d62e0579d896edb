"""Checkpoint uploads that survive the framework deleting or replacing the file meanwhile.

`Run.checkpoint` streams the file from disk on the client's upload thread and needs it
unchanged until then, while training goes on: Lightning deletes the checkpoints that fall
out of its top k and replaces `last.ckpt` (it writes a new file and renames it over the
old one), Transformers deletes checkpoint directories beyond `save_total_limit`, and
uploads wait their turn on one thread. A hard link in a directory of our own keeps the
bytes that were saved, at no cost in time or space while the framework keeps its file,
until the upload is done; then the link goes. Where no link can be made (another file
system, or one without hard links), the file itself is uploaded, as `Run.checkpoint` does.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from crucible_client.run import Run

logger = logging.getLogger("crucible_client")

STAGING_PREFIX = ".crucible-upload-"


def upload_checkpoint(run: Run, path: Path, stage_in: Path, epoch: float, metrics: dict[str, float]) -> Future[Any]:
    """Upload `path` as a checkpoint of `run` from a hard link in a new directory under
    `stage_in` (on the file's file system, and out of reach of the framework's clean-ups),
    removed once the upload has succeeded or failed (kept when close() leaves it to the
    next client)."""
    try:
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=stage_in))
    except OSError as exc:
        logger.warning("checkpoint %s: no staging directory in %s (%s): uploading the file itself", path, stage_in, exc)
        return _submit(run, path, epoch, metrics)
    link = staging / path.name
    try:
        os.link(path, link)
    except OSError as exc:
        logger.info("checkpoint %s: no hard link possible (%s): uploading the file itself", path, exc)
        shutil.rmtree(staging, ignore_errors=True)
        return _submit(run, path, epoch, metrics)
    try:
        upload = _submit(run, link, epoch, metrics)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    upload.add_done_callback(lambda done: _unstage(done, staging))
    return upload


def _unstage(upload: Future[Any], staging: Path) -> None:
    # An upload cancelled by close() stays in the spool's upload journal, and the next
    # client reads the file from this link: it must outlive this process then.
    if not upload.cancelled():
        shutil.rmtree(staging, ignore_errors=True)


def _submit(run: Run, path: Path, epoch: float, metrics: dict[str, float]) -> Future[Any]:
    # Run.checkpoint types the epoch as an int; Transformers' epochs are fractions (1.5 is
    # halfway through the second), which the service keeps as they are.
    return run.checkpoint(path, epoch, **metrics)  # type: ignore[arg-type]
