"""Virtualenvs holding the reference implementation (ztfimg / ztfin2p3), built once and cached.

The reference needs numpy < 2 and its own pin set (``reference_pipeline.md`` §10.1), so it runs in
a separate interpreter: a virtualenv under ``$XDG_CACHE_HOME/ztfluigi/<name>``, built under an
exclusive ``flock`` (concurrent processes wait for one build) and marked complete only at the
end, so an interrupted build is redone, not reused. Used by the differential test
(``test_reference_ztfimg.py``) and the per-quadrant bench (``bench/bench_quadrant.py``).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ZTFIMG_VERSION = "0.19.0"
ZTFIN2P3_VERSION = "0.4.1"
#: reference_pipeline.md §10.1: the pin set under which ztfimg 0.19.0 imports (pyarrow explicit:
#: dask.dataframe needs it and no package declares it).
PINS = (
    f"ztfimg=={ZTFIMG_VERSION}", "numpy<2", "pandas<2.3", "astropy<6.2", "dask<2025", "scipy<1.14",
    "matplotlib<3.10", "healpy<1.18", "pyarrow<18", "sep<1.3",
)  # fmt: skip
PIP_TIMEOUT = 1800  #: s, for each of `venv` and `pip install` (the build took 34–110 s here)


class ReferenceEnvError(RuntimeError):
    """The reference environment cannot be built or does not import what it must."""


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without what would leak this project's Python into the reference one."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONNOUSERSITE="1", **extra)
    return env


def imported_versions(python: str, scratch: Path, modules: tuple[str, ...]) -> str:
    """The ``__version__`` of each module as imported by ``python`` (space-separated), or why
    they do not import."""
    scratch.mkdir(parents=True, exist_ok=True)
    code = f"import {', '.join(modules)}; print({', '.join(m + '.__version__' for m in modules)})"
    try:
        proc = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=300, cwd=scratch,
            env=clean_env(ZTFDATA=str(scratch)),
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"not runnable ({exc})"
    if proc.returncode:
        return "import failed: " + proc.stderr.strip()[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ztfluigi"


def build_env(env_dir: Path, log: Path, pins: tuple[str, ...]) -> None:
    """``python -m venv`` + ``pip install`` the pin set into ``env_dir`` (output to ``log``)."""
    if env_dir.exists():
        shutil.rmtree(env_dir)
    with log.open("w") as out:
        for cmd in (
            [sys.executable, "-m", "venv", str(env_dir)],
            [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--no-input",
             "--disable-pip-version-check", *pins],
        ):  # fmt: skip
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            try:
                proc = subprocess.run(
                    cmd, stdout=out, stderr=subprocess.STDOUT, timeout=PIP_TIMEOUT, env=clean_env()
                )
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"timed out after {PIP_TIMEOUT} s: {' '.join(cmd)}") from None
            if proc.returncode:
                raise RuntimeError(f"exit status {proc.returncode}: {' '.join(cmd)}")


def cached_env(
    name: str, pins: tuple[str, ...], modules: tuple[str, ...], expected: str, scratch: Path
) -> tuple[str, float | None]:
    """(interpreter, build seconds or None if cached) of the virtualenv ``name`` with ``pins``,
    whose ``modules`` import with the versions ``expected``; ReferenceEnvError otherwise."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    env_dir, log = cache / name, cache / f"{name}.log"
    marker, python = env_dir / "ztfluigi-complete.json", str(env_dir / "bin" / "python")
    with (cache / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            complete = json.loads(marker.read_text()).get("pins") == list(pins)
        except (OSError, ValueError):
            complete = False
        if complete and imported_versions(python, scratch, modules) == expected:
            return python, None
        print(f"\nbuilding the reference environment {env_dir} (log {log}) ...", flush=True)
        start = time.monotonic()
        try:
            build_env(env_dir, log, pins)
        except (OSError, RuntimeError) as exc:
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise ReferenceEnvError(
                f"cannot build the reference environment {env_dir} ({exc}); log {log}:\n{tail}"
            ) from None
        found = imported_versions(python, scratch, modules)
        if found != expected:
            raise ReferenceEnvError(
                f"the reference environment {env_dir} was built but does not import "
                f"{'/'.join(modules)} {expected}: {found}"
            )
        seconds = time.monotonic() - start
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pins": list(pins), "build_seconds": round(seconds, 1)}))
        os.replace(tmp, marker)
    print(f"built the reference environment {env_dir} in {seconds:.0f} s")
    return python, seconds
