"""Seconds per science quadrant at real size (3080×3072), raw → aperture catalogue, on 1 core,
ours next to the reference implementation (ztfimg 0.19.0 + ztfin2p3 0.4.1) on the same files.

Stages (CPU seconds per quadrant — ``time.process_time`` of each side's one-thread process, so
other jobs on a shared machine do not count; on a quiet machine the same as wall time — best of
``--repeat`` passes, the least disturbed, as ``timeit``; medians in the JSON; each pass reads
afresh):

* **read**: the raw CCD file (one quadrant's share, 1/4) and the quadrant's IPAC ``sciimg``
  header and ``mskimg.fits.gz`` mask (both sides read the same files from the same local IRSA
  tree). Ours as the catalogue task reads them: the raw bytes decoded by
  :func:`ztfluigi.raw.read_quadrants` (the compiled Rice decoder), the mask's bytes verified and
  decoded by :func:`ztfluigi.ipac.read_mask`, the header rebuilt from the IpacHeaders table
  (:func:`ztfluigi.ipac.header_from_row`; the table is read once per night × CCD × filter:
  encoded untimed here). The reference reads with astropy (``ztfimg.RawCCD``, ``fits.getdata``);
* **science**: overscan + non-linearity, bias, flat, focal-plane factor, split to the quadrant,
  header, mask. The reference times its corrections (of the CCD: 1/4 of it) and its detrending
  apart; ours makes the pixels in one compiled pass (``corrections.correct_and_detrend_quadrant``),
  so the stage is their sum, and ours is split beside the totals into that pass and the rest
  (header merge, mask, saturation level);
* **background**: our default (star-masked sep mesh, raw frame) and its back/rms maps: the time
  of ``photometry.quadrant_background`` *inside* the catalogue call (timed by a wrapper, as the
  pixel pass inside ``build_science_quadrant``), so nothing is computed twice;
* **photometry**: catalogue (ours: cone of the refcat store + proper motion; reference: the
  same epoch positions read from parquet), WCS positions, footprint cut, isolation, sums: the
  catalogue call minus its background (the reference's minus the maps it re-evaluates from its
  cached mesh, timed in its background);
* **write**: the catalogue parquet.

Beside the stages, not in the totals (ours only): the raw file read by CFITSIO (``read_raw``,
what the read stage used before the compiled decoder), one quadrant decoded alone (a single
quadrant's build), the integrity checks ``verify_raw`` adds to a stored raw file's read
(checksums, finite pixels; the reference has none), and the **pocket** stage, what
``pocket = on`` adds to our corrections (the reference, ztfimg 0.19.0 + ztfin2p3 0.4.1, has no
pocket correction; dates ≥ 2019-10-22 get ours by default; this 2019-03-31 file is corrected as
if it were of that era, the cost does not depend on the date), and the numpy step-by-step
versions of the corrections (with and without pocket) and of the detrending next to the
compiled ones (``corrections.detrend_quadrant``), as
before/after of the fused kernels in the same run.

The master bias and flat (real-size sky-oriented CCD FITS, the simulator's noise-free truth,
``FLTNORM_FP`` = 1.03 × ``FLTNORM``: timing does not depend on values) are read once per CCD and
filter by both pipelines: reported on their own row, not in the per-quadrant total. The
reference also stores each science quadrant as FITS (ztfin2p3 0.4.1): reported apart.

The reference runs in its own virtualenv (``$ZTFIN2P3_PYTHON``, or built once in
``$XDG_CACHE_HOME/ztfluigi/ref-ztfin2p3-0.4.1`` by ``tests/reference_env.py`` with the pin set of
the differential test plus ``ztfin2p3==0.4.1``), through
``bench/reference_quadrant.py``, after our passes, sequentially, ``OMP_NUM_THREADS=1`` on both
sides. Then the outputs are compared (untimed): our science pixels and catalogue computed with the
reference's settings (NL first, table ``ccd_amp_coeff_v2``, sep mesh 192×192, isolation among
in-footprint stars) against the reference's, and our production outputs against them.

    python bench/bench_quadrant.py [--repeat 5] [--env-only] [--ours-only] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from astropy.io import fits  # noqa: E402
from astropy.wcs import WCS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the reference venv builder
from tests import reference_env  # noqa: E402
from ztfluigi import (  # noqa: E402
    camera,
    corrections,
    fitschecksum,
    fringes,
    ipac,
    naming,
    photometry,
    raw,
    refcat,
    science,
    storage,
)
from ztfluigi.archive.sim import SimArchive  # noqa: E402
from ztfluigi.catalogue import REFCAT_MARGIN_ARCSEC  # noqa: E402
from ztfluigi.catalogue import parquet_options as catalogue_options  # noqa: E402
from ztfluigi.corrections import CorrectionSpec  # noqa: E402
from ztfluigi.sim import detector, gaia, truth  # noqa: E402
from ztfluigi.sim import fringes as simfringes  # noqa: E402
from ztfluigi.sim.schedule import SimConfig  # noqa: E402

DATE, CCDID, QID = dt.date(2019, 3, 31), 10, 2
clock = time.process_time  #: CPU seconds of this process (one thread: its time on one core)
STAGES = ("read", "science", "background", "photometry", "write")
#: timed beside the stages, not in the totals: (key, label)
EXTRA_STAGES = (
    ("science_pixels", "science: pixel pass (overscan, NL, bias, flat)"),
    ("science_header_mask", "science: header merge, mask, SATURATE"),
    ("read_cfitsio", "read, raw file by CFITSIO (read_raw)"),
    ("read_one_quadrant", "read, one quadrant decoded alone"),
    ("raw_integrity", "raw integrity checks (verify_raw)"),
    ("pocket", "pocket (what pocket=on adds)"),
    ("corrections_pocket_off", "corrections, pocket off (again)"),
    ("corrections_pocket_on", "corrections, pocket on"),
    ("corrections_numpy", "corrections, numpy steps"),
    ("corrections_numpy_pocket_on", "corrections, numpy steps, pocket on"),
    ("detrend_numpy", "science.detrend (numpy)"),
    ("detrend_compiled", "corrections.detrend_quadrant"),
    ("fringe", "zi fringe fit + subtraction (3 modes)"),
)
FP_OVER_CCD = 1.03  #: FLTNORM_FP / FLTNORM written in the master flat (a 3 % CCD step)
RESULTS = Path("bench/results")
REPO = Path(__file__).resolve().parents[1]
REFERENCE_SCRIPT = Path(__file__).with_name("reference_quadrant.py")
REFERENCE_TIMEOUT = 1800  #: s
#: The reference's settings, for the agreement check: ztfimg ≤ 0.19 corrects NL first with its
#: single table; ztfimg 0.19.0's sep mesh is 192×192 (HEAD: 192×220, ours); isolation among the
#: in-footprint stars only; sep's background (no star mask) and sep's sums
#: (``PhotometrySpec.reference()``).
COMPAT_SPEC = CorrectionSpec(order="nl-first", nl_table="ccd_amp_coeff_v2")
COMPAT_MESH = (192, 192)
TARGET_S, TARGET_SPEEDUP = 0.35, 2.0  #: issue #15: ≤ 0.35 s per quadrant, ≤ 0.5× the reference
SNR_MIN = 10.0  #: apertures compared in relative flux: reference flux / error above this
FLOAT32_BUDGET = 4  #: float32 spacings allowed between the two float32 pixel chains


# --- the reference interpreter (tests/reference_env.py) ----------------------------------------


def reference_python(scratch: Path) -> tuple[str, str, str]:
    """(interpreter, origin, versions) importing ztfimg 0.19.0 and ztfin2p3 0.4.1:
    ``$ZTFIN2P3_PYTHON``, else a cached virtualenv of ztfimg's pin set + ``ztfin2p3==0.4.1``."""
    modules = ("ztfimg", "ztfin2p3")
    expected = f"{reference_env.ZTFIMG_VERSION} {reference_env.ZTFIN2P3_VERSION}"
    given = os.environ.get("ZTFIN2P3_PYTHON")
    if given:
        found = reference_env.imported_versions(given, scratch, modules)
        if found != expected:
            sys.exit(f"$ZTFIN2P3_PYTHON={given} must import ztfimg/ztfin2p3 {expected}: {found}")
        return given, "$ZTFIN2P3_PYTHON", found
    pins = (*reference_env.PINS, f"ztfin2p3=={reference_env.ZTFIN2P3_VERSION}")
    name = f"ref-ztfin2p3-{reference_env.ZTFIN2P3_VERSION}"
    try:
        python, seconds = reference_env.cached_env(name, pins, modules, expected, scratch)
    except reference_env.ReferenceEnvError as exc:
        sys.exit(str(exc))
    return python, "cache" if seconds is None else "built", expected


# --- inputs shared by both sides -------------------------------------------------------------


@dataclass
class Inputs:
    """The files both sides read, under a scratch ``$ZTFDATA``."""

    ztfdata: Path
    rawname: naming.RawName
    raw_path: Path
    bias_path: Path
    flat_path: Path
    sciimg_path: Path  #: IPAC sciimg (header used)
    mskimg_path: Path  #: IPAC mskimg.fits.gz
    header_table: pa.Table  #: the quadrant's IPAC header as IpacHeaders stores it (read once per
    #: night × CCD × filter)
    stars_path: Path  #: epoch star list of the quadrant's cone, for the reference
    refcat_url: str  #: our refcat store holding the same stars


def prepare_inputs(scratch: Path) -> Inputs:
    """Raw file (cached in bench/results), masters, IPAC header/mask and star list (untimed)."""
    cfg = SimConfig(seed=0, scale=1)
    archive = SimArchive(cfg)
    exp = next(e for e in archive.exposures(DATE).values() if e.imgtype == "object")
    rawname = exp.raw_name(CCDID)
    raw_path = RESULTS / rawname.filename  # IRSA name: ztfimg parses date and ccdid from it
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not raw_path.exists():
        raw_path.write_bytes(archive.fetch_raw(rawname))
    ztfdata = scratch / "ztfdata"
    shape = camera.quadrant_shape(1)

    bias = camera.assemble_ccd(
        {q: detector.bias_structure(0, CCDID, q, shape) for q in range(1, 5)}
    ).astype(np.float32)
    flat, fltnorm = truth.true_master_flat(cfg, DATE, CCDID, exp.filtercode)
    bias_path = ztfdata / "ztfin2p3" / naming.master_bias_relpath(DATE, CCDID)
    flat_path = ztfdata / "ztfin2p3" / naming.master_flat_relpath(DATE, CCDID, exp.filtercode)
    header = fits.Header()
    header["FLTNORM"] = fltnorm
    header["HIERARCH FLTNORM_FP"] = fltnorm * FP_OVER_CCD
    for path, data, hdr in ((bias_path, bias, None), (flat_path, flat.astype(np.float32), header)):
        path.parent.mkdir(parents=True, exist_ok=True)
        fits.PrimaryHDU(data, hdr).writeto(path)
    del bias, flat

    ipac_header = archive.science_header(rawname, QID)
    mask_header, ipac_mask = archive.science_mask(rawname, QID)
    sciimg_path = ztfdata / naming.science_quadrant_relpath(rawname, QID, "sciimg.fits")
    mskimg_path = ztfdata / naming.science_quadrant_relpath(rawname, QID, "mskimg.fits.gz")
    sciimg_path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(np.zeros(shape, np.float32), ipac_header).writeto(sciimg_path)
    fits.PrimaryHDU(np.asarray(ipac_mask, np.int16), mask_header).writeto(mskimg_path)

    ra, dec, radius = refcat.footprint_cone(WCS(ipac_header), shape, REFCAT_MARGIN_ARCSEC)
    store = str(scratch / "refcat")
    gaia.write_sim_catalog(store, 0, gaia.pixels_for_cone(ra, dec, radius))
    stars = refcat.at_epoch(refcat.RefCatalog(store).cone(ra, dec, radius),
                            float(ipac_header["OBSMJD"]))  # fmt: skip
    stars_path = scratch / "stars_at_epoch.parquet"
    pq.write_table(stars.select(list(photometry.GAIA_COLUMNS)), stars_path)
    header_table = ipac.encode_headers([fits.getheader(sciimg_path)], [(rawname, QID)])
    return Inputs(ztfdata, rawname, raw_path, bias_path, flat_path, sciimg_path, mskimg_path,
                  header_table, stars_path, store)  # fmt: skip


# --- our side --------------------------------------------------------------------------------


@dataclass
class Masters:
    bias: np.ndarray
    flat: np.ndarray
    fltnorm: float
    fltnorm_fp: float
    flat_median: float  #: the quadrant's median flat (SATURATE), once per CCD and filter


def read_masters(inp: Inputs) -> Masters:
    """As ``tasks.science.Calibration.load`` (the focal-plane level from the flat header here)."""
    bias = np.asarray(storage.read_fits(str(inp.bias_path))[0].data, np.float32)
    flat_hdu = storage.read_fits(str(inp.flat_path))[0]
    flat = np.asarray(flat_hdu.data, np.float32)
    return Masters(bias, flat, float(flat_hdu.header["FLTNORM"]),
                   float(flat_hdu.header["FLTNORM_FP"]),
                   science.quadrant_flat_median(flat, QID))  # fmt: skip


@contextlib.contextmanager
def timed_inner(module: object, name: str, sink: dict[str, float]) -> Iterator[None]:
    """Time the calls of ``module.name`` made inside the block (e.g. the corrections inside
    ``build_science_quadrant``, the background inside ``photometry_catalogue``) into
    ``sink[name]``."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        t0 = clock()
        try:
            return original(*args, **kwargs)
        finally:
            sink[name] = sink.get(name, 0.0) + clock() - t0

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


def ours_once(inp: Inputs, masters: Masters, catalogue: refcat.RefCatalog, out_url: str):
    """One raw → catalogue pass as the catalogue task runs it; stage times and products."""
    t: dict[str, float] = {}
    t0 = clock()
    ccd = raw.read_quadrants(storage.read_bytes(str(inp.raw_path)), inp.rawname.filename)
    t["read"] = (clock() - t0) / 4  # one quadrant's share of the CCD file
    t0 = clock()
    ipac_header = ipac.header_from_row(inp.header_table, 0)
    ipac_mask = ipac.read_mask(storage.read_bytes(str(inp.mskimg_path)), inp.mskimg_path.name,
                               ccd.data[QID].shape)  # fmt: skip
    t["read"] += clock() - t0

    inner: dict[str, float] = {}
    t0 = clock()
    with timed_inner(science, "correct_and_detrend_quadrant", inner):
        sci = science.build_science_quadrant(
            ccd, inp.rawname, QID, masters.bias, masters.flat, masters.fltnorm,
            masters.fltnorm_fp, ipac_header, ipac_mask, flat_median=masters.flat_median,
        )  # fmt: skip
    t["science"] = clock() - t0
    t["science_pixels"] = inner["correct_and_detrend_quadrant"]
    t["science_header_mask"] = t["science"] - t["science_pixels"]

    t0 = clock()
    wcs = photometry.quadrant_wcs(sci.header)  # one WCS for the cone and the positions
    ra, dec, radius = refcat.footprint_cone(wcs, sci.data.shape, REFCAT_MARGIN_ARCSEC)
    stars = refcat.at_epoch(catalogue.cone(ra, dec, radius), float(sci.header["OBSMJD"]))
    t["photometry_catalogue"] = clock() - t0  # part of photometry

    t0 = clock()
    with timed_inner(photometry, "quadrant_background", inner):
        table = photometry.photometry_catalogue(sci.data, sci.mask, sci.header, stars, wcs=wcs)
    t["background"] = inner["quadrant_background"]
    t["photometry"] = (t["photometry_catalogue"] + clock() - t0
                       - inner["quadrant_background"])  # fmt: skip

    t0 = clock()
    storage.write_parquet(storage.get_target(out_url), table,
                          **catalogue_options(table))  # as the catalogue task writes it
    t["write"] = clock() - t0
    extra_stages(t, inp, ccd, masters)
    return t, ccd, sci, table


def extra_stages(t: dict[str, float], inp: Inputs, ccd: raw.RawCCD, masters: Masters) -> None:
    """The stages beside the total (:data:`EXTRA_STAGES`) into ``t``; checks pocket-on outputs
    and that the compiled raw decoder equals CFITSIO."""
    content = storage.read_bytes(str(inp.raw_path))
    t0 = clock()
    old = raw.read_raw(content, inp.rawname.filename)
    t["read_cfitsio"] = (clock() - t0) / 4
    t["_read_bitwise"] = float(all(
        np.array_equal(old.data[q].view(np.uint32), ccd.data[q].view(np.uint32))
        and np.array_equal(old.overscan[q].view(np.uint32), ccd.overscan[q].view(np.uint32))
        for q in range(1, 5)
    ))  # fmt: skip
    del old
    t0 = clock()
    raw.read_quadrants(content, inp.rawname.filename, qids=(QID,))
    t["read_one_quadrant"] = clock() - t0
    t0 = clock()
    fitschecksum.verify(content, inp.rawname.filename)
    all(np.isfinite(ccd.data[q]).all() for q in ccd.data)
    t["raw_integrity"] = (clock() - t0) / 4
    data, over = ccd.data[QID], ccd.overscan[QID]
    on, off = CorrectionSpec(pocket="on"), CorrectionSpec(pocket="off")
    results = {}
    for key, spec, engine in (("corrections_pocket_off", off, "numba"),
                              ("corrections_pocket_on", on, "numba"),
                              ("corrections_numpy", off, "numpy"),
                              ("corrections_numpy_pocket_on", on, "numpy")):  # fmt: skip
        t0 = clock()
        results[key] = corrections.correct_quadrant(data, over, CCDID, QID, DATE, spec,
                                                    engine=engine)  # fmt: skip
        t[key] = clock() - t0
    # back to back in the same pass: what switching the pocket on adds
    t["pocket"] = max(t["corrections_pocket_on"] - t["corrections_pocket_off"], 0.0)
    ulps = _float32_ulps(results["corrections_pocket_on"], results["corrections_numpy_pocket_on"])
    t["_pocket_on_max_ulps"] = float(ulps.max())  # numba vs numpy, pocket on (not a time)
    corrected = corrections.correct_quadrant(data, over, CCDID, QID, DATE)
    bias, flat = science.quadrant_of(masters.bias, QID), science.quadrant_of(masters.flat, QID)
    t0 = clock()
    ref, _ = science.detrend(corrected, bias, flat, masters.fltnorm, masters.fltnorm_fp)
    t["detrend_numpy"] = clock() - t0
    t0 = clock()
    new, _ = corrections.detrend_quadrant(corrected, bias, flat,
                                          masters.fltnorm_fp / masters.fltnorm)  # fmt: skip
    t["detrend_compiled"] = clock() - t0
    t["_detrend_bitwise"] = float(np.array_equal(new, ref, equal_nan=True))
    # what fringe = on adds to a zi quadrant: the simulator's 3 line-group modes at full size,
    # sampled as a FringeModel stores them, fitted to this quadrant and subtracted
    step = fringes.MAP_BIN
    modes = simfringes.fringe_modes(0, CCDID, QID, new.shape)[:, ::step, ::step]
    modes = np.ascontiguousarray(modes / np.sqrt(np.mean(modes**2, axis=(1, 2)))[:, None, None],
                                 np.float32)  # fmt: skip
    t0 = clock()
    fringes.correct(new, None, modes)
    t["fringe"] = clock() - t0


def _float32_ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in float32 ulps (signed-magnitude order)."""

    def key(x: np.ndarray) -> np.ndarray:
        i = np.ascontiguousarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)

    return np.abs(key(a) - key(b))


# --- the reference side ----------------------------------------------------------------------


def run_reference(python: str, inp: Inputs, scratch: Path, repeat: int) -> dict:
    """``reference_quadrant.py`` in the reference interpreter, 1 thread; its result JSON."""
    config = {
        "raw": str(inp.raw_path.resolve()), "bias": str(inp.bias_path),
        "flat": str(inp.flat_path), "qid": QID, "stars": str(inp.stars_path),
        "radii": list(photometry.RADII), "repeat": repeat,
        "out": str(scratch / "reference.json"),
    }  # fmt: skip
    config_path = scratch / "reference_config.json"
    config_path.write_text(json.dumps(config, indent=1))
    threads = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    env = reference_env.clean_env(ZTFDATA=str(inp.ztfdata) + os.sep, **threads)
    try:
        proc = subprocess.run(
            [python, str(REFERENCE_SCRIPT), str(config_path)], cwd=scratch, env=env,
            capture_output=True, text=True, timeout=REFERENCE_TIMEOUT,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        sys.exit(f"{REFERENCE_SCRIPT.name} did not finish in {REFERENCE_TIMEOUT} s")
    if proc.returncode:
        sys.exit(f"{REFERENCE_SCRIPT.name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(Path(config["out"]).read_text())


# --- agreement -------------------------------------------------------------------------------


def _pixels(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Science pixels: |ours − reference| (DN), and in float32 spacings where it exceeds 1e-3 DN."""
    ref64 = ref.astype(np.float64)
    delta = np.abs(ours.astype(np.float64) - ref64)
    spacing = np.maximum(np.spacing(np.abs(ref)), np.spacing(np.abs(ours))).astype(np.float64)
    beyond = delta > 1e-3
    return {
        "max_abs_dn": float(delta.max()),
        "median_abs_dn": float(np.median(delta[::4, ::4])),
        "pixels_beyond_1e-3_dn": int(np.count_nonzero(beyond)),
        "max_float32_spacings_beyond_1e-3_dn": float(
            np.max(delta[beyond] / spacing[beyond], initial=0.0)
        ),
        "max_beyond_1e-3_dn_plus_4_spacings": float(
            np.max(delta - 1e-3 - FLOAT32_BUDGET * spacing)
        ),
        "median_level_dn": float(np.median(ref64[::4, ::4])),
    }


def _flux_rel(fo: np.ndarray, fr: np.ndarray, er: np.ndarray) -> np.ndarray:
    """|Δ|/f of the apertures with both fluxes finite and reference S/N above SNR_MIN."""
    snr = np.isfinite(fo) & np.isfinite(fr) & (er > 0) & (fr > SNR_MIN * er)
    return np.abs(fo[snr] - fr[snr]) / fr[snr]


def _catalogues(ours, ref: dict[str, np.ndarray], nradii: int, xy: tuple | None) -> dict:
    """Row set, positions, isolation, sums, errors and flags of ours vs the reference's.

    The reference's sums are NaN (flag 0) for apertures touching a masked pixel: ztfin2p3 NaN-s
    the masked pixels and ztfimg 0.19.0's ``ScienceQuadrant.get_aperture`` does not pass its
    ``mask`` on to sep. Ours excludes them and rescales (flag 32). Those apertures are counted,
    not compared; flags are compared where both fluxes are finite.
    """
    o = {c: ours.column(c).to_numpy(zero_copy_only=False) for c in ours.column_names}
    common, io_, ir = np.intersect1d(o["source_id"], ref["source_id"], return_indices=True)
    out: dict[str, object] = {
        "rows_ours": int(o["source_id"].size), "rows_reference": int(ref["source_id"].size),
        "rows_common": int(common.size),
        "isolated_mismatches": int(np.count_nonzero(o["isolated"][io_] != ref["isolated"][ir])),
    }  # fmt: skip
    if xy is not None:  # ours are stored as float32: compare our float64 positions instead
        dx, dy = np.abs(xy[0][io_] - ref["x"][ir]), np.abs(xy[1][io_] - ref["y"][ir])
        out["max_abs_dxy_px"] = float(max(dx.max(initial=0.0), dy.max(initial=0.0)))
    rel, rel_sigma, rel_err = [], [], []
    n = {"compared": 0, "ref_nan_ours_masked": 0, "other_nan_mismatch": 0, "flag_mismatch": 0}
    for k in range(nradii):
        fo, fr = o[f"f_{k}"][io_].astype(np.float64), ref[f"f_{k}"][ir].astype(np.float64)
        er = ref[f"f_{k}_e"][ir].astype(np.float64)
        eo = o[f"f_{k}_ebkg"][io_].astype(np.float64)
        flags = o[f"f_{k}_f"][io_].astype(np.int64)
        both = np.isfinite(fo) & np.isfinite(fr)
        masked = ~np.isfinite(fr) & np.isfinite(fo) & ((flags & photometry.APER_HASMASKED) != 0)
        n["ref_nan_ours_masked"] += int(np.count_nonzero(masked))
        n["other_nan_mismatch"] += int(
            np.count_nonzero(np.isfinite(fo) != np.isfinite(fr)) - np.count_nonzero(masked)
        )
        n["compared"] += int(np.count_nonzero(both))
        rel.append(_flux_rel(fo, fr, er))
        good = both & (er > 0)
        rel_sigma.append(np.abs(fo[good] - fr[good]) / er[good])
        rel_err.append(np.abs(eo[good] - er[good]) / er[good])
        ours_flags = flags & ~(photometry.FLAG_OFFIMAGE | photometry.APER_ALLMASKED)
        ref_flags = ref[f"f_{k}_f"][ir].astype(np.int64)
        n["flag_mismatch"] += int(np.count_nonzero((ours_flags != ref_flags) & both))
    rel, rel_sigma, rel_err = (np.concatenate(v) for v in (rel, rel_sigma, rel_err))
    out.update({
        "apertures": n, "apertures_snr_gt_10": int(rel.size),
        "flux_max_rel_snr_gt_10": float(rel.max(initial=0.0)),
        "flux_median_rel_snr_gt_10": float(np.median(rel)) if rel.size else 0.0,
        "flux_max_abs_over_sigma": float(rel_sigma.max(initial=0.0)),
        "error_bkg_max_rel": float(rel_err.max(initial=0.0)),
    })  # fmt: skip
    return out


def agreement(inp: Inputs, masters: Masters, ccd, sci_prod, table_prod, reference: dict) -> dict:
    """Our outputs with the reference's settings (and as shipped) against the reference's."""
    products = reference["products"]
    ref_sci = np.load(products["science_npy"])
    ref_back = photometry.to_sky(np.load(products["back_npy"]))  # sky → raw orientation
    ref_rms = photometry.to_sky(np.load(products["rms_npy"]))
    ref_table = pq.read_table(products["apcat"])
    ref = {c: ref_table.column(c).to_numpy(zero_copy_only=False) for c in ref_table.column_names}
    nradii = len(photometry.RADII)

    compat = science.science_quadrant_data(
        ccd.data[QID], ccd.overscan[QID], CCDID, QID, DATE, masters.bias, masters.flat,
        masters.fltnorm, masters.fltnorm_fp, COMPAT_SPEC,
    )  # fmt: skip
    back, _ = photometry.background(compat, sci_prod.mask, *COMPAT_MESH)
    stars = pq.read_table(inp.stars_path)
    table = photometry.photometry_catalogue(
        compat, sci_prod.mask, sci_prod.header, stars, isolation_scope="footprint",
        mesh=COMPAT_MESH, spec=photometry.PhotometrySpec.reference(),
    )  # fmt: skip
    ra, dec = table.column("ra").to_numpy(), table.column("dec").to_numpy()
    x_raw, y_raw = photometry.positions(sci_prod.header, ra, dec)
    # Our sums on our pixels with the reference's background maps: the sums alone.
    sums = photometry.aperture_photometry(
        compat.astype(np.float64) - ref_back, sci_prod.mask, x_raw, y_raw, rms=ref_rms
    )
    ids = table.column("source_id").to_numpy()
    _, io_, ir = np.intersect1d(ids, ref["source_id"], return_indices=True)
    rel = np.concatenate([
        _flux_rel(sums["flux"][k][io_], ref[f"f_{k}"][ir], ref[f"f_{k}_e"][ir])
        for k in range(nradii)
    ])  # fmt: skip
    return {
        "reference_settings": {
            "science": _pixels(compat, ref_sci),
            "background_max_abs_dn": float(np.max(np.abs(back.astype(np.float64) - ref_back))),
            "background_median_abs_dn": float(
                np.median(np.abs(back.astype(np.float64) - ref_back)[::4, ::4])
            ),
            "catalogue": _catalogues(
                table, ref, nradii, photometry.raw_to_ref(x_raw, y_raw, compat.shape)
            ),
            "sums_with_reference_background_max_rel_snr_gt_10": float(rel.max(initial=0.0)),
        },
        "as_shipped": {
            "science": _pixels(sci_prod.data, ref_sci),
            "catalogue": _catalogues(table_prod, ref, nradii, None),
        },
        "build_science_data_error": reference["build_science_data_error"],
    }


# --- report ----------------------------------------------------------------------------------


def _stages(runs: list[dict[str, float]], how) -> dict[str, float]:
    return {k: how(r[k] for r in runs) for k in runs[0]}


def report(ours: dict[str, float], ref: dict[str, float] | None, extra: dict) -> str:
    """The stage table: seconds per quadrant and reference / ours."""
    lines = [f"{'stage':<36}{'ours s':>9}{'reference s':>13}{'ratio':>8}"]

    def row(name: str, a: float | None, b: float | None) -> None:
        fa = f"{a:9.3f}" if a is not None else f"{'-':>9}"
        fb = f"{b:13.3f}" if b is not None else f"{'-':>13}"
        ratio = f"{b / a:7.1f}x" if a and b is not None else f"{'-':>8}"
        lines.append(f"{name:<36}{fa}{fb}{ratio}")

    for stage in STAGES:
        row(stage, ours[stage], ref[stage] if ref else None)
    row("total per quadrant", sum(ours[s] for s in STAGES),
        sum(ref[s] for s in STAGES) if ref else None)  # fmt: skip
    lines.append("not in the total:")
    for key, label in EXTRA_STAGES:
        row(f"  {label}", ours[key], None)
    row("  total per quadrant with pocket on", sum(ours[s] for s in STAGES) + ours["pocket"],
        None)  # fmt: skip
    row("  masters read (once per CCD+filter)", extra["ours_masters"], extra.get("ref_masters"))
    if ref:
        row("  science FITS write (0.4.1 only)", None, ref["write_science_fits"])
    return "\n".join(lines)


def agreement_lines(agree: dict) -> str:
    """The agreement numbers worth reading (all of them are in the JSON)."""
    r, a = agree["reference_settings"], agree["as_shipped"]
    sci, cat, ap = r["science"], r["catalogue"], r["catalogue"]["apertures"]
    return "\n".join([
        "agreement, ours with the reference's settings (NL first, ccd_amp_coeff_v2, sep mesh "
        "192x192, isolation among in-footprint stars) vs the reference:",
        f"  science pixels: max |d| {sci['max_abs_dn']:.2g} DN, median {sci['median_abs_dn']:.2g}"
        f" DN; {sci['pixels_beyond_1e-3_dn']} px beyond 1e-3 DN, at most "
        f"{sci['max_float32_spacings_beyond_1e-3_dn']:.0f} float32 spacings",
        f"  sep background map: max |d| {r['background_max_abs_dn']:.2g} DN, median "
        f"{r['background_median_abs_dn']:.2g} DN",
        f"  catalogue rows {cat['rows_common']}/{cat['rows_reference']} common, positions max "
        f"|d| {cat['max_abs_dxy_px']:.2g} px, isolation mismatches {cat['isolated_mismatches']}",
        f"  sums, S/N > {SNR_MIN:g} ({cat['apertures_snr_gt_10']} apertures): max rel "
        f"{cat['flux_max_rel_snr_gt_10']:.2g}, median {cat['flux_median_rel_snr_gt_10']:.2g}; "
        f"all: max |d|/sigma {cat['flux_max_abs_over_sigma']:.2g}; with the reference's "
        f"background maps: max rel {r['sums_with_reference_background_max_rel_snr_gt_10']:.2g}",
        f"  background-only errors max rel {cat['error_bkg_max_rel']:.2g}; flags differ on "
        f"{ap['flag_mismatch']} of {ap['compared']} apertures",
        f"  reference NaN where ours is masked + rescaled (flag 32): {ap['ref_nan_ours_masked']} "
        f"apertures (ztfimg 0.19.0 get_aperture drops its mask); other NaN mismatches "
        f"{ap['other_nan_mismatch']}",
        "ours as shipped (overscan first, NL table by date, mesh 192x220) vs the reference:",
        f"  science pixels max |d| {a['science']['max_abs_dn']:.3g} DN, median "
        f"{a['science']['median_abs_dn']:.2g} DN; sums S/N > {SNR_MIN:g}: median rel "
        f"{a['catalogue']['flux_median_rel_snr_gt_10']:.2g}, max "
        f"{a['catalogue']['flux_max_rel_snr_gt_10']:.2g}",
        f"0.4.1's own build_science_data: {agree['build_science_data_error']}",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed passes per side")
    parser.add_argument("--env-only", action="store_true", help="build/check the reference env")
    parser.add_argument("--ours-only", action="store_true", help="skip the reference side")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ztfluigi-bench-quadrant-"))
    try:
        python = None
        if not args.ours_only:
            python, origin, versions = reference_python(scratch / "envcheck")
            print(f"reference: {python} ({origin}; ztfimg/ztfin2p3 {versions})", flush=True)
        if args.env_only:
            return
        load_start = os.getloadavg()
        inp = prepare_inputs(scratch)
        t0 = clock()
        masters = read_masters(inp)
        ours_masters = clock() - t0
        catalogue = refcat.RefCatalog(inp.refcat_url)
        runs = []
        for i in range(args.repeat):
            t, ccd, sci, table = ours_once(inp, masters, catalogue,
                                           str(scratch / f"ours_apcat_{i}.parquet"))  # fmt: skip
            runs.append(t)
        ours = _stages(runs, min)
        print("ours done (best of passes):", {k: round(v, 3) for k, v in ours.items()}, flush=True)
        reference = ref = None
        if not args.ours_only:
            reference = run_reference(python, inp, scratch, args.repeat)
            for run in reference["runs"]:  # its two steps are one stage of ours (one pass)
                run["science"] = run["corrections"] + run["detrending"]
            ref = _stages(reference["runs"], min)
        load_end = os.getloadavg()
        extra = {"ours_masters": ours_masters}
        if reference:
            extra["ref_masters"] = reference["masters_read_s"]
        print(f"\nseconds per quadrant, best of {args.repeat} passes per side (1 thread each):")
        print(report(ours, ref, extra))
        print(f"raw decoder bitwise CFITSIO: {bool(ours['_read_bitwise'])}; "
              f"pocket on, fused numba vs numpy steps: max "
              f"{ours['_pocket_on_max_ulps']:.0f} float32 ulps; detrend_quadrant bitwise "
              f"science.detrend: {bool(ours['_detrend_bitwise'])}")  # fmt: skip
        total_ours = sum(ours[s] for s in STAGES)
        ours_median = _stages(runs, statistics.median)
        record: dict[str, object] = {
            "quadrant": {"file": inp.rawname.filename, "qid": QID,
                         "shape": list(camera.quadrant_shape(1)), "catalogue_rows": table.num_rows},
            "repeat": args.repeat,
            "statistic": "best (min) of the passes per stage, seconds per quadrant; medians too",
            "ours": {k: round(v, 4) for k, v in ours.items()},
            "ours_total_s": round(total_ours, 3),
            "ours_median": {k: round(v, 4) for k, v in ours_median.items()},
            "ours_median_total_s": round(sum(ours_median[s] for s in STAGES), 3),
            "ours_masters_read_s": round(ours_masters, 3),
            "ours_runs": runs,
            "load_average_1min_start_end": [load_start[0], load_end[0]],
            "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
            "reference_production_anchor_s": 6.0,
        }  # fmt: skip
        met = {True: "met", False: "NOT met"}
        target = f"target ours <= {TARGET_S} s/quadrant: {met[total_ours <= TARGET_S]}"
        if reference:
            total_ref = sum(ref[s] for s in STAGES)
            ref_median = _stages(reference["runs"], statistics.median)
            speedup = total_ref / total_ours
            agree = agreement(inp, masters, ccd, sci, table, reference)
            record.update({
                "reference": {k: round(v, 4) for k, v in ref.items()},
                "reference_total_s": round(total_ref, 3),
                "reference_median": {k: round(v, 4) for k, v in ref_median.items()},
                "reference_median_total_s": round(sum(ref_median[s] for s in STAGES), 3),
                "reference_masters_read_s": round(reference["masters_read_s"], 3),
                "reference_runs": reference["runs"],
                "reference_versions": reference["versions"], "reference_python": python,
                "ratio_reference_over_ours": {s: round(ref[s] / ours[s], 2) for s in STAGES},
                "speedup_total": round(speedup, 2),
                "agreement": agree,
            })  # fmt: skip
            target += (f"; <= {1 / TARGET_SPEEDUP:.2g}x the reference's time: "
                       f"{met[speedup >= TARGET_SPEEDUP]} ({1 / speedup:.2f}x)")  # fmt: skip
            best_pass = {
                side: min(sum(run[s] for s in STAGES) for run in side_runs)
                for side, side_runs in (("ours", runs), ("reference", reference["runs"]))
            }
            record["best_whole_pass_total_s"] = {k: round(v, 3) for k, v in best_pass.items()}
            print(f"best whole pass: ours {best_pass['ours']:.3f} s, reference "
                  f"{best_pass['reference']:.3f} s per quadrant")  # fmt: skip
            print(f"medians: ours {record['ours_median_total_s']} s, reference "
                  f"{record['reference_median_total_s']} s per quadrant; load average (1 min) "
                  f"{load_start[0]:.1f} -> {load_end[0]:.1f}, {os.cpu_count()} cores")  # fmt: skip
            print()
            print(agreement_lines(agree))
        print(target)
        record["target"] = target
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "quadrant.json").write_text(json.dumps(record, indent=1))
        print(f"written {RESULTS / 'quadrant.json'}")
    finally:
        if args.keep:
            print(f"scratch kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
