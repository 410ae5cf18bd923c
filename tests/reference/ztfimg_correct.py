"""Reference side of ``tests/test_reference_ztfimg.py``: ztfimg 0.19.0's overscan + NL correction.

Run with the **reference environment's** interpreter (ztfimg 0.19.0, numpy < 2; see
``reference_pipeline.md`` §10), never imported by the test suite::

    python ztfimg_correct.py RAWFILE OUT.npz

``RAWFILE`` must keep its IRSA raw file name (ztfimg parses the date and ccdid from it). Writes
``OUT.npz`` with

* ``ccd``: ``RawCCD.get_data(corr_nl=True, corr_overscan=True, overscan_prop={"userange":
  [25, 30]})``, the sky-oriented (6160, 6144) CCD exactly as ztfimg returns it (float32);
* ``model_q1`` … ``model_q4``: each quadrant's overscan row model
  (``get_overscan("model", userange=[25, 30])``, sky/"data" row order), to localise differences;
* ``nl``: (4, 2) array of the (A, B) non-linearity coefficients of q1..q4.

ztfimg ≤ 0.19 corrects the stored data in place (reference_pipeline.md trap 18), so every
``get_data`` call gets a freshly loaded ``RawCCD``. ``$ZTFDATA`` must point at a scratch directory
before ztfimg is imported (the caller sets it; a fallback is set here).
"""

import os
import sys
import tempfile

os.environ.setdefault("ZTFDATA", tempfile.mkdtemp(prefix="ztfdata-"))

import numpy as np  # noqa: E402
import ztfimg  # noqa: E402

USERANGE = [25, 30]


def load(path: str) -> "ztfimg.RawCCD":
    """A fresh RawCCD (numpy arrays, no dask) from a local raw file."""
    return ztfimg.RawCCD.from_filename(path, as_path=True, use_dask=False)


def main(path: str, out: str) -> None:
    ccd = load(path).get_data(corr_nl=True, corr_overscan=True,
                              overscan_prop={"userange": USERANGE})
    quads = load(path)  # get_overscan("model") and the NL coefficients do not mutate the data
    models = {f"model_q{q}": np.asarray(quads.get_quadrant(q).get_overscan(
        "model", userange=USERANGE)) for q in range(1, 5)}
    nl = np.array([quads.get_quadrant(q).get_nonlinearity_corr() for q in range(1, 5)], float)
    np.savez(out, ccd=np.asarray(ccd), nl=nl, version=ztfimg.__version__, **models)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
