"""A real one-node Slurm for tests: munged, slurmctld and slurmd in a scratch directory.

As ``/work/shared/spec/slurm_localhost.md`` (Debian's slurm-wlm and munge, run as root), but
isolated from any system instance: own munge key and socket, free ports, ``SLURM_CONF`` in the
environment of every command. The daemons run in the foreground as children of the test (they
get SIGTERM if it dies) and are stopped by the PIDs in their pid files when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests import system_packages
from tests.luigid import die_with_parent, free_port, stop_process

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel")


def slurm_conf(scratch: Path, host: str, cpus: int, munge_socket: Path) -> str:
    """A minimal single-node slurm.conf (partition ``htc``), everything under ``scratch``."""
    return f"""\
ClusterName=ztf
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={scratch}/state
SlurmdSpoolDir={scratch}/spool
SlurmctldPidFile={scratch}/slurmctld.pid
SlurmdPidFile={scratch}/slurmd.pid
SlurmctldLogFile={scratch}/log/ctld.log
SlurmdLogFile={scratch}/log/d.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
MailProg=/bin/true
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=20000 State=UNKNOWN
PartitionName=htc Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class LocalSlurm:
    """A running single-node cluster and how to run its client commands."""

    scratch: Path
    conf: Path
    host: str

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str) -> str:
        """Run a Slurm client command; its stdout (raises with stderr on failure)."""
        result = subprocess.run(cmd, env={**os.environ, **self.env}, capture_output=True,
                                text=True, timeout=60)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {result.returncode}: {result.stderr}")
        return result.stdout

    def queue(self) -> list[str]:
        """``squeue -h`` lines: the jobs pending or running."""
        return [line for line in self.run("squeue", "-h").splitlines() if line.strip()]

    def wait_until_empty(self, timeout: float) -> float:
        """Poll ``squeue`` until no job is left; the seconds waited (RuntimeError on timeout)."""
        t0 = time.monotonic()
        while self.queue():
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"jobs still queued after {timeout} s: {self.queue()}")
            time.sleep(1.0)
        return time.monotonic() - t0

    def job_records(self, job_id: str) -> list[dict[str, str]]:
        """``scontrol show job`` records of a job (array elements each), as key → value."""
        out = self.run("scontrol", "-o", "show", "job", job_id)
        records = []
        for line in out.splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if fields:
                records.append(fields)
        return records

    def log_tail(self, n: int = 40) -> str:
        """The last lines of the daemons' logs (for failure messages)."""
        parts = []
        for path in sorted((self.scratch / "log").glob("*")):
            lines = path.read_text(errors="replace").splitlines()[-n:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)


def _check_can_run() -> None:
    """Install slurm-wlm and munge if missing; fail (not skip) with the reason when this machine
    cannot run the local cluster."""
    system_packages.ensure("slurm-wlm", "munge")
    missing = [b for b in BINARIES if shutil.which(b) is None
               and not Path("/usr/sbin", b).exists()]  # fmt: skip
    if missing:
        raise RuntimeError(f"Slurm/munge not installed (missing {', '.join(missing)}); "
                           "install slurm-wlm and munge")  # fmt: skip
    if os.geteuid() != 0:
        raise RuntimeError("the local Slurm runs slurmd/slurmctld as root; run the tests as root")


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _stop_by_pidfile(pidfile: Path, proc: subprocess.Popen) -> None:
    """SIGTERM the PID in ``pidfile`` (our child ``proc``), then make sure ``proc`` is gone."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().split()[0])
        if pid == proc.pid:  # never signal a PID we did not start (stale pid files)
            os.kill(pid, signal.SIGTERM)
    stop_process(proc)


@contextlib.contextmanager
def local_slurm(cpus: int = 2, timeout: float = 60.0) -> Iterator[LocalSlurm]:
    """Start munged, slurmctld and slurmd; yield when the node is idle; stop them all on exit."""
    _check_can_run()
    # Short path: Unix socket names (munge, slurmd spool) are limited to 108 bytes.
    scratch = Path(tempfile.mkdtemp(prefix="ztf-slurm-"))
    scratch.chmod(0o755)  # munged wants its socket directory traversable by all
    for sub in ("munge", "state", "spool", "log"):
        (scratch / sub).mkdir(mode=0o755)
    key = scratch / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = scratch / "munge" / "munge.sock"
    host = socket.gethostname().split(".")[0]
    conf = scratch / "slurm.conf"
    conf.write_text(slurm_conf(scratch, host, cpus, munge_socket))
    cluster = LocalSlurm(scratch, conf, host)
    env = {**os.environ, **cluster.env}
    daemons: list[tuple[Path, subprocess.Popen]] = []

    def start(cmd: list[str], pidfile: Path, log: str) -> None:
        with open(scratch / "log" / log, "wb") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    preexec_fn=die_with_parent)  # fmt: skip
        daemons.append((pidfile, proc))

    try:
        start([_binary("munged"), "--foreground", "--force", f"--socket={munge_socket}",
               f"--key-file={key}", f"--pid-file={scratch}/munge/munged.pid",
               f"--seed-file={scratch}/munge/munged.seed",
               f"--log-file={scratch}/log/munged.log"],
              scratch / "munge" / "munged.pid", "munged.out")  # fmt: skip
        _wait(lambda: munge_socket.exists(), timeout, "munged did not create its socket", cluster)
        start([_binary("slurmctld"), "-D", "-f", str(conf)], scratch / "slurmctld.pid", "ctld.out")
        start([_binary("slurmd"), "-D", "-f", str(conf)], scratch / "slurmd.pid", "d.out")
        for _, proc in daemons:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        _wait(lambda: _node_idle(cluster), timeout, "the node did not become idle", cluster)
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            jobs = cluster.run("squeue", "-h", "-o", "%A").split()
            if jobs:
                cluster.run("scancel", *sorted(set(jobs)))
                cluster.wait_until_empty(30)
        for pidfile, proc in reversed(daemons):
            _stop_by_pidfile(pidfile, proc)
        shutil.rmtree(scratch, ignore_errors=True)


def _node_idle(cluster: LocalSlurm) -> bool:
    try:
        return cluster.run("sinfo", "-h", "-o", "%t").split() == ["idle"]
    except RuntimeError:
        return False


def _wait(ready: Callable[[], bool], timeout: float, what: str, cluster: LocalSlurm) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout} s\n{cluster.log_tail()}")
        time.sleep(0.5)
