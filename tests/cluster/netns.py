"""Hosts that share nothing but the network, on this one machine (needs root: `ip netns`, veth, bridge, mounts).

Each :class:`Host` is a network namespace with one veth end (``eth0``, an address of a private /24 this module
creates) plugged into a bridge in the root namespace, which holds the subnet's ``.1`` address so the test process
(the "submitter", outside every host) can reach the hosts. Nothing else is routed: no default route, no forwarding.

Every command run on a host also gets its own mount namespace, in which:

- ``/tmp`` is the host's private directory (``BASE/<host>/tmp`` seen from the root namespace, kept for logs), so the
  Ray temp dir, HOME (``/tmp/home``), the job's working dir and every output dir are private to the host;
- ``/dev/shm`` is a fresh tmpfs (Ray's object store);
- ``/`` is remounted read-only, so nothing can be written anywhere another host could read it: the project venv and
  the code stay readable (read-only code is fine), but a file a host writes lives only in its private ``/tmp``.

No directory is shared between hosts: what must outlive a host (checkpoints) goes over the network to an
S3-compatible server on a host of its own (see :mod:`netns_ray`).

Processes are not in a private PID namespace, so the test can SIGKILL any of them by pid.
Teardown (:meth:`Network.close`) SIGKILLs every process of every host namespace (``ip netns pids``), deletes the
namespaces, veths and the bridge, and is safe to call after a partial setup.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_NETWORKS = itertools.count()
REPO = Path(__file__).resolve().parents[2]

_MOUNT_SCRIPT = """set -e
if [ -n "$RLVR_NS_KEEP" ]; then
  keep="$RLVR_NS_ROOT${RLVR_NS_KEEP#/tmp}"
  mkdir -p "$keep" && mount --bind "$RLVR_NS_KEEP" "$keep" && mount -o remount,bind,ro "$keep"
fi
mount --rbind "$RLVR_NS_ROOT" /tmp
mount -t tmpfs -o size=1g tmpfs /dev/shm
mount -o remount,bind,ro /
unset RLVR_NS_ROOT RLVR_NS_KEEP
exec "$@"
"""


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


def _used_subnets() -> str:
    return subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True, timeout=30).stdout


def _free_subnet() -> str:
    """A 10.213.X /24 no interface of this machine uses yet."""
    used = _used_subnets()
    for offset in range(250):
        third = (os.getpid() + offset) % 250 + 1
        prefix = f"10.213.{third}"
        if f"inet {prefix}." not in used:
            return prefix
    raise RuntimeError("no free 10.213.X.0/24 subnet for the test hosts")


@dataclass(frozen=True)
class Host:
    name: str
    netns: str
    ip: str
    root: Path
    """The host's private /tmp, as seen from the root namespace (read its logs from here after a failure)."""


class Network:
    """A bridge + private /24 in the root namespace, and hosts attached to it (see the module docstring)."""

    def __init__(self, base: Path) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("the multi-host harness needs root (ip netns, veth, bridge, mount namespaces)")
        self.base = base
        self.tag = f"{os.getpid() % 100000}{next(_NETWORKS) % 10}"  # unique while alive; interface names <= 15
        self.prefix = _free_subnet()
        self.gateway = f"{self.prefix}.1"
        self.bridge = f"rlvrbr{self.tag}"
        self.hosts: list[Host] = []
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add_host(self, name: str) -> Host:
        index = len(self.hosts)
        host = Host(name, f"rlvr{self.tag}-{name}", f"{self.prefix}.{10 + index}", self.base / name / "tmp")
        (host.root / "home").mkdir(parents=True, exist_ok=True)
        self.hosts.append(host)  # before creating anything, so close() removes a half-made host too
        outside = f"rv{self.tag}h{index}"
        _ip("netns", "add", host.netns)
        _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        _ip("link", "set", outside, "master", self.bridge, "up")
        _ip("-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        _ip("-n", host.netns, "link", "set", "eth0", "up")
        _ip("-n", host.netns, "link", "set", "lo", "up")
        return host

    def command(self, host: Host, argv: Sequence[str]) -> list[str]:
        """``argv`` as run on ``host``: in its network namespace and a fresh mount namespace (see module doc)."""
        return [
            "ip",
            "netns",
            "exec",
            host.netns,
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            _MOUNT_SCRIPT,
            "sh",
            *argv,
        ]

    def host_env(self, host: Host, env: Mapping[str, str]) -> dict[str, str]:
        return {
            **env,
            "HOME": "/tmp/home",
            "TMPDIR": "/tmp",
            "RLVR_NS_ROOT": str(host.root),
            # A checkout (and its venv) under /tmp would vanish behind the private /tmp: keep it, read-only.
            "RLVR_NS_KEEP": str(REPO) if REPO.is_relative_to("/tmp") else "",
        }

    def run(self, host: Host, argv: Sequence[str], env: Mapping[str, str], timeout: float) -> str:
        """Run to completion on ``host``; returns stdout+stderr, raises with them on a non-zero exit."""
        result = subprocess.run(
            self.command(host, argv), env=self.host_env(host, env), capture_output=True, text=True, timeout=timeout
        )
        output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        if result.returncode != 0:
            raise RuntimeError(f"on host {host.name}: {' '.join(argv)} exited {result.returncode}:\n{output}")
        return output

    def popen(self, host: Host, argv: Sequence[str], env: Mapping[str, str], log: Path) -> subprocess.Popen:
        """Start a long-running process on ``host``, output to ``log`` (in the root namespace)."""
        with log.open("ab") as out:
            return subprocess.Popen(
                self.command(host, argv),
                env=self.host_env(host, env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def pids(self, host: Host) -> set[int]:
        result = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True, timeout=30)
        return {int(pid) for pid in result.stdout.split()} - {os.getpid()}

    def kill_host(self, host: Host) -> None:
        """SIGKILL every process of ``host`` (a machine losing power) and wait until they are gone."""
        deadline = time.monotonic() + 20
        while (pids := self.pids(host)) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)

    def close(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(Exception):
                self.kill_host(host)
            with contextlib.suppress(Exception):
                _ip("netns", "del", host.netns)
        with contextlib.suppress(Exception):
            _ip("link", "del", self.bridge)  # the veths' root ends went with their namespaces
