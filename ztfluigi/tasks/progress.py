"""What tasks tell the Luigi scheduler: progress, status messages, one-line failures."""

from __future__ import annotations

import luigi


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
    from ztfluigi.storage import ProductError

    return (ArchiveError, CalibrationError, NoCalibrationError, RawFileError, ScienceError,
            ProductError)  # fmt: skip


class OneLineFailures:
    """Mixin: a task failing with a known ztfluigi error reports its one-line message.

    Luigi sends ``on_failure``'s return value to the scheduler (the visualiser and the execution
    summary show it); the default is the whole traceback.
    """

    def on_failure(self, exception: BaseException) -> str:
        if isinstance(exception, expected_error_types()):
            return f"{type(exception).__name__}: {exception}"
        return super().on_failure(exception)  # type: ignore[misc]
