"""Generation throughput of the torch engine vs the vLLM engine on the same policy and prompts, side by side.

    python bench/engine_throughput.py                      # default-size policy (~1.9M params), 64 prompts x 8
    python bench/engine_throughput.py --model-dir outputs/warm_start/policy --stop

Each engine runs in its own spawned process (one at a time, so never two vLLM engines at once) with one torch
thread, so peak RSS is per engine. By default completions do not stop at <eoe>: every engine then generates
exactly prompts x n x max_tokens tokens and the rates compare equal work (``--stop`` measures the real mix).
Tokens/s counts generated tokens only, best of ``--repeats`` timed calls after one warm-up call.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from rlvr_ray.config import ModelConfig, RolloutConfig
from rlvr_ray.types import SamplingSpec


@dataclass
class Measurement:
    engine: str
    startup_s: float
    tokens_per_s: list[float]
    peak_rss_gib: float


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="saved policy to load (default: a fresh default-size policy)")
    parser.add_argument("--prompts", type=int, default=64, help="prompts per call")
    parser.add_argument("--n", type=int, default=8, help="samples per prompt")
    parser.add_argument("--max-tokens", type=int, default=30, help="tokens per completion")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per engine")
    parser.add_argument("--stop", action="store_true", help="stop completions at <eoe>")
    parser.add_argument("--engines", default="torch,vllm", help="comma-separated engines to run, in order")
    return parser.parse_args()


def fresh_policy(out_dir: str) -> str:
    from rlvr_ray.policy import build_model, count_parameters, save_policy
    from rlvr_ray.task.vocab import Vocab

    vocab = Vocab(13, ("+", "-", "*"))
    model = build_model(ModelConfig(), vocab, seed=0)
    print(f"fresh default policy: {count_parameters(model) / 1e6:.2f}M parameters")
    return str(save_policy(model, vocab, out_dir))


def task_prompts(model_dir: str, count: int) -> list[list[int]]:
    from rlvr_ray.policy import load_vocab
    from rlvr_ray.task.prompts import PromptSampler

    sampler = PromptSampler(load_vocab(model_dir), (1, 4), prompts_per_step=count, seed=0, max_prompt_length=32)
    return sampler.sample(step=0).prompt_ids


def measure(engine: str, model_dir: str, prompts: list[list[int]], spec: SamplingSpec, repeats: int) -> Measurement:
    """Runs in a spawned child: start the engine, one warm-up call, ``repeats`` timed calls."""
    import torch

    from rlvr_ray.rollout.engine import make_engine

    torch.set_num_threads(1)
    started = time.perf_counter()
    runner = make_engine(RolloutConfig(engine=engine, torch_threads=1, max_num_seqs=512), model_dir, seed=0)
    startup_s = time.perf_counter() - started
    runner.generate(prompts, spec)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        completions = runner.generate(prompts, spec)
        rates.append(sum(len(c.token_ids) for c in completions) / (time.perf_counter() - started))
    peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux
    return Measurement(engine, startup_s, rates, peak_rss_gib)


def _child(queue: Any, *args: Any) -> None:
    queue.put(measure(*args))


def measure_in_child(*args: Any) -> Measurement:
    context = mp.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_child, args=(queue, *args))
    child.start()
    result = queue.get()
    child.join()
    return result


def report(results: list[Measurement], spec: SamplingSpec, num_prompts: int) -> None:
    stop = "<eoe>" if spec.stop_token_id >= 0 else "none"
    print(f"\n{num_prompts} prompts x n={spec.n}, max_tokens={spec.max_tokens}, stop={stop}")
    print(f"{'engine':<8}{'best tok/s':>12}{'median tok/s':>14}{'startup s':>11}{'peak RSS GiB':>14}")
    for m in results:
        print(
            f"{m.engine:<8}{max(m.tokens_per_s):>12,.0f}{statistics.median(m.tokens_per_s):>14,.0f}"
            f"{m.startup_s:>11.1f}{m.peak_rss_gib:>14.2f}"
        )
    by_name = {m.engine: max(m.tokens_per_s) for m in results}
    if {"torch", "vllm"} <= by_name.keys():
        print(f"torch / vllm throughput ratio: {by_name['torch'] / by_name['vllm']:.2f}")


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or fresh_policy(tmp)
        prompts = task_prompts(model_dir, args.prompts)
        from rlvr_ray.policy import load_vocab

        stop = load_vocab(model_dir).eoe if args.stop else -1
        spec = SamplingSpec(n=args.n, temperature=1.0, max_tokens=args.max_tokens, stop_token_id=stop, seed=0)
        results = [measure_in_child(name, model_dir, prompts, spec, args.repeats) for name in args.engines.split(",")]
    report(results, spec, len(prompts))


if __name__ == "__main__":
    main()
