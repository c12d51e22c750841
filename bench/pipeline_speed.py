"""Side by side on this box: the synchronous loop (max_staleness 0) against the pipeline (max_staleness 1, ...).

    python bench/pipeline_speed.py --warm-start DIR [--steps 60] [--staleness 0 1] [--eval-every 20] [--out DIR]
        [key=value ...]   (extra overrides for every run, e.g. training.learning_rate=1e-4)

Each setting runs ``python -m rlvr_ray.main --config-name train_rlvr_model`` from the same warm start, one after the
other, while a sampler reads /proc/stat. From each run's MLflow metrics it reports RL steps per second (over train
time, held-out eval excluded), the CPU busy fraction during plain steps (windows of steps without eval), the mean
time the learner waited on the other stages, and the held-out accuracy at each eval step (the curves). It writes
``pipeline_speed.json`` and ``pipeline_speed.png`` under ``--out`` and prints a table with the speed-up ratios.
Only ratios from one box, one sitting, mean anything.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class CpuSampler(threading.Thread):
    """Samples /proc/stat every ``every_s`` seconds: (wall time, busy, total)."""

    def __init__(self, every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every_s, self.samples, self.stop = every_s, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.time(), *cpu_times()))
            time.sleep(self.every_s)


def busy_fraction(samples: list[tuple[float, float, float]], windows: list[tuple[float, float]]) -> float:
    """Busy share of all cores over the sample intervals that lie inside the windows.

    >>> busy_fraction([(0, 0, 0), (1, 1, 2), (2, 3, 4), (3, 3, 6)], [(0, 2)])
    0.75
    """
    busy = total = 0.0
    for (t0, b0, n0), (t1, b1, n1) in itertools.pairwise(samples):
        if any(start <= t0 and t1 <= stop for start, stop in windows):
            busy, total = busy + b1 - b0, total + n1 - n0
    return busy / total if total else float("nan")


def plain_step_spans(timestamps: dict[int, float], eval_steps: set[int]) -> list[tuple[float, float, int]]:
    """(log time of step a, log time of step b, b - a) for each pair of consecutive logged steps a < b whose span
    holds no eval. With ``training.log_every`` above 1 a span covers several steps; an eval step is always logged,
    so a span that holds one ends on it.

    >>> plain_step_spans({0: 1.0, 1: 2.0, 2: 3.5, 3: 4.0, 4: 4.5}, {2})
    [(1.0, 2.0, 1), (3.5, 4.0, 1), (4.0, 4.5, 1)]
    >>> plain_step_spans({0: 1.0, 10: 3.0, 15: 5.0, 20: 6.0}, {15})
    [(1.0, 3.0, 10), (5.0, 6.0, 5)]
    """
    pairs = itertools.pairwise(sorted(timestamps))
    return [(timestamps[a], timestamps[b], b - a) for a, b in pairs if b not in eval_steps]


def plain_step_windows(timestamps: dict[int, float], eval_steps: set[int]) -> list[tuple[float, float]]:
    """The plain step spans with adjacent ones merged (a CPU sample, 0.5 s, is longer than one step of the
    pipelined loop, so it must be able to span several steps).

    >>> plain_step_windows({0: 1.0, 1: 2.0, 2: 3.5, 3: 4.0, 4: 4.5}, {2})
    [(1.0, 2.0), (3.5, 4.5)]
    """
    windows: list[tuple[float, float]] = []
    for start, stop, _ in plain_step_spans(timestamps, eval_steps):
        if windows and windows[-1][1] == start:
            windows[-1] = (windows[-1][0], stop)
        else:
            windows.append((start, stop))
    return windows


def wall_steps_per_s(timestamps: dict[int, float], eval_steps: set[int]) -> float:
    """Plain steps per wall second, from the log time of each step (logging and the other off-clock work of a
    plain step count; eval steps do not).

    >>> wall_steps_per_s({0: 1.0, 1: 2.0, 2: 3.5, 3: 4.0, 4: 4.5}, {2})
    1.5
    >>> wall_steps_per_s({0: 1.0, 10: 3.0, 15: 5.0, 20: 6.0}, {15})
    5.0
    """
    spans = plain_step_spans(timestamps, eval_steps)
    return sum(steps for _, _, steps in spans) / sum(stop - start for start, stop, _ in spans)


def train_steps_per_s(train_s: dict[int, float]) -> float:
    """RL steps per train second between the first and the last logged step (``time/train_s`` by step).

    >>> train_steps_per_s({0: 0.5, 10: 3.0, 20: 5.5, 30: 8.0})
    4.0
    """
    first, last = min(train_s), max(train_s)
    return (last - first) / (train_s[last] - train_s[first])


def run_setting(args: argparse.Namespace, staleness: int) -> dict[str, Any]:
    out = Path(args.out) / f"staleness_{staleness}"
    db = Path(args.out).resolve() / f"mlflow_{staleness}.db"
    command = [
        sys.executable, "-m", "rlvr_ray.main", "--config-name", args.config_name,
        f"model.init_dir={Path(args.warm_start).resolve()}", f"output_dir={out.resolve()}", "resume=false",
        f"training.max_staleness={staleness}", f"training.ppo_steps={args.steps}",
        f"training.eval_every={args.eval_every}", f"training.checkpoint_every={args.steps}",
        f"tracking.tracking_uri=sqlite:///{db}", *args.overrides,
    ]  # fmt: skip
    sampler = CpuSampler()
    sampler.start()
    started = time.time()
    proc = subprocess.run(command, capture_output=True, text=True)
    sampler.stop.set()
    if proc.returncode != 0:
        raise SystemExit(f"error: run with max_staleness={staleness} failed:\n{proc.stderr[-3000:]}")
    return summarise(staleness, f"sqlite:///{db}", out, sampler.samples, time.time() - started)


def summarise(staleness: int, uri: str, out: Path, samples: list, wall_s: float) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run_id = (out / "mlflow_run_id").read_text().strip()

    def series(key: str) -> list[Any]:
        return sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)

    train = series("time/train_s")
    evals = series("eval/accuracy")
    stamps = {m.step: m.timestamp / 1000 for m in train}
    windows = plain_step_windows(stamps, {m.step for m in evals})
    waits = [m.value for m in series("async/learner_wait_s")]
    return {
        "max_staleness": staleness,
        "steps": train[-1].step + 1,
        "train_s": train[-1].value,
        "steps_per_s": train_steps_per_s({m.step: m.value for m in train}),
        "wall_steps_per_s": wall_steps_per_s(stamps, {m.step for m in evals}),
        "cpu_busy_plain_steps": busy_fraction(samples, windows),
        "learner_wait_s_mean": sum(waits) / len(waits),
        "staleness_max": max(m.value for m in series("async/staleness_max")),
        "eval_curve": [(m.step + 1, m.value) for m in evals],
        "wall_s": wall_s,
        "cores": os.cpu_count(),
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        steps, acc = zip(*r["eval_curve"], strict=True)
        ax.plot(steps, acc, marker="o", label=f"max_staleness={r['max_staleness']}")
    ax.set_xlabel("RL step")
    ax.set_ylabel("held-out accuracy (mean over eval complexities)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def table(results: list[dict[str, Any]]) -> str:
    """Steps/s over train time and over the wall time of plain steps (logging included), each with its ratio."""
    base, wall_base = results[0]["steps_per_s"], results[0]["wall_steps_per_s"]
    lines = ["max_staleness  steps/s  vs first  wall steps/s  vs first  cpu busy  learner wait s  final held-out"]
    for r in results:
        lines.append(
            f"{r['max_staleness']:>13}  {r['steps_per_s']:7.3f}  {r['steps_per_s'] / base:7.2f}x  "
            f"{r['wall_steps_per_s']:12.3f}  {r['wall_steps_per_s'] / wall_base:7.2f}x  "
            f"{r['cpu_busy_plain_steps']:8.2f}  {r['learner_wait_s_mean']:14.2f}  {r['eval_curve'][-1][1]:14.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm-start", required=True, help="policy directory to start every run from")
    parser.add_argument("--config-name", default="train_rlvr_model")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--staleness", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default="outputs/bench_pipeline")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if not (Path(args.warm_start) / "model.safetensors").is_file():
        print(
            f"error: --warm-start {args.warm_start} is not a policy directory (no model.safetensors)", file=sys.stderr
        )
        return 2
    Path(args.out).mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    results = [run_setting(args, k) for k in args.staleness]
    report = {"results": results, "load_before": load, "load_after": os.getloadavg(), "argv": sys.argv[1:]}
    (Path(args.out) / "pipeline_speed.json").write_text(json.dumps(report, indent=2))
    plot(results, Path(args.out) / "pipeline_speed.png")
    print(table(results))
    print(f"load average before {load}, after {report['load_after']}; details in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
