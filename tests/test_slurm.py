"""``ztfluigi slurm``: the sbatch script it writes, and a real job array on a one-node Slurm whose
elements are Luigi workers of a real ``luigid`` building the night.
"""

from __future__ import annotations

import collections
import json
import os
import re
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import DEMO_DATE, luigi_settings
from tests.luigid import (
    NIGHT,
    night_settings,
    running_luigid,
    scheduler_tasks,
    venv_binary,
)
from tests.slurmlocal import local_slurm
from ztfluigi import cli
from ztfluigi.cli.slurm import WorkerArray, build_script, luigi_argv

# --------------------------------------------------------------------------------------------
# The script builder
# --------------------------------------------------------------------------------------------


def sbatch_lines(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines()
            if line.startswith("#SBATCH ")]  # fmt: skip


def test_options_become_sbatch_lines():
    array = WorkerArray(
        task="ApertureCatalog", task_args=("--date", "2019-03-31"), partition="htc",
        array_size=40, workers_per_job=4, time="2:00:00", mem="8G", log_dir="/sps/ztf/logs",
        workdir="/pbs/home/z/ztf", scheduler_host="ccwslurm0001", scheduler_port=8082,
    )  # fmt: skip
    script = build_script(array)
    assert script.startswith("#!/bin/bash\n")
    assert sbatch_lines(script) == [
        "--job-name=ztfluigi-ApertureCatalog",
        "--partition=htc",
        "--array=0-39",
        "--ntasks=1",
        "--cpus-per-task=4",
        "--time=2:00:00",
        "--mem=8G",
        "--output=/sps/ztf/logs/%x-%A_%a.log",
        "--chdir=/pbs/home/z/ztf",
    ]


def test_defaults_leave_time_and_memory_to_the_site():
    lines = sbatch_lines(build_script(WorkerArray(task="RawNight", task_args=("--date", "x"))))
    assert "--partition=htc" in lines and "--array=0-0" in lines
    assert not [line for line in lines if line.startswith(("--time", "--mem", "--chdir"))]


def test_luigi_command_line_of_an_element():
    array = WorkerArray(task="ApertureCatalog", task_args=("--date", "2019-03-31", "--ccdid", "5"),
                        scheduler_host="10.0.0.7", scheduler_port=8099, workers_per_job=3,
                        luigi="/opt/venv/bin/luigi")  # fmt: skip
    assert luigi_argv(array) == [
        "/opt/venv/bin/luigi", "--module", "ztfluigi", "ApertureCatalog",
        "--date", "2019-03-31", "--ccdid", "5",
        "--scheduler-host", "10.0.0.7", "--scheduler-port", "8099", "--workers", "3", "--no-lock",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("time", "2 hours", "not a Slurm time"), ("mem", "4 GB", "not a Slurm memory"),
     ("partition", "htc long", "blanks"), ("task", "rm -rf", "not a task name"),
     ("array_size", 0, ">= 1")],
)  # fmt: skip
def test_bad_options_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        WorkerArray(**{"task": "ApertureCatalog", field: value})


FAKE_LUIGI = """#!/usr/bin/env python3
# Records its argv, then exits with the next code of CODES (one per call).
import json, os, sys
calls = os.environ["FAKE_CALLS"]
with open(calls, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
n = sum(1 for _ in open(calls))
sys.exit(int(os.environ["FAKE_CODES"].split()[n - 1]))
"""


def run_element(tmp_path: Path, codes: str, task_args: tuple[str, ...], **kw: object):
    """Run a generated script with bash as array element 3 of job 77, luigi faked."""
    fake = tmp_path / "fake-luigi"
    fake.write_text(FAKE_LUIGI)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    calls = tmp_path / "calls.jsonl"
    calls.unlink(missing_ok=True)
    array = WorkerArray(task="ApertureCatalog", task_args=task_args, luigi=str(fake),
                        config_path="/some where/luigi.cfg", rerun_wait=0, **kw)  # fmt: skip
    script = tmp_path / "job.sbatch"
    script.write_text(build_script(array))
    env = dict(os.environ, FAKE_CALLS=str(calls), FAKE_CODES=codes, SLURM_ARRAY_JOB_ID="77",
               SLURM_ARRAY_TASK_ID="3")  # fmt: skip
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    argvs = [json.loads(line) for line in calls.read_text().splitlines()]
    return result, argvs


def test_task_arguments_reach_luigi_verbatim(tmp_path):
    nasty = ("--date", "2019-03-31", "--note", "it's a \"test\" $HOME `id` ; rm -rf / *", "--x", "")
    result, argvs = run_element(tmp_path, "0", nasty)
    assert result.returncode == 0, result.stderr
    assert argvs == [["--module", "ztfluigi", "ApertureCatalog", *nasty,
                      "--scheduler-host", "localhost", "--scheduler-port", "8082",
                      "--workers", "1", "--no-lock",
                      "--worker-id", f"slurm-77_3@{socket.gethostname()}"]]  # fmt: skip
    script = (tmp_path / "job.sbatch").read_text()
    assert "export LUIGI_CONFIG_PATH='/some where/luigi.cfg'" in script


def test_element_runs_again_while_other_workers_hold_tasks(tmp_path):
    result, argvs = run_element(tmp_path, "25 10 0", ("--date", "2019-03-31"))
    assert result.returncode == 0 and len(argvs) == 3
    assert "pass 3: luigi exited 0" in result.stderr


def test_element_stops_at_a_failure_or_after_its_passes(tmp_path):
    result, argvs = run_element(tmp_path, "25 30 0", ("--date", "2019-03-31"))
    assert (result.returncode, len(argvs)) == (30, 2)  # a failed task ends the element
    result, argvs = run_element(tmp_path, "25 25 25", ("--date", "2019-03-31"), max_passes=2)
    assert (result.returncode, len(argvs)) == (25, 2)


def test_cli_separates_task_arguments_from_its_options(tmp_path, capsys, monkeypatch):
    script = tmp_path / "night.sbatch"
    argv = ["slurm", "--array-size", "3", "ApertureCatalog", "--date", "2019-03-31",
            "--ccdid", "7", "--mem", "4G", "--output", str(tmp_path / "logs"),
            "--script", str(script), "--scheduler-host", "ccosvms0262", "--scheduler-port",
            "8090"]  # fmt: skip
    monkeypatch.setenv("LUIGI_CONFIG_PATH", str(tmp_path / "job.cfg"))  # the jobs read it too
    assert cli.main(argv) == 0
    text = script.read_text()
    assert "--array=0-2" in text and "--mem=4G" in text and (tmp_path / "logs").is_dir()
    line = next(x for x in text.splitlines() if x.startswith("luigi_cmd=("))
    assert "ApertureCatalog --date 2019-03-31 --ccdid 7 --scheduler-host ccosvms0262" in line
    assert "--scheduler-port 8090" in line and "--mem" not in line
    assert f"export LUIGI_CONFIG_PATH={tmp_path / 'job.cfg'}" in text
    assert 'case " 10 25 " in' in text  # the project's [retcode] already_running, not_run
    assert "ApertureCatalog(date=2019-03-31, ccdid=7" in capsys.readouterr().out


def test_cli_checks_task_parameters_before_writing(tmp_path, capsys):
    script = tmp_path / "bad.sbatch"
    argv = ["slurm", "ApertureCatalog", "--date", "2019-02-30", "--script", str(script)]
    assert cli.main(argv) == 2
    assert "invalid date" in capsys.readouterr().err and not script.exists()


# --------------------------------------------------------------------------------------------
# A real array on a real (one-node) Slurm
# --------------------------------------------------------------------------------------------


@pytest.mark.slow  # a night built by a Slurm job array
def test_job_array_of_luigi_workers_builds_the_night(tmp_path):
    settings = night_settings(tmp_path / "store")
    logs = tmp_path / "slurm-logs"
    with local_slurm(cpus=2) as slurm, running_luigid(tmp_path / "luigid", settings) as central:
        cmd = [venv_binary("ztfluigi"), "slurm", "ApertureCatalog", *NIGHT, "--array-size", "2",
               "--scheduler-host", "127.0.0.1", "--scheduler-port", str(central.port),
               "--output", str(logs), "--time", "15:00", "--rerun-wait", "2", "--submit"]
        t0 = time.monotonic()
        submitted = subprocess.run(cmd, cwd=central.workdir, env={**central.env(), **slurm.env},
                                   capture_output=True, text=True, timeout=120)  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        job = re.search(r"submitted array job (\d+)", submitted.stdout)[1]
        slurm.wait_until_empty(timeout=400)
        wall = time.monotonic() - t0
        element_logs = {p.name: p.read_text(errors="replace") for p in logs.glob("*.log")}
        records = slurm.job_records(job)
        assert sorted(r["ArrayTaskId"] for r in records) == ["0", "1"], records
        assert {(r["JobState"], r["ExitCode"]) for r in records} == {("COMPLETED", "0:0")}, (
            {k: v[-3000:] for k, v in element_logs.items()})
        assert len(element_logs) == 2
        for text in element_logs.values():
            assert text.rstrip().endswith("luigi exited 0")
        # The scheduler: every task of the night done, by the two array elements only.
        tasks = scheduler_tasks(central)
        assert {t["status"] for t in tasks.values()} == {"DONE"}
        ran_by = collections.Counter(t["worker_running"] for t in tasks.values())
        host = socket.gethostname()
        assert set(ran_by) == {f"slurm-{job}_0@{host}", f"slurm-{job}_1@{host}"}, ran_by
        # The task history: each task started on this host and completed exactly once.
        per_task = collections.defaultdict(collections.Counter)
        hosts = set()
        for task_id, _, task_host, event in central.history():
            per_task[task_id][event] += 1
            hosts.add(task_host)
        assert set(per_task) == set(tasks)
        assert all(c["DONE"] == 1 and c["FAILED"] == 0 for c in per_task.values())
        assert hosts == {host}
    with luigi_settings(settings):
        from ztfluigi.tasks import ApertureCatalog, ApertureCatalogUnit

        entry = ApertureCatalog(date=DEMO_DATE, ccdid=1, filtercode="zr")
        assert entry.complete()
        catalogues = [t for u in entry.requires() if isinstance(u, ApertureCatalogUnit)
                      for t in u.output()]  # fmt: skip
        assert len(catalogues) == 4 and all(t.exists() for t in catalogues)
    print(f"\narray job {job}: {len(tasks)} tasks in {wall:.1f} s; ran by {dict(ran_by)}")
