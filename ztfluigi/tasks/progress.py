"""What tasks tell the Luigi scheduler: progress, status messages, one-line failures."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable

import luigi

logger = logging.getLogger("luigi-interface")


def report(task: luigi.Task, done: int, total: int, what: str) -> None:
    """Set the task's progress bar and status line; a no-op outside a Luigi worker."""
    if task.set_progress_percentage is not None:
        task.set_progress_percentage(100 * done // max(total, 1))
    if task.set_status_message is not None:
        task.set_status_message(f"{done}/{total} {what}")


def expected_error_types() -> tuple[type[BaseException], ...]:
    """The one-line error types of ztfluigi (imported lazily to keep this module light)."""
    from ztfluigi.archive import ArchiveError
    from ztfluigi.calib import CalibrationError
    from ztfluigi.calmatch import NoCalibrationError
    from ztfluigi.raw import RawFileError
    from ztfluigi.science import ScienceError
    from ztfluigi.settings_check import SettingsError
    from ztfluigi.storage import ProductError
    from ztfluigi.tasks.parameters import InvalidParameter

    return (ArchiveError, CalibrationError, NoCalibrationError, RawFileError, ScienceError,
            ProductError, SettingsError, InvalidParameter)  # fmt: skip


def _fail_status(task: luigi.Task, exc: BaseException) -> None:
    """Put a known error's one line in the task's status message (the scheduler's task list)."""
    if task.set_status_message is None or not isinstance(exc, expected_error_types()):
        return
    try:
        task.set_status_message(f"{type(exc).__name__}: {exc}")
    except Exception as rpc_error:  # the failure itself must reach the scheduler, not this one
        logger.warning("could not send the failure of %s as status: %s", task, rpc_error)


def _status_on_failure(run: Callable) -> Callable:
    """Wrap a task's ``run`` (plain or a dynamic-dependency generator) with :func:`_fail_status`."""
    if inspect.isgeneratorfunction(run):

        @functools.wraps(run)
        def run_generator(self: luigi.Task):
            try:
                return (yield from run(self))
            except BaseException as exc:
                _fail_status(self, exc)
                raise

        return run_generator

    @functools.wraps(run)
    def run_plain(self: luigi.Task):
        try:
            return run(self)
        except BaseException as exc:
            _fail_status(self, exc)
            raise

    return run_plain


class OneLineFailures:
    """Mixin: a task failing with a known ztfluigi error reports its one-line message; building
    one first checks the settings (:func:`ztfluigi.config.check_settings`).

    Luigi sends ``on_failure``'s return value to the scheduler (``fetch_error``: the visualiser's
    error pop-up and the execution summary); the default is the whole traceback. The same line
    also becomes the task's status message, so ``/api/task_list`` and the task list show why a
    task failed without opening it (``run`` of each subclass is wrapped to set it: ``on_failure``
    runs after Luigi has withdrawn the status callbacks).
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        from ztfluigi import config

        config.check_settings()  # before any task exists: a bad setting never runs
        super().__init__(*args, **kwargs)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "run" in cls.__dict__:
            cls.run = _status_on_failure(cls.__dict__["run"])

    def on_failure(self, exception: BaseException) -> str:
        if isinstance(exception, expected_error_types()):
            return f"{type(exception).__name__}: {exception}"
        return super().on_failure(exception)  # type: ignore[misc]
