"""The placement plan of one run: which processes and Ray actors it starts and what each reserves.

Pure (no ray import): ``python -m rlvr_ray.main --dry-run`` prints it, and ``python -m rlvr_ray.cluster check``
bin-packs it into a KubeRay manifest's worker groups. The numbers mirror what :mod:`rlvr_ray.run` asks Ray for:

- the job driver (warm start, baseline and final evaluation) is a plain process: on KubeRay it runs where the job's
  entrypoint runs, the head pod, and reserves no Ray resources;
- the Ray Train controller actor reserves 0 CPU and is pinned to the driver's node (Ray Train v2 does this);
- rollout actors, verifier actors and Ray Train workers each reserve their section's CPUs/GPUs plus one unit of
  the section's custom ``resource`` when it is set, which is what pins them to their worker group.

>>> from rlvr_ray.config import RunConfig
>>> plan = placement_plan(RunConfig())
>>> [(r.role, r.count) for r in plan.roles]
[('driver', 1), ('train_controller', 1), ('rollout', 1), ('verifier', 2), ('learner', 1)]
>>> plan.totals()
{'CPU': 2.5}
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from rlvr_ray.config import RunConfig


@dataclass(frozen=True)
class RolePlacement:
    """``count`` identical processes or actors of one role and what each one reserves."""

    role: str
    """driver, train_controller, rollout, verifier or learner."""
    label: str
    """How one of them is named in messages, e.g. 'rollout actor'."""
    count: int
    num_cpus: float
    num_gpus: float
    resource: str | None
    """Custom Ray resource each one needs one unit of (None: any node with the CPUs/GPUs will do)."""
    detail: str
    """What it is in Ray's terms (actor class), for the printed plan."""
    is_actor: bool = True
    """False for the driver process, which Ray does not schedule."""
    on_driver_node: bool = False
    """Pinned to the node the driver runs on (the head pod under a RayJob / ``ray job submit``)."""

    def needs(self) -> dict[str, float]:
        """Ray resources one of them reserves, zero entries left out: {'CPU': 4, 'GPU': 1, 'rollout': 1}."""
        wanted = {"CPU": self.num_cpus, "GPU": self.num_gpus}
        if self.resource:
            wanted[self.resource] = 1.0
        return {name: amount for name, amount in wanted.items() if amount > 0}


@dataclass(frozen=True)
class PlacementPlan:
    """Every role of one run, in start order."""

    roles: tuple[RolePlacement, ...]

    def actors(self) -> list[RolePlacement]:
        """The roles Ray has to schedule (everything but the driver process)."""
        return [role for role in self.roles if role.is_actor]

    def totals(self) -> dict[str, float]:
        """Sum of every actor's reservation: what the cluster must offer at once."""
        total: dict[str, float] = {}
        for role in self.actors():
            for name, amount in role.needs().items():
                total[name] = total.get(name, 0.0) + amount * role.count
        return total


def placement_plan(cfg: RunConfig) -> PlacementPlan:
    """The plan of ``cfg``: driver, Ray Train controller, rollout actors, verifier actors, learner workers."""
    rollout, verifier, learner = cfg.rollout, cfg.verifier, cfg.learner
    return PlacementPlan(
        (
            RolePlacement(
                "driver", "job driver", 1, 0.0, 0.0, None,
                "python -m rlvr_ray.main: warm start + evaluation; the head pod on KubeRay",
                is_actor=False,
            ),
            RolePlacement(
                "train_controller", "Ray Train controller", 1, 0.0, 0.0, None,
                "TrainController actor, on the driver's node", on_driver_node=True,
            ),
            RolePlacement(
                "rollout", "rollout actor", rollout.num_actors, rollout.num_cpus, rollout.num_gpus, rollout.resource,
                f"RolloutWorker actor (RolloutGroup), {rollout.engine} engine",
            ),
            RolePlacement(
                "verifier", "verifier actor", verifier.num_actors, verifier.num_cpus, 0.0, verifier.resource,
                "VerifierWorker actor (VerifierPool)",
            ),
            RolePlacement(
                "learner", "learner worker", learner.num_workers, learner.num_cpus,
                1.0 if learner.use_gpu else 0.0, learner.resource,
                "RayTrainWorker (TorchTrainer, one DDP rank)",
            ),
        )
    )


def sweep_plan(trial: PlacementPlan, concurrent_trials: int, trial_cpus: float) -> PlacementPlan:
    """What a Ray Tune sweep holds at once: ``concurrent_trials`` copies of one trial's actors, each trial also a
    Tune trial actor (``trial_cpus``; it runs that trial's warm start and evaluations, like a job driver does).
    Each trial's Ray Train controller sits on its trial's node, which may be any node, hence not pinned here."""
    roles: list[RolePlacement] = [
        RolePlacement("driver", "sweep driver", 1, 0.0, 0.0, None,
                      "python -m rlvr_ray.tune; the head pod on KubeRay", is_actor=False),
        RolePlacement("tune_trial", "Tune trial", concurrent_trials, trial_cpus, 0.0, None,
                      "one training run each (warm start + evaluation in the trial)"),
    ]
    for role in trial.actors():
        copies = replace(role, count=role.count * concurrent_trials, on_driver_node=False)
        if role.role == "train_controller":
            copies = replace(copies, detail="TrainController actor, on its trial's node")
        roles.append(copies)
    return PlacementPlan(tuple(roles))


def _amount(value: float) -> str:
    return f"{value:g}"


def format_needs(needs: dict[str, float]) -> str:
    """{'CPU': 4.0, 'rollout': 1.0} -> 'CPU 4, rollout 1' ('nothing' when empty)."""
    return ", ".join(f"{name} {_amount(amount)}" for name, amount in needs.items()) or "nothing"


def format_plan(plan: PlacementPlan) -> str:
    """A table of the plan (per-actor reservations) and the totals; what ``main --dry-run`` prints."""
    header = ("role", "count", "CPU", "GPU", "needs resource", "what")
    rows = [header]
    for role in plan.roles:
        resource = f"{role.resource} (1)" if role.resource else "-"
        rows.append(
            (role.role, str(role.count), _amount(role.num_cpus), _amount(role.num_gpus), resource, role.detail)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["placement plan (per actor; nothing was started):"]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  " + "  ".join([*cells, row[-1]]))
    lines.append(f"total reserved at once: {format_needs(plan.totals())}")
    # Roles reserving nothing (a 0-CPU controller) can go anywhere without harm; the others should be pinned.
    unpinned = [role.role for role in plan.actors() if role.needs() and not role.resource and not role.on_driver_node]
    if unpinned:
        lines.append(f"not pinned to a worker group (no custom resource): {', '.join(unpinned)}")
    return "\n".join(lines)
