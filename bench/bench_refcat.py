"""Reference-catalogue cone per real-size quadrant: partition order, row groups, cache.

python bench/bench_refcat.py                 # high latitude (the demo field) and the plane
python bench/bench_refcat.py --b 1 --b -40 --orders 5 6 7 8
python bench/bench_refcat.py --demo          # the demo night (scale 8), catalogue unit by unit

For each galactic latitude, the synthetic sky around the 4 quadrants of one CCD (scale 1, i.e.
real size: a quadrant is ≈0.87°×0.87°, its cone ≈0.63° with the catalogue's 30" margin) is
stored at several partition orders in a local directory. Each variant runs the 4 quadrant cones
of the CCD for 2 exposures of the field (pointings 20" apart, as dithers), twice: without the
row-group cache (``cache_mb=0``: every cone reads its files) and with one catalogue (and cache)
for the 8 cones, as a catalogue unit runs them. Reported per quadrant: wall and CPU seconds,
partition files and row groups read. Every variant returns the same rows as order 8 uncached
(checked). Wall times on a shared machine are indicative; the ratios hold within one run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord

from ztfluigi import camera, refcat
from ztfluigi.sim import astrometry, gaia

MARGIN_ARCSEC = 30.0  #: tasks/catalog.py REFCAT_MARGIN_ARCSEC
CCDID = 5
DITHER_DEG = 20.0 / 3600.0


def quadrant_cones(ra0: float, dec0: float) -> list[tuple[float, float, float]]:
    """The catalogue cones of the 4 real-size quadrants of CCD :data:`CCDID`."""
    shape = camera.quadrant_shape(1)
    return [
        refcat.footprint_cone(astrometry.quadrant_wcs(ra0, dec0, CCDID, q, shape), shape,
                              MARGIN_ARCSEC)
        for q in range(1, 5)
    ]  # fmt: skip


def same_rows(a, b) -> bool:
    """Equal schemas and values in the same order, NaN == NaN (``Table.equals`` says NaN != NaN)."""
    if a.schema != b.schema or a.num_rows != b.num_rows:
        return False
    for name in a.column_names:
        x, y = a[name].to_numpy(), b[name].to_numpy()
        if not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
            return False
    return True


def run_cones(url: str, cones: list, cache_mb: float) -> dict[str, float]:
    """Time the cones (one catalogue when cached, a fresh one per cone otherwise)."""
    tables = []
    wall = cpu = 0.0
    reads = 0
    cat = refcat.RefCatalog(url, cache_mb=cache_mb)
    files = 0
    for ra, dec, radius in cones:
        if not cache_mb:
            cat = refcat.RefCatalog(url, cache_mb=0)
        before = cat.stats["row_groups_read"]
        t0, c0 = time.perf_counter(), time.process_time()
        tables.append(cat.cone(ra, dec, radius))
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        reads += cat.stats["row_groups_read"] - before
        files += len(cat.partitions_for_cone(ra, dec, radius))
    n = len(cones)
    return {
        "wall_s": wall / n, "cpu_s": cpu / n, "files_met": files / n, "row_groups_read": reads / n,
        "rows": float(np.mean([t.num_rows for t in tables])), "tables": tables,
    }  # fmt: skip


def demo_night(orders: list[int]) -> None:
    """Cones of every science quadrant of the demo night (scale 8), grouped as the catalogue
    units run them (one catalogue per CCD and filter), per store order, cached or not."""
    import datetime as dt

    from ztfluigi.archive.sim import SimArchive
    from ztfluigi.sim import truth
    from ztfluigi.sim.schedule import SimConfig

    cfg = SimConfig(seed=0, scale=8)
    exposures = list(SimArchive(cfg).exposures(dt.date(2019, 3, 31)).values())
    science = [e for e in exposures if e.imgtype == "object"]
    shape = camera.quadrant_shape(cfg.scale)
    units = {}
    for exp in science:
        for ccdid in range(1, 17):
            for qid in range(1, 5):
                wcs = astrometry.quadrant_wcs(exp.ra, exp.dec, ccdid, qid, shape)
                cone = refcat.footprint_cone(wcs, shape, MARGIN_ARCSEC)
                units.setdefault((ccdid, exp.filtercode), []).append(cone)
    pixels = sorted(truth.refcat_pixels(cfg, exposures))
    with tempfile.TemporaryDirectory(prefix="bench-refcat-") as tmp:
        for order in orders:
            url = str(Path(tmp) / f"o{order}")
            gaia.write_sim_catalog(url, cfg.seed, pixels, order=order)
            for cache_mb in (0.0, 256.0):
                cpu = wall = files = 0.0
                n = 0
                for cones in units.values():
                    cat = refcat.RefCatalog(url, cache_mb=cache_mb)
                    for cone in cones:
                        t0, c0 = time.perf_counter(), time.process_time()
                        cat.cone(*cone)
                        wall += time.perf_counter() - t0
                        cpu += time.process_time() - c0
                        files += len(cat.partitions_for_cone(*cone))
                        n += 1
                print(json.dumps({"demo_night_scale": cfg.scale, "order": order,
                                  "cached": bool(cache_mb), "quadrants": n,
                                  "wall_s": round(wall / n, 4), "cpu_s": round(cpu / n, 4),
                                  "files_met": round(files / n, 2)}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--b", type=float, action="append", help="galactic latitudes (deg)")
    parser.add_argument("--l", type=float, default=100.0, help="galactic longitude (deg)")
    parser.add_argument("--orders", type=int, nargs="+", default=[5, 6, 7, 8])
    parser.add_argument("--row-groups", type=int, nargs="+", default=[gaia.STORE_ROW_GROUP_ROWS])
    parser.add_argument("--demo", action="store_true", help="the demo night's cones instead")
    args = parser.parse_args()
    if args.demo:
        demo_night(sorted(set(args.orders) | {gaia.SIM_ORDER, gaia.STORE_ORDER}))
        return
    results = []
    for b in args.b or [-40.0, 2.0]:
        c = SkyCoord(l=args.l * u.deg, b=b * u.deg, frame="galactic").icrs
        ra0, dec0 = float(c.ra.deg), float(c.dec.deg)
        cones = quadrant_cones(ra0, dec0) + quadrant_cones(ra0 + DITHER_DEG, dec0 + DITHER_DEG)
        margin = 60 * camera.PIXEL_SCALE / 3600.0  # deg, as sim.truth.refcat_pixels
        pixels = sorted({int(p) for ra, dec, r in cones
                         for p in gaia.pixels_for_cone(ra, dec, r + margin)})  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="bench-refcat-") as tmp:
            reference = None
            for order in sorted(args.orders, reverse=True):
                for rows in args.row_groups:
                    url = str(Path(tmp) / f"o{order}_rg{rows}")
                    t0 = time.perf_counter()
                    gaia.write_sim_catalog(url, 0, pixels, order=order, row_group_rows=rows)
                    write_s = time.perf_counter() - t0
                    for cache_mb in (0.0, 256.0):
                        res = run_cones(url, cones, cache_mb)
                        tables = res.pop("tables")
                        if reference is None:
                            reference = tables
                        same = all(same_rows(t, r) for t, r in zip(tables, reference, strict=True))
                        if not same:
                            raise SystemExit(f"order {order}: rows differ from the reference")
                        row = {"b_deg": b, "order": order, "row_group_rows": rows,
                               "cached": bool(cache_mb), "write_s": round(write_s, 2),
                               **{k: round(v, 4) for k, v in res.items()}}  # fmt: skip
                        print(json.dumps(row))
                        results.append(row)
    print(json.dumps({"cone_radius_deg": round(quadrant_cones(0.0, 30.0)[0][2], 3)}))


if __name__ == "__main__":
    main()
