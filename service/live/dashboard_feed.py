"""What the `dashboard:<user>` channel pushes: system figures and the experiments' summary.

Host and process figures come from psutil. GPU utilization comes from NVML when the
`pynvml` module (package nvidia-ml-py) is installed and a GPU answers, else it is null.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from typing import Any

import psutil

from schemas.live import ExperimentSummary, ProcessStats, SystemStats
from service.resources.fold import Resources

logger = logging.getLogger(__name__)

ACTIVE_STATUS = "running"
COMPLETED_STATUS = "completed"


class SystemSampler:
    """Samples the figures of `system_stats`; CPU percentages are since the previous sample."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._gpus = _nvml_devices()
        # psutil measures CPU between two calls: the first one only starts the clock.
        psutil.cpu_percent(interval=None)
        self._process.cpu_percent(interval=None)

    def sample(self) -> SystemStats:
        memory = self._process.memory_info()
        return SystemStats(
            cpu=psutil.cpu_percent(interval=None),
            memory=psutil.virtual_memory().percent,
            gpu=self._gpu_percent(),
            process=ProcessStats(
                cpu=self._process.cpu_percent(interval=None),
                memory=round(self._process.memory_percent(), 2),
                rss_bytes=memory.rss,
            ),
        )

    def _gpu_percent(self) -> float | None:
        """Mean utilization of the GPUs; None without any (or when NVML stops answering)."""
        if not self._gpus:
            return None
        nvml, handles = self._gpus
        try:
            rates = [nvml.nvmlDeviceGetUtilizationRates(handle).gpu for handle in handles]
        except Exception as exc:  # NVML raises its own error classes
            logger.warning("NVML stopped answering, GPU figures are off: %s", exc)
            self._gpus = None
            return None
        return float(sum(rates)) / len(rates)


def _nvml_devices() -> tuple[Any, list[Any]] | None:
    """(the pynvml module, a handle per GPU), or None when there is no NVML or no GPU."""
    try:
        import pynvml  # type: ignore[import-not-found]  # optional: nvidia-ml-py
    except ImportError:
        return None
    with contextlib.suppress(Exception):
        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        if handles:
            return pynvml, handles
    return None


def experiment_summary(state: Resources, now: dt.datetime) -> ExperimentSummary:
    """Running experiments, and those completed since midnight UTC of `now`."""
    midnight = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    active = completed_today = 0
    for experiment in state.experiments.values():
        if experiment.status == ACTIVE_STATUS:
            active += 1
        elif (
            experiment.status == COMPLETED_STATUS
            and experiment.completed_at is not None
            and experiment.completed_at >= midnight
        ):
            completed_today += 1
    return ExperimentSummary(active=active, completed_today=completed_today)
