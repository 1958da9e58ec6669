"""Run a command (or this very test) in a network namespace that has only `lo` (ENVIRONMENT.md).

Media in the web tests must stay on loopback: inside `unshare -n` there is no other interface, and ICE
host candidates are restricted to 127.0.0.1 anyway.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IN_NETNS_ENV = "MICROMOTION_IN_NETNS"


def netns_missing_reason() -> str | None:
    """Why a loopback-only namespace cannot be made here (None when it can)."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"'{tool}' not found (install util-linux / iproute2)"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare -n is not permitted here ({probe.stderr.strip() or probe.returncode}); run as root"
    return None


def loopback_command(argv: list[str]) -> list[str]:
    """`argv` wrapped to run with only `lo` up."""
    return ["unshare", "-n", "sh", "-c", "ip link set lo up && exec " + " ".join(shlex.quote(a) for a in argv)]


def run_loopback(argv: list[str], timeout: float, extra_env: dict | None = None,
                 **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{IN_NETNS_ENV: "1"}, **(extra_env or {}))
    env.setdefault("PYTHONPATH", str(REPO))
    return subprocess.run(loopback_command(argv), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, **kw)


def rerun_in_netns(request, timeout: float = 240) -> bool:
    """Outside the namespace: re-run this test inside one and assert it passed; return True (caller returns).

    Inside: return False (the caller runs its body)."""
    if os.environ.get(IN_NETNS_ENV) == "1":
        return False
    reason = netns_missing_reason()
    if reason:
        pytest.skip(f"needs a loopback-only network namespace: {reason}")
    res = run_loopback([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                        request.node.nodeid], timeout=timeout)
    assert res.returncode == 0, f"in-namespace run failed:\n{res.stdout[-6000:]}\n{res.stderr[-3000:]}"
    return True
