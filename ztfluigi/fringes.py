"""i-band fringe models: learn fixed fringe modes per quadrant, fit and subtract them (pure numpy).

Method (after ``fringez``, ``../shared/spec/fringes.md``, changed where noted and why):

1. **Fringe map** of each training science quadrant (:func:`fringe_map`): pixels with any IPAC
   bit 0–12 (:data:`MASK_BITS`, sources included) or non-finite are masked; the map is
   ``S / sky − 1`` (sky = median, so the map is the fringe *relative to the sky*, comparable
   between exposures), minus a degree-2 surface fitted with a :data:`CLIP_SIGMA` σ clip (removes
   the smooth dome-vs-sky illumination left by the flat, which is fixed between exposures and
   would otherwise become a "mode"); pixels beyond the clip are masked too. fringez instead
   zero-fills masked pixels and divides by the MAD, so its maps mix fringe and noise scales.
2. Each map is smoothed by a Gaussian of :data:`SMOOTH_SIGMA_PIX` px with normalised convolution
   (masked pixels get no weight) and kept every :data:`MAP_BIN` pixels (float16: memory).
   Fringes are tens of pixels across, so this keeps 92–99 % of their amplitude for periods of
   30–100 px (a near-uniform loss, absorbed by the fitted coefficient) and cuts the per-pixel
   noise ≈ 7×: measured on the simulator, unsmoothed modes from 30 exposures leave 32 % of the
   fringe (pixel noise of the modes), σ = 2 px modes 8 %.
3. **Decomposition** (:func:`decompose`): an *uncentred* truncated SVD of the maps (eigenvectors
   of the N×N Gram matrix, float64), with masked pixels filled by the rank-K reconstruction
   (:data:`EM_ITERATIONS` EM passes: masked pixels are missing data, not zeros as in fringez).
   Uncentred, because fringes are additive with an amplitude that varies by exposure: fringez's
   mean map is subtracted at a fixed amplitude, which is wrong when the line flux changes.
   Modes are scaled to unit RMS, so a coefficient is the RMS of that component / sky. Up to K
   components are kept, only those above the noise (:func:`_select`): fringez always keeps 6,
   and its extra components fit noise or one exposure's structure (measured here: a 4th mode
   holding one exposure's artefact doubled that exposure's residual). Modes are stored sampled
   every :data:`MAP_BIN` pixels (¼ of the size) and brought back by 4-point interpolation.
4. **Correction** (:func:`correct`): on source-free, unclipped pixels (every
   :func:`fit_stride`-th row and column), least squares of ``S / sky − 1`` on the K modes plus a
   degree-2 surface (the background, not subtracted), two clip passes; the fringe
   ``sky × Σ c_k mode_k`` is subtracted from every pixel (NaN stay NaN). fringez projects all
   pixels, clipped ones as zeros, with no background term.

Errors: :class:`TooFewExposures` when a quadrant has fewer than :data:`MIN_EXPOSURES` usable maps
(the task layer widens its window or fails with it). Measured residual fringe (RMS over
source-free pixels / injected), training set corrected: 30 maps 11 %, 60 maps 8 % (scale 16);
20 maps 20 %, 60 maps 9 % (full-size quadrants, ``bench/bench_fringes.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from scipy import ndimage

from ztfluigi.jit import compiled

MASK_BITS = 0x1FFF  #: IPAC mskimg bits 0–12 (as ``photometry.MASK_ALL``): never learnt or fitted
CLIP_SIGMA = 5.0  #: σ clip (1.4826 × MAD) of pixels around the fitted background, as fringez
SMOOTH_SIGMA_PIX = 2.0  #: Gaussian σ (pixels) applied to the training maps
POLY_DEGREE = 2  #: background surface fitted with the modes (coefficients not subtracted)
FIT_PIXELS = 500_000  #: sky, background and coefficients are fitted on ≈ this many pixels (grid)
MAP_BIN = 2  #: training maps and modes are sampled every MAP_BIN pixels (after the smoothing)
EM_ITERATIONS = 2  #: passes filling masked pixels with the low-rank reconstruction
DEFAULT_K = 6  #: most modes per quadrant (fringez's 6); fewer are kept if not above the noise
NOISE_FACTOR = 2.0  #: a mode's eigenvalue must exceed this × the noise edge (see _select)
MIN_SHARED = 3  #: a mode must stand above the noise in all but its MIN_SHARED − 1 strongest maps
MIN_EXPOSURES = 18  #: fewest training maps per quadrant (3 × DEFAULT_K); ≥ 50 for ≤ 10 %
MIN_VALID_FRACTION = 0.5  #: maps with fewer usable pixels are left out
DEFAULT_WINDOW = 20  #: nights per model period (see tasks.fringe: 60 training exposures in sim)
MAX_EXPOSURES = 60  #: at most this many maps (evenly spread in time) are held in memory
_MIN_WEIGHT = 0.5  #: smoothed-coverage threshold of a valid smoothed pixel


class FringeError(ValueError):
    """A fringe model that cannot be built or applied (shapes, inputs)."""


class TooFewExposures(FringeError):
    """Fewer usable zi exposures than a model needs (``n`` < ``needed``), in ``where``."""

    def __init__(self, where: str, n: int, needed: int) -> None:
        super().__init__(f"{where}: {n} usable zi exposures, at least {needed} needed")
        self.where, self.n, self.needed = where, n, needed


@dataclass(frozen=True)
class FringeSpec:
    """Whether science quadrants of the fringing filters get the correction, and the period
    (nights) of the models they use. Chosen once per configuration (``[ztfluigi] fringe``)."""

    enabled: bool = False
    window: int = DEFAULT_WINDOW  #: nights per model period (``tasks.fringe.period_start``)
    filters: tuple[str, ...] = ("zi",)  #: bands whose sky lines fringe in ZTF's thin CCDs

    def applies(self, filtercode: str) -> bool:
        """Whether a science quadrant of ``filtercode`` is fringe-corrected."""
        return self.enabled and filtercode in self.filters


# --- shared pixel helpers ----------------------------------------------------------------------


def bad_pixels(data: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Boolean map: non-finite, or any IPAC bit of :data:`MASK_BITS` set."""
    bad = ~np.isfinite(data)
    if mask is not None:
        if np.shape(mask) != np.shape(data):
            raise FringeError(f"mask shape {np.shape(mask)} != data shape {np.shape(data)}")
        bad |= (np.asarray(mask).astype(np.int32) & MASK_BITS) != 0
    return bad


def _poly_terms(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> list[np.ndarray]:
    """Degree-:data:`POLY_DEGREE` monomials of coordinates scaled to [−1, 1]."""
    y = 2.0 * rows / max(shape[0] - 1, 1) - 1.0
    x = 2.0 * cols / max(shape[1] - 1, 1) - 1.0
    return [x**i * y**j for i in range(POLY_DEGREE + 1) for j in range(POLY_DEGREE + 1 - i)]


def _robust_sigma(values: np.ndarray) -> float:
    med = np.median(values)
    return float(1.4826 * np.median(np.abs(values - med)))


def _clipped_lstsq(
    design: np.ndarray, target: np.ndarray, passes: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Least squares ``design @ c ≈ target`` with ``passes`` σ-clip passes; (c, kept)."""
    keep = np.ones(target.shape, bool)
    coef = np.zeros(design.shape[1])
    for _ in range(passes + 1):
        a, b = design[keep], target[keep]
        coef = np.linalg.solve(a.T @ a, a.T @ b)
        resid = target - design @ coef
        sigma = _robust_sigma(resid[keep])
        new = np.abs(resid) <= CLIP_SIGMA * sigma
        if np.array_equal(new, keep):
            break
        keep = new
    return coef, keep


def fit_stride(shape: tuple[int, int]) -> int:
    """Grid step (a multiple of :data:`MAP_BIN`) giving ≈ :data:`FIT_PIXELS` fit pixels (≥ all
    the sampled pixels of small quadrants): 4 at full size."""
    step = int(np.sqrt(shape[0] * shape[1] / FIT_PIXELS) / MAP_BIN)
    return MAP_BIN * max(step, 1)


def _sky_level(data: np.ndarray, good: np.ndarray) -> float:
    s = fit_stride(data.shape)
    sub = data[::s, ::s][good[::s, ::s]]
    if sub.size == 0:
        raise FringeError("no usable pixel")
    sky = float(np.median(sub))
    if not sky > 0:
        raise FringeError(f"sky level must be positive, got {sky}")
    return sky


# --- training maps ------------------------------------------------------------------------------


@dataclass
class FringeMap:
    """A smoothed, sky-normalised training map of one quadrant, sampled every MAP_BIN pixels."""

    values: np.ndarray  #: float16 fringe / sky, 0 where not valid
    valid: np.ndarray  #: bool
    sky: float  #: DN
    shape: tuple[int, int]  #: full-resolution shape of the quadrant
    name: str = ""  #: input identifier (raw file name)

    @property
    def valid_fraction(self) -> float:
        return float(np.count_nonzero(self.valid)) / self.valid.size


def _surface(coef: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The :func:`_poly_terms` surface ``Σ coef × term`` on the full grid (float32, separable)."""
    y = np.linspace(-1.0, 1.0, shape[0]) if shape[0] > 1 else np.full(1, -1.0)
    x = np.linspace(-1.0, 1.0, shape[1]) if shape[1] > 1 else np.full(1, -1.0)
    per_y = [np.zeros(shape[1]) for _ in range(POLY_DEGREE + 1)]
    terms = [(i, j) for i in range(POLY_DEGREE + 1) for j in range(POLY_DEGREE + 1 - i)]
    for value, (i, j) in zip(coef, terms, strict=True):
        per_y[j] += value * x**i
    out = np.zeros(shape, np.float32)
    for j, row in enumerate(per_y):
        out += np.multiply.outer(y**j, row).astype(np.float32)
    return out


def _smooth_sampled(image: np.ndarray) -> np.ndarray:
    """Gaussian smoothing (σ = :data:`SMOOTH_SIGMA_PIX`) kept every :data:`MAP_BIN` pixels."""
    b, kw = MAP_BIN, {"mode": "nearest", "truncate": 3.0}
    rows = ndimage.gaussian_filter1d(image, SMOOTH_SIGMA_PIX, axis=0, **kw)[::b]
    return ndimage.gaussian_filter1d(rows, SMOOTH_SIGMA_PIX, axis=1, **kw)[:, ::b]


def fringe_map(data: np.ndarray, mask: np.ndarray | None, name: str = "") -> FringeMap:
    """The training map of a science quadrant (DN, raw orientation) and its IPAC mask."""
    data = np.asarray(data, np.float32)
    shape = data.shape
    good = ~bad_pixels(data, mask)
    sky = _sky_level(data, good)
    s = fit_stride(shape)
    r, c = np.nonzero(good[::s, ::s])
    target = data[::s, ::s][r, c].astype(np.float64) / sky - 1.0
    coef, _ = _clipped_lstsq(np.stack(_poly_terms(r * s, c * s, shape), 1), target)
    rel = data / np.float32(sky)
    rel -= np.float32(1.0)
    rel -= _surface(coef, shape)
    sigma = _robust_sigma(rel[::s, ::s][r, c])
    with np.errstate(invalid="ignore"):
        good &= np.abs(rel) <= CLIP_SIGMA * sigma
    weight = good.astype(np.float32)
    rel[~good] = 0.0
    num, den = _smooth_sampled(rel), _smooth_sampled(weight)
    valid = den > _MIN_WEIGHT
    values = np.zeros(num.shape, np.float16)
    np.divide(num, den, out=values, where=valid, casting="unsafe")
    return FringeMap(values, valid, sky, shape, name)


# --- decomposition --------------------------------------------------------------------------------


def _gram(x: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """``x @ x.T`` in float64, by pixel chunks (x: N × P float32)."""
    g = np.zeros((x.shape[0], x.shape[0]))
    for i in range(0, x.shape[1], chunk):
        block = x[:, i : i + chunk].astype(np.float64)
        g += block @ block.T
    return g


def _select(evals: np.ndarray, evecs: np.ndarray, k: int, npix_full: int) -> np.ndarray:
    """Indices (rank order) of at most ``k`` fringe components among the Gram eigenpairs.

    A fringe component stands above the noise: its eigenvalue exceeds :data:`NOISE_FACTOR` × the
    upper edge of the noise eigenvalues, the median eigenvalue below rank ``k`` times the
    Marchenko–Pastur factor ``(1 + √(N / P_eff))²`` (P_eff: independent pixels after the
    smoothing, ``npix_full / (4π σ²)``). It must still do so without its
    ``MIN_SHARED − 1`` strongest exposures: structure of one or two exposures (a bright star's
    halo, a satellite trail) is not a fringe and is not subtracted, while a fringe much brighter
    in one exposure (an airglow burst) is kept since the others carry it too.
    """
    order = np.argsort(evals)[::-1]
    floor = float(np.median(evals[order[k:]])) if order.size > k else 0.0
    p_eff = npix_full / (4 * np.pi * SMOOTH_SIGMA_PIX**2)
    threshold = NOISE_FACTOR * floor * (1.0 + np.sqrt(evals.size / p_eff)) ** 2
    keep = []
    for i in order[:k]:
        strongest = np.sort(evecs[:, i] ** 2)[::-1][: max(int(MIN_SHARED) - 1, 0)].sum()
        if evals[i] > threshold and evals[i] * (1.0 - strongest) > threshold:
            keep.append(i)
    return np.array(keep, int)


def decompose(maps: Sequence[FringeMap], k: int = DEFAULT_K) -> tuple[np.ndarray, np.ndarray]:
    """Up to K unit-RMS modes (float32, K' × rows × cols) and their explained-variance fractions.

    Uncentred truncated SVD via the N×N Gram matrix; components are kept by :func:`_select`
    (none when no fringe stands above the noise: zero modes);
    masked pixels are filled with the reconstruction for :data:`EM_ITERATIONS` passes. Signs:
    the mean coefficient over the training maps is positive.
    """
    n = len(maps)
    if n <= k:
        raise FringeError(f"{n} maps cannot give {k} modes")
    shape = maps[0].values.shape
    x = np.stack([m.values.ravel() for m in maps]).astype(np.float32)  # N × P
    missing = ~np.stack([m.valid.ravel() for m in maps])
    for it in range(EM_ITERATIONS + 1):
        gram = _gram(x)
        evals, evecs = np.linalg.eigh(gram)
        chosen = _select(evals, evecs, k, int(np.prod(maps[0].shape)))
        if chosen.size == 0:  # no fringe: an empty model, whose correction changes nothing
            return np.zeros((0,) + shape, np.float32), np.zeros(0)
        lam, v = evals[chosen], evecs[:, chosen]  # N × k'
        modes = (v.T.astype(np.float32) @ x) / np.sqrt(lam)[:, None].astype(np.float32)
        if it == EM_ITERATIONS:
            break
        recon = (v * np.sqrt(lam)).astype(np.float32) @ modes  # N × P
        x[missing] = recon[missing]
    total = float(np.trace(gram))
    explained = lam / total if total > 0 else np.zeros(lam.size)
    npix = modes.shape[1]
    scores = v * np.sqrt(lam) / np.sqrt(npix)  # coefficient of the unit-RMS mode per map
    signs = np.where(scores.mean(axis=0) < 0, -1.0, 1.0)
    modes *= (signs * np.sqrt(npix))[:, None].astype(np.float32)
    return modes.reshape((lam.size,) + shape), explained


# --- the model --------------------------------------------------------------------------------


@dataclass
class QuadrantModes:
    """The fringe modes of one quadrant and how they were learnt."""

    modes: np.ndarray  #: float32 (K, rows, cols), unit RMS, raw orientation
    explained: np.ndarray  #: fraction of the maps' total variance per mode
    inputs: list[str]  #: training inputs (raw file names)


@dataclass
class FringeModel:
    """Fringe modes of the quadrants of one CCD, learnt over a period of nights."""

    ccdid: int
    start: dt.date  #: first night of the training period
    end: dt.date  #: last night (inclusive)
    quadrants: dict[int, QuadrantModes] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return max((q.modes.shape[0] for q in self.quadrants.values()), default=0)


def select_evenly(items: Sequence[object], limit: int = MAX_EXPOSURES) -> list[object]:
    """At most ``limit`` items evenly spread over ``items`` (kept in order)."""
    if len(items) <= limit:
        return list(items)
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, limit)).astype(int))
    return [items[i] for i in idx]


def build_quadrant(
    qid: int, maps: Sequence[FringeMap], k: int = DEFAULT_K, min_exposures: int = MIN_EXPOSURES
) -> QuadrantModes:
    """Modes of one quadrant from its training maps; :class:`TooFewExposures` if too few."""
    usable = [m for m in maps if m.valid_fraction >= MIN_VALID_FRACTION]
    needed = max(min_exposures, k + 1)
    if len(usable) < needed:
        raise TooFewExposures(f"q{qid}", len(usable), needed)
    if len({m.values.shape for m in usable}) != 1:
        raise FringeError(f"q{qid}: training maps have different shapes")
    modes, explained = decompose(usable, k)
    return QuadrantModes(modes, explained, [m.name for m in usable])


# --- correction --------------------------------------------------------------------------------


def decimated_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """Shape of a quadrant sampled every :data:`MAP_BIN` pixels (pixel 0 kept)."""
    return -(-shape[0] // MAP_BIN), -(-shape[1] // MAP_BIN)


def _upsample_axis(a: np.ndarray, length: int, axis: int) -> np.ndarray:
    """Samples at even positions → ``length`` samples; midpoints by 4-point interpolation.

    ``(−a[i−1] + 9a[i] + 9a[i+1] − a[i+2]) / 16`` (cubic through 4 samples, error O(h⁴):
    < 0.1 % for a fringe of period ≥ 20 px), edges replicated.
    """
    a = np.moveaxis(a, axis, 0)
    n = a.shape[0]
    pad = np.concatenate([a[:1], a, a[-1:], a[-1:]])  # a[i] is pad[i + 1]
    mid = (9.0 * (pad[1 : n + 1] + pad[2 : n + 2]) - pad[0:n] - pad[3 : n + 3]) / 16.0
    out = np.empty((length,) + a.shape[1:], a.dtype)
    out[0::2] = a[: (length + 1) // 2]
    out[1::2] = mid[: length // 2]
    return np.moveaxis(out, 0, axis)


def upsample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A :data:`MAP_BIN`-sampled image (…, rows, cols) at full resolution ``shape`` (float32)."""
    a = np.asarray(image, np.float32)
    if MAP_BIN == 1:
        return a
    if MAP_BIN != 2:
        raise FringeError(f"upsampling implemented for MAP_BIN 1 or 2, not {MAP_BIN}")
    # Columns first (on half the rows), then rows: the second pass runs on contiguous rows.
    return _upsample_axis(_upsample_axis(a, shape[1], a.ndim - 1), shape[0], a.ndim - 2)


@compiled
def _subtract_upsampled(data: np.ndarray, sampled: np.ndarray) -> np.ndarray:
    """``data − upsample(sampled, data.shape)`` in one compiled pass, bitwise equal to it.

    The float32 operations of :func:`_upsample_axis` in the same order (columns first, on the
    sampled rows; then rows, fused with the subtraction); edge samples replicated.
    """
    rows, cols = data.shape
    nr, nc = sampled.shape
    nine, sixteen = np.float32(9.0), np.float32(16.0)
    by_cols = np.empty((nr, cols), np.float32)
    for i in range(nr):
        for j in range(cols):
            h = j // 2
            if j % 2 == 0:
                by_cols[i, j] = sampled[i, h]
            else:
                a, b = sampled[i, max(h - 1, 0)], sampled[i, h]
                c, d = sampled[i, min(h + 1, nc - 1)], sampled[i, min(h + 2, nc - 1)]
                by_cols[i, j] = (nine * (b + c) - a - d) / sixteen
    out = np.empty((rows, cols), np.float32)
    for i in range(rows):
        h = i // 2
        if i % 2 == 0:
            for j in range(cols):
                out[i, j] = data[i, j] - by_cols[h, j]
        else:
            h0, h2, h3 = max(h - 1, 0), min(h + 1, nr - 1), min(h + 2, nr - 1)
            for j in range(cols):
                up = (nine * (by_cols[h, j] + by_cols[h2, j]) - by_cols[h0, j] - by_cols[h3, j])
                out[i, j] = data[i, j] - up / sixteen
    return out


def subtract_upsampled(data: np.ndarray, sampled: np.ndarray) -> np.ndarray:
    """``data − upsample(sampled, data.shape)`` (float32): compiled when :data:`MAP_BIN` is 2."""
    data = np.ascontiguousarray(data, np.float32)
    if MAP_BIN != 2:
        return data - upsample(sampled, data.shape)
    if sampled.shape != decimated_shape(data.shape):
        raise FringeError(f"sampled image {sampled.shape} does not match {data.shape}")
    return _subtract_upsampled(data, np.ascontiguousarray(sampled, np.float32))


@dataclass
class FringeFit:
    """A corrected quadrant and what was subtracted."""

    data: np.ndarray  #: float32, fringe subtracted (NaN kept)
    coefficients: np.ndarray  #: per unit-RMS mode, fraction of the sky
    sky: float  #: DN
    fringe_rms: float  #: RMS of the subtracted pattern (DN)
    npix: int  #: pixels used in the fit


def correct(data: np.ndarray, mask: np.ndarray | None, modes: np.ndarray) -> FringeFit:
    """Fit a quadrant's modes (K × sampled rows × cols, as stored) to its image and subtract them.

    The fit uses every :func:`fit_stride`-th pixel that is finite, has no :data:`MASK_BITS` bit
    and lies within :data:`CLIP_SIGMA` σ, with a degree-2 background surface (fitted, not
    subtracted); the fitted fringe is brought to full resolution by :func:`upsample`.
    """
    data = np.asarray(data, np.float32)
    if modes.ndim != 3 or modes.shape[1:] != decimated_shape(data.shape):
        raise FringeError(f"modes {modes.shape} do not match the quadrant {data.shape}")
    s = fit_stride(data.shape)
    m = s // MAP_BIN
    sub = data[::s, ::s]
    good = ~bad_pixels(sub, None if mask is None else np.asarray(mask)[::s, ::s])
    r, c = np.nonzero(good)
    if r.size == 0:
        raise FringeError("no usable pixel")
    values = sub[r, c].astype(np.float64)
    sky = float(np.median(values))
    if not sky > 0:
        raise FringeError(f"sky level must be positive, got {sky}")
    k = modes.shape[0]
    terms = _poly_terms(r * s, c * s, data.shape)
    design = np.empty((r.size, k + len(terms)))  # filled in place: no stacked copies
    design[:, :k] = modes[:, ::m, ::m][:, r, c].T
    for i, term in enumerate(terms):
        design[:, k + i] = term
    coef, kept = _clipped_lstsq(design, values / sky - 1.0)
    fringe_sampled = np.tensordot((sky * coef[:k]).astype(np.float32), modes, axes=1)
    return FringeFit(
        data=subtract_upsampled(data, fringe_sampled), coefficients=coef[:k], sky=sky,
        fringe_rms=float(np.sqrt(np.mean(fringe_sampled**2))), npix=int(kept.sum()),
    )  # fmt: skip


def header_cards(fit: FringeFit, model_file: str) -> dict[str, tuple[object, str]]:
    """Science-header cards of a fringe correction (model, coefficients, subtracted RMS)."""
    cards: dict[str, tuple[object, str]] = {
        "FRNGMDL": (model_file, "fringe model subtracted"),
        "FRNGK": (int(fit.coefficients.size), "fringe modes fitted"),
        "FRNGSKY": (round(fit.sky, 4), "sky level of the fringe fit [DN]"),
        "FRNGRMS": (round(fit.fringe_rms, 5), "RMS of the subtracted fringe [DN]"),
        "FRNGNPIX": (fit.npix, "pixels used in the fringe fit"),
    }
    for i, value in enumerate(fit.coefficients, start=1):
        cards[f"FRNGC{i:02d}"] = (float(np.float32(value)), f"mode {i} RMS / sky")
    return cards


# --- FITS ---------------------------------------------------------------------------------------


def to_hdulist(model: FringeModel, cards: Mapping[str, object] | None = None) -> fits.HDUList:
    """The model as FITS: primary (provenance) + one ``Qn`` cube (K × rows × cols) per quadrant.

    ``cards``: extra primary cards (value or ``(value, comment)``), e.g. the pipeline versions.
    """
    primary = fits.PrimaryHDU()
    h = primary.header
    h["IMGTYPE"] = ("fringe", "product type")
    h["CCDID"] = (model.ccdid, "CCD id")
    h["FILTRKEY"] = ("zi", "filter")
    h["PERIOD"] = (f"{model.start:%Y%m%d}", "first night of the training period")
    h["PERIODND"] = (f"{model.end:%Y%m%d}", "last night of the training period")
    h["FRNGK"] = (model.k, "modes per quadrant")
    h["FRNGMETH"] = ("uncentred SVD, EM-filled masks", "decomposition")
    h["FRNGSMTH"] = (SMOOTH_SIGMA_PIX, "Gaussian sigma of training maps [pix]")
    h["FRNGCLIP"] = (CLIP_SIGMA, "sigma clip of training/fit pixels")
    h["FRNGMASK"] = (MASK_BITS, "IPAC mask bits excluded")
    for key, item in (cards or {}).items():
        h[key] = item
    hdus: list[fits.PrimaryHDU | fits.ImageHDU] = [primary]
    for qid in sorted(model.quadrants):
        q = model.quadrants[qid]
        data = q.modes.astype(np.float32) if q.modes.shape[0] else None
        hdu = fits.ImageHDU(data, name=f"Q{qid}")
        hdu.header["QID"] = (qid, "quadrant id")
        hdu.header["FRNGK"] = (q.modes.shape[0], "modes of this quadrant (0: no fringe)")
        hdu.header["SAMPROWS"] = (q.modes.shape[1], "rows of the sampled modes")
        hdu.header["SAMPCOLS"] = (q.modes.shape[2], "columns of the sampled modes")
        hdu.header["NFRAMES"] = (len(q.inputs), "training exposures")
        hdu.header["EXPVAR"] = (float(np.sum(q.explained)), "variance fraction of the K modes")
        for i, frac in enumerate(q.explained, start=1):
            hdu.header[f"EXPVAR{i:02d}"] = (float(frac), f"variance fraction of mode {i}")
        for i, name in enumerate(q.inputs, start=1):
            hdu.header[f"INPUT{i:03d}"] = (name, "training raw file")
        hdus.append(hdu)
    return fits.HDUList(hdus)


def from_hdulist(hdul: fits.HDUList) -> FringeModel:
    """The :class:`FringeModel` stored by :func:`to_hdulist`."""
    h = hdul[0].header
    if h.get("IMGTYPE") != "fringe":
        raise FringeError(f"not a fringe model (IMGTYPE={h.get('IMGTYPE')!r})")
    model = FringeModel(
        ccdid=int(h["CCDID"]),
        start=dt.datetime.strptime(h["PERIOD"], "%Y%m%d").date(),
        end=dt.datetime.strptime(h["PERIODND"], "%Y%m%d").date(),
    )
    for hdu in hdul[1:]:
        qid, k = int(hdu.header["QID"]), int(hdu.header["FRNGK"])
        shape = (k, int(hdu.header["SAMPROWS"]), int(hdu.header["SAMPCOLS"]))
        modes = np.asarray(hdu.data, np.float32) if k else np.zeros(shape, np.float32)
        explained = np.array([hdu.header[f"EXPVAR{i:02d}"] for i in range(1, k + 1)])
        n = int(hdu.header["NFRAMES"])
        inputs = [str(hdu.header[f"INPUT{i:03d}"]) for i in range(1, n + 1)]
        model.quadrants[qid] = QuadrantModes(modes, explained, inputs)
    return model
