"""The one failure a run cannot survive: losing the Ray head. Without its GCS, Ray keeps no cluster state (no
actors, no objects, no job), so the driver cannot go on; what survives is the storage URI (checkpoints) and the
MLflow tracking store. :class:`HeadWatch` turns the loss into one clear line, a FAILED MLflow run and exit code 3,
before Ray's own core worker gives up on the GCS (``RAY_gcs_rpc_server_reconnect_timeout_s``, 60 s by default) and
kills the process with a log line that names neither the checkpoint nor how to resume. Running the same command
again (or resubmitting the job, on a new head) resumes from the last checkpoint.

A head that comes back within Ray's reconnect window (GCS fault tolerance with an external Redis) is not a loss:
the watch declares the head lost only ``MARGIN_S`` before Ray itself would.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable

EXIT_HEAD_LOST = 3
MARGIN_S = 10.0
MIN_LOST_AFTER_S = 5.0


def ray_reconnect_timeout_s() -> float:
    """How long Ray's processes wait for a lost GCS before they give up (Ray's own setting)."""
    try:
        return float(os.environ.get("RAY_gcs_rpc_server_reconnect_timeout_s", "60"))  # noqa: SIM112 (Ray's name)
    except ValueError:
        return 60.0


def reachable(address: str, timeout_s: float = 2.0) -> bool:
    """Whether a TCP connection to ``host:port`` opens (the GCS answers on its port while it lives)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


class HeadWatch(threading.Thread):
    """Polls the GCS address every ``period_s``. After ``lost_after_s`` without an answer it prints
    ``error: <describe()>`` to stderr, calls ``on_lost`` (given ``ON_LOST_S`` at most, e.g. to mark the MLflow run
    FAILED) and ends the process with exit code 3. :meth:`stop` ends the watch (call it before Ray shuts down)."""

    ON_LOST_S = 10.0

    def __init__(
        self,
        gcs_address: str,
        describe: Callable[[float], str],
        on_lost: Callable[[], None] = lambda: None,
        period_s: float = 1.0,
        lost_after_s: float | None = None,
    ) -> None:
        super().__init__(name="rlvr-head-watch", daemon=True)
        self.gcs_address, self.describe, self.on_lost, self.period_s = gcs_address, describe, on_lost, period_s
        self.lost_after_s = lost_after_s or max(MIN_LOST_AFTER_S, ray_reconnect_timeout_s() - MARGIN_S)
        self._stopped = threading.Event()

    @classmethod
    def of_ray(cls, describe: Callable[[float], str], on_lost: Callable[[], None]) -> HeadWatch | None:
        """A started watch on the GCS this process's Ray is connected to; None when this process has no GCS
        address of its own (a Ray Client ``ray://`` session, which fails on its own when the head goes)."""
        import ray

        try:
            address = ray.get_runtime_context().gcs_address
        except Exception:
            return None
        if not address or ":" not in address:
            return None
        watch = cls(address, describe, on_lost)
        watch.start()
        return watch

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        last_answer = time.monotonic()
        while not self._stopped.wait(self.period_s):
            if reachable(self.gcs_address):
                last_answer = time.monotonic()
            elif time.monotonic() - last_answer >= self.lost_after_s and not self._stopped.is_set():
                self._give_up(time.monotonic() - last_answer)
                return

    def _give_up(self, silent_s: float) -> None:
        try:
            line = self.describe(silent_s)
        except Exception as err:  # the line must come out whatever else is broken
            line = f"lost the Ray head (its GCS at {self.gcs_address} is unreachable): {err}"
        print(f"error: {line}", file=sys.stderr, flush=True)
        ender = threading.Thread(target=self.on_lost, daemon=True)
        ender.start()
        ender.join(self.ON_LOST_S)
        sys.stdout.flush()
        os._exit(EXIT_HEAD_LOST)


def head_lost_line(gcs_address: str, silent_s: float, checkpoint_step: int | None, storage: str) -> str:
    """The one line a run prints when its head is gone: what happened, what is kept, what to do."""
    kept = (
        f"the last checkpoint is step {checkpoint_step} in {storage}; run the same command again (or resubmit the "
        "job) to resume from it"
        if checkpoint_step
        else f"no checkpoint was written yet in {storage}; running the same command again starts the run over"
    )
    return (
        f"lost the Ray head: its GCS at {gcs_address} has not answered for {silent_s:.0f} s, and a run cannot go on "
        f"without it; {kept}"
    )
