"""The persistent compilation cache: a second process reuses the first one's compiled functions (counted by jax's
own cache-hit event, not timed) and generates the same problems; a JAX_COMPILATION_CACHE_DIR set by the user wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import json, jax.monitoring
hits = []
jax.monitoring.register_event_listener(lambda name, **kw: hits.append(name) if name.endswith("/cache_hits") else None)
from rlvr_ray.task import Vocab
from rlvr_ray.task.rpn import generate_problems
problems = generate_problems(Vocab(p=7, operators="+-*"), 64, (1, 2), seed=3, split="train")
print(json.dumps({"hits": len(hits), "prompts": problems.prompts.tolist(), "answers": problems.answers.tolist()}))
"""


def run(env: dict[str, str]) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT"))}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env={**clean, **env}, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_a_second_process_reuses_the_compiled_functions(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    first = run(env)
    entries = list((tmp_path / "rlvr_ray" / "jax").glob("*-cache"))
    assert first["hits"] == 0 and entries, (first["hits"], entries)
    second = run(env)
    assert second["hits"] >= len(entries) - 1 > 0  # every function of the first process, from disk
    assert second["prompts"] == first["prompts"] and second["answers"] == first["answers"]


def test_a_cache_dir_set_by_the_user_wins(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    user = {"JAX_COMPILATION_CACHE_DIR": str(mine), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    run({"XDG_CACHE_HOME": str(tmp_path / "xdg"), **user})
    assert not (tmp_path / "xdg" / "rlvr_ray").exists()
    assert list(mine.glob("*-cache"))
