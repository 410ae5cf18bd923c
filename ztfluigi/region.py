"""Sky regions: which ZTF fields, CCDs and quadrants of the real field grid fall in an R.A./Dec box.

A :class:`Region` is an R.A. interval (degrees, taken from ``ra_min`` eastwards to ``ra_max``, so
``345 → 65`` goes through 0°) × a Dec interval. A quadrant is selected when its footprint — the
four corners of the real focal-plane layout (:func:`ztfluigi.camera.focal_plane_layout`) deprojected
about the field centre of the shipped grid (``data/ztf_fields.txt``) — overlaps the box, even
partly. The overlap is a separating-axis test of the quadrant quadrilateral against the box in the
(R.A. offset, Dec) plane, vectorised over every field × quadrant (≈ 113,000 footprints, ~0.1 s).

The toy sample of the reference pipeline is the preset ``toy``: R.A. [345°, 65°] × Dec [−5°, +35°].
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ztfluigi import camera

#: Named regions: (ra_min, ra_max, dec_min, dec_max) in degrees.
PRESETS: dict[str, tuple[float, float, float, float]] = {"toy": (345.0, 65.0, -5.0, 35.0)}

N_RCID = camera.N_CCD * camera.N_QUADRANT  #: quadrants per exposure (64)


@dataclass(frozen=True)
class Region:
    """An R.A./Dec box (degrees); R.A. runs East from ``ra_min`` to ``ra_max`` (through 0° or not).

    ``ra_min == ra_max`` (after reduction modulo 360°) means every R.A.
    """

    ra_min: float
    ra_max: float
    dec_min: float
    dec_max: float
    name: str = ""

    def __post_init__(self) -> None:
        if not -90.0 <= self.dec_min < self.dec_max <= 90.0:
            raise ValueError(
                f"region Dec range [{self.dec_min}, {self.dec_max}] must satisfy "
                "-90 <= dec_min < dec_max <= 90 (degrees)"
            )

    @property
    def ra_width(self) -> float:
        """Extent in R.A., degrees (360 for a full turn)."""
        width = (self.ra_max - self.ra_min) % 360.0
        return 360.0 if width == 0.0 else width

    @property
    def ra_centre(self) -> float:
        """R.A. of the box's middle, degrees in [0, 360)."""
        return (self.ra_min + self.ra_width / 2.0) % 360.0

    def spec(self) -> str:
        """The canonical parameter string: the preset name, or ``ra_min,ra_max,dec_min,dec_max``."""
        if self.name:
            return self.name
        return ",".join(f"{v:g}" for v in (self.ra_min, self.ra_max, self.dec_min, self.dec_max))

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Whether points (degrees) lie in the box (edges included)."""
        d_ra = _wrap180(np.asarray(ra, dtype=float) - self.ra_centre)
        dec = np.asarray(dec, dtype=float)
        return (np.abs(d_ra) <= self.ra_width / 2.0) & (dec >= self.dec_min) & (dec <= self.dec_max)


def parse_region(spec: str) -> Region | None:
    """``''`` (whole sky: None), a preset name (``toy``) or ``ra_min,ra_max,dec_min,dec_max``."""
    spec = spec.strip()
    if not spec:
        return None
    if spec in PRESETS:
        return Region(*PRESETS[spec], name=spec)
    parts = spec.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(np.isfinite(values)):
        raise ValueError(
            f"region {spec!r}: expected a preset ({', '.join(PRESETS)}) or "
            "'ra_min,ra_max,dec_min,dec_max' in degrees, e.g. 345,65,-5,35"
        )
    ra_min, ra_max = values[0] % 360.0, values[1] % 360.0
    return Region(ra_min, ra_max, values[2], values[3])


def _wrap180(angle: np.ndarray) -> np.ndarray:
    """Angles (degrees) reduced to [-180, 180)."""
    return (np.asarray(angle) + 180.0) % 360.0 - 180.0


@functools.cache
def field_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shipped ZTF field grid: (field ids, R.A., Dec) in degrees, sorted by id."""
    text = (resources.files("ztfluigi") / "data" / "ztf_fields.txt").read_text()
    rows = [line.split(",") for line in text.splitlines()[1:] if line.strip()]
    ids = np.array([int(r[0]) for r in rows])
    ra = np.array([float(r[1]) for r in rows])
    dec = np.array([float(r[2]) for r in rows])
    order = np.argsort(ids)
    return ids[order], ra[order], dec[order]


@functools.cache
def quadrant_corners_focal() -> tuple[np.ndarray, np.ndarray]:
    """(xi, eta) in degrees of the 4 corners of every quadrant, shape (64, 4), by rcid."""
    layout = camera.focal_plane_layout()
    step = camera.PIXEL_SCALE / 3600.0
    half_x = camera.QUADRANT_SHAPE[1] * step / 2.0
    half_y = camera.QUADRANT_SHAPE[0] * step / 2.0
    sx = np.array([-1.0, 1.0, 1.0, -1.0])
    sy = np.array([-1.0, -1.0, 1.0, 1.0])
    xi = np.empty((N_RCID, 4))
    eta = np.empty((N_RCID, 4))
    for (ccdid, qid), quad in layout.items():
        rc = camera.rcid(ccdid, qid)
        xi[rc] = quad.xi_center + sx * half_x
        eta[rc] = quad.eta_center + sy * half_y
    return xi, eta


def _deproject(xi: np.ndarray, eta: np.ndarray, ra0: np.ndarray, dec0: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Gnomonic standard coordinates (deg) about (ra0, dec0) → (ra, dec) in degrees (broadcast)."""
    x, y, d0 = np.radians(xi), np.radians(eta), np.radians(dec0)
    denom = np.cos(d0) - y * np.sin(d0)
    ra = np.radians(ra0) + np.arctan2(x, denom)
    dec = np.arctan2(np.sin(d0) + y * np.cos(d0), np.hypot(x, denom))
    return np.mod(np.degrees(ra), 360.0), np.degrees(dec)


@functools.cache
def footprints() -> tuple[np.ndarray, np.ndarray]:
    """Sky corners (R.A., Dec in degrees) of every field × quadrant, shape (n_fields, 64, 4)."""
    _, ra0, dec0 = field_grid()
    xi, eta = quadrant_corners_focal()
    return _deproject(xi[None], eta[None], ra0[:, None, None], dec0[:, None, None])


def overlap_mask(region: Region, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Whether each convex quadrilateral (corners on the last axis, degrees) overlaps the box.

    Separating-axis test in the plane (R.A. offset from the box centre, Dec): the box's two axes,
    then each quadrilateral edge's normal. Each quadrilateral is unwrapped about its first corner
    (and also tried one turn East and West); those spanning more than 180° of R.A. (around a
    pole) are tested on Dec only.
    """
    ra = np.asarray(ra, dtype=float)
    y = np.asarray(dec, dtype=float)
    rel = _wrap180(ra - ra[..., :1])
    x = _wrap180(ra[..., :1] - region.ra_centre) + rel
    around_pole = rel.max(axis=-1) - rel.min(axis=-1) > 180.0
    ok_y = (y.max(axis=-1) >= region.dec_min) & (y.min(axis=-1) <= region.dec_max)
    if region.ra_width >= 360.0:
        return ok_y
    flat_x, flat_y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    ok = np.zeros(flat_x.shape[0], dtype=bool)
    half = region.ra_width / 2.0
    lo, hi = flat_x.min(axis=1), flat_x.max(axis=1)
    for shift in (0.0, -360.0, 360.0):
        # bounding boxes first; the separating-axis test only for the few that touch
        cand = np.flatnonzero((hi + shift >= -half) & (lo + shift <= half) & ok_y.reshape(-1))
        if cand.size:
            ok[cand] |= _box_overlap(region, flat_x[cand] + shift, flat_y[cand])
    return ok_y & (ok.reshape(ok_y.shape) | around_pole)


def _box_overlap(region: Region, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Separating-axis test of quadrilaterals (x = R.A. offset, y = Dec) against the box."""
    half = region.ra_width / 2.0
    ok = (x.max(axis=-1) >= -half) & (x.min(axis=-1) <= half)
    ok &= (y.max(axis=-1) >= region.dec_min) & (y.min(axis=-1) <= region.dec_max)
    box_x = np.array([-half, half, half, -half])
    box_y = np.array([region.dec_min, region.dec_min, region.dec_max, region.dec_max])
    nxt_x, nxt_y = np.roll(x, -1, axis=-1), np.roll(y, -1, axis=-1)
    for k in range(x.shape[-1]):
        nx, ny = -(nxt_y[..., k] - y[..., k]), nxt_x[..., k] - x[..., k]  # edge normal
        poly = x * nx[..., None] + y * ny[..., None]
        box = box_x * nx[..., None] + box_y * ny[..., None]
        separated = (poly.max(axis=-1) < box.min(axis=-1)) | (box.max(axis=-1) < poly.min(axis=-1))
        ok &= ~separated
    return ok


@dataclass(frozen=True)
class Selection:
    """The quadrants of the field grid that overlap a region: ``mask[field_row, rcid]``."""

    region: Region | None
    field_ids: np.ndarray
    mask: np.ndarray

    def _row(self, field: int) -> int | None:
        i = int(np.searchsorted(self.field_ids, field))
        return i if i < self.field_ids.size and self.field_ids[i] == field else None

    def selects(self, field: int, ccdid: int, qid: int) -> bool:
        """Whether quadrant ``qid`` of CCD ``ccdid`` in ``field`` overlaps the region."""
        if self.region is None:
            return True
        row = self._row(field)
        return row is not None and bool(self.mask[row, camera.rcid(ccdid, qid)])

    def selects_ccd(self, field: int, ccdid: int) -> bool:
        """Whether any quadrant of CCD ``ccdid`` in ``field`` overlaps the region."""
        return any(self.selects(field, ccdid, q) for q in range(1, 5))

    def qids(self, field: int, ccdid: int) -> list[int]:
        """The selected quadrant ids of a CCD in a field."""
        return [q for q in range(1, 5) if self.selects(field, ccdid, q)]

    def quadrants_mask(self, fields: np.ndarray) -> np.ndarray:
        """``mask`` rows of many field ids (unknown ids select nothing), shape (n, 64)."""
        fields = np.asarray(fields)
        if self.region is None:
            return np.ones((fields.size, N_RCID), dtype=bool)
        idx = np.clip(np.searchsorted(self.field_ids, fields), 0, self.field_ids.size - 1)
        known = self.field_ids[idx] == fields
        return self.mask[idx] & known[:, None]

    @property
    def fields(self) -> np.ndarray:
        """Ids of the fields with at least one selected quadrant."""
        return self.field_ids[self.mask.any(axis=1)]


@functools.cache
def _selection(region: Region | None) -> Selection:
    ids, _, _ = field_grid()
    if region is None:
        return Selection(None, ids, np.ones((ids.size, N_RCID), dtype=bool))
    ra, dec = footprints()
    return Selection(region, ids, overlap_mask(region, ra, dec))


def selection(spec: str | Region | None) -> Selection:
    """The selection of a region: a :class:`Region`, a spec string, or None/'' (whole sky)."""
    region = parse_region(spec) if isinstance(spec, str) else spec
    return _selection(region)
