"""What the client raises to its caller."""

from __future__ import annotations


class ClientClosed(RuntimeError):
    """An event was logged, or a flush asked for, after `close()`."""


class CheckpointUploadError(Exception):
    """The server refused a checkpoint file, or the client closed before it could take it."""
