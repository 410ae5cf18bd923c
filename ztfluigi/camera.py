"""ZTF camera geometry: identifiers, array shapes, pixel orientations and the focal-plane layout.

Three orientations are used for quadrant arrays (``ztf_formats.md`` §1.2):

* **raw** – FITS storage order of raw extensions and of IPAC ``sciimg``/``mskimg``:
  +x points West, +y points South; stored pixel (0, 0) is the NE corner of every quadrant.
* **read** – the amplifier's first pixel at [0, 0], rows read along x, overscan appended after the
  last data column: ``read = raw`` with columns reversed for q2, q3 and rows reversed for q3, q4.
* **sky** – ``raw[::-1, ::-1]`` for every quadrant (+Dec up, +RA right when shown origin='lower').

CCD arrays (masters) are sky oriented: rows ``0..n-1`` hold ``[q3 | q4]``, rows ``n..2n-1``
hold ``[q2 | q1]``.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np

N_CCD = 16
N_QUADRANT = 4
QUADRANT_SHAPE = (3080, 3072)  #: full-size quadrant (rows, columns)
CCD_SHAPE = (6160, 6144)
OVERSCAN_COLUMNS = 30
PIXEL_SCALE = 1.012  #: arcsec per pixel
AMP_NAMES = {1: "H", 2: "G", 3: "F", 4: "E"}  #: AMP_NAME of each qid (AMP_ID = qid - 1)
IPAC_CRPIX = (1536.5, 1540.5)  #: FITS (1-based) reference pixel of IPAC quadrant WCS
#: Dome-flat illuminator LEDs used for each filter (ztf_formats.md §4)
LED_FILTER = {2: "zg", 3: "zg", 4: "zg", 5: "zg", 7: "zr", 8: "zr", 9: "zr", 10: "zr",
              11: "zi", 12: "zi", 13: "zi"}  # fmt: skip
FILTER_LEDS = {
    f: tuple(led for led, ff in LED_FILTER.items() if ff == f) for f in ("zg", "zr", "zi")
}


def rcid(ccdid: int, qid: int) -> int:
    """Readout-channel id 0..63 of a quadrant."""
    return 4 * (ccdid - 1) + (qid - 1)


def ccdid_qid(rcid_: int) -> tuple[int, int]:
    """Inverse of :func:`rcid`."""
    return rcid_ // 4 + 1, rcid_ % 4 + 1


def quadrant_shape(scale: int = 1) -> tuple[int, int]:
    """Shape (rows, columns) of a quadrant shrunk by ``scale`` (a centred window of the real)."""
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    return QUADRANT_SHAPE[0] // scale, QUADRANT_SHAPE[1] // scale


def window_offset(shape: tuple[int, int]) -> tuple[int, int]:
    """(row, column) of a window's pixel (0, 0) in the full-size raw-oriented quadrant.

    Windows are centred on the quadrant so that the IPAC reference pixel keeps its place.
    """
    return (QUADRANT_SHAPE[0] - shape[0]) // 2, (QUADRANT_SHAPE[1] - shape[1]) // 2


# --- orientations ---------------------------------------------------------------------------


def raw_to_sky(array: np.ndarray) -> np.ndarray:
    """Raw (storage) orientation to sky orientation: a 180° rotation, its own inverse."""
    return array[::-1, ::-1]


sky_to_raw = raw_to_sky


def raw_to_read(array: np.ndarray, qid: int) -> np.ndarray:
    """Raw orientation to read orientation (also valid for overscan arrays); its own inverse."""
    if qid in (2, 3):
        array = array[:, ::-1]
    if qid in (3, 4):
        array = array[::-1, :]
    return array


read_to_raw = raw_to_read


def assemble_ccd(quadrants: dict[int, np.ndarray] | list[np.ndarray]) -> np.ndarray:
    """Assemble four raw-oriented quadrants (q1..q4) into a sky-oriented CCD array."""
    q = quadrants if isinstance(quadrants, dict) else dict(enumerate(quadrants, start=1))
    bottom = np.hstack([raw_to_sky(q[3]), raw_to_sky(q[4])])
    top = np.hstack([raw_to_sky(q[2]), raw_to_sky(q[1])])
    return np.vstack([bottom, top])


def split_ccd(ccd: np.ndarray) -> dict[int, np.ndarray]:
    """Split a sky-oriented CCD array into raw-oriented quadrants {qid: array}."""
    nr, nc = ccd.shape[0] // 2, ccd.shape[1] // 2
    return {
        1: sky_to_raw(ccd[nr:, nc:]),
        2: sky_to_raw(ccd[nr:, :nc]),
        3: sky_to_raw(ccd[:nr, :nc]),
        4: sky_to_raw(ccd[:nr, nc:]),
    }


def quadrant_slice(qid: int, ccd_shape: tuple[int, int]) -> tuple[slice, slice]:
    """Where quadrant ``qid`` sits in a sky-oriented CCD array of ``ccd_shape``."""
    nr, nc = ccd_shape[0] // 2, ccd_shape[1] // 2
    rows = slice(nr, 2 * nr) if qid in (1, 2) else slice(0, nr)
    cols = slice(nc, 2 * nc) if qid in (1, 4) else slice(0, nc)
    return rows, cols


# --- focal-plane layout ---------------------------------------------------------------------


@dataclass(frozen=True)
class QuadrantLayout:
    """Position of a full-size quadrant on the sky, in degrees from the field centre.

    ``xi`` is positive to the East, ``eta`` to the North (standard coordinates).
    """

    ccdid: int
    qid: int
    xi_center: float
    eta_center: float

    def pixel_to_focal(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Full-size raw-oriented 0-based pixel coordinates to (xi, eta) in degrees.

        Raw orientation has +x West and +y South, so both axes run against (xi, eta).
        """
        step = PIXEL_SCALE / 3600.0
        xc = (QUADRANT_SHAPE[1] - 1) / 2.0
        yc = (QUADRANT_SHAPE[0] - 1) / 2.0
        return self.xi_center - (np.asarray(x) - xc) * step, self.eta_center - (
            np.asarray(y) - yc
        ) * step


def _read_table(name: str) -> list[dict[str, str]]:
    text = (resources.files("ztfluigi") / "data" / name).read_text()
    rows = list(csv.reader(text.splitlines()))
    header = [h.strip() for h in rows[0]]
    return [dict(zip(header, (v.strip() for v in r), strict=True)) for r in rows[1:] if r]


@functools.cache
def focal_plane_layout() -> dict[tuple[int, int], QuadrantLayout]:
    """Quadrant centres from the real ZTF layout table (``ztf_ccd_quad_layout.tbl``).

    The table's EW column has the wrong sign (ztffields flips it); EW < 0 (after the fix) is East,
    so ``xi = -EW``.
    """
    corners: dict[int, list[tuple[float, float]]] = {}
    for row in _read_table("ztf_ccd_quad_layout.tbl"):
        ew = -float(row["EW"])  # the file's sign error
        corners.setdefault(int(row["Quad"]), []).append((-ew, float(row["NS"])))
    layout = {}
    for rc, pts in corners.items():
        ccdid, qid = ccdid_qid(rc)
        xi, eta = np.mean(pts, axis=0)
        layout[(ccdid, qid)] = QuadrantLayout(ccdid, qid, float(xi), float(eta))
    return layout


@functools.cache
def ccd_extents() -> dict[int, tuple[float, float, float, float]]:
    """(xi_min, xi_max, eta_min, eta_max) in degrees of each CCD, from ``ztf_ccd_layout.tbl``."""
    pts: dict[int, list[tuple[float, float]]] = {}
    for row in _read_table("ztf_ccd_layout.tbl"):
        pts.setdefault(int(row["CCD"]), []).append((-float(row["EW"]), float(row["NS"])))
    out = {}
    for ccd, p in pts.items():
        a = np.array(p)
        out[ccd] = (a[:, 0].min(), a[:, 0].max(), a[:, 1].min(), a[:, 1].max())
    return out
