"""Reference side of ``tests/test_reference_ztfimg.py``: ztfimg 0.19.0's overscan + NL correction.

Run with the **reference environment's** interpreter (ztfimg 0.19.0, numpy < 2; see
``reference_pipeline.md`` §10); the test suite never imports it::

    python ztfimg_correct.py RAWFILE OUT.npz [RAWFILE OUT.npz ...]

Each ``RAWFILE`` must keep its IRSA raw file name (ztfimg parses the date and ccdid from it).
Each ``OUT.npz`` holds

* ``ccd``: ``RawCCD.get_data(corr_nl=True, corr_overscan=True, overscan_prop={"userange":
  [25, 30]})``, the sky-oriented (6160, 6144) float32 CCD exactly as ztfimg returns it
  (ztfimg ≤ 0.19: non-linearity first, then the overscan row model; float32 arithmetic);
* ``ccd64``: the same call after promoting every quadrant's data and overscan to float64, i.e.
  ztfimg's formulas without float32 rounding of the intermediate results;
* ``model_q1`` … ``model_q4``: each quadrant's overscan row model
  (``get_overscan("model", userange=[25, 30])``, rows in ztfimg's sky/"data" order);
* ``nl``: (4, 2) array of the (A, B) non-linearity coefficients of q1..q4;
* ``version``: ``ztfimg.__version__``.

ztfimg ≤ 0.19 corrects the stored data in place (reference_pipeline.md trap 18), so every
``get_data`` call gets a freshly loaded ``RawCCD``. ``$ZTFDATA`` must point at a scratch directory
before ztfimg is imported: the caller sets it, a temporary one is used otherwise.
"""

import os
import sys
import tempfile

os.environ.setdefault("ZTFDATA", tempfile.mkdtemp(prefix="ztfdata-"))

import numpy as np  # noqa: E402
import ztfimg  # noqa: E402

CORR = {"corr_nl": True, "corr_overscan": True, "overscan_prop": {"userange": [25, 30]}}


def load(path, dtype=None):
    """A fresh RawCCD (numpy arrays, no dask) from a local raw file, optionally promoted."""
    ccd = ztfimg.RawCCD.from_filename(path, as_path=True, use_dask=False)
    if dtype is not None:
        for quad in ccd.quadrants.values():
            quad.set_data(np.asarray(quad.data, dtype=dtype))
            quad.set_overscan(np.asarray(quad.overscan, dtype=dtype))
    return ccd


def correct(path, out):
    """Write the reference products of one raw file to ``out`` (see the module docstring)."""
    ccd = load(path)
    quads = [ccd.get_quadrant(q) for q in range(1, 5)]
    # Read-only queries first: get_overscan("model") and the NL coefficients leave data unchanged.
    models = {
        f"model_q{i}": np.asarray(q.get_overscan("model", userange=[25, 30]))
        for i, q in enumerate(quads, start=1)
    }
    nl = np.array([q.get_nonlinearity_corr() for q in quads], dtype=float)
    np.savez(
        out,
        ccd=np.asarray(ccd.get_data(**CORR)),
        ccd64=np.asarray(load(path, np.float64).get_data(**CORR)),
        nl=nl,
        version=ztfimg.__version__,
        **models,
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or len(args) % 2:
        sys.exit(__doc__)
    for raw, npz in zip(args[::2], args[1::2], strict=True):
        correct(raw, npz)
