"""The official `phoenix` JavaScript client (npm, pinned in tests/js) against a real `crucible serve`.

tests/js/phoenix_check.mjs connects, joins every kind of channel, causes events through
the REST API and checks each push; this test starts the server and runs it with Node.
`npm ci --prefix tests/js` installs the client (.ci/run does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServerProcess, create_admin_key, free_port

pytestmark = pytest.mark.slow

JS_DIR = Path(__file__).parents[1] / "js"
SCRIPT = JS_DIR / "phoenix_check.mjs"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    data_dir = tmp_path / "data"
    secret = create_admin_key(["--data-dir", str(data_dir)])
    process = ServerProcess(["serve", "--data-dir", str(data_dir)], free_port(), log=tmp_path / "serve.log")
    try:
        process.start()
        yield process, secret
    finally:
        process.stop()
        assert process.log is not None
        print(f"--- serve.log ---\n{process.log.read_text()[-3000:]}")


def test_the_phoenix_javascript_client_works_unchanged(server: tuple[ServerProcess, str]) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the phoenix JavaScript client cannot run here")
    assert (JS_DIR / "node_modules" / "phoenix").is_dir(), f"run `npm ci --prefix {JS_DIR}` first (.ci/run does)"
    process, secret = server
    done = subprocess.run(
        [node, str(SCRIPT)],
        cwd=JS_DIR,
        env={**os.environ, "CRUCIBLE_URL": process.url, "CRUCIBLE_KEY": secret},
        capture_output=True,
        text=True,
        timeout=180,
    )
    print(done.stdout)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "ok: the phoenix client works" in done.stdout
