"""`crucible migrate` and `crucible status` as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


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
