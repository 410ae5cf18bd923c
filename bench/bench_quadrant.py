"""Seconds per science quadrant at real size (3080×3072), raw → aperture catalogue, on 1 core.

Split into read (decompress the raw CCD, per quadrant), corrections (overscan + NL), detrending
(bias, flat, focal-plane normalisation, header, mask), background (sep), photometry (catalogue
cone, proper motion, sums, isolation) and write (parquet). Calibrations are the simulator's
noise-free ones (timing does not depend on their values).

    python bench/bench_quadrant.py
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from astropy.wcs import WCS  # noqa: E402

from ztfluigi import camera, corrections, photometry, raw, refcat, science, storage  # noqa: E402
from ztfluigi.archive.sim import SimArchive  # noqa: E402
from ztfluigi.sim import detector, gaia, truth  # noqa: E402
from ztfluigi.sim.schedule import SimConfig  # noqa: E402

DATE, CCDID, QID = dt.date(2019, 3, 31), 10, 2


def main() -> None:
    cfg = SimConfig(seed=0, scale=1)
    archive = SimArchive(cfg)
    exp = next(e for e in archive.exposures(DATE).values() if e.imgtype == "object")
    rawname = exp.raw_name(CCDID)
    cache = Path("bench/results") / rawname.filename
    cache.parent.mkdir(parents=True, exist_ok=True)
    if not cache.exists():
        cache.write_bytes(archive.fetch_raw(rawname))
    content = cache.read_bytes()
    shape = camera.quadrant_shape(1)
    quads = {q: detector.bias_structure(0, CCDID, q, shape) for q in range(1, 5)}
    bias = camera.assemble_ccd(quads)
    flat, fltnorm = truth.true_master_flat(cfg, DATE, CCDID, exp.filtercode)
    flat = flat.astype(np.float32)
    ipac_header = archive.science_header(rawname, QID)
    _, ipac_mask = archive.science_mask(rawname, QID)
    wcs = WCS(ipac_header)
    ra, dec, radius = refcat.footprint_cone(wcs, shape, 60 * camera.PIXEL_SCALE)
    store = tempfile.mkdtemp(prefix="ztfluigi-refcat-")
    gaia.write_sim_catalog(store, 0, gaia.pixels_for_cone(ra, dec, radius))
    catalogue = refcat.RefCatalog(store)

    t = {}
    t0 = time.perf_counter()
    ccd = raw.read_raw(content, rawname.filename)
    t["read"] = (time.perf_counter() - t0) / 4  # one quadrant's share of the CCD file
    t0 = time.perf_counter()
    corrections.correct_quadrant(ccd.data[QID], ccd.overscan[QID], CCDID, QID, DATE)
    t["corrections"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sci = science.build_science_quadrant(ccd, rawname, QID, bias, flat, fltnorm, fltnorm,
                                         ipac_header, ipac_mask)  # fmt: skip
    t["detrending"] = time.perf_counter() - t0 - t["corrections"]
    t0 = time.perf_counter()
    photometry.background(sci.data, sci.mask)
    t["background"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stars = refcat.at_epoch(catalogue.cone(ra, dec, radius), float(sci.header["OBSMJD"]))
    table = photometry.photometry_catalogue(sci.data, sci.mask, sci.header, stars)
    t["photometry"] = time.perf_counter() - t0 - t["background"]  # includes its own background
    t0 = time.perf_counter()
    out = storage.get_target(os.path.join(store, "apcat.parquet"))
    storage.write_parquet(out, table)
    t["write"] = time.perf_counter() - t0
    total = sum(t.values())
    record = {
        "quadrant_shape": list(shape), "catalogue_rows": table.num_rows,
        **{f"{k}_s": round(v, 3) for k, v in t.items()}, "total_s_per_quadrant": round(total, 2),
        "reference_s_per_quadrant": 6.0,
        "speedup_vs_reference_production": round(6.0 / total, 1),
    }  # fmt: skip
    print(json.dumps(record, indent=1))
    (Path("bench/results") / "quadrant.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
