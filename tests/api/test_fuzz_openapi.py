"""Property-based fuzzing of the whole API from its served OpenAPI document (schemathesis).

A real `crucible serve` on a free port, with an admin key whose rate limits never bind
(a 429 would hide the answer the fuzzer is looking at), is fuzzed in schemathesis's
coverage, fuzzing and stateful phases. Every answer must not be a 5xx, must have a status,
content type and body the document declares, and the server must still be ready afterwards.

Bounded for CI (two cores): FUZZ_EXAMPLES cases per operation and phase, one seed so a
failure reproduces. `CRUCIBLE_FUZZ_EXAMPLES` and `CRUCIBLE_FUZZ_SEED` widen or vary a run.
What is kept out of the run, and why, is listed in EXCLUDED.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ServerProcess, create_admin_key, free_port, serve_processes

pytest.importorskip("schemathesis", reason="the test extra installs schemathesis")
pytestmark = [pytest.mark.fuzz, pytest.mark.slow]


# 25 per operation in CI; CRUCIBLE_FUZZ_EXAMPLES=100 (the count before, ~6,700 cases, about
# 90 s) or more for a full run. The count bounds only the fuzzing phase's random cases. The
# coverage phase (each operation's boundary and invalid values, ~3,000 cases, about 10 s) and
# the stateful phase (scenarios along the document's links) do not grow with it and run
# whole (measured: the stateful phase reached no fewer operations at 25 than at 100); the fuzzing
# phase still sends each of the 45 operations 25 generated requests. The seed is fixed, so CI
# sends the same cases every run: a run with more examples or another seed explores further.
FUZZ_EXAMPLES = int(os.environ.get("CRUCIBLE_FUZZ_EXAMPLES", "25"))
FUZZ_SEED = os.environ.get("CRUCIBLE_FUZZ_SEED", "20261202")
# A run takes about 1 s per unit of FUZZ_EXAMPLES (all operations together) on two busy cores.
FUZZ_TIMEOUT_SECONDS = max(420, FUZZ_EXAMPLES * 4)
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
# What the fuzzer is kept away from, and why.
EXCLUDED = [
    # An event stream never ends: a request/response fuzzer would wait for its last byte.
    # tests/live/test_stream_api.py covers it.
    "--exclude-path",
    "/api/v1/telemetry/stream",
    # Revoking keys could lock the fuzzer out: once it has made a second admin key, it may
    # revoke the one it authenticates with. tests/http/test_auth.py and tests/http/test_security.py
    # cover revocation, the last active admin key included.
    "--exclude-operation-id",
    "revoke_api_key",
]


def _request(url: str, secret: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read() or b"null")


def _seed(url: str, secret: str) -> None:
    """Resources and telemetry for the fuzzer's reads to find: an experiment with a run that
    reported metrics, logs and a checkpoint, and a model."""
    experiment = _request(
        url + "/api/v1/experiments", secret, "POST", {"experiment": {"name": "fuzzed", "tags": ["fuzz"]}}
    )["data"]["id"]
    _request(url + "/api/v1/models", secret, "POST", {"model": {"name": "m", "provider": "p", "type": "llm"}})
    now = dt.datetime.now(dt.UTC)
    meta = {"experiment_id": experiment, "run_id": "run_fuzz"}

    def event(name: str, seconds: int, **fields: Any) -> dict[str, Any]:
        when = (now - dt.timedelta(seconds=seconds)).isoformat()
        return {"event_name": name.split("."), "timestamp": when, **fields}

    events = [
        event("crucible.run.started", 60, metadata=meta, data={"hyperparameters": {"lr": 0.1}}),
        *(
            event(
                "crucible.run.progress", 50 - i, metadata=meta, measurements={"progress": i / 10, "loss": 1 / (i + 1)}
            )
            for i in range(10)
        ),
        event("crucible.run.log", 30, metadata={**meta, "level": "info", "message": "epoch 1"}),
        event("crucible.run.checkpoint", 20, metadata={**meta, "checkpoint_id": "ckpt_1", "path": "/c/1.pt"}),
        *(
            event("crucible.model.inference", i, metadata={**meta, "model": "m"}, measurements={"duration_ms": i})
            for i in range(20)
        ),
    ]
    _request(url + "/api/v1/telemetry/events", secret, "POST", {"events": events})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """A seeded `crucible serve` and an unlimited admin key's secret."""
    tmp_path = tmp_path_factory.mktemp("fuzz")
    secret = create_admin_key(["--data-dir", str(tmp_path / "data")])
    with serve_processes(tmp_path) as make:
        server = make(free_port(), env={"CRUCIBLE_WRITER_FLUSH_SECONDS": "0.05"}).start()
        _seed(server.url, secret)
        yield server, secret


def _figures(output: str) -> str:
    """The summary lines of a schemathesis run (cases generated, failures, duration)."""
    lines = [line.strip() for line in output.splitlines()]
    return " | ".join(line for line in lines if re.search(r"\d+ generated|failures?|passed in|in \d", line))[-600:]


def test_the_api_matches_its_openapi_document_under_fuzzing(served: tuple[ServerProcess, str], tmp_path: Path) -> None:
    server, secret = served
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{server.url}/api/v1/openapi.json",
        "--header",
        f"Authorization: Bearer {secret}",
        "--checks",
        CHECKS,
        "--max-examples",
        str(FUZZ_EXAMPLES),
        "--seed",
        FUZZ_SEED,
        "--request-timeout",
        "30",
        # Every case authenticates with the key above: generated credentials would only meet 401s.
        "--generation-with-security-parameters",
        "false",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
        *EXCLUDED,
    ]
    started = time.monotonic()
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=FUZZ_TIMEOUT_SECONDS,
        cwd=tmp_path,  # its own caches (.schemathesis, .hypothesis) stay out of the checkout
        env={
            **os.environ,
            "NO_COLOR": "1",
            "SCHEMATHESIS_TELEMETRY": "false",
        },
    )
    took = time.monotonic() - started
    print(done.stdout[-6000:])  # pytest shows it with -s, or when the test failed
    print(f"schemathesis took {took:.0f} s: {_figures(done.stdout)}")
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]
    assert server.process is not None and server.process.poll() is None, "the server died under fuzzing"
    with urllib.request.urlopen(server.url + "/readyz", timeout=10) as answer:
        assert answer.status == 200
    assert _request(server.url + "/api/v1/experiments", secret)["meta"]["total"] >= 1
