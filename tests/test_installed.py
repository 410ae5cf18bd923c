"""The installed package carries its defaults: every documented behaviour holds from any
working directory, not only from the checkout (whose luigi.cfg Luigi would read).

Run from a temporary directory with ``LUIGI_CONFIG_PATH`` unset; under ``.ci/run`` the package
is the one ``pip install '.[test]'`` installed (not the checkout).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LUIGI_CONFIG_PATH"}
    env["PYTHONPATH"] = ""  # the installed package, never the checkout's sources by accident
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_the_package_ships_its_luigi_cfg_as_lowest_priority_defaults(tmp_path):
    result = run(tmp_path, "-c", (
        "import ztfluigi, luigi.configuration as c, luigi.retcodes as r\n"
        "from ztfluigi import config\n"
        "print(config.PACKAGED_DEFAULTS)\n"
        "print(c.LuigiConfigParser._config_paths[0])\n"
        "print(r.retcode().task_failed, r.retcode().scheduling_error)\n"
        "print(c.get_config().getboolean('worker', 'check_complete_on_run'))\n"
        "print(config.settings().root, config.sim().scale)\n"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    packaged, first, codes, check, settings = result.stdout.splitlines()
    assert packaged == first and Path(packaged).is_file()
    assert not Path(packaged).is_relative_to(tmp_path)
    assert codes == "30 35" and check == "True" and settings == "ztfdata 8"


def test_a_failing_task_exits_non_zero_outside_the_checkout(tmp_path):
    result = run(tmp_path, "-m", "luigi", "--module", "ztfluigi", "RawIndex", "--date",
                 "2019-13-01", "--local-scheduler")  # fmt: skip
    assert result.returncode != 0
    assert "invalid date '2019-13-01'" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_usual_configuration_files_still_override_the_package(tmp_path):
    (tmp_path / "luigi.cfg").write_text("[retcode]\ntask_failed = 7\n[sim]\nscale = 16\n")
    result = run(tmp_path, "-c", "import ztfluigi, luigi.retcodes as r; from ztfluigi import "
                 "config; print(r.retcode().task_failed, r.retcode().scheduling_error, "
                 "config.sim().scale)")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["7", "35", "16"]  # overridden; the rest from the package


def test_slurm_elements_rerun_while_other_workers_hold_tasks_from_anywhere(tmp_path):
    result = run(tmp_path, "-m", "ztfluigi.cli", "slurm", "--output", str(tmp_path / "logs"),
                 "ApertureCatalog", "--date", "2019-03-31")  # fmt: skip
    assert result.returncode == 0, result.stderr
    (script,) = (tmp_path / "logs").glob("*.sbatch")
    text = script.read_text()
    # the re-run loop on [retcode] already_running/not_run (a single pass without the defaults)
    assert "while true; do" in text and 'case " 10 25 " in' in text
