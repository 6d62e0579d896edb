"""`crucible migrate` as a user runs it."""

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
