"""SFT warm start: loss masking, schedule, and that training really changes and saves the policy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlvr_ray.config import ModelConfig, SFTConfig, TaskConfig, load_config
from rlvr_ray.policy import build_model, load_policy, load_vocab
from rlvr_ray.sft import ensure_warm_start, lr_at, sft_batch, train_sft
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


def test_probe_accuracy_is_a_real_greedy_eval(tmp_path: Path) -> None:
    from rlvr_ray.sft import probe_accuracy

    value = probe_accuracy(build_model(TINY, VOCAB, seed=0), VOCAB, TaskConfig(complexity_range=(1, 2)), tmp_path / "p")
    assert 0.0 <= value <= 1.0 and (tmp_path / "p" / "model.safetensors").is_file()


def test_without_target_sft_runs_its_full_budget(tmp_path: Path) -> None:
    tracker = RecordingTracker()
    sft = SFTConfig(steps=6, batch_size=4, warmup_steps=1, target_accuracy=None, eval_every=2)
    train_sft(TaskConfig(complexity_range=(1, 1)), TINY, sft, tmp_path / "ws", tracker)  # type: ignore[arg-type]
    assert tracker.rows[-1][1]["sft/steps"] == 6
    assert not any("sft/probe_accuracy" in m for _, m in tracker.rows)
