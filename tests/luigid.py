"""A real ``luigid`` for tests: 127.0.0.1, a free port, task history in SQLite, state/logs in tmp.

Workers started by the tests share its configuration file (``LUIGI_CONFIG_PATH``), which is the
repository's embedded ``luigi.cfg`` with the test's overrides (store root, scheduler delays, …).
"""

from __future__ import annotations

import configparser
import contextlib
import ctypes
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import DEMO_DATE, luigi_settings

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"

#: The narrowed demo night of the luigid and Slurm tests: one CCD, one filter (~70 tasks).
NIGHT = ("--date", DEMO_DATE.isoformat(), "--ccdid", "1", "--filtercode", "zr")

#: The scheduler settings of the tests: history on, dead workers noticed within seconds.
SCHEDULER_SETTINGS = {
    "record_task_history": "True",
    "worker_disconnect_delay": "5",
}


def venv_binary(name: str) -> str:
    """The console script ``name`` of the running interpreter's environment (luigi, luigid, …)."""
    path = VENV_BIN / name
    if not path.exists():
        raise FileNotFoundError(f"{name} is not installed next to {sys.executable}")
    return str(path)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGTERM when the test process dies (Linux)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def write_config(path: Path, settings: dict[str, dict[str, str]]) -> Path:
    """The repository's embedded ``luigi.cfg`` with ``settings`` applied, written to ``path``."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(REPO / "luigi.cfg")
    for section, values in settings.items():
        if not cfg.has_section(section):
            cfg.add_section(section)
        for key, value in values.items():
            cfg.set(section, key, str(value))
    with open(path, "w") as f:
        cfg.write(f)
    return path


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@dataclass
class Luigid:
    """A running central scheduler and how to talk to it."""

    port: int
    config: Path
    history_db: Path
    logdir: Path
    workdir: Path
    process: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def api(self, method: str, **kwargs: Any) -> Any:
        """Call a scheduler RPC over HTTP (``/api/<method>?data=<json>``); its ``response``."""
        query = urllib.parse.urlencode({"data": json.dumps(kwargs)})
        with urllib.request.urlopen(f"{self.url}/api/{method}?{query}", timeout=30) as r:
            return json.loads(r.read())["response"]

    def env(self) -> dict[str, str]:
        """Environment of a worker of this scheduler: its config file, the venv's binaries first."""
        env = dict(os.environ, LUIGI_CONFIG_PATH=str(self.config))
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        return env

    def worker_command(self, task: str, *args: str, workers: int = 1) -> list[str]:
        """``luigi --module ztfluigi <task> <args>`` pointed at this scheduler."""
        return [venv_binary("luigi"), "--module", "ztfluigi", task, *args,
                "--scheduler-host", HOST, "--scheduler-port", str(self.port),
                "--workers", str(workers)]  # fmt: skip

    def spawn(self, cmd: list[str], log: Path) -> subprocess.Popen:
        """Start a worker-side command (own process group; killed with luigid at the end)."""
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=self.workdir, env=self.env(), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=die_with_parent)  # fmt: skip
        self.workers.append(proc)
        return proc

    def start_worker(self, task: str, *args: str, log: Path, workers: int = 1) -> subprocess.Popen:
        """Start a ``luigi`` worker process (cwd = the scratch dir, output to ``log``)."""
        return self.spawn(self.worker_command(task, *args, workers=workers), log)

    def kill_workers(self) -> None:
        """Kill what :meth:`spawn` started and is still running (a failed test's leftovers)."""
        for proc in self.workers:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)

    def history(self) -> list[tuple[str, str, str | None, str]]:
        """Task history events, oldest first: (task_id, family, worker host, event)."""
        with contextlib.closing(sqlite3.connect(self.history_db)) as db:
            return db.execute(
                "SELECT tasks.task_id, tasks.name, tasks.host, task_events.event_name "
                "FROM task_events JOIN tasks ON task_events.task_id = tasks.id "
                "ORDER BY task_events.ts, task_events.id"
            ).fetchall()


def check_task_history_support() -> None:
    """luigid's task history needs SQLAlchemy, and luigi 3.8's code needs SQLAlchemy 1.4."""
    try:
        import sqlalchemy
    except ImportError as exc:
        raise RuntimeError("luigid's task history needs SQLAlchemy (>=1.4,<2)") from exc
    if int(sqlalchemy.__version__.split(".")[0]) >= 2:
        raise RuntimeError(f"luigi 3.8's db_task_history fails with SQLAlchemy "
                           f"{sqlalchemy.__version__} (raw SQL strings); use >=1.4,<2")  # fmt: skip


@contextlib.contextmanager
def running_luigid(
    workdir: Path, settings: dict[str, dict[str, str]] | None = None, timeout: float = 30.0
) -> Iterator[Luigid]:
    """Start ``luigid`` on a free 127.0.0.1 port with task history; stop it on exit.

    ``settings`` (luigi.cfg sections) are written with the scheduler test settings into
    ``workdir/luigi.cfg``, which luigid and the workers read through ``LUIGI_CONFIG_PATH``.
    """
    check_task_history_support()
    workdir.mkdir(parents=True, exist_ok=True)
    logdir = workdir / "luigid-log"
    logdir.mkdir(exist_ok=True)
    history_db = workdir / "history.sqlite"
    all_settings = {
        "scheduler": {**SCHEDULER_SETTINGS, "state_path": str(workdir / "luigid-state.pickle")},
        "task_history": {"db_connection": f"sqlite:///{history_db}"},
    }
    for section, values in (settings or {}).items():
        all_settings.setdefault(section, {}).update(values)
    config = write_config(workdir / "luigi.cfg", all_settings)
    port = free_port()
    cmd = [venv_binary("luigid"), "--address", HOST, "--port", str(port),
           "--state-path", all_settings["scheduler"]["state_path"], "--logdir", str(logdir)]
    env = dict(os.environ, LUIGI_CONFIG_PATH=str(config))
    with open(logdir / "luigid.out", "wb") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=die_with_parent)  # fmt: skip
    server = Luigid(port, config, history_db, logdir, workdir, proc)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                out = (logdir / "luigid.out").read_text(errors="replace")
                raise RuntimeError(f"luigid exited with {proc.returncode}: {out[-2000:]}")
            try:
                server.api("worker_list")
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"luigid did not answer on {server.url}: {exc}") from exc
                time.sleep(0.2)
        yield server
    finally:
        server.kill_workers()
        stop_process(proc)


def night_settings(store: Path) -> dict[str, dict[str, str]]:
    """The narrowed synthetic night (scale 16, one field); nights without calibration fail."""
    return {
        "ztfluigi": {"root": str(store), "archive": "sim", "refcat": "sim", "calib_window": "0"},
        "sim": {"seed": "0", "scale": "16", "n_fields": "1", "calib_gaps": "true"},
        "worker": {"wait_interval": "0.5", "wait_jitter": "0.5"},
    }


def scheduler_tasks(central: Luigid) -> dict[str, dict]:
    """Every task the (per-test) scheduler holds, with its state: the night's tasks, including
    dynamic dependencies that a re-registered unit no longer lists in its graph."""
    return central.api("task_list", status="")


def night_tasks(central: Luigid, settings: dict[str, dict[str, str]]) -> dict[str, dict]:
    """The scheduler's tasks of the narrowed night (its entry task's dependency graph)."""
    from ztfluigi.tasks import ApertureCatalog

    with luigi_settings(settings):
        task_id = ApertureCatalog(date=DEMO_DATE, ccdid=1, filtercode="zr").task_id
    graph = central.api("dep_graph", task_id=task_id)  # its nodes lack display names
    listed = central.api("task_list", status="")  # every task the scheduler holds
    return {task_id: listed[task_id] for task_id in graph}
