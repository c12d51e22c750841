"""Sweep files (``configs/sweeps/*.yaml``): the search space over dotted config paths, the metric, the scheduler and
the per-trial resources, validated against :class:`~rlvr_ray.config.RunConfig` before anything starts.

Also the pure pieces of a sweep's result: the trial configs, the summary table and the best config YAML.
No ray or torch here (:mod:`rlvr_ray.tune` runs the sweep).
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rlvr_ray.config import ConfigError, RunConfig, config_dir, dump_config, format_validation_error, validate_config

SPACE_KINDS = ("choice", "grid", "uniform", "loguniform")
# Keys each trial gets from the sweep itself; a space or fixed override may not set them.
RESERVED_KEYS = ("output_dir", "resume", "tracking.tracking_uri", "tracking.run_name", "tracking.experiment_name")
# Space keys that change what the SFT warm start is: trials then make their own warm start.
WARM_START_PREFIXES = ("model.", "sft.", "generative_process.", "warm_start_dir")
MAX_GRID_CHECKS = 256


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class Space(_Strict):
    """One search dimension; exactly one of the fields is set, e.g. ``{loguniform: [1.0e-5, 1.0e-3]}``."""

    choice: list[Any] | None = Field(None, min_length=1)
    """Sample uniformly from these values (num_samples draws)."""
    grid: list[Any] | None = Field(None, min_length=1)
    """Every value, crossed with the other grid dimensions (and repeated num_samples times)."""
    uniform: tuple[float, float] | None = None
    """[low, high]: uniform floats."""
    loguniform: tuple[float, float] | None = None
    """[low, high] with 0 < low: log-uniform floats."""

    def given(self) -> dict[str, Any]:
        """The set kinds and their values (exactly one once validated)."""
        kinds = {"choice": self.choice, "grid": self.grid, "uniform": self.uniform, "loguniform": self.loguniform}
        return {kind: value for kind, value in kinds.items() if value is not None}

    @model_validator(mode="after")
    def _one_kind(self) -> Space:
        given = list(self.given())
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(SPACE_KINDS)} (got {', '.join(given) or 'none'})")
        if self.uniform is not None and self.uniform[0] >= self.uniform[1]:
            raise ValueError(f"uniform needs low < high, got {list(self.uniform)}")
        if self.loguniform is not None and not 0 < self.loguniform[0] < self.loguniform[1]:
            raise ValueError(f"loguniform needs 0 < low < high, got {list(self.loguniform)}")
        return self

    @property
    def kind(self) -> str:
        return next(iter(self.given()))

    @property
    def value(self) -> Any:
        return next(iter(self.given().values()))

    def probe_values(self) -> list[Any]:
        """Values every one of which must make a valid config: each listed value, else both ends and the middle."""
        if self.kind in ("choice", "grid"):
            return list(self.value)
        low, high = self.value
        middle = math.sqrt(low * high) if self.kind == "loguniform" else (low + high) / 2
        return [low, middle, high]


class SchedulerConfig(_Strict):
    """Trial scheduler: ASHA early stopping on the metric, or FIFO (every trial runs to the end)."""

    type: Literal["asha", "fifo"] = "asha"
    """asha: stop trials whose metric is in the bottom 1/reduction_factor at a rung; fifo: no early stopping."""
    grace_period: int = Field(1, ge=1)
    """Evaluations a trial always gets before it can be stopped."""
    reduction_factor: float = Field(2.0, gt=1)
    """Keep the top 1/reduction_factor of trials at each rung (rungs at grace_period x reduction_factor^k evals)."""
    max_t: int | None = Field(None, ge=1)
    """Tune reports of a complete trial; None: computed from the trial configs (evaluations + the final report)."""


class TrialResources(_Strict):
    """Per-trial sizes, mapped onto the trial's config so several trials share a machine (None: keep the config's)."""

    trial_cpus: float = Field(0.0, ge=0)
    """CPUs of the Tune trial process itself (it runs the before/after evaluations; the actors below hold the rest)."""
    rollout_cpus: float | None = Field(None, ge=0)
    """rollout.num_cpus: CPUs per rollout actor."""
    rollout_gpus: float | None = Field(None, ge=0)
    """rollout.num_gpus: GPU fraction per rollout actor."""
    verifier_cpus: float | None = Field(None, ge=0)
    """verifier.num_cpus: CPUs per verifier actor."""
    learner_cpus: float | None = Field(None, ge=0)
    """learner.num_cpus: CPUs per Ray Train worker."""


# Resource name -> the config field it sets.
RESOURCE_FIELDS = {
    "rollout_cpus": "rollout.num_cpus",
    "rollout_gpus": "rollout.num_gpus",
    "verifier_cpus": "verifier.num_cpus",
    "learner_cpus": "learner.num_cpus",
}


def _not_reserved(value: dict[str, Any]) -> dict[str, Any]:
    for key in value:
        if key in RESERVED_KEYS:
            raise ValueError(f"{key} is set by the sweep for each trial and cannot be swept or overridden")
    return value


class SweepConfig(_Strict):
    """A sweep file: what to vary, what to optimise, how to schedule and size the trials."""

    name: str = Field("", pattern=r"^[A-Za-z0-9_.-]*$")
    """Sweep name (directory and MLflow parent run name); empty: the sweep file's name."""
    metric: str = "eval/accuracy"
    """Metric reported every held-out evaluation to optimise (default: greedy exact-answer accuracy)."""
    mode: Literal["max", "min"] = "max"
    """Maximise or minimise the metric."""
    num_samples: int = Field(1, ge=1)
    """Draws of the choice/uniform/loguniform dimensions; grid dimensions are crossed with each draw."""
    max_concurrent_trials: int = Field(1, ge=1)
    """Trials running at once (each is a full actor-learner system)."""
    seed: int | None = 0
    """Seed of the random search (None: not reproducible)."""
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    """Early stopping."""
    trial_resources: TrialResources = Field(default_factory=TrialResources)
    """How big each trial is."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Fixed dotted ``key: value`` settings every trial gets (after the command line's overrides)."""
    space: dict[str, Space] = Field(default_factory=dict)
    """The search space: dotted config path -> one of choice / grid / uniform / loguniform."""
    cases: list[dict[str, Any]] = Field(default_factory=list)
    """Explicit trial settings, each a mapping of dotted config paths to values: Tune runs every case (crossed
    with the space), e.g. ``{training.reward_type: step}`` next to ``{training.reward_type: combined,
    training.boxed_weight: 0.5}``, where a grid would repeat the step run once per ignored weight."""

    @field_validator("space", "overrides")
    @classmethod
    def _not_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _not_reserved(value)

    @field_validator("cases")
    @classmethod
    def _cases_are_settings(cls, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, case in enumerate(cases):
            if not case:
                raise ValueError(f"case {i} is empty: give each case one or more dotted key: value settings")
            _not_reserved(case)
        return cases

    @model_validator(mode="after")
    def _something_to_sweep(self) -> SweepConfig:
        if not self.space and not self.cases:
            raise ValueError("give a space (dotted key -> choice/grid/uniform/loguniform) or cases, or both")
        both = sorted(set(self.space) & set(case_keys(self)))
        if both:
            raise ValueError(f"{', '.join(both)} is set both in space and in cases; set each key in one of them")
        return self

    @property
    def swept_keys(self) -> list[str]:
        """Every swept key: the cases' (in order of appearance), then the space's."""
        return [*case_keys(self), *self.space]


CASE = "case"
"""The Tune parameter holding a trial's case index (not a config field, so never a space key)."""


def case_keys(sweep: SweepConfig) -> list[str]:
    return list(dict.fromkeys(key for case in sweep.cases for key in case))


def trial_params(sweep: SweepConfig, tune_config: dict[str, Any]) -> dict[str, Any]:
    """A trial's dotted settings from its Tune config: its case's settings and its space values."""
    params = dict(sweep.cases[tune_config[CASE]]) if CASE in tune_config and sweep.cases else {}
    return {**params, **{key: value for key, value in tune_config.items() if key != CASE}}


# ----------------------------------------------------------------------------------------------------------------
# Loading and validation


def resolve_sweep_path(arg: str) -> Path:
    """A path, or a bare name looked up in ``configs/sweeps/``."""
    path = Path(arg)
    if path.is_file():
        return path
    named = config_dir() / "sweeps" / f"{path.stem}.yaml"
    if named.is_file():
        return named
    found = sorted(p.stem for p in (config_dir() / "sweeps").glob("*.yaml"))
    raise ConfigError(f"sweep file {arg!r} not found; configs/sweeps has: {', '.join(found) or 'none'}")


def load_sweep(path: str | Path) -> SweepConfig:
    """Parse and validate a sweep file; every problem is one ConfigError line naming the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping (name, metric, space, ...)")
    try:
        sweep = SweepConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{path}: {format_validation_error(err)}") from None
    return sweep if sweep.name else sweep.model_copy(update={"name": path.stem})


def config_field_names(model: type[BaseModel] = RunConfig) -> list[str]:
    """Every dotted leaf path of the config model (``training.learning_rate``, ``output_dir``, ...)."""
    names: list[str] = []
    for name, info in model.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            names += [f"{name}.{leaf}" for leaf in config_field_names(sub)]
        else:
            names.append(name)
    return names


def check_key(key: str, known: list[str]) -> None:
    if key in known:
        return
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"{key}: not a config field{hint}")


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def get_dotted(cfg: RunConfig, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def resource_overrides(resources: TrialResources) -> dict[str, Any]:
    return {RESOURCE_FIELDS[name]: value for name, value in resources.model_dump().items()
            if name in RESOURCE_FIELDS and value is not None}


def build_config(base: RunConfig, settings: dict[str, Any]) -> RunConfig:
    """``base`` with dotted ``settings`` applied, validated (ConfigError names the field)."""
    data = copy.deepcopy(base.model_dump(mode="json"))
    for key, value in settings.items():
        set_dotted(data, key, value)
    return validate_config(data)


def fixed_settings(sweep: SweepConfig) -> dict[str, Any]:
    """What every trial gets on top of the base config: the sweep's overrides and resource sizes."""
    return {**sweep.overrides, **resource_overrides(sweep.trial_resources)}


def grid_combinations(sweep: SweepConfig) -> list[dict[str, Any]]:
    """Every combination of the cases and grid dimensions (Tune runs each), or [] when there are too many to check."""
    grids = {k: s.value for k, s in sweep.space.items() if s.kind == "grid"}
    cases = sweep.cases or [{}]
    if len(cases) * math.prod(len(v) for v in grids.values()) > MAX_GRID_CHECKS:
        return []
    combos = [dict(zip(grids, combo, strict=True)) for combo in itertools.product(*grids.values())]
    return [{**case, **combo} for case in cases for combo in combos]


def validate_sweep(base: RunConfig, sweep: SweepConfig) -> SweepConfig:
    """Check every key and a sample of every dimension's values against the config model before anything starts,
    and that no two sampled points are the same run (:func:`check_distinct_runs`).

    Returns the sweep with case, choice and grid values normalised to the config's types (``"1e-4"`` -> ``0.0001``).
    """
    known = config_field_names()
    for key in [*sweep.overrides, *sweep.swept_keys]:
        check_key(key, known)
    fixed = fixed_settings(sweep)
    try:
        build_config(base, fixed)
    except ConfigError as err:
        raise ConfigError(f"sweep overrides: {err}") from None
    space = {key: normalise_space(base, fixed, key, dim) for key, dim in sweep.space.items()}
    cases = [normalise_case(base, fixed, i, case) for i, case in enumerate(sweep.cases)]
    for combo in grid_combinations(sweep):
        try:
            build_config(base, {**fixed, **combo})
        except ConfigError as err:
            raise ConfigError(f"sweep grid combination {combo}: {err}") from None
    typed = sweep.model_copy(update={"space": space, "cases": cases})
    check_distinct_runs(base, typed)
    return typed


def normalise_case(base: RunConfig, fixed: dict[str, Any], index: int, case: dict[str, Any]) -> dict[str, Any]:
    try:
        cfg = build_config(base, {**fixed, **case})
    except ConfigError as err:
        raise ConfigError(f"sweep case {index} {case}: {err}") from None
    return {key: get_dotted(cfg, key) for key in case}


def normalise_space(base: RunConfig, fixed: dict[str, Any], key: str, dim: Space) -> Space:
    typed = []
    for value in dim.probe_values():
        try:
            cfg = build_config(base, {**fixed, key: value})
        except ConfigError as err:
            raise ConfigError(f"sweep space {key}={value!r}: {err}") from None
        typed.append(get_dotted(cfg, key))
    if dim.kind in ("choice", "grid"):
        return Space.model_validate({dim.kind: typed})
    return dim


def needs_own_warm_start(sweep: SweepConfig) -> bool:
    """True when the space changes the task, model or SFT, so trials cannot share one warm start."""
    return any(key.startswith(WARM_START_PREFIXES) and key != "model.init_dir" for key in sweep.swept_keys)


# ----------------------------------------------------------------------------------------------------------------
# Points that are the same run


Rule = tuple[str, Callable[[RunConfig], bool]]

_ADAPTIVE_LR: Rule = ("training.lr_control is kl_adaptive", lambda c: c.training.lr_control == "kl_adaptive")

IGNORED_UNLESS: dict[str, Rule] = {
    "training.boxed_weight": ("training.reward_type is combined", lambda c: c.training.reward_type == "combined"),
    "training.correct_weight": ("training.reward_type is combined", lambda c: c.training.reward_type == "combined"),
    "training.kl_estimator": ("training.kl_coef > 0", lambda c: c.training.kl_coef > 0),
    "training.kl_in_reward": ("training.kl_coef > 0", lambda c: c.training.kl_coef > 0),
    "training.target_kl": ("training.early_stopping is true", lambda c: c.training.early_stopping),
    "training.lr_control_target_kl": _ADAPTIVE_LR,
    "training.lr_control_factor": _ADAPTIVE_LR,
    "training.lr_control_min_scale": _ADAPTIVE_LR,
    "training.vf_coef": ("training.algorithm is ppo", lambda c: c.training.algorithm == "ppo"),
    "training.cliprange_value": ("training.algorithm is ppo", lambda c: c.training.algorithm == "ppo"),
    "training.lam": ("training.algorithm is ppo", lambda c: c.training.algorithm == "ppo"),
    "training.gamma": (
        "training.algorithm is ppo or reinforce_pp", lambda c: c.training.algorithm in ("ppo", "reinforce_pp")
    ),
    "training.overlong_penalty": ("training.algorithm is dapo", lambda c: c.training.algorithm == "dapo"),
    "training.overlong_buffer": (
        "training.algorithm is dapo with overlong_penalty > 0",
        lambda c: c.training.algorithm == "dapo" and c.training.overlong_penalty > 0,
    ),
}
"""Knobs a run does not read unless a condition holds: dotted key -> (the condition in words, its test)."""

REWARD_KEYS = ("training.reward_type", "training.boxed_weight", "training.correct_weight")


def reward_scale_free(cfg: RunConfig) -> str | None:
    """Why multiplying the reward by a positive constant leaves training unchanged, or None where it does not."""
    t = cfg.training
    if t.algorithm == "grpo":
        return "grpo divides each group's rewards by their std"
    if t.algorithm == "dapo" and t.overlong_penalty == 0:
        return "dapo (overlong_penalty 0) divides each group's rewards by their std"
    if t.algorithm == "reinforce_pp" and t.kl_coef == 0:
        return "reinforce_pp (kl_coef 0) whitens the returns over the batch"
    return None


def reward_weights(cfg: RunConfig) -> tuple[float, ...]:
    """The training reward as weights of (boxed, correct, step); divided by their sum where the scale is free."""
    t = cfg.training
    by_type = {"boxed": (1.0, 0.0, 0.0), "correct": (0.0, 1.0, 0.0), "step": (0.0, 0.0, 1.0),
               "combined": (t.boxed_weight, t.correct_weight, 0.0)}
    weights: tuple[float, ...] = by_type[t.reward_type]
    total = sum(weights)
    if reward_scale_free(cfg) is not None and total > 0:
        weights = tuple(w / total for w in weights)
    return tuple(round(w, 9) for w in weights)


def run_identity(cfg: RunConfig, keys: list[str]) -> tuple[tuple[str, str], ...]:
    """What the swept keys change about the run: an ignored knob counts as unset, the reward as its weights."""
    parts = []
    for key in keys:
        rule = IGNORED_UNLESS.get(key)
        if key not in REWARD_KEYS:
            parts.append((key, "-" if rule is not None and not rule[1](cfg) else repr(get_dotted(cfg, key))))
    if any(key in REWARD_KEYS for key in keys):
        parts.append(("reward", repr(reward_weights(cfg))))
    return tuple(parts)


def why_same_run(first: RunConfig, second: dict[str, Any], first_point: dict[str, Any]) -> str:
    """Words for why two points with the same :func:`run_identity` are the same run."""
    differ = [key for key in first_point if first_point[key] != second.get(key)]
    reasons = []
    for key in differ:
        rule = IGNORED_UNLESS.get(key)
        if rule is not None and not rule[1](first):
            reasons.append(f"{key} is ignored unless {rule[0]}")
    if not reasons and any(key in REWARD_KEYS for key in differ):
        scale = reward_scale_free(first)
        reasons.append(f"the same reward{f' up to scale, and {scale}' if scale else ''}")
    return "; ".join(reasons) or "the same settings"


def sample_points(sweep: SweepConfig) -> list[dict[str, Any]]:
    """Points standing for the sweep: every case crossed with every probed value of every dimension; one
    dimension at a time (the others at their first value) when that is too many."""
    dims = {key: dim.probe_values() for key, dim in sweep.space.items()}
    cases = sweep.cases or [{}]
    if len(cases) * math.prod(len(v) for v in dims.values()) <= MAX_GRID_CHECKS:
        combos = [dict(zip(dims, combo, strict=True)) for combo in itertools.product(*dims.values())]
        return [{**case, **combo} for case in cases for combo in combos]
    first = {key: values[0] for key, values in dims.items()}
    points = [{**case, **first} for case in cases]
    return points + [{**cases[0], **first, key: v} for key, values in dims.items() for v in values[1:]]


def check_distinct_runs(base: RunConfig, sweep: SweepConfig) -> None:
    """ConfigError naming two points of the sweep that are the same run (differing only in knobs the run ignores,
    or in a reward rescaling the algorithm normalises away), so that no trial repeats another."""
    fixed, keys = fixed_settings(sweep), sweep.swept_keys
    seen: dict[tuple[tuple[str, str], ...], tuple[dict[str, Any], RunConfig]] = {}
    for point in sample_points(sweep):
        try:
            cfg = build_config(base, {**fixed, **point})
        except ConfigError as err:
            raise ConfigError(f"sweep point {point}: {err}") from None
        identity = run_identity(cfg, keys)
        if identity in seen:
            earlier, earlier_cfg = seen[identity]
            raise ConfigError(
                f"sweep points {earlier} and {point} are the same run ({why_same_run(earlier_cfg, point, earlier)}); "
                "sweep what changes training"
            )
        seen[identity] = (point, cfg)


# ----------------------------------------------------------------------------------------------------------------
# Trial configs


def absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def trial_config(
    base: RunConfig, sweep: SweepConfig, params: dict[str, Any], trial_dir: Path, tracking_uri: str, run_name: str
) -> RunConfig:
    """Base config + the sweep's fixed settings + the sampled params, writing under ``trial_dir`` (absolute paths:
    Tune runs each trial in its own working directory)."""
    cfg = build_config(base, {**fixed_settings(sweep), **params})
    warm = trial_dir / "warm_start" if needs_own_warm_start(sweep) else Path(cfg.warm_start_dir)
    return build_config(cfg, {
        "output_dir": absolute(str(trial_dir)), "warm_start_dir": absolute(str(warm)),
        "model.init_dir": absolute(cfg.model.init_dir), "resume": True,
        "tracking.tracking_uri": tracking_uri, "tracking.run_name": run_name,
    })


def evals_per_run(cfg: RunConfig) -> int:
    """Held-out evaluations (= Tune reports from the learner) of one complete run (see controller.is_eval_step)."""
    total, every = cfg.training.total_steps, cfg.training.eval_every
    return total // every + (1 if total % every else 0)


def probe_configs(base: RunConfig, sweep: SweepConfig) -> list[RunConfig]:
    """The base with the fixed settings, and with each probed value of each dimension (a validated sweep's)."""
    fixed = fixed_settings(sweep)
    configs = [build_config(base, fixed)] + [build_config(base, {**fixed, **case}) for case in sweep.cases]
    return configs + [build_config(base, {**fixed, k: v}) for k, dim in sweep.space.items() for v in dim.probe_values()]


def default_max_t(base: RunConfig, sweep: SweepConfig) -> int:
    """Tune reports of the longest complete trial among the probed configs: its evaluations + the final report."""
    return max(evals_per_run(c) for c in probe_configs(base, sweep)) + 1


def trial_cpus(cfg: RunConfig, resources: TrialResources) -> float:
    """Logical CPUs one trial holds: its rollout actors, verifiers, learner workers and the trial process."""
    roles = [(cfg.rollout.num_actors, cfg.rollout.num_cpus), (cfg.verifier.num_actors, cfg.verifier.num_cpus),
             (cfg.learner.num_workers, cfg.learner.num_cpus)]
    return sum(n * c for n, c in roles) + resources.trial_cpus


def custom_resources(cfg: RunConfig) -> dict[str, float]:
    """Units of the roles' Ray custom resources (``rollout``, ``verifier``, ``learner``) one trial needs."""
    units: dict[str, float] = {}
    roles = [(cfg.rollout.num_actors, cfg.rollout.resource), (cfg.verifier.num_actors, cfg.verifier.resource),
             (cfg.learner.num_workers, cfg.learner.resource)]
    for count, name in roles:
        if name:
            units[name] = units.get(name, 0) + count
    return units


def best_config_yaml(base: RunConfig, sweep: SweepConfig, params: dict[str, Any], header: list[str]) -> str:
    """The best trial's config as a standalone run: base + the sweep's fixed overrides + the params, with the
    base's own resources, tracking and a fresh output_dir (``dump_config``, so ``load_config`` reads it back)."""
    cfg = build_config(base, {**sweep.overrides, **params})
    cfg = build_config(cfg, {"output_dir": f"{base.output_dir}_{sweep.name}_best"})
    return "".join(f"# {line}\n" for line in header) + dump_config(cfg)


# ----------------------------------------------------------------------------------------------------------------
# Result table


@dataclass
class TrialRow:
    """One trial of a sweep, as the summary table shows it."""

    trial_id: str
    params: dict[str, Any]
    metric: float | None
    status: str
    evals: int = 0
    error: str = ""
    output_dir: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: list[TrialRow], metric: str, keys: list[str]) -> str:
    """Fixed-width table: trial, one column per swept key ("-" where a case leaves it at the base config's value),
    the metric, evaluations, status, error."""
    header = ["trial", *keys, metric, "evals", "status", "error"]
    body = [
        [r.trial_id, *(format_value(r.params.get(k, "-")) for k in keys),  # "-": the base config's value
         "-" if r.metric is None or math.isnan(r.metric) else f"{r.metric:.4f}", str(r.evals), r.status,
         r.error.splitlines()[0] if r.error else ""]
        for r in rows
    ]
    lines = [header, *body]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def best_row(rows: list[TrialRow], mode: str) -> TrialRow | None:
    """The trial with the best last-reported metric among trials that did not fail."""
    scored = [(r.metric, r) for r in rows if r.status != "failed" and r.metric is not None and not math.isnan(r.metric)]
    if not scored:
        return None
    sign = 1.0 if mode == "max" else -1.0
    return max(scored, key=lambda pair: sign * pair[0])[1]
