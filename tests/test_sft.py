"""SFT warm start: loss masking, schedule, no held-out prompt in its data, a probe that measures learning, the
progress bar, and that training really changes and saves the policy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from rlvr_ray.config import ModelConfig, SFTConfig, TaskConfig, load_config
from rlvr_ray.policy import build_model, load_policy, load_vocab
from rlvr_ray.sft import ensure_warm_start, lr_at, sft_batch, smoothed, train_sft
from rlvr_ray.task.split import is_eval_reference
from rlvr_ray.task.vocab import Vocab

VOCAB = Vocab(13, ("+", "-", "*"))
TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64)


def test_batch_has_loss_on_completion_tokens_only() -> None:
    batch = sft_batch(VOCAB, TaskConfig(complexity_range=(1, 3)), 16, seed=0, loss_on_prompt=False)
    for ids, labels, attn in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        eq = ids.tolist().index(VOCAB.eq)  # the completion starts at the first "="
        assert (labels[:eq] == -100).all()
        length = int(attn.sum())
        assert labels[eq:length].tolist() == ids[eq:length].tolist()
        assert (labels[length:] == -100).all() and ids[length - 1] == VOCAB.eoe


def test_sft_batches_never_hold_an_eval_prompt() -> None:
    prompts = []
    for seed in range(40):
        batch = sft_batch(VOCAB, TaskConfig(complexity_range=(1, 2)), 128, seed=seed, loss_on_prompt=False)
        prompts += [ids[: ids.index(VOCAB.eq)] for ids in batch["input_ids"].tolist()]  # "<boe> E0" before "="
    assert len(prompts) == 5120 and not [p for p in prompts if is_eval_reference(p)]
    assert len({tuple(p) for p in prompts if len(p) == 4}) > 380  # k=1: nearly all of its ~400 training prompts


def test_loss_on_prompt_option_keeps_prompt_labels() -> None:
    batch = sft_batch(VOCAB, TaskConfig(), 4, seed=0, loss_on_prompt=True)
    assert (batch["labels"][:, 0] == VOCAB.boe).all()


def test_lr_schedule() -> None:
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(100, 100, 10, 1.0) == pytest.approx(0.1)


def test_train_sft_changes_weights_and_saves_loadable_policy(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    sft = SFTConfig(steps=5, batch_size=8, learning_rate=1e-2, warmup_steps=1, seed=3)
    out = train_sft(TaskConfig(), TINY, sft, tmp_path / "ws")
    trained = load_policy(out)
    initial = build_model(TINY, VOCAB, seed=3)
    assert load_vocab(out) == VOCAB
    differs = [
        not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), initial.state_dict().values(), strict=True)
    ]
    assert all(differs)


def test_ensure_warm_start_makes_once_then_reuses(tmp_path: Path) -> None:
    cfg = load_config("train_rlvr_test", [f"warm_start_dir={tmp_path / 'ws'}", "sft.steps=2", "sft.batch_size=4"])
    first = ensure_warm_start(cfg)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert ensure_warm_start(cfg) == first and (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob("*.partial"))
    # The thread count is not part of the key: a machine with more cores reuses the same warm start.
    more_threads = cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"num_threads": 4})})
    assert ensure_warm_start(more_threads) == first


class RecordingTracker:
    """Collects what train_sft logs (the tracker interface it uses is just log_metrics)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.rows.append((step, dict(metrics)))


def test_sft_stops_once_the_probe_reaches_the_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stop rule: probe every eval_every steps, stop at the first probe >= target (probe values scripted)."""
    import rlvr_ray.sft as sft_module

    scripted = iter([0.1, 0.3, 0.6, 0.9])
    monkeypatch.setattr(sft_module, "probe_accuracy", lambda *args: next(scripted))
    tracker = RecordingTracker()
    sft = SFTConfig(steps=40, batch_size=4, warmup_steps=1, target_accuracy=0.5, eval_every=4)
    train_sft(TaskConfig(complexity_range=(1, 1)), TINY, sft, tmp_path / "ws", tracker)  # type: ignore[arg-type]
    assert tracker.rows[-1][1]["sft/steps"] == 12
    assert [m["sft/probe_accuracy"] for _, m in tracker.rows if "sft/probe_accuracy" in m] == [0.1, 0.3, 0.6]


def greedy_accuracy_by_hf_generate(model: torch.nn.Module, vocab: Vocab, prompts: list[list[int]]) -> float:
    """Exact-answer accuracy of HF ``generate`` (greedy), independent of the torch engine the probe uses."""
    from rlvr_ray.task.reference import evaluate
    from rlvr_ray.verify.rewards import correct

    hits = []
    for prompt in prompts:
        out = model.generate(  # type: ignore[operator]
            torch.tensor([prompt]), max_new_tokens=8, do_sample=False, eos_token_id=vocab.eoe, pad_token_id=vocab.pad
        )
        hits.append(correct(out[0, len(prompt) :].tolist(), evaluate(prompt[1:], vocab), vocab))
    return sum(hits) / len(hits)


def test_probe_accuracy_measures_learning(tmp_path: Path) -> None:
    """p=3 with + and * has 18 prompts at k=1, 13 of them on the train side: 40 SFT steps memorise most of them."""
    from rlvr_ray.sft import probe_accuracy

    torch.set_num_threads(1)
    tiny_task = TaskConfig(p=3, operators=["+", "*"], complexity_range=(1, 1))
    vocab = Vocab(3, ("+", "*"))
    train_side = [[vocab.boe, a, b, op] for a in range(3) for b in range(3) for op in (3, 4)]
    train_side = [p for p in train_side if not is_eval_reference(p)]
    assert len(train_side) == 13
    untrained = build_model(TINY, vocab, seed=0)
    before = probe_accuracy(untrained, vocab, tiny_task, tmp_path / "p0")
    sft = SFTConfig(steps=40, batch_size=32, learning_rate=1e-2, warmup_steps=5, target_accuracy=None, seed=1)
    trained = load_policy(train_sft(tiny_task, TINY, sft, tmp_path / "ws"))
    after = probe_accuracy(trained, vocab, tiny_task, tmp_path / "p1")
    assert after >= before + 0.5  # learning, by a wide margin (before: at most 1 or 2 of 13 right by chance)
    # the probe is a real greedy eval of exactly the train-side prompts: HF generate gets the same value
    assert after == pytest.approx(greedy_accuracy_by_hf_generate(trained, vocab, train_side))
    assert before == pytest.approx(greedy_accuracy_by_hf_generate(untrained, vocab, train_side))


class RecordingBar:
    """Stands in for tqdm: records the postfix after every step and the torch threads while training runs."""

    shown: ClassVar[list[dict[str, str]]] = []
    threads: ClassVar[list[int]] = []

    def __init__(self, iterable: range, **_: object) -> None:
        self.iterable = iterable

    def __iter__(self):  # type: ignore[no-untyped-def]
        for item in self.iterable:
            RecordingBar.threads.append(torch.get_num_threads())
            yield item

    def set_postfix(self, values: dict[str, str], refresh: bool = True) -> None:
        RecordingBar.shown.append(dict(values))

    def close(self) -> None:
        pass


@pytest.mark.parametrize("num_threads", [1, None])
def test_progress_bar_shows_the_current_smoothed_loss_and_sft_uses_its_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, num_threads: int | None
) -> None:
    import tqdm

    monkeypatch.setattr(tqdm, "tqdm", RecordingBar)
    RecordingBar.shown, RecordingBar.threads = [], []
    tracker = RecordingTracker()
    sft = SFTConfig(
        steps=6, batch_size=8, warmup_steps=1, target_accuracy=None, log_every=1, seed=2, num_threads=num_threads
    )
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)  # neither value: SFT must set its own
        task = TaskConfig(complexity_range=(1, 2))
        train_sft(task, TINY, sft, tmp_path / "ws", tracker)  # type: ignore[arg-type]
    finally:
        torch.set_num_threads(threads)
    cores = len(os.sched_getaffinity(0))  # None: every core SFT may run on (nothing else of the run runs then)
    assert RecordingBar.threads == [num_threads or cores] * 6
    losses = [m["sft/loss"] for _, m in tracker.rows if "sft/loss" in m]
    expected: list[float] = []
    for loss in losses:
        expected.append(smoothed(expected[-1] if expected else None, loss))
    assert [float(s["loss"]) for s in RecordingBar.shown] == pytest.approx(expected, abs=6e-4)  # shown as %.3f
    assert len({s["loss"] for s in RecordingBar.shown}) == 6  # a new value at every step


def test_without_target_sft_runs_its_full_budget(tmp_path: Path) -> None:
    tracker = RecordingTracker()
    sft = SFTConfig(steps=6, batch_size=4, warmup_steps=1, target_accuracy=None, eval_every=2)
    train_sft(TaskConfig(complexity_range=(1, 1)), TINY, sft, tmp_path / "ws", tracker)  # type: ignore[arg-type]
    assert tracker.rows[-1][1]["sft/steps"] == 6
    assert not any("sft/probe_accuracy" in m for _, m in tracker.rows)
