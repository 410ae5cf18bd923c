"""Reference side of ``bench/bench_quadrant.py``: one science quadrant, raw → catalogue, with
ztfimg 0.19.0 + ztfin2p3 0.4.1, timed per stage.

Run with the **reference environment's** interpreter (numpy < 2, pin set of
``reference_pipeline.md`` §10.1 + ``ztfin2p3==0.4.1``); this project never imports it::

    ZTFDATA=SCRATCH python reference_quadrant.py CONFIG.json

``CONFIG.json`` (written by the bench): ``raw`` (raw CCD file, IRSA name: ztfimg parses the date
and ccdid from it), ``bias``/``flat`` (master CCD FITS, sky orientation; the flat's header holds
``FLTNORM`` and ``FLTNORM_FP``), ``qid``, ``stars`` (parquet: ``source_id, ra, dec, phot_*``, ra/dec
at the exposure epoch: the same star list our side gets), ``radii``, ``repeat``, ``out`` (result
JSON). The IPAC ``sciimg`` header and ``mskimg.fits.gz`` of the quadrant must be in the local
IRSA tree under ``$ZTFDATA`` (``sci/YYYY/MMDD/ffffff/``), where ztfquery looks for them.

What runs, per repetition (the calls of ztfin2p3 0.4.1 ``scripts/detrend2aper.py`` →
``science.build_science_image`` / ``build_science_data`` and ``aperture.get_aperture_photometry``):

* **read**: ``ztfimg.RawCCD.from_filename(raw, as_path=True, use_dask=False)`` (astropy, all 4
  quadrants and overscans; share of one quadrant = 1/4), the IPAC header
  (``science.exception_header`` of ``buildurl.get_scifile_of_filename(raw, source="local")``) and
  mask (``fits.getdata`` of ``filename_to_url(…, suffix="mskimg.fits.gz", source="local")``);
* **corrections**: ``RawCCD.get_data(corr_nl=True, corr_overscan=True,
  overscan_prop={"userange": [25, 30]})`` (NL first, then the overscan row model; 1/4);
* **detrending**: ``calib -= bias; calib /= flat; calib *= FLTNORM_FP / FLTNORM``,
  ``CCD.from_data(calib).get_quadrantdata(from_data=True, reorder=False)`` (1/4), then
  ``ScienceQuadrant.from_data(data, header)`` + ``set_mask`` for the quadrant, the data made
  big-endian first (ztfimg 0.19.0 byte-swaps for sep unconditionally, i.e. expects data read
  from FITS; sep refuses the swapped native array). 0.4.1's own
  ``build_science_data`` cannot run: it raises ``NameError: flat_coef`` before any pixel work
  (checked below, reported as ``build_science_data_error``) and its ``fp_flatfield`` branch reads
  ``flat.filepath`` of an array; these are its remaining statements, the focal-plane factor
  applied as ztfin2p3 HEAD does (``reference_pipeline.md`` §5.2);
* **background**: ``ScienceQuadrant._get_sepbackound()`` (sep, ztfimg 0.19.0's mesh bw = bh = 192,
  every IPAC bit masked, sky orientation; cached on the object) and its ``back()``/``rms()`` maps;
* **photometry**: the star list read with pandas, ``add_coord_to_catalog(coord="xy",
  in_fov=True)`` (WCS → 180°-rotated x, y; what ``catalog.get_img_refcatalog`` does after its
  HTM catalogue read, which needs CC-IN2P3 files), then
  ``ztfin2p3.aperture.get_aperture_photometry(quad, cat=…, seplimit=20, radius=radii,
  bkgann=None, joined=True)`` (isolation, masked background-subtracted image, sep sums). Its
  ``back()``/``rms()`` evaluations are measured in *background* and subtracted here, so the two
  stages split as ours do;
* **write**: ``ztfin2p3.aperture.store_aperture_catalog`` (pandas → parquet). ztfin2p3 0.4.1 also
  stores every science quadrant as FITS (``science._store_fits_``): timed as
  ``write_science_fits``, reported apart (ztfin2p3 HEAD and ours do not store it).

Times are CPU seconds of this process (``time.process_time``; one thread, so on a quiet machine
the wall time; on a shared one the figure that does not count other jobs' turns).

The result JSON holds the per-repetition stage times (seconds per quadrant), the versions, and
the paths of the outputs of the last repetition: the science quadrant (``.npy``, raw
orientation), the sep background map (``.npy``, sky orientation) and the catalogue parquet.
"""

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("ZTFDATA", tempfile.mkdtemp(prefix="ztfdata-"))

import numpy as np  # noqa: E402

clock = time.process_time  #: CPU seconds of this process (one thread: its time on one core)
import pandas  # noqa: E402
import sep  # noqa: E402
import ztfimg  # noqa: E402
import ztfin2p3  # noqa: E402
from astropy.io import fits  # noqa: E402
from ztfin2p3 import aperture as zaperture  # noqa: E402
from ztfin2p3 import science as zscience  # noqa: E402
from ztfin2p3.io import ipacfilename_to_ztfin2p3filepath  # noqa: E402
from ztfquery import buildurl  # noqa: E402

CORRECTIONS = {"corr_nl": True, "corr_overscan": True, "overscan_prop": {"userange": [25, 30]}}


def load_masters(cfg):
    """Master bias and flat arrays as ``build_science_data`` loads path inputs, and the factor."""
    bias = ztfimg.CCD.from_filename(cfg["bias"], as_path=True, use_dask=False).get_data()
    flat = ztfimg.CCD.from_filename(cfg["flat"], as_path=True, use_dask=False)
    # ztfin2p3 reads FLTNORM_FP with fits.getval(flat_file) and FLTNORM from the flat's header.
    factor = fits.getval(cfg["flat"], "FLTNORM_FP") / flat.header["FLTNORM"]
    return bias, flat.get_data(), factor


def check_build_science_data(cfg, bias, flat):
    """ztfin2p3 0.4.1's own entry point, called on array inputs: the error it raises, or None."""
    try:
        zscience.build_science_data(cfg["raw"], flat, bias, dask_level=None, **CORRECTIONS)
    except Exception as exc:  # noqa: BLE001 - reported, not handled
        return f"{type(exc).__name__}: {exc}"
    return None


def one_quadrant(cfg, bias, flat, factor, out_paths):
    """One raw → catalogue pass; returns the stage times (s per quadrant) and the products."""
    qid = cfg["qid"]
    t = {}
    t0 = clock()
    rawccd = ztfimg.RawCCD.from_filename(cfg["raw"], as_path=True, use_dask=False)
    t["read"] = (clock() - t0) / 4
    t0 = clock()
    sciimg = buildurl.get_scifile_of_filename(cfg["raw"], source="local")[qid - 1]
    header = zscience.exception_header(sciimg)
    maskfile = buildurl.filename_to_url(
        os.path.basename(sciimg), suffix="mskimg.fits.gz", source="local"
    )
    mask = fits.getdata(maskfile)
    t["read"] += clock() - t0
    if header is None:
        raise RuntimeError(f"no IPAC header at {sciimg}")

    t0 = clock()
    calib = rawccd.get_data(**CORRECTIONS)
    t["corrections"] = (clock() - t0) / 4

    t0 = clock()
    calib -= bias
    calib /= flat
    calib *= factor
    quadrants = ztfimg.CCD.from_data(calib).get_quadrantdata(from_data=True, reorder=False)
    t_ccd = clock() - t0
    t0 = clock()
    # ztfimg 0.19.0 hands sep ``data.byteswap().newbyteorder()``, i.e. it assumes big-endian
    # (FITS) data; sep refuses the result for native arrays. Big-endian, as if read from FITS:
    quad = ztfimg.ScienceQuadrant.from_data(data=quadrants[qid - 1].astype(">f4"), header=header)
    quad.set_mask(mask)
    t["detrending"] = t_ccd / 4 + clock() - t0

    t0 = clock()
    bkg = quad._get_sepbackound()
    t1 = clock()
    back, rms = bkg.back(), bkg.rms()
    t_maps = clock() - t1
    t["background"] = clock() - t0

    t0 = clock()
    cat = pandas.read_parquet(cfg["stars"])
    t["photometry_catalogue"] = clock() - t0  # part of photometry
    cat = quad.add_coord_to_catalog(cat, coord="xy", in_fov=True)
    apcat = zaperture.get_aperture_photometry(
        quad, cat=cat, dask_level=None, as_path=False, minimal_columns=True, seplimit=20,
        radius=np.asarray(cfg["radii"], dtype=float), bkgann=None, joined=True,
        refcat_radius=0.7,
    )  # fmt: skip
    t["photometry"] = clock() - t0 - t_maps

    t0 = clock()
    zaperture.store_aperture_catalog(apcat, out_paths["apcat"])
    t["write"] = clock() - t0
    t0 = clock()
    zscience._store_fits_(out_paths["sciimg"], quad.data, header=header, overwrite=True)
    t["write_science_fits"] = clock() - t0
    return t, quad, back, rms


def main(config_path):
    with open(config_path) as f:
        cfg = json.load(f)
    qid = cfg["qid"]
    sciimg = buildurl.get_scifile_of_filename(cfg["raw"], source="local")[qid - 1]
    out_paths = {
        "apcat": ipacfilename_to_ztfin2p3filepath(
            os.path.basename(sciimg), new_suffix="apcat", new_extension="parquet"
        ),
        "sciimg": ipacfilename_to_ztfin2p3filepath(os.path.basename(sciimg)),
    }
    os.makedirs(os.path.dirname(out_paths["sciimg"]), exist_ok=True)

    t0 = clock()
    bias, flat, factor = load_masters(cfg)
    t_masters = clock() - t0
    error = check_build_science_data(cfg, bias, flat)

    runs = []
    for _ in range(cfg["repeat"]):
        t, quad, back, rms = one_quadrant(cfg, bias, flat, factor, out_paths)
        runs.append(t)

    base = os.path.splitext(cfg["out"])[0]
    products = {
        "science_npy": base + "_science.npy",  # raw orientation (float32)
        "back_npy": base + "_back.npy",  # sky orientation, as sep computed it
        "rms_npy": base + "_rms.npy",
        "apcat": out_paths["apcat"],
    }
    np.save(products["science_npy"], np.asarray(quad.data))
    np.save(products["back_npy"], np.asarray(back))
    np.save(products["rms_npy"], np.asarray(rms))
    result = {
        "versions": {
            "ztfimg": ztfimg.__version__, "ztfin2p3": ztfin2p3.__version__,
            "sep": sep.__version__, "numpy": np.__version__, "pandas": pandas.__version__,
            "python": sys.version.split()[0],
        },
        "fp_factor": factor,
        "masters_read_s": t_masters,
        "build_science_data_error": error,
        "runs": runs,
        "products": products,
        "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
    }  # fmt: skip
    with open(cfg["out"], "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
