"""Branched units: one scheduler task whose branches each have their own stored output.

Luigi's scheduler cost grows with the number of pending tasks (DESIGN.md §5), so thousands of
per-file products of a night are run as the *branches* of a few coarse tasks — law's
workflow/branch idea (``law/workflow/base.py``: one class is the workflow and its branches,
``create_branch_map``). A :class:`BranchedUnit` says which branches it has (:meth:`branches`)
and where each one's output lives (:meth:`branch_output`); completeness, the missing branches
and ``output()`` follow from those, answered from one listing per directory, and ``run()``
builds only the missing branches (:meth:`run_branches`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any

import luigi

from ztfluigi import storage
from ztfluigi.tasks import progress


class BranchedUnit(progress.OneLineFailures, luigi.Task):
    """A unit of work whose branches are products; complete when every branch output exists."""

    def branches_known(self) -> bool:
        """Whether :meth:`branches` can be answered yet (e.g. the night's RawIndex exists)."""
        return True

    def branches(self) -> list[Hashable]:
        """The branches of this unit, in the order they are built."""
        raise NotImplementedError

    def branch_output(self, branch: Any) -> storage.FsspecTarget:
        """Where one branch's product lives."""
        raise NotImplementedError

    def run_branches(self, todo: list[Any]) -> Iterator[list[luigi.Task]] | None:
        """Build the ``todo`` branches; may yield dynamic dependencies (a generator)."""
        raise NotImplementedError

    def output(self) -> list[storage.FsspecTarget]:
        """Every branch's target; empty while the branches are not known."""
        if not self.branches_known():
            return []
        return [self.branch_output(b) for b in self.branches()]

    def branch_present(self, branch: Any, listing: storage.ListingCache) -> bool:
        """Whether a branch's product exists (its output; a unit may accept other names)."""
        return listing.exists(self.branch_output(branch).path)

    def missing_branches(self, listing: storage.ListingCache | None = None) -> list[Any]:
        """The branches whose output does not exist (one listing per directory)."""
        listing = listing or storage.ListingCache()
        return [b for b in self.branches() if not self.branch_present(b, listing)]

    def complete(self) -> bool:
        return self.branches_known() and not self.missing_branches()

    def run(self) -> Iterator[list[luigi.Task]]:
        steps = self.run_branches(self.missing_branches())
        if steps is not None:
            yield from steps
