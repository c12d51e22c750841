"""Storage without a shared filesystem: packed policies, checkpoint storage and its pointer, the config fingerprint
a resume checks, the keyed warm start and the keyed eval baseline. No Ray cluster here (fast)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from rlvr_ray.config import ConfigError, ModelConfig, TrainingConfig, load_config
from rlvr_ray.learner.checkpoint import (
    FINGERPRINT_FILE,
    STATE_FILE,
    CheckpointStore,
    LoopState,
    load_trainer_state,
    restore_learner,
    run_fingerprint,
    write_checkpoint,
)
from rlvr_ray.learner.learner import Learner
from rlvr_ray.learner.model import PolicyWithValue
from rlvr_ray.policy import build_model, load_policy, load_vocab, materialize_policy, pack_policy_dir, save_policy
from rlvr_ray.task.vocab import Vocab

VOCAB = Vocab(13, ("+", "-", "*"))
TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64)
torch.set_num_threads(1)


def tiny_policy_dir(path: Path, seed: int = 0) -> Path:
    return save_policy(build_model(TINY, VOCAB, seed=seed), VOCAB, path)


def test_packed_policy_is_materialised_once_per_process_after_the_source_is_gone(tmp_path: Path) -> None:
    source = tiny_policy_dir(tmp_path / "policy")
    expected = load_policy(source).state_dict()
    packed = pickle.loads(pickle.dumps(pack_policy_dir(source)))  # what crosses the object store
    shutil.rmtree(source)
    local = materialize_policy(packed)
    assert Path(local) != source and load_vocab(local) == VOCAB
    for key, tensor in load_policy(local).state_dict().items():
        assert torch.equal(tensor, expected[key]), key
    assert materialize_policy(dict(packed)) == local  # same content: the same local copy
    assert materialize_policy(pack_policy_dir(tiny_policy_dir(tmp_path / "other", seed=1))) != local
    assert materialize_policy(str(tmp_path / "x")) == str(tmp_path / "x")  # a path is used as is


def make_learner(policy_dir: Path) -> Learner:
    module = PolicyWithValue(load_policy(policy_dir), with_value_head=True)
    return Learner(TrainingConfig(batch_size=8, group_size=4, mini_batch_size=8), module, module, None)


def test_checkpoint_keeps_the_whole_loop_state_and_loads_tensors_only(tmp_path: Path) -> None:
    learner = make_learner(tiny_policy_dir(tmp_path / "policy"))
    learner.generator.manual_seed(99)
    learner.optimizer.param_groups[0]["lr"] = 3.5e-5  # as lr_control leaves it: the resumed run goes on with it
    state = LoopState(
        step=4,
        best_eval_accuracy=0.25,
        ledger=[{"step": 0, "prompt_digest": "ab"}],
        inflight=[{"step": 4, "ids": [[1, 2]]}],
        train_seconds=12.5,
        restarts=1,
    )
    path = write_checkpoint(tmp_path / "ckpt", learner, VOCAB, state, {"training.seed": 7})
    other = make_learner(path / "policy")
    assert restore_learner(other, load_trainer_state(path)) == state
    assert torch.equal(other.generator.get_state(), learner.generator.get_state())
    assert other.optimizer.param_groups[0]["lr"] == 3.5e-5 != other.cfg.learning_rate
    assert json.loads((path / FINGERPRINT_FILE).read_text()) == {"training.seed": 7}
    # A trainer state holding an arbitrary pickled object is refused (weights_only=True), not executed.
    torch.save({"optimizer": {}, "value_head": None, "generator": LoopState()}, path / STATE_FILE)
    with pytest.raises(Exception, match=r"[Ww]eights only"):
        load_trainer_state(path)


def test_store_pointer_names_the_newest_complete_checkpoint(tmp_path: Path) -> None:
    cfg = load_config("train_rlvr_test", [f"output_dir={tmp_path / 'run'}", f"storage_uri={tmp_path / 'store'}"])
    store = CheckpointStore.for_config(cfg)
    assert store.root == str(tmp_path / "store" / "run") and store.latest() is None
    learner = make_learner(tiny_policy_dir(tmp_path / "policy"))
    write_checkpoint(tmp_path / "store" / "run" / "rl-a" / "step_000003", learner, VOCAB, LoopState(step=3))
    store.set_latest("rl-a", "step_000003", 3)
    assert store.latest() == str(tmp_path / "store" / "run" / "rl-a" / "step_000003")
    local = store.download(store.latest() or "", tmp_path / "download")
    assert load_trainer_state(local)["loop"]["step"] == 3
    store.set_latest("rl-b", None, 0)  # a fresh lineage (resume=false) has no checkpoint yet
    assert store.latest() is None
    default = CheckpointStore.for_config(load_config("train_rlvr_test", [f"output_dir={tmp_path / 'run'}"]))
    assert default.root == str(tmp_path / "run" / "checkpoints")


def test_fingerprint_covers_the_trajectory_not_the_run_length() -> None:
    base = load_config("train_rlvr_test")
    same = [
        "training.ppo_steps=60",
        "training.eval_every=7",
        "training.checkpoint_every=9",
        "training.log_every=3",
        "training.time_budget_s=30",
        "training.num_epochs=2",
        "eval.n=5",
        "verifier.num_actors=1",
        "rollout.torch_threads=2",
        "sft.num_threads=1",
        "output_dir=/elsewhere",
        "resume=false",
    ]
    assert run_fingerprint(load_config("train_rlvr_test", same)) == run_fingerprint(base)
    for override in [
        "training.learning_rate=1e-3",
        "training.seed=8",
        "training.max_staleness=1",
        "generative_process.p=17",
        "model.hidden_size=128",
        "sft.steps=61",
        "rollout.num_actors=2",
        "learner.num_workers=2",
        "rollout.dtype=bfloat16",
    ]:
        key = override.split("=")[0]
        changed = run_fingerprint(load_config("train_rlvr_test", [override]))
        assert changed[key] != run_fingerprint(base)[key], override


def seed_checkpoint(cfg_overrides: list[str], tmp_path: Path) -> None:
    """A run's checkpoint in its storage, made by the real writer with the run's fingerprint."""
    cfg = load_config("train_rlvr_test", cfg_overrides)
    store = CheckpointStore.for_config(cfg)
    learner = make_learner(tiny_policy_dir(tmp_path / "policy"))
    write_checkpoint(f"{store.root}/rl-old/step_000003", learner, VOCAB, LoopState(step=3), run_fingerprint(cfg))
    store.set_latest("rl-old", "step_000003", 3)


def test_rerun_with_another_config_exits_2_naming_the_fields_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rlvr_ray.main import main

    run = tmp_path / "run"
    common = [f"output_dir={run}", f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    seed_checkpoint(common, tmp_path)
    (run / "config.yaml").write_text("the old run's config\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    capsys.readouterr()
    code = main(["--config-name", "train_rlvr_test", *common, "training.learning_rate=1e-3", "generative_process.p=17"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "training.learning_rate: 0.0003 -> 0.001" in err and "generative_process.p: 13 -> 17" in err
    assert "output_dir=" in err and "resume=false" in err
    assert (run / "config.yaml").read_text() == "the old run's config\n"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written or deleted


def test_resume_check_lets_run_length_change_and_resume_false_pass(tmp_path: Path) -> None:
    from rlvr_ray.run import check_resume

    common = [f"output_dir={tmp_path / 'run'}"]
    seed_checkpoint(common, tmp_path)
    longer = load_config("train_rlvr_test", [*common, "training.ppo_steps=12", "training.eval_every=4"])
    store = CheckpointStore.for_config(longer)
    assert check_resume(longer, store) == store.latest()
    with pytest.raises(ConfigError, match=r"training\.seed"):
        check_resume(load_config("train_rlvr_test", [*common, "training.seed=1"]), store)
    assert check_resume(load_config("train_rlvr_test", [*common, "training.seed=1", "resume=false"]), store) is None


@pytest.mark.parametrize("change", ["generative_process.p=17", "model.hidden_size=32"])
def test_warm_start_is_keyed_by_task_model_and_sft(tmp_path: Path, change: str) -> None:
    from rlvr_ray.sft import WARM_START_FILE, ensure_warm_start

    common = [f"warm_start_dir={tmp_path / 'ws'}", "sft.steps=1", "sft.batch_size=4", "sft.warmup_steps=0"]
    first = ensure_warm_start(load_config("train_rlvr_test", common))
    other_cfg = load_config("train_rlvr_test", [*common, change])
    other = ensure_warm_start(other_cfg)
    assert other != first and first.parent == other.parent == tmp_path / "ws"
    assert load_vocab(other).p == other_cfg.generative_process.p
    assert load_policy(other).config.hidden_size == other_cfg.model.hidden_size
    assert json.loads((other / WARM_START_FILE).read_text())["model"]["hidden_size"] == other_cfg.model.hidden_size
    assert ensure_warm_start(load_config("train_rlvr_test", common)) == first  # the first config reuses its own


def test_eval_baseline_is_keyed_by_the_eval_config(tmp_path: Path) -> None:
    from rlvr_ray.run import baseline_eval

    policy = tiny_policy_dir(tmp_path / "policy")
    out = tmp_path / "run"
    out.mkdir()
    cfg = load_config("train_rlvr_test", ["eval.n=4", "eval.complexities=[1,2]"])
    first = baseline_eval(cfg, policy, "digest", out)
    assert [r.complexity for r in first] == [1, 2]
    assert baseline_eval(cfg, policy, "digest", out) == first
    changed = load_config("train_rlvr_test", ["eval.n=4", "eval.complexities=[1,2,3]"])
    assert [r.complexity for r in baseline_eval(changed, policy, "digest", out)] == [1, 2, 3]
    baseline_eval(changed, policy, "another policy", out)
    assert json.loads((out / "eval_before.json").read_text())["key"]["policy_sha256"] == "another policy"
