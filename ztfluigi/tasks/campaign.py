"""Campaigns: a sky region × a range of nights × a band as one declarative Luigi target.

:class:`ApertureCatalogCampaign` is complete exactly when every catalogue it selects exists: the
science quadrants of the nights from ``start`` to ``stop`` (both included), in the filter, whose
footprint overlaps the region (:mod:`ztfluigi.region`). Re-running it after a clean-up rebuilds
exactly the missing catalogues (and the night inputs ``ApertureCatalog`` checks on those nights).

Scheduling at campaign size (DESIGN.md §5, ``bench/bench_campaign.py``): the campaign never puts
its nights into one scheduler graph. Its ``run()`` drives *windows* of ``window`` nights one
after the other; each window is an ordinary Luigi build of the nights' :class:`RegionNight`
graphs (≈100–200 tasks per night), on the scheduler the campaign itself runs on: a central
``luigid`` shows the current window's graph and the campaign's progress bar and status line; a
local scheduler is made afresh per window. Nights whose selected catalogues all exist are not
scheduled at all. What a scheduler holds is then bounded by a window (plus, on ``luigid``, the
windows finished within ``[scheduler] remove_delay``), whatever the number of nights. Yielding
windows as dynamic dependencies instead keeps every finished task registered (the worker stays
their stakeholder) and Luigi's prune walks all of them on every ``get_work``: measured to grow
with the campaign, so not used.

:class:`RegionRawFiles`, :class:`RegionCatalogUnit` and :class:`RegionNight` are the night
entry points narrowed to a region: ``RawFiles``, ``ApertureCatalogUnit`` and ``ApertureCatalog``
with a ``region`` parameter, whose branches are the region's files and quadrants only.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import luigi
import luigi.interface
import luigi.task_register
import luigi.worker
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ztfluigi import camera, naming, region, storage
from ztfluigi.naming import RawName
from ztfluigi.tasks import progress
from ztfluigi.tasks.catalog import ApertureCatalog, ApertureCatalogUnit, catalog_target
from ztfluigi.tasks.ipac import IpacHeaders, IpacMasks
from ztfluigi.tasks.parameters import FilterParameter, NightParameter
from ztfluigi.tasks.ranges import RegionParameter, nights
from ztfluigi.tasks.raw import RawFiles, RawIndex, night_index, raw_target

logger = logging.getLogger("luigi-interface")


# --- what a region selects in a night ---------------------------------------------------------


def quadrant_selection(fields: np.ndarray, ccdids: np.ndarray, spec: str) -> np.ndarray:
    """Which quadrants of each raw file's CCD the region selects: shape (n, 4), column qid − 1."""
    quads = region.selection(spec).quadrants_mask(np.asarray(fields))
    cols = camera.rcid(np.asarray(ccdids)[:, None], np.arange(1, 5)[None, :])
    return np.take_along_axis(quads, cols, axis=1)


def selected_quadrants(
    index: pa.Table, spec: str, filtercode: str = "", ccdid: int = 0
) -> list[tuple[RawName, int]]:
    """(raw science file, qid) of a night's RawIndex whose footprint overlaps the region."""
    mask = pc.equal(index["imgtype"], "object")
    if filtercode:
        mask = pc.and_(mask, pc.equal(index["filtercode"], filtercode))
    if ccdid:
        mask = pc.and_(mask, pc.equal(index["ccdid"], ccdid))
    rows = index.filter(mask).sort_by([("ccdid", "ascending"), ("obsjd", "ascending")])
    if rows.num_rows == 0:
        return []
    ccds = rows["ccdid"].to_numpy()
    quads = quadrant_selection(rows["field"].to_numpy(), ccds, spec)
    keep = np.flatnonzero(quads.any(axis=1))
    names = rows["filename"].take(pa.array(keep)).to_pylist()
    out = []
    for i, name in zip(keep.tolist(), names, strict=True):
        rawname = indexed_rawname(name)
        out += [(rawname, q) for q in range(1, 5) if quads[i, q - 1]]
    return out


def indexed_rawname(name: str) -> RawName:
    """The :class:`RawName` of a file name a RawIndex or the night log holds, not validated again
    (``naming.parse_raw_filename`` validates the date with ``strptime``: ≈ 10 µs a name)."""
    return RawName(name[4:18], int(name[19:25]), name[26:28], int(name[30:32]), name[33])


def catalogue_name(rawname: RawName, qid: int) -> str:
    """Base name of a quadrant's catalogue (what a night listing holds)."""
    return naming.science_quadrant_name(rawname, qid, "apcat.parquet", prefix="ztfin2p3")


def catalogue_night_dir(date: dt.date) -> str:
    """URL of a night's directory in the catalogue store: ``…/sci/YYYY/MMDD``."""
    probe = RawName(f"{date:%Y%m%d}000000", 0, "zg", 1, "o")
    return catalog_target(probe, 1).path.rsplit("/", 2)[0]


def raw_night_dir(date: dt.date) -> str:
    """URL of a night's directory in the raw store: ``…/raw/YYYY/MMDD``."""
    probe = RawName(f"{date:%Y%m%d}000000", 0, "zg", 1, "o")
    return raw_target(probe).path.rsplit("/", 2)[0]


class NightListing:
    """Names of the files under each night's directory of a store, one recursive listing per night.

    A five-year campaign has ~50,000 exposure directories; listing each night's tree at once
    (``find``: one paginated LIST without delimiter on S3, a directory walk on disk) costs one
    request per 1,000 files instead of one per exposure directory.
    """

    def __init__(self, night_dir: Callable[[dt.date], str] = catalogue_night_dir) -> None:
        self.night_dir = night_dir
        self._names: dict[dt.date, set[str]] = {}
        self._count = threading.Lock()  # nights may be listed from several threads
        self.n_listings = 0

    def names(self, date: dt.date) -> set[str]:
        """Base names of every file under the night's directory (hidden temporaries excluded)."""
        if date not in self._names:
            found = storage.files_under(self.night_dir(date))
            with self._count:
                self.n_listings += 1
            names = {p.rstrip("/").rpartition("/")[2] for p in found}
            self._names[date] = {n for n in names if n and not n.startswith(".")}
        return self._names[date]

    def exists(self, date: dt.date, url: str) -> bool:
        """Whether the file ``url`` (or base name) of night ``date`` exists."""
        return url.rpartition("/")[2] in self.names(date)

    def forget(self, date: dt.date) -> None:
        """Drop the night's names (a five-year count would otherwise hold millions)."""
        self._names.pop(date, None)


#: The RawIndex columns :func:`selected_quadrants` reads.
INDEX_COLUMNS = ("imgtype", "filtercode", "field", "ccdid", "obsjd", "filename")

#: Nights read and listed at once by :func:`night_counts` (requests to S3 wait on the network:
#: ≈ 20–50 ms each, three a night).
COUNT_THREADS = 16


def _night_counts(date: dt.date, spec: str, filters: list[str], listing: NightListing
                  ) -> dict[str, tuple[int, int]]:  # fmt: skip
    """(catalogues present, selected) per filter of an indexed night; listed only if selected.

    The RawIndex is read (the columns the selection uses) but not kept: ``night_index`` caches 64
    of them, ≈ 230 MB of survey-sized nights that a count never reads again.
    """
    from ztfluigi.tasks.raw import rawindex_url

    index = storage.read_parquet(rawindex_url(date), columns=list(INDEX_COLUMNS))
    out = {}
    for f in filters:
        pairs = selected_quadrants(index, spec, f)
        have = sum(listing.exists(date, catalogue_name(*p)) for p in pairs) if pairs else 0
        out[f] = (have, len(pairs))
    listing.forget(date)
    return out


def night_counts(dates: list[dt.date], spec: str, filters: list[str],
                 listing: NightListing | None = None, threads: int = COUNT_THREADS
                 ) -> Iterator[tuple[dt.date, dict[str, tuple[int, int]] | None]]:  # fmt: skip
    """Per night in date order: (catalogues present, selected) per filter, or None when the
    night has no RawIndex yet.

    RawIndexes are found by one listing per year; each indexed night costs a read of its RawIndex
    and one recursive listing of its catalogue tree, ``threads`` nights at a time. Stop iterating
    early and the nights not started are not read.
    """
    from ztfluigi.tasks.raw import rawindex_url

    listing = listing or NightListing()
    indexes = storage.ListingCache()
    indexed = {d for d in dates if indexes.exists(rawindex_url(d))}

    def one(date: dt.date) -> dict[str, tuple[int, int]] | None:
        return _night_counts(date, spec, filters, listing) if date in indexed else None

    pool = concurrent.futures.ThreadPoolExecutor(max(threads, 1), "night-counts")
    try:
        yield from zip(dates, pool.map(one, dates), strict=True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --- night entry points narrowed to a region ----------------------------------------------------


class RegionRawFiles(RawFiles):
    """Raw files of one night, CCD and image type whose footprint on their CCD meets the region."""

    region = RegionParameter(default="", description="sky region (toy, or ra1,ra2,dec1,dec2)")

    def branches(self) -> list[RawName]:
        if not self.region:
            return super().branches()
        sel = region.selection(self.region)
        return [r for r in super().branches() if sel.selects_ccd(r.field, r.ccdid)]


class RegionIpacMasks(IpacMasks):
    """IPAC masks of one night, CCD and filter, for the quadrants overlapping the region."""

    region = RegionParameter(default="", description="sky region (toy, or ra1,ra2,dec1,dec2)")

    def branches(self) -> list[tuple[RawName, int]]:
        if not self.region:
            return super().branches()
        sel = region.selection(self.region)
        return [(r, q) for r, q in super().branches() if sel.selects(r.field, r.ccdid, q)]


class RegionIpacHeaders(IpacHeaders):
    """The IPAC header table of one night, CCD and filter, if the region selects a quadrant there.

    With the night's RawIndex stored and no selected quadrant on the CCD, it is complete and its
    run does nothing: a unit of the region never fetches headers it will not use.
    """

    region = RegionParameter(default="", description="sky region (toy, or ra1,ra2,dec1,dec2)")

    def _unused(self) -> bool:
        if not self.region or not RawIndex(date=self.date).output().exists():
            return False
        return not selected_quadrants(night_index(self.date), self.region, self.filtercode,
                                      self.ccdid)  # fmt: skip

    def complete(self) -> bool:
        return self._unused() or super().complete()

    def run(self) -> None:
        if not self._unused():
            super().run()


def _narrowed(task: luigi.Task, spec: str) -> luigi.Task:
    """The region's version of a night's per-CCD input unit (raw science files, IPAC masks)."""
    if isinstance(task, RawFiles) and task.imgtype == "object":
        return RegionRawFiles(region=spec, **task.param_kwargs)
    if isinstance(task, IpacMasks):
        return RegionIpacMasks(region=spec, **task.param_kwargs)
    if isinstance(task, IpacHeaders):
        return RegionIpacHeaders(region=spec, **task.param_kwargs)
    return task


class RegionCatalogUnit(ApertureCatalogUnit):
    """The catalogues of one night, CCD and filter whose quadrant overlaps the region."""

    region = RegionParameter(default="", description="sky region (toy, or ra1,ra2,dec1,dec2)")

    def requires(self) -> dict[str, luigi.Task]:
        return {k: _narrowed(t, self.region) for k, t in super().requires().items()}

    def branches(self) -> list[tuple[RawName, int]]:
        pairs = selected_quadrants(night_index(self.date), self.region, self.filtercode, self.ccdid)
        return [(r, q) for r, q in pairs if self.field in (0, r.field)]


class RegionNight(ApertureCatalog):
    """A night's catalogues in a region, with the night inputs they need (``ApertureCatalog``).

    Science raw files and IPAC inputs are those of the CCDs (masks: quadrants) in the region; a
    night without a selected quadrant needs no master calibration. The night's own masters, when
    it has selected quadrants, are those of every CCD (a focal-plane level is made from the
    sixteen flats, each flat from its CCD's bias).
    """

    region = RegionParameter(default="", description="sky region (toy, or ra1,ra2,dec1,dec2)")

    def requires(self) -> list[ApertureCatalogUnit]:
        """The units of the CCDs and filters with a selected quadrant (all of them until the
        night is indexed: a night's ≈ 50 empty units are then not scheduled)."""
        ccds, filters = self._selection()
        units = [RegionCatalogUnit(date=self.date, ccdid=c, filtercode=f, field=self.field,
                                   region=self.region) for c in ccds for f in filters]  # fmt: skip
        if not RawIndex(date=self.date).output().exists():
            return units
        index = night_index(self.date)
        used = {(r.ccdid, r.filtercode) for f in filters
                for r, _ in selected_quadrants(index, self.region, f)
                if self.field in (0, r.field)}  # fmt: skip
        return [u for u in units if (u.ccdid, u.filtercode) in used]

    def night_inputs(self) -> list[luigi.Task]:
        reqs = super().night_inputs()
        if not reqs:
            return []
        _, filters = self._selection()
        index = night_index(self.date)
        used = {r.ccdid for f in filters for r, _ in selected_quadrants(index, self.region, f)
                if self.field in (0, r.field)}  # fmt: skip
        out: list[luigi.Task] = []
        for task in reqs:
            per_ccd = isinstance(task, IpacHeaders | IpacMasks) or (
                isinstance(task, RawFiles) and task.imgtype == "object")  # fmt: skip
            if per_ccd:
                if task.ccdid in used:
                    out.append(_narrowed(task, self.region))
            elif used:
                out.append(task)
        return out


# --- the campaign -----------------------------------------------------------------------------


@dataclasses.dataclass
class CampaignState:
    """Where a campaign's nights stand: (catalogues present, selected) per indexed night."""

    counts: dict[dt.date, tuple[int, int]] = dataclasses.field(default_factory=dict)
    unknown: list[dt.date] = dataclasses.field(default_factory=list)  #: no RawIndex yet

    @property
    def present(self) -> int:
        return sum(p for p, _ in self.counts.values())

    @property
    def expected(self) -> int:
        return sum(e for _, e in self.counts.values())

    @property
    def incomplete(self) -> list[dt.date]:
        """Indexed nights missing a selected catalogue."""
        return [d for d, (p, e) in self.counts.items() if p < e]

    def update(self, other: CampaignState) -> None:
        """Take ``other``'s answers for its nights."""
        self.counts.update(other.counts)
        self.unknown = sorted(set(self.unknown) - set(other.counts) | set(other.unknown))


class CampaignError(RuntimeError):
    """Some nights of a campaign failed; the others were built."""


def _release_inherited_fork_lock() -> None:
    """Let a nested build fork its task processes from a task process.

    A multi-process Luigi worker forks each task process while holding ``luigi.worker.fork_lock``,
    so the child starts with that lock held by nobody it knows; a build inside it that forks in
    turn (``workers`` > 1) would wait on it forever.
    """
    import multiprocessing

    from luigi import worker

    if multiprocessing.parent_process() is not None and worker.fork_lock.locked():
        worker.fork_lock.release()


def _windows(items: list[dt.date], size: int) -> Iterator[list[dt.date]]:
    for i in range(0, len(items), max(size, 1)):
        yield items[i : i + size]


def _rotated(windows: list[list[dt.date]], element: int, elements: int) -> list[list[dt.date]]:
    """The windows in the order an array element takes them: element k of n starts k/n of the
    way through and wraps round, so the elements start on different nights."""
    start = len(windows) * element // max(elements, 1)
    return windows[start:] + windows[:start]


#: Luigi summaries of a window build that nothing failed in.
_BUILT = ("SUCCESS", "SUCCESS_WITH_RETRY")


class _NamedWorkers(luigi.interface._WorkerSchedulerFactory):
    """Luigi's own factory, giving a window's worker a readable id on the scheduler's page."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id

    def create_worker(self, scheduler: object, worker_processes: int, assistant: bool = False
                      ) -> luigi.worker.Worker:  # fmt: skip
        return luigi.worker.Worker(scheduler=scheduler, worker_processes=worker_processes,
                                   assistant=assistant, worker_id=self.worker_id)  # fmt: skip


class ApertureCatalogCampaign(progress.OneLineFailures, luigi.Task):
    """Every aperture catalogue of a sky region, nights ``start``..``stop`` (included), a filter.

    Complete exactly when every selected catalogue exists. Runs the incomplete nights in windows
    of ``window`` nights, one Luigi build at a time (``window_workers`` processes each, by default
    as many as luigi's ``--workers``), so a scheduler never holds more than a window's tasks.

    Several drivers may share a campaign (``ztfluigi slurm``: one per array element, ``element``
    k of ``elements``; distinct tasks on ``luigid``): each takes the windows from its own starting
    point, and a window another driver is building is shared through the scheduler (each task
    runs once). A window whose tasks another driver holds is tried again after ``retry_wait``
    seconds, at most ``max_rounds`` times, so a driver ends when the whole campaign is complete.
    """

    start = NightParameter(description="first UT night (YYYY-MM-DD)")
    stop = NightParameter(description="last UT night, included (YYYY-MM-DD)")
    region = RegionParameter(default="toy", description="sky region: toy, or ra1,ra2,dec1,dec2")
    filtercode = FilterParameter(default="", allow_all=True)
    element = luigi.IntParameter(default=0, description="this driver's index among `elements` "
                                 "(ztfluigi slurm: the array index)")  # fmt: skip
    elements = luigi.IntParameter(default=1, description="drivers sharing the campaign")
    window = luigi.IntParameter(default=7, significant=False,
                                description="nights per scheduling window")  # fmt: skip
    window_workers = luigi.IntParameter(
        default=0, significant=False,
        description="worker processes of each window's build (0: as luigi's --workers)",
    )  # fmt: skip
    retry_wait = luigi.IntParameter(default=30, significant=False,
                                    description="seconds before retrying windows held by another "
                                    "driver")  # fmt: skip
    max_rounds = luigi.IntParameter(default=120, significant=False,
                                    description="passes over the windows at most")  # fmt: skip

    def nights(self) -> list[dt.date]:
        """The campaign's UT nights."""
        return nights(self.start, self.stop)

    def night_task(self, date: dt.date) -> RegionNight:
        """The night's entry task narrowed to the region and filter."""
        return RegionNight(date=date, filtercode=self.filtercode, region=self.region)

    def state(self, dates: Iterable[dt.date] | None = None, stop_early: bool = False
              ) -> CampaignState:  # fmt: skip
        """Selected catalogues present per indexed night (one listing per night), and the nights
        not indexed yet; ``stop_early``: stop at the first night found incomplete."""
        st = CampaignState()
        dates = self.nights() if dates is None else list(dates)
        filters = [self.filtercode] if self.filtercode else list(naming.SCIENCE_FILTERS)
        for date, counts in night_counts(dates, self.region, filters):
            if counts is None:
                st.unknown.append(date)
            else:
                st.counts[date] = (sum(h for h, _ in counts.values()),
                                   sum(e for _, e in counts.values()))  # fmt: skip
            if stop_early and (st.unknown or st.incomplete):
                break
        return st

    def complete(self) -> bool:
        st = self.state(stop_early=True)
        return not st.unknown and not st.incomplete

    def _build_kwargs(self) -> dict[str, object]:
        """Build each window on the scheduler this task runs on (luigid), else a fresh local one."""
        from luigi import rpc

        reporter = getattr(self.set_status_message, "__self__", None)
        scheduler = getattr(reporter, "_scheduler", None)
        if isinstance(scheduler, rpc.RemoteScheduler):
            return {"scheduler_url": scheduler._url}
        return {"local_scheduler": True}

    def _worker_id(self) -> str:
        """The id of the worker running this task (``--worker-id``), else one naming the driver."""
        import luigi.worker

        outer = luigi.worker.worker().id
        return outer or f"campaign-{self.element}@{os.uname().nodename}"

    def _window_builds(self, window: list[dt.date], state: CampaignState
                       ) -> Iterator[list[luigi.Task]]:  # fmt: skip
        """A window's builds, each made once the previous one ran and ``state`` was updated: its
        new nights' RawIndexes, then its incomplete nights (a night without a selected quadrant
        is complete once indexed: its ≈ 60 empty tasks are never scheduled)."""
        yield [RawIndex(date=d) for d in window if d not in state.counts]
        incomplete = set(state.incomplete)
        yield [self.night_task(d) for d in window if d in incomplete]

    def run(self) -> None:
        kwargs = self._build_kwargs()
        workers = self.window_workers or luigi.interface.core().workers
        base_id = self._worker_id()
        _release_inherited_fork_lock()
        state = self.state()
        for round_ in range(1, max(self.max_rounds, 1) + 1):
            todo = sorted(state.unknown + state.incomplete)
            windows = _rotated(list(_windows(todo, self.window)), self.element, self.elements)
            failed: list[str] = []
            for i, window in enumerate(windows):
                self._report(i, len(windows), window, state, len(failed))
                name = f"{base_id} window {window[0]}..{window[-1]}"
                for tasks in self._window_builds(window, state):
                    if not tasks:
                        continue
                    result = luigi.build(tasks, workers=workers, detailed_summary=True,
                                         log_level="WARNING", **kwargs,
                                         worker_scheduler_factory=_NamedWorkers(name))  # fmt: skip
                    # tasks another driver holds on luigid are left pending (NOT_RUN, or
                    # SUCCESS when they are all it did not run)
                    if result.status.name not in (*_BUILT, "NOT_RUN"):
                        failed.append(f"{window[0]}..{window[-1]}: {result.one_line_summary}")
                    del tasks, result
                    # Luigi keeps every task instance ever made (Register's instance cache): a
                    # finished window's would pile up over a campaign (DESIGN.md §5)
                    luigi.task_register.Register.clear_instance_cache()
                    state.update(self.state(window))
            self._report(len(windows), len(windows), [], state, len(failed))
            left = sorted(state.unknown + state.incomplete)
            if failed or not left or "scheduler_url" not in kwargs:
                break
            logger.info("campaign round %d: %d nights held by other workers; again in %d s",
                        round_, len(left), self.retry_wait)  # fmt: skip
            time.sleep(self.retry_wait)
            state = self.state()
        left = sorted(state.unknown + state.incomplete)
        if failed or left:
            shown = ", ".join(map(str, left[:5])) + ("…" if len(left) > 5 else "")
            raise CampaignError(f"{len(left)} nights incomplete ({shown}); {'; '.join(failed[:3])}")

    def _report(self, i: int, n: int, window: list[dt.date], state: CampaignState,
                n_failed: int) -> None:  # fmt: skip
        """Progress bar = windows done; status line = window, catalogues present, failures."""
        if self.set_status_message is None:
            return
        where = f"window {i + 1}/{n} ({window[0]}..{window[-1]})" if window else f"{n} windows run"
        self.set_status_message(
            f"{where}; {state.present}/{state.expected} catalogues present in "
            f"{len(state.counts)} indexed nights, {len(state.unknown)} nights not indexed yet, "
            f"{n_failed} windows with failures"
        )
        self.set_progress_percentage(100 * i // max(n, 1))
