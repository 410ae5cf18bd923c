"""Reading stored inputs inside a task: verified first, and built again when damaged.

A product counts only once verified (checksums, structure). When a task reads an input that
fails verification, the damaged file is reported once by name, set aside under a hidden name
(:func:`ztfluigi.storage.quarantine`, so it is missing for every existence check) and its
producer is yielded as a dynamic dependency: Luigi builds it again, then runs the reading task
again from the start. A damaged input never reaches a product.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import Any, TypeVar

import luigi

from ztfluigi import storage

logger = logging.getLogger("luigi-interface")
T = TypeVar("T")


def read_or_rebuild(
    read: Callable[[], T], producer: luigi.Task
) -> Generator[list[luigi.Task], Any, T]:
    """``read()`` a product of ``producer``; if it is damaged, set it aside, rebuild, read again.

    ``yield from`` it in a ``run()``.
    """
    try:
        return read()
    except storage.DamagedProduct as exc:
        aside = storage.quarantine(exc.url) if exc.url else None
        logger.warning("damaged product %s set aside%s; building it again with %s", exc.url,
                       f" as {aside}" if aside else "", producer)  # fmt: skip
    yield [producer]
    return read()
