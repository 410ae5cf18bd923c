"""Debian packages some tests need (headless Chromium, a one-node Slurm and munge), installed by
the test run itself when missing, so that the README's one test command works on a fresh
machine: as root with apt (as CI and the developers' machines run), else a clear failure."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

LOCK = Path("/tmp/ztfluigi-apt.lock")


def installed(package: str) -> bool:
    """Whether dpkg knows ``package`` as installed."""
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                            capture_output=True, text=True)  # fmt: skip
    return result.returncode == 0 and "install ok installed" in result.stdout


def ensure(*packages: str) -> None:
    """Install the missing ``packages`` with apt-get (root only); RuntimeError saying what to do
    otherwise."""
    if shutil.which("dpkg-query") is None:
        raise RuntimeError(f"not a Debian system: install {', '.join(packages)} by hand")
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer at a time
        missing = [p for p in packages if not installed(p)]
        if not missing:
            return
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise RuntimeError(f"missing Debian packages {', '.join(missing)}: "
                               f"sudo apt-get install {' '.join(missing)}")  # fmt: skip
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", *missing]):  # fmt: skip
            result = subprocess.run(command, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()[-500:]}")
