"""A two-week campaign on a one-node Slurm: two array elements share it through ``luigid``, one
is cancelled mid-run, the other completes exactly the missing catalogues."""

from __future__ import annotations

import collections
import datetime as dt
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import luigi_settings
from tests.luigid import running_luigid, scheduler_tasks, venv_binary
from tests.slurmlocal import local_slurm

START, STOP = dt.date(2019, 10, 1), dt.date(2019, 10, 14)
#: A 0.5° strip of Dec: 8 quadrants (half a row) on the 3 nights whose field crosses it (scale
#: 32, one field a night: 2019-10-07, -12, -14); element 0 starts at 10-01, element 1 at 10-08
BOX = "0,360,-14,-13.5"


def _settings(store: Path) -> dict[str, dict[str, str]]:
    return {
        "ztfluigi": {"root": str(store), "archive": "sim", "refcat": "sim"},
        "sim": {"seed": "0", "scale": "32", "n_fields": "1"},
        "worker": {"wait_interval": "0.5", "wait_jitter": "0.5"},
    }


def _catalogues(store: Path) -> dict[str, int]:
    """Stored catalogues (visible names) → modification time, ns."""
    return {str(p.relative_to(store)): p.stat().st_mtime_ns
            for p in store.glob("sci/**/*_apcat.parquet")}  # fmt: skip


def _night_catalogues(store: Path, date: str) -> list[Path]:
    """The catalogues stored for a night (``YYYY-MM-DD``)."""
    return list(store.glob(f"sci/{date[:4]}/{date[5:7]}{date[8:]}/*/*_apcat.parquet"))


def _expected(settings: dict[str, dict[str, str]]) -> set[str]:
    """Store paths of the campaign's selected catalogues, from the stored RawIndexes."""
    from ztfluigi.tasks.campaign import selected_quadrants
    from ztfluigi.tasks.catalog import catalog_target
    from ztfluigi.tasks.ranges import nights
    from ztfluigi.tasks.raw import night_index

    root = settings["ztfluigi"]["root"]
    with luigi_settings(settings):
        return {catalog_target(r, q).path.removeprefix(root + "/")
                for d in nights(START, STOP)
                for r, q in selected_quadrants(night_index(d), BOX, "zr")}  # fmt: skip


def _element(worker: str | None, job: str) -> str | None:
    """'0' or '1': the array element whose worker (or window worker) ran a task."""
    m = re.match(rf"slurm-{job}_(\d+)@", worker or "")
    return m[1] if m else None


@pytest.mark.slow  # a two-week campaign built by a Slurm job array (≈ 2 min)
def test_elements_share_a_campaign_and_a_cancelled_one_loses_only_its_unit(tmp_path):
    store = tmp_path / "store"
    settings = _settings(store)
    logs = tmp_path / "slurm-logs"
    with local_slurm(cpus=2) as slurm, running_luigid(tmp_path / "luigid", settings) as central:
        cmd = [venv_binary("ztfluigi"), "slurm", "ApertureCatalogCampaign", "--start", str(START),
               "--stop", str(STOP), "--region", BOX, "--filtercode", "zr", "--window", "1",
               "--retry-wait", "3", "--array-size", "2", "--scheduler-host", "127.0.0.1",
               "--scheduler-port", str(central.port), "--output", str(logs), "--time", "15:00",
               "--rerun-wait", "2", "--submit"]  # fmt: skip
        t0 = time.monotonic()
        submitted = subprocess.run(cmd, cwd=central.workdir, env={**central.env(), **slurm.env},
                                   capture_output=True, text=True, timeout=120)  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        job = re.search(r"submitted array job (\d+)", submitted.stdout)[1]

        # Cancel element 1 while it writes a night's catalogues (some stored, a unit running)
        in_flight: dict[str, dict] = {}
        while not in_flight:
            assert time.monotonic() - t0 < 300, "element 1 was never seen writing catalogues"
            running = central.api("task_list", status="RUNNING")
            in_flight = {k: t for k, t in running.items() if t["name"] == "RegionCatalogUnit"
                         and _element(t.get("worker_running"), job) == "1"
                         and _night_catalogues(store, t["params"]["date"])}  # fmt: skip
            time.sleep(0.2)
        slurm.run("scancel", f"{job}_1")
        t_kill = time.monotonic() - t0
        before = _catalogues(store)
        slurm.wait_until_empty(timeout=400)
        wall = time.monotonic() - t0
        records = {r["ArrayTaskId"]: r for r in slurm.job_records(job)}
        element_logs = {p.name: p.read_text(errors="replace") for p in logs.glob("*.log")}
        assert records["1"]["JobState"] == "CANCELLED", records["1"]
        assert (records["0"]["JobState"], records["0"]["ExitCode"]) == ("COMPLETED", "0:0"), (
            {k: v[-3000:] for k, v in element_logs.items()})
        tasks = scheduler_tasks(central)

    # Exactly the selected catalogues, each readable (no partial product), none rebuilt
    after = _catalogues(store)
    expected = _expected(settings)
    assert len(expected) == 24 and set(after) == expected
    assert all(after[name] == mtime for name, mtime in before.items())
    from ztfluigi import storage

    with luigi_settings(settings):
        for name in after:
            storage.read_parquet(str(store / name))  # checksums and digest verified
    # Both elements worked; each window worker held one night's tasks only
    night_work = {k: t for k, t in tasks.items() if t["name"] != "ApertureCatalogCampaign"}
    by_element = collections.Counter(_element(t.get("worker_running"), job)
                                     for t in night_work.values() if t["status"] == "DONE")
    assert by_element["0"] > 0 and by_element["1"] > 0, by_element
    for t in night_work.values():
        window = re.search(r" window (\S+)\.\.(\S+)$", t.get("worker_running") or "")
        if window and "date" in t["params"]:
            assert window[1] <= t["params"]["date"] <= window[2], t
    # What element 1 had in flight was finished by element 0; every catalogue unit of a night
    # with selected quadrants is done. Other tasks the cancelled element was running are failed
    # by luigid when its worker disconnects, and stay so (with what waited on them, pending)
    # when the campaign finds their nights' catalogues complete without them: a killed element
    # loses at most its in-flight work, never a catalogue.
    assert all(tasks[k]["status"] == "DONE" for k in in_flight)
    nights = {name.split("/")[1] + name.split("/")[2] for name in expected}  # YYYYMMDD
    units = [t for t in night_work.values() if t["name"] == "RegionCatalogUnit"
             and t["params"].get("date", "").replace("-", "") in nights]  # fmt: skip
    assert units and all(t["status"] == "DONE" for t in units), [
        (t["display_name"], t["status"]) for t in units if t["status"] != "DONE"]
    print(f"\narray job {job}: element 1 cancelled at {t_kill:.0f} s running "
          f"{sorted(t['display_name'] for t in in_flight.values())}, {len(before)} of "
          f"{len(expected)} catalogues stored; done in {wall:.0f} s; tasks run per element "
          f"{dict(by_element)}")  # fmt: skip
