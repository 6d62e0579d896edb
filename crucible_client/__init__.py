"""Python client for workers of the Crucible telemetry service.

    from crucible_client import Client

    with Client("http://127.0.0.1:4000", api_key) as client:
        with client.start_run("exp_abc123", {"lr": 3e-4}, total_steps=1000) as run:
            for step in range(1000):
                run.log_metrics(step, loss=loss)

Logging calls only queue events; the client's threads batch, send, retry and spool them.
"""

from crucible_client.client import Client
from crucible_client.errors import CheckpointUploadError, ClientClosed
from crucible_client.run import Run
from crucible_client.stats import ClientStats

__all__ = ["CheckpointUploadError", "Client", "ClientClosed", "ClientStats", "Run"]
