"""What the tests share: the demo night, a temporary luigi.cfg, building tasks in-process.

One helper per need (test modules never import each other, nor conftest): fixtures live in
``conftest.py``, which uses these too.
"""

from __future__ import annotations

import contextlib
import datetime as dt

import luigi
import luigi.configuration
import pyarrow as pa
from astropy.io import fits
from luigi.execution_summary import LuigiRunResult, LuigiStatusCode

from ztfluigi.sim import schedule

DEMO_DATE = dt.date(2019, 3, 31)


@contextlib.contextmanager
def luigi_settings(settings: dict[str, dict[str, str]]):
    """Temporarily set luigi.cfg keys (sections restored on exit)."""
    cfg = luigi.configuration.get_config()
    saved = {s: dict(cfg.items(s)) if cfg.has_section(s) else None for s in settings}
    for section, values in settings.items():
        if not cfg.has_section(section):
            cfg.add_section(section)
        for key, value in values.items():
            cfg.set(section, key, value)
    try:
        yield cfg
    finally:
        for section, values in saved.items():
            cfg.remove_section(section)
            if values is not None:
                cfg.add_section(section)
                for key, value in values.items():
                    cfg.set(section, key, value)


def build(*tasks: luigi.Task, workers: int = 1) -> LuigiRunResult:
    """Run tasks with an in-process local scheduler; the detailed run result."""
    return luigi.build(list(tasks), local_scheduler=True, workers=workers, log_level="WARNING",
                       detailed_summary=True)  # fmt: skip


def build_ok(*tasks: luigi.Task, workers: int = 1) -> bool:
    """Whether :func:`build` succeeded."""
    return build(*tasks, workers=workers).status == LuigiStatusCode.SUCCESS


def night_without_calibration() -> dt.date:
    """The first night after the demo night that ``calib_gaps`` leaves without calibrations."""
    dates = (DEMO_DATE + dt.timedelta(days=i) for i in range(60))
    cfg = schedule.SimConfig(calib_gaps=True)
    return next(d for d in dates if not schedule.calibration_plan(cfg, d).bias)


def reference_metaheader(headers: list[fits.Header], drop: tuple[str, ...] = ()) -> pa.Table:
    """A ``metaheader_{YYYYMM}.parquet`` as the reference stores it (reference_pipeline.md §5.3):
    one column per keyword, each value the card's FITS value string, no comments, no commentary
    cards, null where a row lacks the card; SCAMPPTH damaged as the reference finds it ("'")."""
    keys: list[str] = []
    rows = []
    for header in headers:
        row = {}
        for card in header.cards:
            if card.keyword in ("HISTORY", "COMMENT", "") or card.keyword in drop:
                continue
            image = card.image
            value = image[10:]
            if value.lstrip().startswith("'"):
                end = value.index("'", value.index("'") + 1)
                value = value[: end + 1]
            else:
                value = value.split("/")[0]
            row[card.keyword] = "'" if card.keyword == "SCAMPPTH" else value.strip()
            if card.keyword not in keys:
                keys.append(card.keyword)
        rows.append(row)
    return pa.table({k: pa.array([r.get(k) for r in rows], pa.string()) for k in keys})
