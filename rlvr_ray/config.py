"""Typed configuration: one pydantic model per component, loaded from ``configs/`` YAML.

Each component receives only its own section (``cfg.rollout`` goes to rollout actors, ``cfg.verifier`` to the
verifier pool, ...). Unknown keys are rejected. ``load_config`` resolves a Hydra-style ``defaults`` list, applies
dotted ``key=value`` overrides and raises :class:`ConfigError` with one line naming the field and what is allowed.
No torch, ray or jax here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rlvr_ray.task.vocab import ALLOWED_OPERATORS


class ConfigError(ValueError):
    """A bad config file, key or value; ``str(err)`` is one line meant for the user."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


def _check_range(value: tuple[int, int]) -> tuple[int, int]:
    low, high = value
    if low < 1 or high < low:
        raise ValueError(f"must be [min, max] with 1 <= min <= max, got [{low}, {high}]")
    return value


Operator = Literal["+", "-", "*"]


def _all_operators() -> list[Operator]:
    return ["+", "-", "*"]


class TaskConfig(_Section):
    """The RPN arithmetic process (config group ``generative_process``)."""

    p: int = Field(13, ge=2, le=1000)
    """Modulus; operands are 0..p-1 and every result is taken mod p."""
    operators: list[Operator] = Field(default_factory=_all_operators, min_length=1)
    """Ordered subset of + - *; the order fixes the operators' token ids."""
    complexity_range: tuple[int, int] = (1, 4)
    """[min, max] number of operators k of generated expressions (SFT data and the CLI default)."""

    @field_validator("operators")
    @classmethod
    def _unique_ops(cls, ops: list[str]) -> list[str]:
        if len(set(ops)) != len(ops):
            raise ValueError(f"operators must not repeat, allowed: {' '.join(ALLOWED_OPERATORS)}")
        return ops

    _range = field_validator("complexity_range")(_check_range)


class ModelConfig(_Section):
    """The Llama-style policy built from scratch."""

    hidden_size: int = Field(128, ge=8)
    """Width of the residual stream."""
    num_layers: int = Field(4, ge=1)
    """Number of decoder blocks."""
    num_heads: int = Field(4, ge=1)
    """Attention heads; hidden_size / num_heads must be a head size vLLM supports (32, 64, 128, ...)."""
    intermediate_size: int = Field(512, ge=8)
    """Width of the SwiGLU MLP."""
    max_position_embeddings: int = Field(128, ge=16)
    """Longest sequence (prompt + completion) the model is built for."""
    init_dir: str | None = None
    """Existing HF policy directory to start RL from; None makes (or reuses) the SFT warm start."""

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        return self


class SFTConfig(_Section):
    """Supervised warm start on full equations (the seed's supervised stage)."""

    steps: int = Field(1000, ge=0)
    """Most optimizer steps (the compute budget)."""
    target_accuracy: float | None = Field(0.5, gt=0, le=1)
    """Stop once greedy accuracy on a small probe set (mean over the task's complexities) reaches this: SFT on this
    task learns in a sharp jump, so a step budget alone lands either before it or at ~100%; this stops inside it,
    at partial competence, leaving RL room to improve. None: always run ``steps``."""
    eval_every: int = Field(50, ge=1)
    """Steps between probe evaluations (when target_accuracy is set)."""
    batch_size: int = Field(128, ge=1)
    """Equations per step."""
    learning_rate: float = Field(3e-3, gt=0)
    """Peak AdamW learning rate (linear warm-up, cosine decay)."""
    warmup_steps: int = Field(50, ge=0)
    """Linear warm-up steps."""
    loss_on_prompt: bool = False
    """Also train on prompt tokens. Off by default: with it the sampled policy tends to continue the expression."""
    seed: int = 0
    """Seed of the SFT data stream and initialisation."""
    log_every: int = Field(50, ge=1)
    """Steps between MLflow / progress-bar updates."""
    num_threads: int | None = Field(None, ge=1)
    """Torch threads of the SFT steps. None: every core the SFT process may run on (nothing else of the run runs
    while SFT does: the rollout actors, verifiers and learner start after it). Set 1 when several SFTs or other busy
    processes share the cores: multi-threaded torch processes that compete for cores slow each other down badly."""


_SCORE_ONLY_ALGORITHMS = frozenset({"grpo", "dr_grpo", "rloo", "dapo"})
"""Algorithms whose advantages read one score per sequence (mirrors rlvr_ray.algo.presets; a test checks it)."""
_KL_IN_REWARD_ALGORITHMS = frozenset({"reinforce_pp"})
"""Algorithms that put the KL penalty in the token rewards by definition (mirrors rlvr_ray.algo.presets)."""


class TrainingConfig(_Section):
    """RL training; keeps every knob of the seed's ``training/rlvr_*.yaml`` under its seed name."""

    algorithm: Literal["ppo", "grpo", "dr_grpo", "rloo", "reinforce_pp", "dapo"] = "grpo"
    """Advantage estimator and loss preset (see rlvr_ray.algo.presets)."""
    num_epochs: int = Field(1, ge=1)
    """Epochs; prompts are drawn fresh from the process, an epoch is samples_per_epoch prompts."""
    samples_per_epoch: int = Field(20000, ge=1)
    """Prompts per epoch."""
    max_batches_per_epoch: int | None = Field(None, ge=1)
    """Cap on RL steps per epoch (None: samples_per_epoch / prompts per step)."""
    ppo_steps: int | None = Field(300, ge=1)
    """Cap on the total number of RL steps (None: num_epochs x steps per epoch)."""
    max_prompt_length: int = Field(32, ge=4)
    """Longest prompt in tokens; longer prompts are an error, not silently cut."""
    max_generation_length: int = Field(40, ge=2)
    """Most tokens generated per completion."""
    complexity_range: tuple[int, int] = (1, 4)
    """[min, max] operators per RL training prompt."""
    learning_rate: float = Field(2e-4, gt=0)
    """AdamW learning rate of the policy (and value head); with ``lr_control: kl_adaptive``, the highest one."""
    lr_control: Literal["constant", "kl_adaptive"] = "constant"
    """Learning-rate guard (rlvr_ray.algo.lr_control): ``constant`` keeps learning_rate; ``kl_adaptive`` divides
    the rate by lr_control_factor after a step whose approx KL (policy being updated against the policy before the
    step, token mean over all its optimizer steps; logged as ``update/step_kl``) was above twice
    lr_control_target_kl, and multiplies it back after one below half of it, between
    learning_rate * lr_control_min_scale and learning_rate. The rate in force is logged as ``update/lr`` and saved
    with the optimizer, so a resume goes on with it."""
    lr_control_target_kl: float = Field(4e-4, gt=0)
    """kl_adaptive only: the step KL the rate is kept around. Measured (docs/results.md, "The learning-rate
    guard"): at a constant lr 5e-5 the mean step KL was 3e-5 to 4e-5 from partly trained warm starts and 1.2e-4
    from a 0.985 one; at 2e-4, 8.4e-4 and 2.4e-3. With lr 2e-4, a target of 4e-4 kept a mean rate of 1.75e-4 on
    the first and 1.44e-4 on the second."""
    lr_control_factor: float = Field(1.5, gt=1)
    """kl_adaptive only: what the rate is divided or multiplied by after each step out of the band."""
    lr_control_min_scale: float = Field(0.01, gt=0, le=1)
    """kl_adaptive only: the lowest rate, as a fraction of learning_rate."""
    batch_size: int = Field(256, ge=1)
    """Completions per RL step (prompts per step x group_size)."""
    group_size: int = Field(8, ge=1)
    """Samples per prompt (n); GRPO-family advantages normalise within a group."""
    mini_batch_size: int = Field(128, ge=1)
    """Completions per optimizer step."""
    gradient_accumulation_steps: int = Field(1, ge=1)
    """Micro-batches each mini-batch is split into (per learner worker)."""
    ppo_epochs: int = Field(1, ge=1)
    """Passes over each RL batch."""
    cliprange: float = Field(0.2, gt=0)
    """PPO ratio clip epsilon (low side, and high side unless cliprange_high is set)."""
    cliprange_high: float | None = Field(None, gt=0)
    """DAPO clip-higher epsilon for the upper side (None: same as cliprange)."""
    cliprange_value: float = Field(0.2, gt=0)
    """Clip of the value prediction around the old value (PPO critic)."""
    vf_coef: float = Field(0.5, ge=0)
    """Weight of the value loss (PPO critic)."""
    gamma: float = Field(1.0, ge=0, le=1)
    """GAE discount (PPO)."""
    lam: float = Field(0.95, ge=0, le=1)
    """GAE lambda (PPO)."""
    target_kl: float = Field(0.1, gt=0)
    """Approximate-KL threshold between old and new policy for early stopping the PPO epochs."""
    early_stopping: bool = False
    """Stop the remaining PPO epochs of a step once approx KL exceeds target_kl."""
    kl_coef: float = Field(0.0, ge=0)
    """Coefficient of the KL to the frozen reference policy; 0 disables it (and the reference model)."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """Estimator of KL(policy || reference) per token. In the loss its gradient is what acts: k2 pulls along
    KL(policy || reference), k3 along KL(reference || policy), k1 not at all (rejected there; see rlvr_ray.algo.kl)."""
    kl_in_reward: bool | None = None
    """Subtract the per-token KL penalty from the reward (PPO / REINFORCE++ style) instead of adding it to the
    loss. None takes the algorithm's own choice: in the reward for reinforce_pp, in the loss for the others.
    Only ppo and reinforce_pp use token rewards; true with grpo, dr_grpo, rloo or dapo is rejected."""
    loss_agg_mode: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"] | None = None
    """How token losses are aggregated; None takes the algorithm preset's choice."""
    entropy_coef: float = Field(0.0, ge=0)
    """Entropy bonus weight."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradient clipping norm."""
    is_cap: float = Field(2.0, gt=0)
    """Off-policy correction (decoupled PPO): each token of a stale sample (behaviour policy older than the
    learner) is weighted by min(pi_prox / pi_behaviour, is_cap), detached; on-policy samples get exactly 1."""
    overlong_buffer: int = Field(8, ge=1)
    """dapo only: soft overlong punishment. A completion longer than max_generation_length - overlong_buffer
    loses overlong_penalty * (excess / overlong_buffer) of reward, up to overlong_penalty at the limit."""
    overlong_penalty: float = Field(1.0, ge=0)
    """dapo only: the largest overlong punishment (reached at max_generation_length tokens); 0 disables it."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature of rollouts; logprobs are of the temperature-scaled policy."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling threshold of rollouts."""
    reward_type: Literal["boxed", "correct", "combined", "step"] = "step"
    """Which reward trains the policy: format only, exact answer, the seed's weighted mix, or step-level."""
    boxed_weight: float = Field(0.3, ge=0)
    """Weight of the format (boxed) reward in combined."""
    correct_weight: float = Field(0.7, ge=0)
    """Weight of the exact-answer reward in combined."""
    log_every: int = Field(1, ge=1)
    """Steps between metric logs to MLflow; each log reduces the steps since the last one
    (:func:`rlvr_ray.tracking.reduce_window`). Eval and checkpoint steps always log."""
    eval_every: int = Field(50, ge=1)
    """Steps between held-out evaluations (also the Tune report cadence)."""
    checkpoint_every: int = Field(50, ge=1)
    """Steps between checkpoints (HF directory + optimizer + loop state)."""
    seed: int = 42
    """Seed of prompts, sampling and initialisation."""
    max_staleness: int = Field(0, ge=0)
    """Bounded-staleness pipeline: rollouts for up to this many later steps are generated while the learner
    updates, so a sample's behaviour policy is at most this many weight versions behind the policy it trains.
    0 is the synchronous loop (generate, verify, update, sync, one after the other)."""
    time_budget_s: float | None = Field(None, gt=0)
    """Stop RL after this much train time (wall time with held-out eval and checkpoints left out, counted across
    resumes): the step that starts past the budget is the last, saved and evaluated as at a normal end. None: run
    the step count. Not part of the run's identity: raise it to extend a stopped run."""
    heldout_guard_z: float | None = Field(3.0, gt=0)
    """Held-out guard: after each held-out eval, trip when the mean accuracy over the eval complexities inside
    ``complexity_range`` falls more than this many standard errors below the best eval so far (the starting
    policy's included): one warning line and ``guard/trips``; ``guard/heldout_drop`` and ``guard/heldout_drop_z``
    are logged at every eval. None: off. Measured (docs/results.md): the early dip of a rising run was 1.6 standard
    errors (-0.037 from 0.687), the fall of a 0.98 policy under too high a learning rate 6 (-0.065)."""
    heldout_guard_action: Literal["warn", "stop"] = "warn"
    """What a tripped guard does: ``warn`` only, or ``stop`` the run after one more step (saved and evaluated as at
    a normal end; the same command run again then trains no further, until this is set back to ``warn``)."""

    _range = field_validator("complexity_range")(_check_range)

    @model_validator(mode="after")
    def _batch_shapes(self) -> TrainingConfig:
        if self.batch_size % self.group_size:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of group_size {self.group_size}")
        if self.batch_size % self.mini_batch_size:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of mini_batch_size {self.mini_batch_size}"
            )
        if self.mini_batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"mini_batch_size {self.mini_batch_size} must be a multiple of "
                f"gradient_accumulation_steps {self.gradient_accumulation_steps}"
            )
        return self

    @model_validator(mode="after")
    def _kl_placement(self) -> TrainingConfig:
        if self.kl_in_reward and self.algorithm in _SCORE_ONLY_ALGORITHMS:
            raise ValueError(
                f"kl_in_reward=true has no effect with algorithm {self.algorithm} (its advantages use one score per "
                "sequence, not token rewards); use kl_in_reward=false (KL in the loss) or algorithm ppo/reinforce_pp"
            )
        if self.kl_coef > 0 and self.kl_estimator == "k1" and not self.kl_in_reward_resolved:
            raise ValueError(
                "kl_estimator k1 in the loss has a zero-mean gradient (pure noise); use kl_in_reward=true "
                "(ppo/reinforce_pp) or kl_estimator k2/k3"
            )
        if self.overlong_buffer > self.max_generation_length:
            raise ValueError(
                f"overlong_buffer {self.overlong_buffer} must be at most max_generation_length "
                f"{self.max_generation_length}"
            )
        return self

    @property
    def kl_in_reward_resolved(self) -> bool:
        """Whether the KL penalty goes into the token rewards (the explicit setting, else the algorithm's)."""
        if self.kl_in_reward is not None:
            return self.kl_in_reward
        return self.algorithm in _KL_IN_REWARD_ALGORITHMS

    @property
    def prompts_per_step(self) -> int:
        return self.batch_size // self.group_size

    @property
    def total_steps(self) -> int:
        per_epoch = max(1, self.samples_per_epoch // self.prompts_per_step)
        if self.max_batches_per_epoch is not None:
            per_epoch = min(per_epoch, self.max_batches_per_epoch)
        total = self.num_epochs * per_epoch
        return min(total, self.ppo_steps) if self.ppo_steps is not None else total


class RolloutConfig(_Section):
    """Rollout actors and their engine (one engine per actor)."""

    engine: Literal["torch", "vllm"] = "torch"
    """Generation backend: plain-torch KV-cache loop (fastest for tiny CPU policies) or vLLM."""
    num_actors: int = Field(1, ge=1)
    """Rollout actors; prompts are split evenly across them."""
    num_cpus: float = Field(1.0, ge=0)
    """CPUs reserved per actor."""
    num_gpus: float = Field(0.0, ge=0)
    """GPUs per actor (fractions let several engines share a GPU)."""
    resource: str | None = None
    """Ray custom resource (e.g. ``rollout``) each actor needs one unit of, to pin it to its worker group."""
    torch_threads: int = Field(1, ge=1)
    """Intra-op threads of the engine; more than one per actor collapses on a busy 2-core box."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Engine dtype; fp32 keeps engine and learner logprobs equal."""
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    """vLLM: fraction of GPU memory the engine may take."""
    kv_cache_gib: int = Field(1, ge=1)
    """vLLM on CPU: KV cache size in whole GiB."""
    max_num_seqs: int = Field(256, ge=1)
    """vLLM: sequences batched at once."""
    enforce_eager: bool = True
    """vLLM: skip graph capture (start-up time dominates for tiny models)."""
    generate_timeout_s: float = Field(300.0, gt=0)
    """A generate call that takes longer fails loudly."""


class VerifierConfig(_Section):
    """The reward-verifier actor pool."""

    num_actors: int = Field(2, ge=1)
    """Verifier actors."""
    num_cpus: float = Field(0.25, ge=0)
    """CPUs reserved per verifier actor."""
    resource: str | None = None
    """Ray custom resource (e.g. ``verifier``) each verifier needs one unit of."""
    chunk_size: int = Field(256, ge=1)
    """Completions per scoring task."""
    deadline_s: float = Field(30.0, gt=0)
    """A chunk not scored within this is re-scored on a fresh actor (the stuck one is killed)."""
    max_retries: int = Field(3, ge=0)
    """Re-scores of one chunk before the step fails loudly."""


class LearnerConfig(_Section):
    """The Ray Train learner (TorchTrainer, DDP across workers)."""

    num_workers: int = Field(1, ge=1)
    """Ray Train workers (DDP ranks)."""
    use_gpu: bool = False
    """One GPU per worker when true."""
    num_cpus: float = Field(1.0, ge=0)
    """CPUs per worker."""
    resource: str | None = None
    """Ray custom resource (e.g. ``learner``) each worker needs one unit of."""
    torch_threads: int = Field(1, ge=1)
    """Intra-op threads per worker."""
    max_failures: int = Field(1, ge=0)
    """Worker-group restarts Ray Train attempts; a restart resumes from the latest checkpoint."""


class SyncConfig(_Section):
    """Learner -> engine weight sync."""

    backend: Literal["object_store", "nccl"] = "object_store"
    """object_store (CPU and any cluster) or nccl (GPU learner broadcasting to GPU engines)."""
    deadline_s: float = Field(120.0, gt=0)
    """A sync not acknowledged by every engine within this raises."""


class EvalConfig(_Section):
    """Held-out greedy evaluation (reuses the verifier's reward functions) on the eval split of the prompt space,
    which training never samples (rlvr_ray.task.split)."""

    complexities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4], min_length=1)
    """Complexities reported, one table row each; those above training.complexity_range test extrapolation."""
    n: int = Field(200, ge=1)
    """Distinct problems per complexity (all of the eval split where it holds fewer, e.g. about 100 at k=1, p=13)."""
    seed: int = 12345
    """Seed of which held-out prompts are drawn (always from the eval split)."""
    max_tokens: int | None = Field(None, ge=1)
    """Generation budget per problem; None: the longest completion the largest evaluated complexity can need
    (k(k+1)+1 tokens), and at least training.max_generation_length."""
    batch_size: int = Field(256, ge=1)
    """Most prompts per greedy ``generate`` call (a complexity's prompts are split into such batches)."""


class TrackingConfig(_Section):
    """MLflow tracking."""

    experiment_name: str = "rlvr-ray"
    """MLflow experiment."""
    tracking_uri: str | None = None
    """None: $MLFLOW_TRACKING_URI, else a local store under the output root."""
    run_name: str | None = None
    """MLflow run name (None: the output directory name)."""


class RunConfig(_Section):
    """Everything one run needs; each component gets only its own section."""

    generative_process: TaskConfig = Field(default_factory=TaskConfig)
    """The arithmetic task."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """The policy architecture / starting point."""
    sft: SFTConfig = Field(default_factory=SFTConfig)
    """Warm start."""
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    """RL hyper-parameters."""
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    """Rollout actors."""
    verifier: VerifierConfig = Field(default_factory=VerifierConfig)
    """Verifier pool."""
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    """Ray Train learner."""
    sync: SyncConfig = Field(default_factory=SyncConfig)
    """Weight sync."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """Held-out evaluation."""
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    """MLflow."""
    output_dir: str = "outputs/run"
    """Everything the run writes goes here (final policy: OUTPUT_DIR/final_policy)."""
    storage_uri: str | None = None
    """Where checkpoints persist (Ray Train's storage_path): a local path, or a URI pyarrow understands
    (s3://, gs://, ...) that every node of a cluster can reach. None: OUTPUT_DIR/checkpoints on the driver's host."""
    warm_start_dir: str = "outputs/warm_start"
    """Where the SFT warm start is made once and reused."""
    resume: bool = True
    """Continue from the latest checkpoint in output_dir when one exists."""


# ----------------------------------------------------------------------------------------------------------------
# Loading


def config_dir() -> Path:
    """``$RLVR_CONFIG_DIR``, else ``configs/`` beside the package, else ``./configs``."""
    env = os.environ.get("RLVR_CONFIG_DIR")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[1] / "configs"
    return beside if beside.is_dir() else Path.cwd() / "configs"


def available_configs(root: Path | None = None) -> list[str]:
    root = root or config_dir()
    return sorted(p.stem for p in root.glob("*.yaml"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of config sections")
    return data


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _resolve_defaults(data: dict[str, Any], root: Path, source: Path) -> dict[str, Any]:
    """Hydra-style ``defaults: [{group: name}, _self_]``: group files merge under their group key, then the file."""
    merged: dict[str, Any] = {}
    for entry in data.pop("defaults", []) or []:
        if entry == "_self_":
            continue
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(
                f"{source}: each defaults entry must be '_self_' or one 'group: name' pair, got {entry!r}"
            )
        ((group, name),) = entry.items()
        group_file = root / group / f"{name}.yaml"
        if not group_file.is_file():
            choices = sorted(p.stem for p in (root / group).glob("*.yaml"))
            raise ConfigError(
                f"{source}: defaults {group}: {name!r} not found; available: {', '.join(choices) or 'none'}"
            )
        merged = _merge(merged, {group: _read_yaml(group_file)})
    return _merge(merged, data)


def _apply_override(data: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise ConfigError(
            f"override {override!r} must look like section.field=value (e.g. training.learning_rate=1e-4)"
        )
    dotted, raw = override.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override {override!r}: empty key in {dotted!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {key!r} is a value, not a section")
        node = child
    node[keys[-1]] = value


def format_validation_error(err: ValidationError) -> str:
    """One line: the first failing field path, the problem, what was given."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "literal_error":
        msg = msg.replace("Input should be", "allowed:")
    given = first.get("input")
    shown = "" if first["type"] == "extra_forbidden" or isinstance(given, dict) else f" (got {given!r})"
    extra = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{loc}: {msg}{shown}{extra}"


def validate_config(data: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def load_config(
    name: str = "train_rlvr_model", overrides: list[str] | tuple[str, ...] = (), root: Path | None = None
) -> RunConfig:
    """Load ``configs/NAME.yaml`` (defaults resolved), apply dotted overrides, validate.

    >>> cfg = load_config("train_rlvr_test", ["training.learning_rate=3e-4"])
    >>> cfg.training.learning_rate
    0.0003
    """
    root = root or config_dir()
    path = root / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"config {name!r} not found in {root}; available: {', '.join(available_configs(root)) or 'none'}"
        )
    data = _resolve_defaults(_read_yaml(path), root, path)
    for override in overrides:
        _apply_override(data, override)
    return validate_config(data)


def dump_config(cfg: RunConfig) -> str:
    """YAML that ``load_config`` reads back to the same config."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
