"""`crucible migrate` and `crucible status` as a user runs them."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support import ServerProcess, free_port


def migrate(data_dir: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "service", "migrate", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_migrate_applies_each_migration_once(tmp_path: Path) -> None:
    first = migrate(tmp_path)
    assert "0002_telemetry_events" in first
    assert "nothing" in migrate(tmp_path)


def test_status_prints_each_partition_on_the_embedded_default(tmp_path: Path) -> None:
    migrate(tmp_path)
    command = [sys.executable, "-m", "service", "status", "--data-dir", str(tmp_path)]
    table = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    header, partition, writers = table.stdout.splitlines()
    assert header.split() == ["partition", "log", "end", "committed", "lag", "stored", "up", "to", "stored", "events"]
    assert partition.split() == ["0", "0", "-", "0", "-", "0"]
    assert writers.startswith("writers: the embedded log")


def test_a_second_server_on_a_data_dir_in_use_says_which_process_holds_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = ServerProcess(["serve", "--data-dir", str(data_dir)], free_port(), log=tmp_path / "first.log").start()
    assert first.process is not None
    try:
        for command in (["serve", "--port", str(free_port())], ["migrate"]):
            second = subprocess.run(
                [sys.executable, "-m", "service", *command, "--data-dir", str(data_dir)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert second.returncode == 1, second.stderr
            assert "Traceback" not in second.stderr
            assert f"is in use by another crucible process (pid {first.process.pid})" in second.stderr
        # The first one is unharmed.
        with urllib.request.urlopen(first.url + "/readyz", timeout=5) as answer:
            assert answer.status == 200
    finally:
        first.stop()
    # The lock goes with its process: the directory serves again.
    assert "nothing" in migrate(data_dir)
