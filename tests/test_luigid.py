"""A central ``luigid``: two worker processes share a night, the visualiser shows its DAG in a
real headless Chromium, a failure is one line in the task list, a killed worker's task is rerun.
"""

from __future__ import annotations

import collections
import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests import system_packages
from tests.helpers import DEMO_DATE, luigi_settings, night_without_calibration
from tests.luigid import NIGHT, Luigid, night_settings, night_tasks, running_luigid, scheduler_tasks
from ztfluigi.cli.slurm import worker_loop

pytestmark = pytest.mark.slow  # nights on a real luigid with worker processes

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
#: Luigi's INFO lines of a worker about one task: who, what happened, which task.
LOG_LINE = re.compile(r"\[pid \d+\] Worker (.+?) (running|done|new requirements|failed)\s+(\S.*)$")
TMP_NAME = re.compile(r"^\..+\.tmp-[0-9a-f]+$")  # storage's hidden temporaries


def log_events(log: Path) -> list[tuple[str, str, tuple[str, frozenset[str]]]]:
    """(worker id, event, task) of each running/done/new requirements/failed line of a log."""
    events = []
    for line in log.read_text(errors="replace").splitlines():
        m = LOG_LINE.search(line)
        if m:
            events.append((m[1], m[2], task_key(m[3].strip())))
    return events


def task_key(task: dict | str) -> tuple[str, frozenset[str]]:
    """(family, {"param=value"}) of a scheduler task entry or of a task as a worker logs it."""
    if isinstance(task, dict):
        return task["name"], frozenset(f"{k}={v}" for k, v in task["params"].items())
    family, params = re.fullmatch(r"(\w+)\((.*)\)", task).groups()
    return family, frozenset(params.split(", ") if params else ())


def chromium(url: str, *args: str, budget_ms: int = 10000, window: str = "1600,1000") -> str:
    """Run headless Chromium on ``url`` with a fresh profile; its stdout.

    ``budget_ms`` of virtual time lets the visualiser's scripts fetch the graph and draw it.
    """
    profile = tempfile.mkdtemp(prefix="ztf-chromium-")
    try:
        result = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", f"--window-size={window}",
             f"--virtual-time-budget={budget_ms}", *args, url],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def graph_nodes(dom: str) -> dict[str, str]:
    """task id → status of the nodes the visualiser drew (SVG graph)."""
    pairs = re.findall(r'data-task-status="([A-Z_]+)" data-task-id="([^"]+)"', dom)
    return {task_id: status for status, task_id in pairs}


@pytest.fixture(scope="module")
def night_on_luigid(tmp_path_factory):
    """luigid + two worker processes started at once on the narrowed night.

    Each runs ``luigi … --workers 1 --no-lock`` in the worker loop of ``ztfluigi slurm`` (what
    an array element runs): a bare ``luigi`` exits 10/25 when the other worker ran tasks it
    scheduled, the loop runs it again until the night is complete (exit 0) or a task fails.
    """
    system_packages.ensure("chromium")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium")
    tmp = tmp_path_factory.mktemp("luigid")
    settings = night_settings(tmp / "store")
    with running_luigid(tmp, settings) as central:
        t0 = time.monotonic()
        procs = {}
        for name in ("worker-1", "worker-2"):
            argv = central.worker_command("ApertureCatalog", *NIGHT, "--no-lock")
            script = worker_loop(argv, worker_id=name, rerun_wait=2, max_passes=60)
            procs[name] = central.spawn(["bash", "-c", script], tmp / f"{name}.log")
        codes = {name: p.wait(timeout=600) for name, p in procs.items()}
        wall = time.monotonic() - t0
        yield central, settings, codes, wall, tmp


def test_two_workers_run_every_task_exactly_once(night_on_luigid):
    central, settings, codes, wall, tmp = night_on_luigid
    logs = {name: (tmp / f"{name}.log") for name in codes}
    assert codes == {"worker-1": 0, "worker-2": 0}, {n: p.read_text()[-3000:] for n, p in
                                                       logs.items()}  # fmt: skip
    done = scheduler_tasks(central)
    assert {t["status"] for t in done.values()} == {"DONE"}
    # Who ran what, from each worker's own log and from the scheduler.
    events = [e for log in logs.values() for e in log_events(log)]
    finished = collections.Counter(task for _, what, task in events if what == "done")
    assert set(finished) == {task_key(t) for t in done.values()}
    assert set(finished.values()) == {1}, "a task completed more than once"
    assert not [e for e in events if e[1] == "failed"]
    for task in finished:  # every start ended in the completion or a dynamic-deps suspension
        starts = sum(1 for _, what, t in events if t == task and what == "running")
        suspended = sum(1 for _, what, t in events if t == task and what == "new requirements")
        assert starts == 1 + suspended, task
    ran_by = collections.Counter(t["worker_running"] for t in done.values())
    assert set(ran_by) == {"worker-1", "worker-2"}, ran_by  # both took part
    # luigid's task history (SQLite): one DONE per task, never FAILED.
    history = central.history()
    per_task = collections.defaultdict(collections.Counter)
    for task_id, _, _, event in history:
        per_task[task_id][event] += 1
    assert set(per_task) == set(done)
    assert all(c["DONE"] == 1 and c["FAILED"] == 0 for c in per_task.values()), per_task
    families = collections.Counter(t["name"] for t in done.values())
    assert families["ApertureCatalogUnit"] == 1 and families["MasterBias"] == 16
    print(f"\n{len(done)} tasks in {wall:.1f} s; ran by {dict(ran_by)}; {families}")
    # The night's catalogues are there: the entry task is complete in a fresh process view.
    with luigi_settings(settings):
        from ztfluigi.tasks import ApertureCatalog

        assert ApertureCatalog(date=DEMO_DATE, ccdid=1, filtercode="zr").complete()


def test_visualiser_draws_the_night_in_chromium(night_on_luigid):
    central, settings, _, _, _ = night_on_luigid
    from ztfluigi.tasks import ApertureCatalog

    with luigi_settings(settings):
        task_id = ApertureCatalog(date=DEMO_DATE, ccdid=1, filtercode="zr").task_id
    url = f"{central.url}/static/visualiser/index.html#tab=graph&taskId={task_id}"
    dom = chromium(url, "--dump-dom")
    nodes = graph_nodes(dom)
    assert set(nodes) == set(night_tasks(central, settings)), "the graph must draw every task"
    assert set(nodes.values()) == {"DONE"}
    assert "ApertureCatalogUnit" in dom and "MasterBias" in dom and "FocalPlaneLevel" in dom
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "luigid_graph.png"
    shot.unlink(missing_ok=True)
    chromium(url, f"--screenshot={shot}", window="1600,1200")  # tall enough for all 6 levels
    assert shot.stat().st_size > 20_000  # a drawn graph, not a blank page


def test_a_failed_unit_is_one_line_in_the_task_list(night_on_luigid):
    central, _, _, _, tmp = night_on_luigid
    no_cal = night_without_calibration()
    unit_args = ("--date", no_cal.isoformat(), "--ccdid", "1", "--filtercode", "zr")
    proc = central.start_worker("ApertureCatalogUnit", *unit_args, "--no-lock",
                                log=tmp / "failing.log")  # fmt: skip
    assert proc.wait(timeout=300) == 30  # [retcode] task_failed
    failed = central.api("task_list", status="FAILED")
    (task_id, task), = failed.items()
    assert task["name"] == "ApertureCatalogUnit" and task["params"]["date"] == str(no_cal)
    message = task["status_message"]
    assert message.startswith("NoCalibrationError: ") and "\n" not in message
    assert str(no_cal) in message
    error = json.loads(central.api("fetch_error", task_id=task_id)["error"])  # luigi JSON-encodes
    assert error == message  # the visualiser's error pop-up shows the same line
    dom = chromium(f"{central.url}/static/visualiser/index.html#tab=graph&taskId={task_id}",
                   "--dump-dom")  # fmt: skip
    assert graph_nodes(dom)[task_id] == "FAILED"


def raw_files(store: Path) -> tuple[dict[str, Path], list[str]]:
    """Raw files under their final names, and the names of hidden temporaries."""
    final, hidden = {}, []
    for path in (store / "raw").rglob("*"):
        if path.is_file():
            if TMP_NAME.match(path.name):
                hidden.append(path.name)
            else:
                final[path.name] = path
    return final, hidden


def test_killed_worker_leaves_no_partial_output_and_its_task_is_rerun(tmp_path):
    settings = {**night_settings(tmp_path / "store"), "scheduler": {"retry_delay": "1"}}
    args = ("--date", DEMO_DATE.isoformat(), "--ccdid", "1", "--imgtype", "flat", "--no-lock")
    with running_luigid(tmp_path, settings) as central:
        first = central.start_worker("RawFiles", *args, log=tmp_path / "first.log")
        task = wait_for_progress(central, first, "RawFiles", low=10, high=60)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
        kept, hidden = raw_files(settings_store(settings))
        assert all(TMP_NAME.match(n) for n in hidden) and len(hidden) <= 1
        with luigi_settings(settings):
            from ztfluigi import config, naming

            archive = config.get_archive()
            for name, path in kept.items():  # whole files only, byte for byte the archive's
                assert path.read_bytes() == archive.fetch_raw(naming.parse_raw_filename(name))
        stamps = {name: (p.stat().st_ino, p.stat().st_mtime_ns) for name, p in kept.items()}
        # The scheduler notices the dead worker (worker_disconnect_delay) and fails its task.
        status = wait_for_status(central, task, {"FAILED", "PENDING"}, timeout=60)
        second = central.start_worker("RawFiles", *args, log=tmp_path / "second.log")
        assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
        done = central.api("task_list", status="DONE")[task]
        assert done["worker_running"] != first_worker(tmp_path / "first.log")
        final, _ = raw_files(settings_store(settings))
        with luigi_settings(settings):
            from ztfluigi.tasks import RawFiles

            expected = {t.path.rsplit("/", 1)[1] for t in
                        RawFiles(date=DEMO_DATE, ccdid=1, imgtype="flat").output()}  # fmt: skip
        assert set(final) == expected and len(kept) < len(expected)
        missing = len(expected) - len(kept)
        assert done["status_message"] == f"{missing}/{missing} raw files fetched"
        for name, stamp in stamps.items():  # what the killed worker committed is kept as is
            p = final[name]
            assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp
        events = collections.Counter(e for t, _, _, e in central.history() if t == task)
        assert events["RUNNING"] == 2 and events["DONE"] == 1
        print(f"\nkilled at {len(kept)}/{len(expected)} files (scheduler: {status}); "
              f"rerun fetched {missing}")


def settings_store(settings: dict[str, dict[str, str]]) -> Path:
    return Path(settings["ztfluigi"]["root"])


def first_worker(log: Path) -> str:
    """The worker id in a worker's log."""
    events = log_events(log)
    assert events, log.read_text()[-2000:]
    return events[0][0]


def wait_for_progress(central: Luigid, proc: subprocess.Popen, family: str, low: int,
                      high: int, timeout: float = 120) -> str:  # fmt: skip
    """Poll the scheduler until a running ``family`` task reports low–high % progress."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the worker ended before it could be killed mid-task"
        for task_id, t in central.api("task_list", status="RUNNING").items():
            if t["name"] == family and low <= (t["progress_percentage"] or 0) <= high:
                return task_id
        time.sleep(0.02)
    raise AssertionError(f"no {family} task reached {low}% within {timeout} s")


def wait_for_status(central: Luigid, task_id: str, statuses: set[str], timeout: float) -> str:
    """Poll ``task_list`` (which also prunes dead workers) until ``task_id`` has a status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for status in statuses:
            if task_id in central.api("task_list", status=status):
                return status
        time.sleep(0.5)
    raise AssertionError(f"{task_id} not in {statuses} after {timeout} s")

