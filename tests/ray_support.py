"""Helpers for tests that run Ray on loopback and leave nothing behind.

* `run_isolated(argv, timeout)`: the command in a namespace with only `lo` (network) that is also its own PID
  namespace: when the command ends -- passed, failed, or killed at the timeout -- the kernel ends every process it
  started, Ray's daemons included (a SIGKILLed Ray driver otherwise leaves its agents running).
* `start_local_ray()` / `stop_local_ray()`: a Ray head on 127.0.0.1, no dashboard, Serve without HTTP proxies.
* `web_serving(serve)`: extra `python -m web` flags and environment for "local" or "ray" serving; with "ray" the
  server starts a private Ray on 127.0.0.1 under its own RAY_TMPDIR, and every process of it is ended afterwards
  (`ray_processes` / `end_processes`), also when the server was killed (the web tests' namespace is network only).
* `replica_actor_names(app)`: the Serve replica actors of an application (to kill one).
* `SlowTint`: an editor source for Ray replicas whose every pass takes `delay_ms` (a request surely running).
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IN_RAY_NS = "MICROMOTION_IN_RAY_NS"
_ISOLATE = ["unshare", "-n", "-p", "-f", "--kill-child", "--mount-proc"]


def inside() -> bool:
    """True in the isolated namespace `run_isolated` made."""
    return os.environ.get(IN_RAY_NS) == "1"


def isolation_missing_reason() -> str | None:
    """Why the isolated namespace cannot be made here (None when it can)."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"'{tool}' not found (install util-linux / iproute2)"
    probe = subprocess.run([*_ISOLATE, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare -n -p is not permitted here ({probe.stderr.strip() or probe.returncode}); run as root"
    return None


def run_isolated(argv: list[str], timeout: float, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `argv` with only `lo` up, in its own PID namespace (see the module docstring); Ray's session files go
    to a temporary RAY_TMPDIR removed afterwards."""
    ray_tmp = tempfile.mkdtemp(prefix="mmray", dir="/tmp")      # short: Ray's socket paths must stay < 108 bytes
    env = dict(os.environ, **{IN_RAY_NS: "1", "RAY_TMPDIR": ray_tmp}, **(extra_env or {}))
    # the repository and tests/ (Ray replicas import this module's SlowTint by name)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), str(REPO / "tests"), env.get("PYTHONPATH")) if p)
    cmd = [*_ISOLATE, "sh", "-c", "ip link set lo up && exec " + " ".join(shlex.quote(a) for a in argv)]
    try:
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def start_local_ray(num_cpus: int = 4) -> None:
    """A Ray head bound to 127.0.0.1 in this process (no dashboard), and Serve with no HTTP proxy."""
    import logging

    import ray
    from ray import serve

    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=num_cpus,
             logging_level=logging.WARNING)
    serve.start(proxy_location="Disabled")


def stop_local_ray() -> None:
    import ray
    from ray import serve

    if ray.is_initialized():
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def replica_actor_names(app: str) -> list[tuple[str, str]]:
    """[(actor name, namespace)] of the running Serve replicas of `app`."""
    import ray

    return [(a["name"], a["namespace"]) for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(f"SERVE_REPLICA::{app}#")]


@contextmanager
def web_serving(serve: str):
    """Yields (server flags, server environment) for `python -m web` serving "local" or "ray" (module docstring)."""
    if serve == "local":
        yield [], {}
        return
    ray_tmp = tempfile.mkdtemp(prefix="mmray", dir="/tmp")    # short: Ray's socket paths must stay < 108 bytes
    try:
        yield ["--serve", "ray", "--ray-address", "local", "--cpus-per-replica", "1"], {"RAY_TMPDIR": ray_tmp}
    finally:
        end_processes(ray_processes(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)


def ray_processes(marker: str) -> list[int]:
    """PIDs of processes whose command line contains `marker` (e.g. the RAY_TMPDIR a test gave its server)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(proc.name))
    return pids


def end_processes(pids: list[int], grace_s: float = 5.0) -> None:
    """SIGTERM these processes, then SIGKILL the ones still there after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.2)


class SlowTint:
    """Builds, on a replica, the network-free `stream.demo.TintEditor` whose passes take `delay_ms` each."""

    def __init__(self, delay_ms: float):
        self.delay_ms = delay_ms

    def build(self, config):
        from stream.demo import TintEditor

        return TintEditor(crop_size=config.paste_size or 256, delay_ms=self.delay_ms)
