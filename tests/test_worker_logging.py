"""Worker log lines carry a timestamp; Luigi's own logging knobs still win."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR): ")
BARE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR): ")


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip


BUILD = """
    import luigi
    from ztfluigi import logformat
    logformat.install()

    class Hello(luigi.Task):
        def complete(self):
            return self.done if hasattr(self, "done") else False
        def run(self):
            self.done = True

    luigi.build([Hello()], local_scheduler=True, {options})
"""


def test_worker_lines_are_timestamped(tmp_path):
    result = run_python(BUILD.format(options="log_level='INFO'"), tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert not [ln for ln in lines if BARE.match(ln)], result.stderr
    stamped = [ln for ln in lines if STAMPED.match(ln)]
    assert any("Informed scheduler that task" in ln for ln in stamped), result.stderr
    assert "===== Luigi Execution Summary =====" in result.stderr


def test_log_level_and_logging_conf_file_still_win(tmp_path):
    quiet = run_python(BUILD.format(options="log_level='WARNING'"), tmp_path)
    assert quiet.returncode == 0 and "INFO" not in quiet.stderr, quiet.stderr
    conf = tmp_path / "logging.conf"
    conf.write_text(textwrap.dedent("""
        [loggers]
        keys=root
        [handlers]
        keys=err
        [formatters]
        keys=mine
        [logger_root]
        level=INFO
        handlers=err
        [handler_err]
        class=StreamHandler
        formatter=mine
        args=(sys.stderr,)
        [formatter_mine]
        format=MINE %(message)s
    """))
    custom = run_python(BUILD.format(options=f"logging_conf_file={str(conf)!r}"), tmp_path)
    assert custom.returncode == 0, custom.stderr
    assert any(ln.startswith("MINE Informed scheduler") for ln in custom.stderr.splitlines())
    assert not [ln for ln in custom.stderr.splitlines() if STAMPED.match(ln)]


def test_the_luigi_command_logs_with_timestamps(tmp_path):
    """``luigi --module ztfluigi``: importing the package installs the format."""
    result = subprocess.run(
        [sys.executable, "-m", "luigi", "--module", "ztfluigi", "RawIndex", "--date",
         "2019-13-45", "--local-scheduler"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode != 0
    errors = [ln for ln in result.stderr.splitlines() if "invalid date" in ln]
    assert len(errors) == 1 and STAMPED.match(errors[0]), result.stderr
