"""The training-framework integrations: what reporting to Crucible adds to a training step.

    python benchmarks/integrations.py [--steps 500] [--runs 3] [--frameworks lightning huggingface]

Needs the extras: `pip install torch==<a CPU build>` first, then
`pip install '.[lightning,huggingface]'`. Starts `crucible serve` on a fresh temporary
data dir and creates an experiment; then, for each framework, trains a tiny model on CPU
for --steps steps without the integration (A) and with it (B), alternated (A B, B A,
A B...), --runs times each, in this one process, after an unmeasured A and B; torch on
--torch-threads threads (1: a model this small gains nothing from more, and the other
core is left to the client's threads and the server):

- Lightning: a two-layer MLP (16 -> 64 -> 1, batches of 32), `self.log` every step and
  `log_every_n_steps=1`; A is `logger=False`, B `logger=CrucibleLogger(...)`.
- Transformers: a one-layer BERT of width 32 (vocabulary 100, sequences of 16, batches
  of 8, built from its config), `logging_steps=1`; A has no reporting callback
  (`report_to="none"`), B `callbacks=[CrucibleCallback(...)]`.

Every step is logged, the most an integration can be asked to report; no checkpoints (a
save costs the framework's own write, and the upload runs on the client's thread). A
step's time is the mean interval between the ends of steps, the first --warmup-steps
left out, so setup and teardown are not in it. After each B run the client flushes,
outside the timing, so its sending does not overlap the next run. The machine's idle
cores over each run are printed beside it (the machine is shared). Asserts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models are built from configs: never ask the Hub

from _support import AUTH_HEADERS, CpuMeter, print_table, result_header, start_server  # also sets sys.path

from crucible_client import Client


class Hook:
    """Time spent inside an integration's per-step hook (log_metrics, on_log): its own cost,
    apart from what the framework does for any logger."""

    def __init__(self) -> None:
        self.calls = 0
        self.seconds = 0.0

    def timed(self, call: Callable[[], object]) -> None:
        started = time.perf_counter()
        call()
        self.seconds += time.perf_counter() - started
        self.calls += 1


# (steps, client or None for a run without the integration, experiment) -> step end times, hook
StepTimer = Callable[[int, Client | None, str], tuple[list[float], Hook]]


def lightning_steps(steps: int, client: Client | None, experiment_id: str) -> tuple[list[float], Hook]:
    import torch
    from lightning.pytorch import Callback, LightningModule, Trainer
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from crucible_client.integrations.lightning import CrucibleLogger

    class Mlp(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))

        def training_step(self, batch: list[torch.Tensor], batch_index: int) -> torch.Tensor:
            inputs, targets = batch
            loss = F.mse_loss(self.net(inputs), targets)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class StepEnds(Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
            self.times.append(time.perf_counter())

    hook = Hook()

    class TimedLogger(CrucibleLogger):
        def log_metrics(self, metrics: Any, step: int | None = None) -> None:
            hook.timed(lambda: super(TimedLogger, self).log_metrics(metrics, step))

    torch.manual_seed(0)
    inputs = torch.randn(steps * 32, 16)
    ends = StepEnds()
    trainer = Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=TimedLogger(experiment_id, client) if client is not None else False,
        callbacks=[ends],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tempfile.gettempdir(),
    )
    trainer.fit(Mlp(), DataLoader(TensorDataset(inputs, inputs.sum(dim=1, keepdim=True)), batch_size=32))
    return ends.times, hook


def transformers_steps(steps: int, client: Client | None, experiment_id: str) -> tuple[list[float], Hook]:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from crucible_client.integrations.huggingface import CrucibleCallback

    class Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
        def __init__(self, size: int) -> None:
            self.ids = torch.randint(1, 100, (size, 16), generator=torch.Generator().manual_seed(0))

        def __len__(self) -> int:
            return len(self.ids)

        def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
            ids = self.ids[index]
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": (ids[0] > 50).long()}

    class StepEnds(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.times.append(time.perf_counter())

    hook = Hook()

    class TimedCallback(CrucibleCallback):
        def on_log(self, *args: Any, **kwargs: Any) -> None:
            hook.timed(lambda: super(TimedCallback, self).on_log(*args, **kwargs))

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=2,
    )
    with tempfile.TemporaryDirectory(prefix="crucible-bench-hf-") as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            max_steps=steps,
            per_device_train_batch_size=8,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
        )
        ends = StepEnds()
        callbacks: list[TrainerCallback] = [ends]
        if client is not None:
            callbacks.append(TimedCallback(experiment_id, client))
        trainer = Trainer(
            model=BertForSequenceClassification(config), args=args, train_dataset=Tokens(steps * 8), callbacks=callbacks
        )
        trainer.remove_callback(PrinterCallback)  # it prints every log to the console: not the cost measured here
        trainer.train()
    return ends.times, hook


FRAMEWORKS: dict[str, StepTimer] = {"lightning": lightning_steps, "huggingface": transformers_steps}


def timed_run(
    timer: StepTimer, steps: int, warmup: int, client: Client | None, experiment_id: str, pid: int
) -> dict[str, Any]:
    meter = CpuMeter(pid).start()
    ends, hook = timer(steps, client, experiment_id)
    used = meter.stop()
    if client is not None:
        client.flush(timeout=120)  # its sending is over before the next run starts
    measured = ends[warmup:]
    intervals = [later - earlier for earlier, later in itertools.pairwise(measured)]
    return {
        "integration": client is not None,
        "step_us": 1e6 * (measured[-1] - measured[0]) / len(intervals),
        "step_p50_us": 1e6 * statistics.median(intervals),
        "hook_calls": hook.calls,
        "hook_us_per_call": 1e6 * hook.seconds / hook.calls if hook.calls else None,
        "seconds": used["wall_s"],
        "machine_idle_cores": used["machine_idle_cores"],
        "server_cores": used["server_cores"],
    }


def create_experiment(base: str, name: str) -> str:
    request = urllib.request.Request(
        f"{base}/api/v1/experiments",
        data=json.dumps({"experiment": {"name": name}}).encode(),
        headers={**AUTH_HEADERS, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return str(json.load(answer)["data"]["id"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.torch_threads)
    root = Path(tempfile.mkdtemp(prefix="crucible-bench-integrations-"))
    result = result_header(
        "integrations", steps=args.steps, warmup_steps=args.warmup_steps, torch_threads=torch.get_num_threads()
    )
    server = start_server(root / "data", root / "server.log")
    assert server.process is not None
    pid = server.process.pid
    key = AUTH_HEADERS["Authorization"].removeprefix("Bearer ")
    try:
        with Client(server.url, key, spool_dir=root / "spool") as client:
            experiment_id = create_experiment(server.url, "integrations benchmark")
            for framework in args.frameworks:
                timer = FRAMEWORKS[framework]
                print(f"{framework}: warm-up, without and with the integration", flush=True)
                timer(args.steps, None, experiment_id)
                timer(args.steps, client, experiment_id)
                client.flush(timeout=120)
                runs = []
                for number in range(args.runs):
                    order = (None, client) if number % 2 == 0 else (client, None)
                    for reporter in order:
                        label = "with" if reporter is not None else "without"
                        print(f"{framework} run {number + 1}: {label} the integration", flush=True)
                        measured = timed_run(timer, args.steps, args.warmup_steps, reporter, experiment_id, pid)
                        runs.append(measured)
                result[framework] = summarize(runs)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return result


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs, and each pair's overhead: B's step time minus A's, in µs and in % of A."""
    without = [r for r in runs if not r["integration"]]
    with_it = [r for r in runs if r["integration"]]
    pairs = list(zip(without, with_it, strict=True))
    overheads = [b["step_us"] - a["step_us"] for a, b in pairs]
    shares = [100 * (b["step_us"] / a["step_us"] - 1) for a, b in pairs]
    # The median step is less moved by a preempted step than the mean on a shared machine.
    p50_overheads = [b["step_p50_us"] - a["step_p50_us"] for a, b in pairs]
    return {
        "runs": runs,
        "overhead_us": overheads,
        "overhead_percent": shares,
        "p50_overhead_us": p50_overheads,
        "median_overhead_us": statistics.median(overheads),
        "median_overhead_percent": statistics.median(shares),
        "median_p50_overhead_us": statistics.median(p50_overheads),
    }


def report(result: dict[str, Any], frameworks: list[str]) -> None:
    for framework in frameworks:
        summary = result[framework]
        print(f"\n{framework}, {result['steps']} steps a run ({result['warmup_steps']} left out):")
        rows = [
            [
                "with" if r["integration"] else "without",
                r["step_us"],
                r["step_p50_us"],
                r["hook_us_per_call"],
                r["seconds"],
                f"{r['machine_idle_cores']:.2f}",
                f"{r['server_cores']:.2f}",
            ]
            for r in summary["runs"]
        ]
        header = ["integration", "µs/step", "p50 µs/step", "µs in its hook", "run s", "idle cores", "server cores"]
        print_table(header, rows)
        pairs = ", ".join(
            f"{us:+.1f} µs ({share:+.1f} %)"
            for us, share in zip(summary["overhead_us"], summary["overhead_percent"], strict=True)
        )
        print(f"overhead per step, by pair: {pairs}; median {summary['median_overhead_us']:+.1f} µs")
        p50s = ", ".join(f"{us:+.1f} µs" for us in summary["p50_overhead_us"])
        print(f"overhead of the median step, by pair: {p50s}; median {summary['median_p50_overhead_us']:+.1f} µs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="training steps of each run")
    parser.add_argument("--warmup-steps", type=int, default=50, help="first steps of each run left out")
    parser.add_argument("--runs", type=int, default=3, help="runs with and without the integration each")
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="torch's threads (1: a tiny model gains nothing from more)"
    )
    parser.add_argument("--frameworks", nargs="+", choices=sorted(FRAMEWORKS), default=["lightning", "huggingface"])
    args = parser.parse_args()
    result = run(args)
    report(result, args.frameworks)
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
