"""Progress reporting to the Luigi scheduler (shown in luigid's visualiser)."""

from __future__ import annotations

import luigi


def report(task: luigi.Task, done: int, total: int, what: str) -> None:
    """Set the task's progress bar and status line; a no-op outside a Luigi worker."""
    if task.set_progress_percentage is not None:
        task.set_progress_percentage(100 * done // max(total, 1))
    if task.set_status_message is not None:
        task.set_status_message(f"{done}/{total} {what}")
