"""Starflat fit: the zero point as a function of focal-plane position, from aperture catalogues.

A starflat is a sequence of dithered exposures of one dense field: every star is measured on
many quadrants, so the catalogues determine how the photometric zero point varies over the focal
plane. The model of each measurement (star ``s``, exposure ``e``, at full-size quadrant pixel
``(u, v)``) is::

    m_ADU = m_s + δZP(cell(u, v)) + ZP_e + δk_g · (C_s − C0) + k · (X_se − 1)

* ``m_ADU = −2.5 log10(f_k)``: instrumental magnitude of the aperture flux (DN) at the one
  aperture radius :attr:`StarflatConfig.radius` (8 px by default: ≈ 4 FWHM of the median 2″
  seeing, so the flux fraction outside the aperture hardly depends on the PSF, which changes
  from exposure to exposure and over the focal plane);
* ``m_s``: one magnitude per star;
* ``δZP``: one value per *cell* of a regular grid of :attr:`StarflatConfig.grid` cells on every
  full-size quadrant (3072 × 3080 px; 5 × 5 by default, ≈ 10′ cells, chosen in
  ``bench/bench_starflat.py`` on a real-size synthetic starflat: 5 × 5 gives the smallest
  fit − truth RMS, 0.18 mmag, its discretisation error of the smooth dome/sky pattern, 0.08 mmag,
  staying below the statistical 0.16 mmag; 7 × 7 gives 0.24 mmag at twice the dense cost; at
  synthetic scale 8 a quadrant window lies inside the central cell of a 5 × 5 or 7 × 7 grid).
  Cells, not a smooth basis: quadrant and CCD boundaries, gain jumps and sensor-scale
  structure are what a starflat looks for, and a smooth focal-plane basis would smear them;
* ``ZP_e``: one zero point per exposure (transparency, aperture loss at that seeing);
* ``δk_g (C_s − C0)``: a colour term per CCD (or per quadrant, or none), ``C = BP − RP`` of
  Gaia, ``C0`` = :attr:`StarflatConfig.colour_ref`: different CCD responses see different
  colours differently. A colour term common to every CCD is degenerate with ``m_s``;
* ``k (X − 1)``: one extinction coefficient (mag/airmass) times the airmass of each star at its
  own position and time, so that the airmass gradient across the 7° field is not taken for a
  flat-field pattern.

**Gauge.** The data leave five directions free, fixed as follows: ``Σ_cells δZP = 0``
(unweighted mean over the fitted cells), ``Σ_cells δZP·ξ = Σ_cells δZP·η = 0`` (no linear
gradient over the focal plane, ξ/η the cell centres East/North: for translation dithers a
linear gradient is degenerate with the exposure zero points and the star magnitudes, a star at
``p − d_e`` seeing ``g·p − g·d_e``; a starflat cannot measure it), ``Σ_e ZP_e = 0`` and
``Σ_g δk_g = 0``: ``m_s`` are instrumental magnitudes at the mean exposure, cell and colour
term. The gauge enters the least-squares system as rows of weight ρ = :data:`GAUGE_WEIGHT` ×
the median measurement weight (penalty). Directions the data still leave free (at small
synthetic scales, where the dithers map quadrant windows onto one another, the East/West and
North/South halves of the CCDs) are found from the reduced normal matrix and fixed the same way
(cells orthogonal to them); :attr:`StarflatResult.n_free` counts them and
:meth:`StarflatResult.in_gauge` puts any map (e.g. a truth) in the same gauge. Only the largest
connected set of stars, cells and exposures is fitted.

**Solver.** ``scipy.sparse.linalg.lsmr`` on the column-normalised sparse design matrix (one
row per measurement, five non-zeros per row), weights ``1/σ²`` with
``σ² = (1.0857 f_k_e / f_k)² + floor²``. Robust iterative clipping: after each solve,
measurements with ``|r/σ| > clip × s`` (``s`` = 1.4826 × MAD of ``r/σ`` of the kept
measurements) are dropped, stars left with fewer than two measurements too, until nothing
changes. Then the normal equations with the star magnitudes eliminated (``S``, dense,
``n_p² × 8`` bytes, ``n_p`` = cells + exposures + colour terms + 1) give one step of iterative
refinement of the lsmr solution (recorded: ≲ 1e-10 mag) and the exact covariance of the
instrument parameters (the sandwich ``M⁺ S M⁺``, ``M = S + ρ GᵀG``). Star magnitudes are
re-derived exactly given the instrument; their errors are the statistical ``1/√Σw``.

**Selection.** Unflagged (``f_k_f == 0``: inside the image, no masked pixel, hence unsaturated:
saturated pixels carry the IPAC mask bit 8), ``f_k > 0`` with S/N ≥ :attr:`~StarflatConfig.snr_min`,
finite BP − RP, and isolated: no other catalogue source within
:attr:`~StarflatConfig.isolation_arcsec` brighter than ``G + isolation_dmag`` (a fainter
neighbour adds the same light in every exposure, absorbed by ``m_s``; 30″ and 3 mag were
chosen on the pipeline's catalogues of the synthetic starflat, scale 16: with 15″ the fit −
truth pulls had a std of 2.1, neighbours' Moffat wings and the background under them varying
with the dither; with 30″ 0.92, χ²/dof 1.15); or, with
``isolation = "catalogue"``, the catalogue's own ``isolated`` column (20″, any magnitude).

**Normalisations.** The fitted ``δZP`` is what remains in the pipeline's photometry, whose flats
carry the focal-plane normalisation. :func:`quadrant_normalised` re-expresses it as if every
quadrant's flat had been scaled to its own median (``δZP_q = δZP − 2.5 log10(L_q)``, ``L_q`` =
the quadrant's median of the de-normalised flat over ``FLTNORM_FP``), which brings back the
amplifier gains as jumps. :func:`quadrant_gains` gives, per quadrant, ``10^(0.4 ⟨δZP⟩_q)``
relative to the focal-plane mean (the relative e⁻/DN scale the starflat measures).

Pure numpy/scipy/pyarrow: no luigi, no I/O.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import scipy
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import lsmr
from scipy.spatial import cKDTree

from ztfluigi import camera
from ztfluigi.sim import ephemeris

MAG = 2.5 / math.log(10.0)  #: 1.0857: mag per relative flux error
_RAW_RE = re.compile(r"ztf_(\d{14})_(\d{6})_(z[gri])_c(\d{2})_o")


class StarflatError(ValueError):
    """The catalogues cannot support a starflat fit (too few stars, no overlap, …)."""


@dataclass(frozen=True)
class StarflatConfig:
    """Cuts and model of a starflat fit (all recorded in the product's provenance)."""

    radius: float = 8.0  #: aperture radius (pixels) of the catalogue flux used
    snr_min: float = 50.0  #: minimum S/N (f_k / f_k_e) of a measurement
    isolation: str = "neighbours"  #: "neighbours" (radius + Δmag) or "catalogue" (its column)
    isolation_arcsec: float = 30.0  #: neighbour search radius
    isolation_dmag: float = 3.0  #: neighbours brighter than G + dmag spoil a star
    grid: tuple[int, int] = (5, 5)  #: δZP cells per full-size quadrant (along x, along y)
    colour_term: str = "ccd"  #: "ccd" | "quadrant" | "none"
    colour_ref: float = 1.0  #: C0, mag (BP − RP); δZP is the zero point at this colour
    fit_airmass: bool = True  #: fit k (mag/airmass) on each star's own airmass
    error_floor: float = 0.0  #: mag, added in quadrature to the photometric errors
    clip_sigma: float = 5.0  #: clipping threshold in robust standard deviations
    max_iterations: int = 10  #: clipping iterations at most
    min_measurements: int = 2  #: per star
    tolerance: float = 1e-10  #: lsmr atol = btol

    def __post_init__(self) -> None:
        if self.colour_term not in ("ccd", "quadrant", "none"):
            raise ValueError(f"colour_term must be ccd, quadrant or none: {self.colour_term!r}")
        if self.isolation not in ("neighbours", "catalogue"):
            raise ValueError(f"isolation must be neighbours or catalogue: {self.isolation!r}")
        if min(self.grid) < 1:
            raise ValueError(f"grid must be positive: {self.grid}")

    def as_metadata(self) -> dict[str, str]:
        """The configuration as key-value strings (provenance)."""
        return {f"starflat.{k}": json.dumps(v) for k, v in asdict(self).items()}


@dataclass
class Measurements:
    """Selected measurements, one entry per (star, exposure): what the fit consumes."""

    source_id: np.ndarray  #: int64
    exposure: np.ndarray  #: int index into ``exposures``
    ccdid: np.ndarray  #: int
    qid: np.ndarray  #: int
    x: np.ndarray  #: full-size raw-oriented 0-based column (pixels)
    y: np.ndarray  #: full-size raw-oriented 0-based row (pixels)
    mag: np.ndarray  #: −2.5 log10(flux / DN)
    mag_err: np.ndarray  #: mag (photometric error, before the floor)
    colour: np.ndarray  #: BP − RP (mag)
    airmass: np.ndarray  #: of the star at its position and time
    exposures: list[str]  #: filefracday of each exposure index
    exposure_mjd: np.ndarray  #: float, per exposure
    counts: dict[str, int] = field(default_factory=dict)  #: rows kept / cut, by reason

    @property
    def size(self) -> int:
        return int(self.mag.size)

    def subset(self, keep: np.ndarray) -> Measurements:
        """The measurements where ``keep`` is true (same exposure list)."""
        names = ("source_id", "exposure", "ccdid", "qid", "x", "y", "mag", "mag_err", "colour",
                 "airmass")  # fmt: skip
        return Measurements(**{n: getattr(self, n)[keep] for n in names},
                            exposures=self.exposures, exposure_mjd=self.exposure_mjd,
                            counts=dict(self.counts))  # fmt: skip


# ------------------------------------------------------------------------------------------
# Catalogues → measurements
# ------------------------------------------------------------------------------------------


def _metadata(table: pa.Table) -> dict[str, str]:
    meta = table.schema.metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items()}


def star_airmass(ra: np.ndarray, dec: np.ndarray, mjd: float) -> np.ndarray:
    """Airmass (Hardie) at Palomar of positions (deg) at ``mjd``."""
    alt, _ = ephemeris.altaz(ra, dec, mjd + 2400000.5)
    return np.asarray(ephemeris.airmass(alt), dtype=np.float64)


def _isolated_by_neighbours(
    x: np.ndarray, y: np.ndarray, gmag: np.ndarray, radius_pix: float, dmag: float
) -> np.ndarray:
    """True where no other source within ``radius_pix`` is brighter than ``G + dmag``."""
    n = x.size
    if n < 2:
        return np.ones(n, bool)
    tree = cKDTree(np.column_stack([x, y]))
    pairs = tree.query_pairs(radius_pix, output_type="ndarray")
    ok = np.ones(n, bool)
    if pairs.size:
        g = np.where(np.isfinite(gmag), gmag, -np.inf)  # unknown G: assume bright
        i, j = pairs[:, 0], pairs[:, 1]
        ok[i[g[j] < g[i] + dmag]] = False
        ok[j[g[i] < g[j] + dmag]] = False
    return ok


def measurements_from_catalogues(
    tables: Sequence[pa.Table], config: StarflatConfig = StarflatConfig()
) -> Measurements:
    """Select the fit's measurements from aperture catalogues (their parquet metadata included).

    Each table is one quadrant catalogue (:data:`ztfluigi.photometry.CATALOGUE_COLUMNS`) whose
    key-value metadata gives ``raw_file``, ``qid``, ``epoch_mjd``, ``radii`` and
    ``image_shape`` (a centred window of the full quadrant at synthetic scales > 1). Tables are
    taken in the order given (callers sort them for determinism).
    """
    parts: dict[str, list[np.ndarray]] = {k: [] for k in (
        "source_id", "exposure", "ccdid", "qid", "x", "y", "mag", "mag_err", "colour", "airmass")}
    exposures: dict[str, float] = {}
    counts = {"rows": 0, "flagged": 0, "low_snr": 0, "not_isolated": 0, "no_colour": 0}
    radius_pix = config.isolation_arcsec / camera.PIXEL_SCALE
    for table in tables:
        meta = _metadata(table)
        match = _RAW_RE.search(meta.get("raw_file", ""))
        if not match:
            raise StarflatError(f"catalogue without a raw science file: {meta.get('raw_file')}")
        ffd, ccdid, qid = match.group(1), int(match.group(4)), int(meta["qid"])
        radii = json.loads(meta["radii"])
        if config.radius not in radii:
            raise StarflatError(f"aperture radius {config.radius} px not among {radii} ({ffd})")
        k = radii.index(config.radius)
        shape = tuple(json.loads(meta.get("image_shape", json.dumps(camera.QUADRANT_SHAPE))))
        y0, x0 = camera.window_offset(shape)  # (0, 0) for real quadrants
        mjd = float(meta["epoch_mjd"])
        exposures.setdefault(ffd, mjd)
        n = table.num_rows
        counts["rows"] += n
        if n == 0:
            continue
        col = {c: table.column(c).to_numpy(zero_copy_only=False) for c in (
            "source_id", "ra", "dec", "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag",
            "x_ipac", "y_ipac", "isolated", f"f_{k}", f"f_{k}_e", f"f_{k}_f")}  # fmt: skip
        flux = col[f"f_{k}"].astype(np.float64)
        err = col[f"f_{k}_e"].astype(np.float64)
        x_raw = col["x_ipac"].astype(np.float64) - 1.0
        y_raw = col["y_ipac"].astype(np.float64) - 1.0
        gmag = col["phot_g_mean_mag"].astype(np.float64)
        if config.isolation == "catalogue":
            isolated = col["isolated"].astype(bool)
        else:
            isolated = _isolated_by_neighbours(x_raw, y_raw, gmag, radius_pix,
                                               config.isolation_dmag)  # fmt: skip
        colour = (col["phot_bp_mean_mag"] - col["phot_rp_mean_mag"]).astype(np.float64)
        good = col[f"f_{k}_f"] == 0
        counts["flagged"] += int(np.sum(~good))
        with np.errstate(divide="ignore", invalid="ignore"):
            snr_ok = (flux > 0) & (err > 0) & (flux >= config.snr_min * err)
        counts["low_snr"] += int(np.sum(good & ~snr_ok))
        good &= snr_ok
        counts["not_isolated"] += int(np.sum(good & ~isolated))
        good &= isolated
        has_colour = np.isfinite(colour) | (config.colour_term == "none")
        counts["no_colour"] += int(np.sum(good & ~has_colour))
        good &= has_colour
        m = int(good.sum())
        if not m:
            continue
        parts["source_id"].append(col["source_id"][good].astype(np.int64))
        parts["exposure"].append(np.full(m, -1, np.int64))  # filled below
        parts.setdefault("_ffd", []).append(np.full(m, ffd))
        parts["ccdid"].append(np.full(m, ccdid, np.int16))
        parts["qid"].append(np.full(m, qid, np.int16))
        parts["x"].append(x_raw[good] + x0)
        parts["y"].append(y_raw[good] + y0)
        parts["mag"].append(-2.5 * np.log10(flux[good]))
        parts["mag_err"].append(MAG * err[good] / flux[good])
        parts["colour"].append(np.nan_to_num(colour[good], nan=config.colour_ref))
        parts["airmass"].append(star_airmass(col["ra"][good], col["dec"][good], mjd))
    names = sorted(exposures)
    index = {name: i for i, name in enumerate(names)}
    out = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in parts.items()}
    ffds = out.pop("_ffd", np.zeros(0, str))
    out["exposure"] = np.array([index[f] for f in ffds], np.int64) if ffds.size else np.zeros(
        0, np.int64)
    counts["selected"] = int(out["mag"].size)
    return Measurements(**out, exposures=names,
                        exposure_mjd=np.array([exposures[n] for n in names]),
                        counts=counts)  # fmt: skip


# ------------------------------------------------------------------------------------------
# The fit
# ------------------------------------------------------------------------------------------


@dataclass
class StarflatResult:
    """What a starflat fit determined (arrays per cell, exposure, colour group, star)."""

    config: StarflatConfig
    # cells (fitted ones only)
    cell_ccdid: np.ndarray
    cell_qid: np.ndarray
    cell_ix: np.ndarray
    cell_iy: np.ndarray
    dzp: np.ndarray  #: mag
    dzp_err: np.ndarray  #: mag
    cell_nmeas: np.ndarray
    cell_nstars: np.ndarray
    # exposures
    exposures: list[str]
    exposure_mjd: np.ndarray
    zp: np.ndarray  #: mag (gauge Σ = 0)
    zp_err: np.ndarray
    exposure_nmeas: np.ndarray
    # terms
    colour_groups: list[str]
    dk: np.ndarray  #: mag per mag of colour
    dk_err: np.ndarray
    k: float  #: mag per airmass
    k_err: float
    # stars
    source_id: np.ndarray
    mag: np.ndarray  #: m_s
    mag_err: np.ndarray  #: statistical
    star_nmeas: np.ndarray
    star_colour: np.ndarray
    # statistics
    chi2: float
    dof: int
    n_measurements: int
    n_clipped: int
    n_dropped: int  #: measurements outside the largest connected set or of single stars
    iterations: int
    solver: dict[str, object]
    cov_cells: np.ndarray  #: covariance of ``dzp`` (mag²)
    residuals: dict[str, np.ndarray]  #: final kept measurements: rcid, x, y, r (mag), sigma
    gauge_cells: np.ndarray  #: cell-space directions the gauge sets to zero (columns)
    n_free: int  #: directions left free by the data beyond the gauge (fixed like the gauge)

    @property
    def chi2_dof(self) -> float:
        return self.chi2 / self.dof if self.dof > 0 else float("nan")

    def in_gauge(self, cell_values: np.ndarray) -> np.ndarray:
        """``cell_values`` (e.g. a truth map at the fitted cells) with the gauge directions
        removed (unweighted projection), comparable with :attr:`dzp`."""
        q, _ = np.linalg.qr(self.gauge_cells)
        return cell_values - q @ (q.T @ cell_values)

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """(xi, eta) in degrees (East, North of the field centre) of every fitted cell."""
        nx, ny = self.config.grid
        x, y = cell_pixel_centres(self.cell_ix, self.cell_iy, (nx, ny))
        xi, eta = np.empty(x.size), np.empty(x.size)
        lay = camera.focal_plane_layout()
        for i in range(x.size):
            xi[i], eta[i] = lay[(int(self.cell_ccdid[i]), int(self.cell_qid[i]))].pixel_to_focal(
                x[i], y[i])
        return xi, eta


def cell_pixel_centres(
    ix: np.ndarray, iy: np.ndarray, grid: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Full-size raw-oriented pixel centre (x, y) of cells (ix, iy) of a ``grid``."""
    nx, ny = grid
    w, h = camera.QUADRANT_SHAPE[1] / nx, camera.QUADRANT_SHAPE[0] / ny
    return (np.asarray(ix) + 0.5) * w - 0.5, (np.asarray(iy) + 0.5) * h - 0.5


def cell_index(
    x: np.ndarray, y: np.ndarray, grid: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Cell (ix, iy) of full-size raw-oriented pixel positions."""
    nx, ny = grid
    ix = np.clip(np.floor((np.asarray(x) + 0.5) * nx / camera.QUADRANT_SHAPE[1]), 0, nx - 1)
    iy = np.clip(np.floor((np.asarray(y) + 0.5) * ny / camera.QUADRANT_SHAPE[0]), 0, ny - 1)
    return ix.astype(np.int64), iy.astype(np.int64)


def _colour_group(meas: Measurements, mode: str) -> np.ndarray:
    if mode == "ccd":
        return meas.ccdid.astype(np.int64)
    if mode == "quadrant":
        return camera_rcid(meas)
    return np.zeros(meas.size, np.int64)


@dataclass
class _Problem:
    """Index maps of one fit iteration (only what the kept measurements touch)."""

    star: np.ndarray  #: per measurement, 0..n_star-1
    cell: np.ndarray
    exp: np.ndarray
    group: np.ndarray
    stars: np.ndarray  #: source ids
    cells: np.ndarray  #: global cell keys
    exps: np.ndarray  #: exposure indices
    groups: np.ndarray  #: colour-group keys
    n_k: int

    @property
    def n_star(self) -> int:
        return self.stars.size

    @property
    def n_p(self) -> int:
        return self.cells.size + self.exps.size + self.groups.size + self.n_k


def _problem(meas: Measurements, cell_key: np.ndarray, group_key: np.ndarray,
             config: StarflatConfig, has_colour: bool) -> _Problem:  # fmt: skip
    stars, star = np.unique(meas.source_id, return_inverse=True)
    cells, cell = np.unique(cell_key, return_inverse=True)
    exps, exp = np.unique(meas.exposure, return_inverse=True)
    if has_colour:
        groups, group = np.unique(group_key, return_inverse=True)
    else:
        groups, group = np.zeros(0, np.int64), np.zeros(meas.size, np.int64)
    return _Problem(star, cell, exp, group, stars, cells, exps, groups,
                    int(config.fit_airmass))  # fmt: skip


def _design(meas: Measurements, prob: _Problem, config: StarflatConfig) -> sp.csr_matrix:
    """Unweighted design matrix: columns [m_s | δZP cells | ZP_e | δk_g | k]."""
    n = meas.size
    ns, nc, ne, ng = prob.n_star, prob.cells.size, prob.exps.size, prob.groups.size
    cols = [prob.star, ns + prob.cell, ns + nc + prob.exp]
    vals = [np.ones(n), np.ones(n), np.ones(n)]
    if ng:
        cols.append(ns + nc + ne + prob.group)
        vals.append(meas.colour - config.colour_ref)
    if prob.n_k:
        cols.append(np.full(n, ns + nc + ne + ng))
        vals.append(meas.airmass - 1.0)
    width = len(cols)
    indptr = np.arange(0, width * n + 1, width)
    indices = np.column_stack(cols).ravel()
    data = np.column_stack(vals).ravel()
    return sp.csr_matrix((data, indices, indptr), shape=(n, ns + prob.n_p))


GAUGE_WEIGHT = 1e4
"""Weight of the gauge rows relative to the median measurement weight (penalty ρ)."""


def _cell_focal(cells: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(xi, eta) in degrees of the centres of global cell keys."""
    nx, ny = grid
    x, y = cell_pixel_centres(cells % nx, (cells // nx) % ny, grid)
    rc = cells // (nx * ny)
    lay = camera.focal_plane_layout()
    xi, eta = np.empty(cells.size), np.empty(cells.size)
    for i in range(cells.size):
        xi[i], eta[i] = lay[camera.ccdid_qid(int(rc[i]))].pixel_to_focal(x[i], y[i])
    return xi, eta


def _gauge_matrix(prob: _Problem, grid: tuple[int, int]) -> np.ndarray:
    """Orthonormal gauge functionals on the instrument parameters (rows, ``n_g × n_p``).

    Cells: constant, East and North linear gradients (a linear δZP gradient is degenerate
    with the exposure zero points and star magnitudes for translation dithers: a star at
    ``p − d_e`` sees ``g·p − g·d_e``); exposures: constant; colour terms: constant.
    """
    nc, ne, ng = prob.cells.size, prob.exps.size, prob.groups.size
    rows = []
    xi, eta = _cell_focal(prob.cells, grid)
    basis = np.column_stack([np.ones(nc), xi, eta])
    q, r = np.linalg.qr(basis)
    for j in range(3):
        if nc > j and abs(r[j, j]) > 1e-9 * abs(r[0, 0]):
            row = np.zeros(prob.n_p)
            row[:nc] = q[:, j]
            rows.append(row)
    for start, size in ((nc, ne), (nc + ne, ng)):
        if size:
            row = np.zeros(prob.n_p)
            row[start:start + size] = 1.0 / math.sqrt(size)
            rows.append(row)
    return np.array(rows)


def _largest_component(prob: _Problem) -> np.ndarray:
    """Measurements in the largest set of stars, cells and exposures linked by measurements."""
    ns, nc = prob.n_star, prob.cells.size
    n_nodes = ns + nc + prob.exps.size
    rows = np.concatenate([prob.star, prob.star])
    cols = np.concatenate([ns + prob.cell, ns + nc + prob.exp])
    graph = sp.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n_nodes, n_nodes))
    n_comp, labels = connected_components(graph, directed=False)
    if n_comp == 1:
        return np.ones(prob.star.size, bool)
    sizes = np.bincount(labels[prob.star], minlength=n_comp)
    return labels[prob.star] == int(np.argmax(sizes))


def _drop_single_stars(star_ids: np.ndarray, keep: np.ndarray, minimum: int) -> np.ndarray:
    """``keep`` without the measurements of stars left with fewer than ``minimum``."""
    while True:
        _, inv, cnt = np.unique(star_ids[keep], return_inverse=True, return_counts=True)
        bad = cnt[inv] < minimum
        if not bad.any():
            return keep
        idx = np.flatnonzero(keep)
        keep = keep.copy()
        keep[idx[bad]] = False


def _reduced_normal(
    a: sp.csr_matrix, w: np.ndarray, mag: np.ndarray, prob: _Problem, chunk: int = 20000
) -> tuple[np.ndarray, np.ndarray, np.ndarray, sp.csr_matrix]:
    """The normal equations of the instrument parameters with the star magnitudes eliminated.

    ``S = A_pᵀWA_p − Bᵀ D⁻¹ B`` (``B = A_sᵀWA_p``, ``D`` = per-star Σw), dense ``n_p × n_p``,
    accumulated in chunks of stars, and ``r = A_pᵀWm − Bᵀ D⁻¹ A_sᵀWm``; also ``D`` and ``A_p``.
    """
    ns = prob.n_star
    a = a.tocsc()
    a_s, a_p = a[:, :ns], a[:, ns:].tocsr()
    wa_p = sp.diags(w) @ a_p
    s_mat = np.asarray((a_p.T @ wa_p).todense())
    d = np.asarray((sp.diags(w) @ a_s).sum(axis=0)).ravel()
    b = (a_s.T @ wa_p).tocsr()  # n_star × n_p
    for start in range(0, ns, chunk):
        bc = b[start:start + chunk]
        s_mat -= np.asarray((bc.T @ sp.diags(1.0 / d[start:start + chunk]) @ bc).todense())
    wm = w * mag
    rhs = a_p.T @ wm - b.T @ ((a_s.T @ wm) / d)
    return s_mat, rhs, d, a_p


def _gauge_solution(
    s_mat: np.ndarray, rhs: np.ndarray, gauge: np.ndarray, rho: float, p: np.ndarray, nc: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Covariance of the gauge-fixed instrument parameters, the parameters in that gauge, and
    the cell parts of the directions the data leave free beyond the gauge.

    The solver minimises ``χ² + ρ |G p|²``; its covariance is the sandwich ``M⁺ S M⁺`` with
    ``M = S + ρ GᵀG`` (pseudo-inverse). Directions still free (``M`` singular: at small synthetic
    scales, dithers that map quadrant windows onto each other cannot tell East from West halves
    of the CCDs) are fixed by making the cells orthogonal to their cell parts. The lsmr
    solution ``p`` gets one step of iterative refinement, ``p += M⁺(r − M p)``, exact for this
    linear problem; the largest correction (mag) is returned as lsmr's accuracy.
    """
    m_mat = s_mat + rho * gauge.T @ gauge
    lam, vec = np.linalg.eigh(m_mat)
    tol = 1e-10 * max(float(lam.max()), 1e-300)
    live = lam > tol
    m_pinv = (vec[:, live] / lam[live]) @ vec[:, live].T
    cov = m_pinv @ s_mat @ m_pinv
    step = m_pinv @ (rhs - m_mat @ p)
    p = p + step
    free = vec[:, ~live]
    if free.shape[1]:
        fc = free[:nc]
        t = np.eye(p.size) - free @ np.linalg.pinv(fc.T @ fc) @ np.hstack(
            [fc.T, np.zeros((free.shape[1], p.size - nc))])
        p = t @ p
        cov = t @ cov @ t.T
    return cov, p, free[:nc], float(np.max(np.abs(step))) if step.size else 0.0


def fit_starflat(meas: Measurements, config: StarflatConfig = StarflatConfig()) -> StarflatResult:
    """Fit the starflat model to ``meas`` (see the module docstring for model, gauge, solver)."""
    if meas.size == 0:
        raise StarflatError("no measurement passed the cuts")
    t0 = time.perf_counter()
    nx, ny = config.grid
    ix, iy = cell_index(meas.x, meas.y, config.grid)
    rc = 4 * (meas.ccdid.astype(np.int64) - 1) + (meas.qid.astype(np.int64) - 1)
    cell_key_all = (rc * ny + iy) * nx + ix
    group_all = _colour_group(meas, config.colour_term)
    has_colour = config.colour_term != "none"
    sigma_all = np.hypot(meas.mag_err, config.error_floor)
    keep = _drop_single_stars(meas.source_id, np.ones(meas.size, bool), config.min_measurements)
    prob0 = _problem(meas.subset(keep), cell_key_all[keep], group_all[keep], config, has_colour)
    connected = np.zeros(meas.size, bool)
    connected[np.flatnonzero(keep)[_largest_component(prob0)]] = True
    keep &= connected
    keep = _drop_single_stars(meas.source_id, keep, config.min_measurements)
    n_dropped = int(meas.size - keep.sum())
    usable = keep.copy()
    iterations, lsmr_info = 0, {}
    while True:
        iterations += 1
        if keep.sum() < 2:
            raise StarflatError("fewer than two measurements left to fit")
        sub = meas.subset(keep)
        prob = _problem(sub, cell_key_all[keep], group_all[keep], config, has_colour)
        a = _design(sub, prob, config)
        sig = sigma_all[keep]
        w = 1.0 / sig**2
        aw = sp.diags(1.0 / sig) @ a
        # Gauge rows (penalty ρ = GAUGE_WEIGHT × median weight) and column normalisation.
        rho = GAUGE_WEIGHT * float(np.median(w))
        ns = prob.n_star
        gauge = _gauge_matrix(prob, config.grid)
        g_rows = sp.hstack([sp.csr_matrix((gauge.shape[0], ns)),
                            sp.csr_matrix(math.sqrt(rho) * gauge)])  # fmt: skip
        full = sp.vstack([aw, g_rows]).tocsc()
        rhs = np.concatenate([sub.mag / sig, np.zeros(gauge.shape[0])])
        norms = np.sqrt(np.asarray(full.multiply(full).sum(axis=0)).ravel())
        norms[norms == 0] = 1.0
        full = full @ sp.diags(1.0 / norms)
        out = lsmr(full, rhs, atol=config.tolerance, btol=config.tolerance,
                   maxiter=20 * (ns + prob.n_p))  # fmt: skip
        params = out[0] / norms
        lsmr_info = {"istop": int(out[1]), "itn": int(out[2]), "normr": float(out[3])}
        model = a @ params
        # Residuals of every usable measurement (stars/cells/exposures outside the fit: NaN).
        resid = np.full(meas.size, np.nan)
        resid[keep] = (sub.mag - model) / sig
        robust = 1.4826 * float(np.median(np.abs(resid[keep] - np.median(resid[keep]))))
        threshold = config.clip_sigma * max(robust, 1e-12)
        new_keep = keep & (np.abs(resid) <= threshold)
        new_keep = _drop_single_stars(meas.source_id, new_keep, config.min_measurements)
        if np.array_equal(new_keep, keep) or iterations >= config.max_iterations:
            break
        keep = new_keep
    n_clipped = int(usable.sum() - keep.sum())
    ns, nc, ne, ng = prob.n_star, prob.cells.size, prob.exps.size, prob.groups.size
    s_mat, rhs_p, d_star, a_p = _reduced_normal(a, w, meas.mag[keep], prob)
    cov, p, free_cells, refinement = _gauge_solution(s_mat, rhs_p, gauge, rho, params[ns:], nc)
    err_p = np.sqrt(np.clip(np.diag(cov), 0, None))
    # Star magnitudes given the instrument (their exact elimination), residuals, χ².
    sub = meas.subset(keep)
    r_p = sub.mag - a_p @ p
    m_star = np.bincount(prob.star, weights=w * r_p, minlength=ns) / d_star
    resid_mag = r_p - m_star[prob.star]
    chi2 = float(np.sum(w * resid_mag**2))
    dof = int(keep.sum() - (ns + prob.n_p - gauge.shape[0] - free_cells.shape[1]))
    params = np.concatenate([m_star, p])
    xi_c, eta_c = _cell_focal(prob.cells, config.grid)
    gauge_cells = np.column_stack([np.ones(nc), xi_c, eta_c, free_cells])
    cells = prob.cells
    cell_ix = cells % nx
    cell_iy = (cells // nx) % ny
    cell_rc = cells // (nx * ny)
    cell_nmeas = np.bincount(prob.cell, minlength=nc)
    pairs = np.unique(prob.cell.astype(np.int64) * ns + prob.star)
    cell_nstars = np.bincount(pairs // ns, minlength=nc)
    exp_nmeas = np.bincount(prob.exp, minlength=ne)
    groups = [f"ccd{g:02d}" if config.colour_term == "ccd" else f"rcid{g:02d}"
              for g in prob.groups]  # fmt: skip
    all_exps = np.arange(len(meas.exposures))
    zp = np.full(all_exps.size, np.nan)
    zp_err = np.full(all_exps.size, np.nan)
    zp[prob.exps] = p[nc:nc + ne]
    zp_err[prob.exps] = err_p[nc:nc + ne]
    nmeas_e = np.zeros(all_exps.size, np.int64)
    nmeas_e[prob.exps] = exp_nmeas
    solver = {
        "name": "scipy.sparse.linalg.lsmr", "scipy": scipy.__version__,
        "atol": config.tolerance, "btol": config.tolerance, **lsmr_info,
        "columns": "normalised to unit norm",
        "errors": "exact: sandwich M+ S M+ of the reduced normal matrix S (stars eliminated)",
        "gauge": "cells: mean, East and North gradients 0; exposures: mean 0; colour: mean 0",
        "gauge_weight": GAUGE_WEIGHT, "free_directions": int(free_cells.shape[1]),
        "refinement_mag": refinement,
        "design_rows": int(a.shape[0]), "design_columns": int(a.shape[1]),
        "design_nnz": int(a.nnz), "seconds": round(time.perf_counter() - t0, 3),
    }  # fmt: skip
    return StarflatResult(
        config=config,
        cell_ccdid=cell_rc // 4 + 1, cell_qid=cell_rc % 4 + 1, cell_ix=cell_ix, cell_iy=cell_iy,
        dzp=p[:nc], dzp_err=err_p[:nc], cell_nmeas=cell_nmeas, cell_nstars=cell_nstars,
        exposures=list(meas.exposures), exposure_mjd=meas.exposure_mjd, zp=zp, zp_err=zp_err,
        exposure_nmeas=nmeas_e,
        colour_groups=groups, dk=p[nc + ne:nc + ne + ng], dk_err=err_p[nc + ne:nc + ne + ng],
        k=float(p[-1]) if prob.n_k else 0.0, k_err=float(err_p[-1]) if prob.n_k else 0.0,
        source_id=prob.stars, mag=params[:ns], mag_err=1.0 / np.sqrt(d_star),
        star_nmeas=np.bincount(prob.star, minlength=ns),
        star_colour=np.bincount(prob.star, weights=sub.colour, minlength=ns)
        / np.bincount(prob.star, minlength=ns),
        chi2=chi2, dof=dof, n_measurements=int(keep.sum()), n_clipped=n_clipped,
        n_dropped=n_dropped, iterations=iterations, solver=solver, cov_cells=cov[:nc, :nc],
        residuals={"rcid": camera_rcid(sub), "x": sub.x, "y": sub.y,
                   "r": resid_mag, "sigma": sig},
        gauge_cells=gauge_cells, n_free=int(free_cells.shape[1]),
    )  # fmt: skip


def camera_rcid(meas: Measurements) -> np.ndarray:
    """rcid (0..63) of every measurement."""
    return 4 * (meas.ccdid.astype(np.int64) - 1) + (meas.qid.astype(np.int64) - 1)


# ------------------------------------------------------------------------------------------
# Normalisations and gains
# ------------------------------------------------------------------------------------------


def quadrant_normalised(
    result: StarflatResult, levels: Mapping[tuple[int, int], float]
) -> np.ndarray:
    """δZP of the cells as if each quadrant's flat were scaled to its own median (mag).

    ``levels[(ccdid, qid)]`` = the quadrant's median of the de-normalised flat (``Fn ×
    FLTNORM``) over ``FLTNORM_FP``. Dividing by the quadrant median instead of ``FLTNORM_FP``
    multiplies that quadrant's fluxes by the level, so ``δZP_q = δZP − 2.5 log10(level)``; the
    result is put back in the gauge (unweighted mean over cells = 0).
    """
    lvl = np.array([levels.get((int(c), int(q)), np.nan)
                    for c, q in zip(result.cell_ccdid, result.cell_qid, strict=True)])  # fmt: skip
    out = result.dzp - 2.5 * np.log10(lvl)
    return out - np.nanmean(out)


GAIN_SMOOTH_DEGREE = 3
"""Degree of the smooth focal-plane polynomial (ξ, η) that :func:`quadrant_gains` removes."""


def quadrant_gains(
    result: StarflatResult, dzp: np.ndarray | None = None, degree: int = GAIN_SMOOTH_DEGREE
) -> dict[str, np.ndarray]:
    """Per quadrant: mean δZP of its cells, its jump from a smooth focal plane, the gain.

    ``dzp_mean``: inverse-variance mean of the quadrant's cells minus the mean over quadrants.
    ``jump``: ``dzp_mean`` minus a weighted polynomial of ``degree`` (lowered until there are
    four quadrants per term) in the quadrant centres (ξ, η) fitted to all quadrants: what is
    discontinuous at the amplifier, as a gain is, rather than the smooth illumination.
    ``gain_rel = 10^(0.4 jump)``: the relative e⁻/DN scale of the amplifier that the starflat
    measures (a quadrant whose stars come out 1 % fainter than its surroundings has a 1 %
    larger gain than its flat assumed). Errors from the cells' full covariance. ``dzp``
    defaults to the fitted (focal-plane normalised) values; pass :func:`quadrant_normalised`
    for the per-quadrant normalisation.
    """
    values = result.dzp if dzp is None else dzp
    rc = 4 * (result.cell_ccdid - 1) + (result.cell_qid - 1)
    quads = np.unique(rc)
    weights = np.zeros((quads.size, rc.size))
    for i, q in enumerate(quads):
        sel = rc == q
        wq = 1.0 / result.dzp_err[sel] ** 2
        weights[i, sel] = wq / wq.sum()
    centre = np.eye(quads.size) - 1.0 / quads.size  # subtract the mean over quadrants
    transform = centre @ weights
    cov_q = transform @ result.cov_cells @ transform.T
    lay = camera.focal_plane_layout()
    xi = np.array([lay[camera.ccdid_qid(int(q))].xi_center for q in quads])
    eta = np.array([lay[camera.ccdid_qid(int(q))].eta_center for q in quads])
    while degree > 0 and (degree + 1) * (degree + 2) // 2 > quads.size // 4:
        degree -= 1  # at least four quadrants per term of the smooth surface
    terms = [xi**i * eta**j / 3.6 ** (i + j) for i in range(degree + 1)
             for j in range(degree + 1 - i)]  # fmt: skip
    design = np.column_stack(terms)
    w = 1.0 / np.clip(np.diag(cov_q), 1e-18, None)
    if design.shape[1] < quads.size:
        hat = design @ np.linalg.pinv(design * w[:, None]) * w[None, :]
    else:  # too few quadrants for a smooth surface: no jump can be told from it
        hat = np.eye(quads.size)
    jump_t = (np.eye(quads.size) - hat) @ transform
    finite = np.isfinite(values)
    vals = np.where(finite, values, 0.0)
    mean, jump = transform @ vals, jump_t @ vals
    bad = ~(np.abs(transform) @ finite.astype(float) >= np.abs(transform).sum(axis=1) - 1e-12)
    mean[bad] = jump[bad] = np.nan

    def errors(t: np.ndarray) -> np.ndarray:
        return np.sqrt(np.clip(np.einsum("ij,jk,ik->i", t, result.cov_cells, t), 0, None))

    return {"ccdid": quads // 4 + 1, "qid": quads % 4 + 1, "dzp_mean": mean,
            "dzp_mean_err": errors(transform), "jump": jump, "jump_err": errors(jump_t),
            "gain_rel": 10 ** (0.4 * jump)}  # fmt: skip


# ------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------


def result_tables(
    result: StarflatResult, levels: Mapping[tuple[int, int], float] | None = None
) -> dict[str, pa.Table]:
    """The product's tables: cells, quadrants, exposures, terms, stars, stats."""
    xi, eta = result.cell_centres()
    x, y = cell_pixel_centres(result.cell_ix, result.cell_iy, result.config.grid)
    cells = {
        "ccdid": pa.array(result.cell_ccdid, pa.int8()),
        "qid": pa.array(result.cell_qid, pa.int8()),
        "ix": pa.array(result.cell_ix, pa.int16()), "iy": pa.array(result.cell_iy, pa.int16()),
        "x_center": x, "y_center": y, "xi": xi, "eta": eta,
        "dzp": result.dzp, "dzp_err": result.dzp_err,
        "n_meas": pa.array(result.cell_nmeas, pa.int64()),
        "n_stars": pa.array(result.cell_nstars, pa.int64()),
    }  # fmt: skip
    gains_fp = quadrant_gains(result)
    quads = {"ccdid": pa.array(gains_fp["ccdid"], pa.int8()),
             "qid": pa.array(gains_fp["qid"], pa.int8()),
             "dzp_mean": gains_fp["dzp_mean"], "dzp_mean_err": gains_fp["dzp_mean_err"],
             "jump": gains_fp["jump"], "jump_err": gains_fp["jump_err"],
             "gain_rel": gains_fp["gain_rel"]}  # fmt: skip
    if levels is not None:
        qn = quadrant_normalised(result, levels)
        cells["dzp_quadnorm"] = qn
        gains_qn = quadrant_gains(result, qn)
        quads["flat_level"] = [levels.get((int(c), int(q)), np.nan) for c, q in
                               zip(gains_qn["ccdid"], gains_qn["qid"], strict=True)]  # fmt: skip
        quads["dzp_mean_quadnorm"] = gains_qn["dzp_mean"]
        quads["jump_quadnorm"] = gains_qn["jump"]
        quads["gain_rel_quadnorm"] = gains_qn["gain_rel"]
    exposures = {
        "filefracday": result.exposures, "mjd": result.exposure_mjd,
        "zp": result.zp, "zp_err": result.zp_err,
        "n_meas": pa.array(result.exposure_nmeas, pa.int64()),
    }
    terms = {
        "term": [f"dk_{g}" for g in result.colour_groups] + (["k"] if result.config.fit_airmass
                                                             else []),
        "value": np.concatenate([result.dk, [result.k] if result.config.fit_airmass else []]),
        "error": np.concatenate([result.dk_err, [result.k_err] if result.config.fit_airmass
                                 else []]),
        "unit": ["mag/mag (BP-RP)"] * len(result.colour_groups)
        + (["mag/airmass"] if result.config.fit_airmass else []),
    }  # fmt: skip
    stars = {"source_id": pa.array(result.source_id, pa.int64()), "mag": result.mag,
             "mag_err": result.mag_err, "n_meas": pa.array(result.star_nmeas, pa.int64()),
             "bp_rp": result.star_colour}  # fmt: skip
    rms_mmag = 1000 * float(np.std(result.residuals["r"])) if result.n_measurements else math.nan
    stats = {
        "chi2": [result.chi2], "dof": [result.dof], "chi2_dof": [result.chi2_dof],
        "n_stars": [int(result.source_id.size)], "n_measurements": [result.n_measurements],
        "n_clipped": [result.n_clipped], "n_dropped": [result.n_dropped],
        "n_cells": [int(result.dzp.size)], "n_exposures": [int(np.isfinite(result.zp).sum())],
        "iterations": [result.iterations], "residual_rms_mmag": [rms_mmag],
        "solver": [json.dumps(result.solver, sort_keys=True)],
    }  # fmt: skip
    return {name: pa.table(cols) for name, cols in (
        ("cells", cells), ("quadrants", quads), ("exposures", exposures), ("terms", terms),
        ("stars", stars), ("stats", stats))}  # fmt: skip


TABLE_COLUMNS = {
    "cells": "ccdid, qid, ix, iy (cell of the full-size quadrant grid, raw orientation), "
    "x_center, y_center (full-size raw 0-based pixels), xi, eta (deg East/North of the field "
    "centre), dzp (mag, focal-plane normalisation), dzp_err, n_meas, n_stars, "
    "dzp_quadnorm (mag, per-quadrant normalisation)",
    "quadrants": "ccdid, qid, dzp_mean (inverse-variance mean of the cells minus the mean over "
    "quadrants, mag), dzp_mean_err, jump (dzp_mean minus a smooth cubic in the quadrant centres, "
    "mag), jump_err, gain_rel (10^(0.4 jump)), flat_level (quadrant median of the de-normalised "
    "flat / FLTNORM_FP), dzp_mean_quadnorm, jump_quadnorm, gain_rel_quadnorm (per-quadrant "
    "normalisation)",
    "exposures": "filefracday, mjd, zp (mag, gauge: sum 0), zp_err, n_meas",
    "terms": "term (dk_ccdNN colour terms, k extinction), value, error, unit",
    "stars": "source_id, mag (m_s: instrumental magnitude at the gauge), mag_err (statistical), "
    "n_meas, bp_rp",
    "stats": "chi2, dof, chi2_dof, n_stars, n_measurements, n_clipped, n_dropped, n_cells, "
    "n_exposures, iterations, residual_rms_mmag, solver (JSON)",
}
"""Column descriptions of the product tables (also written into each parquet's metadata)."""


def quadrant_flat_levels(
    flats: Mapping[int, tuple[np.ndarray, float]], fltnorm_fp: Mapping[int, float]
) -> dict[tuple[int, int], float]:
    """Quadrant median of ``Fn × FLTNORM / FLTNORM_FP`` of each CCD's master flat: what a flat
    normalised per quadrant divides out (the per-quadrant normalisation of the residual map)."""
    levels = {}
    for ccdid, (flat, fltnorm) in flats.items():
        for q in range(1, 5):
            rows, cols = camera.quadrant_slice(q, flat.shape)
            median = np.nanmedian(np.asarray(flat[rows, cols], np.float64))
            levels[(ccdid, q)] = float(median * fltnorm / fltnorm_fp[ccdid])
    return levels


def gain_errors(gain_percent: np.ndarray, jump_err_mag: np.ndarray) -> np.ndarray:
    """Errors of the fitted gain per quadrant (%), from the quadrant jump's error (mag)."""
    return np.asarray(gain_percent, float) * 0.4 * math.log(10) * np.asarray(jump_err_mag, float)
