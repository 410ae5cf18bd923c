"""``ztfluigi slurm TASK [TASK ARGS…]``: a Slurm job array whose elements are Luigi workers.

Every array element runs ``luigi --module ztfluigi TASK … --scheduler-host H --scheduler-port P
--workers K`` against one central ``luigid``, which hands each task to exactly one worker; the
products land in the shared store. Two Luigi behaviours shape the element script:

* identical ``luigi`` command lines on one host exclude each other through a pid lock (exit
  ``already_running``): elements pass ``--no-lock``, the scheduler already serialises the tasks;
* a worker exits ``already_running`` / ``not_run`` when tasks it needs are held or were run by
  another worker, although nothing failed. The element then waits and runs ``luigi`` again (a
  quick no-op pass once the entry task is complete; a pass also picks up the tasks that became
  known in the meantime, e.g. a night's calibrations once its RawIndex exists). So an element
  exits 0 exactly when the entry task is complete, and with Luigi's code when a task failed.

Each element's worker id is ``slurm-<array job>_<index>@<host>``: the scheduler's task list and
worker page name the array element that ran each task.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import luigi

#: The worker id of an array element, as a bash double-quoted string (expanded in the job).
SLURM_WORKER_ID = "slurm-${SLURM_ARRAY_JOB_ID:-local}_${SLURM_ARRAY_TASK_ID:-0}@$(hostname)"

_TASK_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_TIME_RE = re.compile(r"^(\d+-\d+(:\d{1,2}){0,2}|\d+(:\d{1,2}){0,2})$")
_MEM_RE = re.compile(r"^\d+[KMGT]?$")
_WORD_RE = re.compile(r"^[^\s'\"\\]+$")


@dataclass(frozen=True)
class WorkerArray:
    """One submission: the entry task, the scheduler, the Slurm resources, the worker loop."""

    task: str
    task_args: tuple[str, ...] = ()
    scheduler_host: str = "localhost"
    scheduler_port: int = 8082
    partition: str = "htc"
    array_size: int = 1
    workers_per_job: int = 1
    time: str | None = None
    mem: str | None = None
    log_dir: str = "slurm-logs"
    workdir: str | None = None
    config_path: str | None = None
    luigi: str = "luigi"
    #: Luigi exit codes meaning "held or run by another worker" (``[retcode]`` already_running,
    #: not_run): the element waits ``rerun_wait`` seconds and runs again, at most ``max_passes``.
    rerun_codes: tuple[int, ...] = (10, 25)
    rerun_wait: int = 30
    max_passes: int = 120
    job_name: str = field(default="")
    #: Arguments appended per element, as bash double-quoted words (they may use ``$VARS``): a
    #: campaign's ``--element "${SLURM_ARRAY_TASK_ID:-0}" --elements N``.
    element_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _TASK_RE.match(self.task):
            raise ValueError(f"{self.task!r} is not a task name")
        if self.array_size < 1 or self.workers_per_job < 1 or self.max_passes < 1:
            raise ValueError("--array-size, --workers-per-job and --max-passes must be >= 1")
        if not 0 < self.scheduler_port < 65536 or self.rerun_wait < 0:
            raise ValueError(f"bad scheduler port {self.scheduler_port} or rerun wait")
        if self.time is not None and not _TIME_RE.match(self.time):
            raise ValueError(f"--time {self.time!r} is not a Slurm time (e.g. 90, 2:00:00, 1-12)")
        if self.mem is not None and not _MEM_RE.match(self.mem):
            raise ValueError(f"--mem {self.mem!r} is not a Slurm memory size (e.g. 4G, 4000M)")
        words = {"--partition": self.partition, "--scheduler-host": self.scheduler_host,
                 "--output": self.log_dir, "--chdir": self.workdir}  # fmt: skip
        for option, value in words.items():
            if value is not None and not _WORD_RE.match(value):
                raise ValueError(f"{option} {value!r}: blanks and quotes are not allowed here")
        if any(c in word for word in self.element_args for c in '"\\`'):
            raise ValueError(f"element arguments {self.element_args!r}: no quotes or backslashes")
        if not self.job_name:
            object.__setattr__(self, "job_name", f"ztfluigi-{self.task}")


def luigi_argv(array: WorkerArray) -> list[str]:
    """The Luigi worker command line of one element (without its ``--worker-id``)."""
    return [array.luigi, "--module", "ztfluigi", array.task, *array.task_args,
            "--scheduler-host", array.scheduler_host, "--scheduler-port", str(array.scheduler_port),
            "--workers", str(array.workers_per_job), "--no-lock"]  # fmt: skip


def worker_loop(
    argv: Sequence[str],
    worker_id: str = SLURM_WORKER_ID,
    rerun_codes: Sequence[int] = (10, 25),
    rerun_wait: int = 30,
    max_passes: int = 120,
    element_args: Sequence[str] = (),
) -> str:
    """Bash lines running the Luigi worker ``argv`` until its entry task is done or fails.

    ``worker_id`` and ``element_args`` are bash double-quoted strings (they may use ``$VARS``);
    ``argv`` is quoted here.
    """
    codes = " ".join(str(c) for c in sorted(set(rerun_codes)) if c)
    per_element = " ".join(f'"{word}"' for word in element_args)
    head = [f"luigi_cmd=({shlex.join(argv)} {per_element})".replace(" )", ")"),
            f'worker_id="{worker_id}"']  # fmt: skip
    if not codes:  # Luigi's own defaults: those cases already exit 0
        return "\n".join([*head, 'exec "${luigi_cmd[@]}" --worker-id "$worker_id"'])
    return "\n".join([
        *head,
        "pass=1",
        "while true; do",
        "    rc=0",
        '    "${luigi_cmd[@]}" --worker-id "$worker_id" || rc=$?',
        '    echo "ztfluigi: worker $worker_id pass $pass: luigi exited $rc" >&2',
        f'    case " {codes} " in',
        '        *" $rc "*) ;;  # held or run by another worker: not a failure, run again',
        '        *) exit "$rc" ;;',
        "    esac",
        f'    if [ "$pass" -ge {max_passes} ]; then exit "$rc"; fi',
        "    pass=$((pass + 1))",
        f"    sleep {rerun_wait}",
        "done",
    ])  # fmt: skip


def build_script(array: WorkerArray) -> str:
    """The sbatch script text: ``#SBATCH`` options, environment, then the worker loop."""
    sbatch = [
        f"--job-name={array.job_name}",
        f"--partition={array.partition}",
        f"--array=0-{array.array_size - 1}",
        "--ntasks=1",
        f"--cpus-per-task={array.workers_per_job}",
    ]
    if array.time is not None:
        sbatch.append(f"--time={array.time}")
    if array.mem is not None:
        sbatch.append(f"--mem={array.mem}")
    sbatch.append(f"--output={array.log_dir}/%x-%A_%a.log")
    if array.workdir:
        sbatch.append(f"--chdir={array.workdir}")
    lines = ["#!/bin/bash", *(f"#SBATCH {s}" for s in sbatch)]
    lines += [
        f"# Written by `ztfluigi slurm`: {array.array_size} Luigi worker(s) of the scheduler at "
        f"{array.scheduler_host}:{array.scheduler_port}",
        f"# building {array.task}; see ztfluigi/cli/slurm.py for the worker loop.",
        "set -uo pipefail",
    ]
    if array.config_path:
        lines.append(f"export LUIGI_CONFIG_PATH={shlex.quote(array.config_path)}")
    lines.append(worker_loop(luigi_argv(array), SLURM_WORKER_ID, array.rerun_codes,
                             array.rerun_wait, array.max_passes, array.element_args))  # fmt: skip
    return "\n".join(lines) + "\n"


def submit(script: Path, sbatch: str = "sbatch") -> str:
    """Submit ``script`` with ``sbatch --parsable``; the array job id."""
    result = subprocess.run([sbatch, "--parsable", str(script)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"sbatch failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout.strip().split(";")[0]


def entry_task(task: str, task_args: Sequence[str]) -> luigi.Task:
    """The entry task as the workers will build it: parameters are checked before submitting."""
    from luigi.cmdline_parser import CmdlineParser
    from luigi.task_register import TaskClassException

    argv = ["--module", "ztfluigi", task, *task_args]
    try:
        with CmdlineParser.global_instance(argv, allow_override=True) as parser:
            return parser.get_task_obj()
    except TaskClassException as exc:
        raise ValueError(" ".join(str(exc).split())) from None
    except SystemExit:  # argparse has printed why
        args = shlex.join(task_args)
        raise ValueError(f"luigi rejects the arguments of {task}: {args}") from None


def _own_options(parser: argparse.ArgumentParser, defaults: bool) -> argparse.ArgumentParser:
    """Add the options of ``ztfluigi slurm`` (``defaults=False``: to pick them out of task args)."""

    def d(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    add = parser.add_argument
    add("--partition", default=d("htc"), help="Slurm partition (default: htc)")
    add("--time", default=d(None), help="time limit per element, e.g. 2:00:00")
    add("--mem", default=d(None), help="memory per element, e.g. 4G")
    add("--array-size", type=int, default=d(1), help="number of array elements (workers)")
    add("--workers-per-job", type=int, default=d(1),
        help="Luigi worker processes per element (= --cpus-per-task)")  # fmt: skip
    add("--scheduler-host", default=d(None),
        help="luigid host as the compute nodes reach it (default: [core] scheduler_host)")
    add("--scheduler-port", type=int, default=d(None),
        help="luigid port (default: [core] scheduler_port)")
    add("--output", default=d("slurm-logs"), help="directory of the element logs")
    add("--script", default=d(None), help="where to write the script (default: in --output)")
    add("--config", default=d(None),
        help="luigi.cfg for the jobs (default: $LUIGI_CONFIG_PATH, else ./luigi.cfg)")
    add("--rerun-wait", type=int, default=d(30),
        help="seconds between worker passes while other workers hold tasks")
    add("--max-passes", type=int, default=d(120), help="worker passes per element at most")
    add("--submit", action="store_true", default=d(False), help="submit with sbatch")
    return parser


def _is_campaign(entry: luigi.Task) -> bool:
    """Whether ``entry`` is a campaign (its elements share it: ``--element``, ``--elements``)."""
    from ztfluigi.tasks.campaign import ApertureCatalogCampaign

    return isinstance(entry, ApertureCatalogCampaign)


def _luigi_executable() -> str:
    """The ``luigi`` of this environment (jobs must run the same installation)."""
    here = Path(sys.executable).parent / "luigi"
    return str(here) if here.exists() else shutil.which("luigi") or "luigi"


def _default_config() -> str | None:
    """The configuration file the jobs should read: as this process reads it."""
    if os.environ.get("LUIGI_CONFIG_PATH"):
        return str(Path(os.environ["LUIGI_CONFIG_PATH"]).resolve())
    local = Path("luigi.cfg")
    return str(local.resolve()) if local.exists() else None


def _slurm(args: argparse.Namespace) -> int:
    """Write (and submit) the worker array of ``args.task``."""
    import luigi.configuration
    import luigi.retcodes

    own = _own_options(argparse.ArgumentParser(add_help=False, allow_abbrev=False), False)
    args, task_args = own.parse_known_args(args.task_args, namespace=args)
    config_path = str(Path(args.config).resolve()) if args.config else _default_config()
    if args.config:
        luigi.configuration.add_config_path(config_path)
    entry = entry_task(args.task, task_args)
    cfg, codes = luigi.configuration.get_config(), luigi.retcodes.retcode()
    element_args: tuple[str, ...] = ()
    if _is_campaign(entry):  # each element drives the campaign from its own window
        element_args = ("--element", "${SLURM_ARRAY_TASK_ID:-0}", "--elements",
                        str(args.array_size))  # fmt: skip
    log_dir = Path(args.output).resolve()
    array = WorkerArray(
        task=args.task, task_args=tuple(task_args),
        scheduler_host=args.scheduler_host or cfg.get("core", "scheduler_host", "localhost"),
        scheduler_port=args.scheduler_port or cfg.getint("core", "scheduler_port", 8082),
        partition=args.partition, array_size=args.array_size,
        workers_per_job=args.workers_per_job, time=args.time, mem=args.mem,
        log_dir=str(log_dir), workdir=str(Path.cwd()),
        config_path=config_path,
        luigi=_luigi_executable(),
        rerun_codes=(codes.already_running, codes.not_run), rerun_wait=args.rerun_wait,
        max_passes=args.max_passes, element_args=element_args,
    )  # fmt: skip
    script = Path(args.script) if args.script else log_dir / f"{array.job_name}.sbatch"
    log_dir.mkdir(parents=True, exist_ok=True)  # Slurm does not create it: jobs would vanish
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(build_script(array))
    where = f"{array.scheduler_host}:{array.scheduler_port}"
    print(f"entry task {entry}: {array.array_size} element(s) x {array.workers_per_job} worker(s)")
    if array.scheduler_host in ("localhost", "127.0.0.1"):
        print(f"note: elements reach luigid at {where}: only jobs on this host can "
              "(--scheduler-host)", file=sys.stderr)  # fmt: skip
    if not args.submit:
        print(f"wrote {script}; submit with: sbatch {shlex.quote(str(script))}")
        return 0
    try:
        job = submit(script)
    except (OSError, RuntimeError) as exc:  # no sbatch, no controller: one line, no traceback
        print(f"ztfluigi: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(f"submitted array job {job} ({array.array_size} workers of luigid {where}, "
          f"partition {array.partition}); script {script}, logs in {log_dir}")  # fmt: skip
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``slurm``."""
    parser = sub.add_parser(
        "slurm", help="write/submit a Slurm job array of Luigi workers for a task",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
        epilog="Task arguments (e.g. --date 2019-03-31 --ccdid 5) may be mixed with the options.",
    )  # fmt: skip
    _own_options(parser, True)
    parser.add_argument("task", help="the entry task, e.g. ApertureCatalog")
    parser.add_argument("task_args", nargs=argparse.REMAINDER, help="the task's parameters")
    parser.set_defaults(func=_slurm)
