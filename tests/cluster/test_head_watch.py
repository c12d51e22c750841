"""HeadWatch on a real TCP listener standing in for the GCS, in a child process (the watch ends its process):
it gives up with one line and exit code 3 only once the address has not answered for ``lost_after_s``, not while it
answers, and not after ``stop()``. The whole path (a real local head's GCS SIGKILLed mid-run, then the same command
resuming) is in tests/test_resume.py."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import socket, sys, time
    from rlvr_ray.cluster.head_watch import HeadWatch, head_lost_line

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    address = "127.0.0.1:%d" % server.getsockname()[1]
    ended = []
    watch = HeadWatch(address, lambda s: head_lost_line(address, s, 7, "s3://b/run"), lambda: ended.append(1),
                      period_s=0.05, lost_after_s=1.5)
    watch.start()
    time.sleep(0.5)                    # answering: no alarm
    if sys.argv[1] == "stop":
        watch.stop()
    server.close()                     # the GCS is gone
    time.sleep(0.3)
    print("alive after 0.3 s", flush=True)  # not yet lost_after_s without an answer
    time.sleep(3.0)
    print("alive at the end", ended, flush=True)
    """
)


def run_child(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=60)


def test_a_lost_head_ends_the_process_with_one_line_and_exit_code_3() -> None:
    result = run_child("lose")
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert result.stdout == "alive after 0.3 s\n"  # gave up after lost_after_s, not at the first failed poll
    (line,) = result.stderr.splitlines()
    assert re.match(r"error: lost the Ray head: its GCS at 127\.0\.0\.1:\d+ has not answered for \d+ s, ", line), line
    assert line.endswith("the last checkpoint is step 7 in s3://b/run; run the same command again (or resubmit "
                         "the job) to resume from it")  # fmt: skip


def test_a_stopped_watch_never_fires() -> None:
    result = run_child("stop")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["alive after 0.3 s", "alive at the end []"]


@pytest.mark.parametrize("step", [None, 0])
def test_the_line_says_when_there_is_no_checkpoint_yet(step: int | None) -> None:
    from rlvr_ray.cluster.head_watch import head_lost_line

    line = head_lost_line("10.0.0.1:6379", 12.4, step, "/runs/a/checkpoints")
    assert line == (
        "lost the Ray head: its GCS at 10.0.0.1:6379 has not answered for 12 s, and a run cannot go on without it; "
        "no checkpoint was written yet in /runs/a/checkpoints; running the same command again starts the run over"
    )
