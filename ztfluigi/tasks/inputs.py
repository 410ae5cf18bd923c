"""Reading stored inputs inside a task: verified first, and built again when damaged.

A product counts only once verified (checksums, structure). When a task reads an input that
fails verification, the damaged file is reported once by name, set aside under a hidden name
(:func:`ztfluigi.storage.quarantine`, so it is missing for every existence check) and its
producer is run again in the reading task's process, before the input is read again. A damaged
input never reaches a product.

The producer runs in place rather than as a Luigi dynamic dependency: Luigi does not run again a
task its scheduler already counts as done (a static requirement yielded again leaves the reader
failing with "Unfulfilled dependency at run time"). Producers are deterministic and commit
atomically, so two workers repairing the same product at once write the same bytes.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TypeVar

import luigi

from ztfluigi import storage

logger = logging.getLogger("luigi-interface")
T = TypeVar("T")


def run_in_place(task: luigi.Task) -> None:
    """Run ``task`` in this process, first its missing requirements and dynamic dependencies."""
    for requirement in luigi.task.flatten(task.requires()):
        if not requirement.complete():
            run_in_place(requirement)
    result = task.run()
    if inspect.isgenerator(result):
        try:
            step = next(result)
            while True:
                for dependency in luigi.task.flatten(step):
                    if not dependency.complete():
                        run_in_place(dependency)
                step = result.send(None)
        except StopIteration:
            pass


def read_or_rebuild(read: Callable[[], T], producer: luigi.Task | list[luigi.Task]) -> T:
    """``read()`` a product of ``producer`` (or of one of several producers); if it is damaged,
    set it aside, build it again in place, and read it again."""
    try:
        return read()
    except storage.DamagedProduct as exc:
        aside = storage.quarantine(exc.url) if exc.url else None
        logger.warning("damaged product %s set aside%s; building it again", exc.url,
                       f" as {aside}" if aside else "")  # fmt: skip
    for task in producer if isinstance(producer, list) else [producer]:
        if not task.complete():
            run_in_place(task)
    return read()
