"""The synthetic Gaia-DR3-like sky.

The sky is a pure function of (seed, HEALPix pixel): the stars of NESTED pixel ``npix`` at order
:data:`SIM_ORDER` (8, ~0.052 deg²) are drawn from ``numpy.random.default_rng`` seeded with
``[tag, seed, order, npix]``, so every night, quadrant, process and call order sees the same
stars. :func:`generate_cone` serves the image simulator; :func:`write_sim_catalog` stores the
same stars as a HATS catalogue that the photometry reads like the real Gaia DR3, in coarser
partitions (:data:`STORE_ORDER`) so that a quadrant's cone opens a handful of files.

Model (all columns of the Gaia DR3 ``gaia_source`` names and units, positions at J2016.0):

* counts: Poisson(:func:`density_per_deg2` at the pixel centre's galactic latitude × area);
* positions: uniform on the sphere inside the pixel (uniform HEALPix offsets dx, dy are uniform
  on the sphere because the HEALPix projection is equal-area);
* G: truncated exponential luminosity function, log10 N(<G) ∝ :data:`LF_SLOPE`·G on
  [:data:`G_MIN`, :data:`G_MAX`]; ~47 % of sources brighter than G = 20;
* colours: BP−RP = 0.25 + Gamma(3, 0.25) (+ reddening towards the plane), mean ≈ 1, mostly
  0.3–3; G−RP from a smooth quadratic in BP−RP;
* astrometry: parallaxes ~0.2–2 mas decreasing with G, 30 km/s velocity dispersion per axis
  (|pm| of a few mas/yr), :data:`HIGH_PM_FRACTION` of stars with |pm| log-uniform in
  100–1 000 mas/yr (nearby: parallax from a 40–150 km/s tangential velocity); Gaia-like errors
  rising with G; ~20 % 2-parameter solutions (parallax, pm and their errors NaN), mostly faint.

This module does not import luigi.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import astropy.units as u
import numpy as np
import pyarrow as pa
from astropy_healpix import healpix_to_lonlat

from ztfluigi import refcat

__all__ = [
    "CATALOG_NAME",
    "GAIA_COLUMNS",
    "SIM_ORDER",
    "STORE_ORDER",
    "STORE_ROW_GROUP_ROWS",
    "density_per_deg2",
    "galactic_latitude_deg",
    "generate_cone",
    "generate_pixel",
    "pixel_area_deg2",
    "pixels_for_cone",
    "write_sim_catalog",
]

SIM_ORDER = 8
"""HEALPix order of the generation pixels (nside 256, 0.0524 deg², ~0.23° across)."""

STORE_ORDER = 5
"""HEALPix order of the stored partitions (nside 32, 3.36 deg², ~1.8° across): a real-size
quadrant's cone (radius ≈0.62°) meets ≈3.6 partition files instead of ≈52 at order 8, for the
same rows (bench/bench_refcat.py); row groups keep the reads local. See
:func:`write_sim_catalog`."""

STORE_ROW_GROUP_ROWS = 20_000
"""Rows per row group of the stored partitions."""

CATALOG_NAME = "ztfsim_gaia_dr3"

G_MIN = 8.0
G_MAX = 21.0
LF_SLOPE = 0.33
"""d log10 N(<G) / dG of the synthetic luminosity function."""

HIGH_PM_FRACTION = 0.005
"""Fraction of stars with |pm| in [100, 1000] mas/yr."""

TWO_PARAM_FLOOR = 0.02
TWO_PARAM_G50 = 20.9
TWO_PARAM_WIDTH = 0.4
"""2-parameter probability 0.02 + 0.98 / (1 + exp(-(G - 20.9) / 0.4)): 20 % on average."""

DENSITY_A = 2600.0
DENSITY_P = 1.42
DENSITY_CAP = 200_000.0
"""density = CAP·(1 − exp(−A·(1/sin|b|)^P / CAP)) sources/deg²; CAP·0.748 ≈ 150 000/quadrant."""

VELOCITY_DISPERSION_KMS = 30.0
_KMS_PER_MASYR_AT_1MAS = 4.740470  # v_t [km/s] = 4.74047 · μ [mas/yr] / ϖ [mas]
_STREAM_TAG = 0x67616961  # "gaia": keeps these streams apart from other users of the same seed
_EDGE = 1e-9  # keep drawn offsets strictly inside the pixel (exactly reversible _healpix_29)

# ICRS -> Galactic rotation (Hipparcos, ESA 1997 vol. 1 §1.5.3; ERFA eraIcrs2g).
_ICRS_TO_GAL = np.array(
    [
        [-0.054875560416215368, -0.873437090234885049, -0.483835015548713227],
        [+0.494109427875583674, -0.444829629960011178, +0.746982244497218891],
        [-0.867666149019004701, -0.198076373431201528, +0.455983776175066922],
    ]
)

GAIA_COLUMNS = pa.schema(
    [
        ("source_id", pa.int64()),
        ("ra", pa.float64()),
        ("dec", pa.float64()),
        ("parallax", pa.float64()),
        ("parallax_error", pa.float32()),
        ("pmra", pa.float64()),
        ("pmra_error", pa.float32()),
        ("pmdec", pa.float64()),
        ("pmdec_error", pa.float32()),
        ("phot_g_mean_mag", pa.float32()),
        ("phot_bp_mean_mag", pa.float32()),
        ("phot_rp_mean_mag", pa.float32()),
        ("ref_epoch", pa.float64()),
        (refcat.HEALPIX_COLUMN, pa.int64()),
    ]
)
"""Schema of the generated tables (Gaia DR3 names, units and dtypes, plus ``_healpix_29``)."""


def galactic_latitude_deg(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Galactic latitude b (deg) of ICRS positions (deg); within 0.02" of astropy's Galactic."""
    a, d = np.radians(np.asarray(ra, dtype=np.float64)), np.radians(np.asarray(dec, np.float64))
    r = _ICRS_TO_GAL[2]
    z = r[0] * np.cos(d) * np.cos(a) + r[1] * np.cos(d) * np.sin(a) + r[2] * np.sin(d)
    return np.degrees(np.arcsin(np.clip(z, -1.0, 1.0)))


def density_per_deg2(b_deg: np.ndarray) -> np.ndarray:
    """Gaia DR3 sources to G ≈ 21 per deg² versus galactic latitude.

    ``A·(1/sin|b|)^P`` (a disc seen from inside, steeper than the 1/sin|b| of a thin slab),
    saturated smoothly at :data:`DENSITY_CAP` towards the plane. Anchors (ztf_formats.md §7.2):
    2 600 at |b| = 90°, 3 180 at 60°, 4 200 at 45°, 7 000 at 30°, 18 600 at 14° (the verified
    field 655 value), 68 000 at 5°, 117 000 at 2°, 200 000 (≈150 000 per quadrant) at 0°.
    No longitude dependence (the real sky is denser towards the bulge than the anticentre).

    Parameters
    ----------
    b_deg : array_like
        Galactic latitude in degrees.

    Returns
    -------
    numpy.ndarray
        Sources per square degree (float64).
    """
    s = np.sin(np.radians(np.abs(np.asarray(b_deg, dtype=np.float64))))
    with np.errstate(divide="ignore", over="ignore"):
        n0 = DENSITY_A * np.power(1.0 / s, DENSITY_P)
    return DENSITY_CAP * -np.expm1(-n0 / DENSITY_CAP)


def pixel_area_deg2(order: int = SIM_ORDER) -> float:
    """Area of one HEALPix pixel at ``order`` in deg²."""
    return 4.0 * np.pi * (180.0 / np.pi) ** 2 / (12 * 4 ** int(order))


def _g_colour_to_rp(g: np.ndarray, bp_rp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BP and RP from G and BP−RP; G−RP = 0.02 + 0.70·c − 0.08·c² (monotonic for c < 4.3)."""
    g_rp = 0.02 + 0.70 * bp_rp - 0.08 * bp_rp**2
    rp = g - g_rp
    return rp + bp_rp, rp


def generate_pixel(seed: int, npix: int, order: int = SIM_ORDER) -> pa.Table:
    """All synthetic Gaia sources of one NESTED HEALPix pixel (deterministic).

    Parameters
    ----------
    seed : int
        Sky seed (non-negative); another seed gives an unrelated sky.
    npix : int
        NESTED pixel index at ``order``.
    order : int
        Generation order (0–12); the canonical sky is :data:`SIM_ORDER`. Other orders give other
        (equally valid, but different) skies.

    Returns
    -------
    pyarrow.Table
        Schema :data:`GAIA_COLUMNS`, rows sorted by ``_healpix_29``. ``source_id`` follows
        Gaia: order-12 NESTED index × 2**35 + running number (1, 2, ... within that pixel).
    """
    order, npix, seed = int(order), int(npix), int(seed)
    if not 0 <= order <= 12:
        raise ValueError("order must be in 0..12 (source_id encodes the order-12 pixel)")
    if not 0 <= npix < 12 * 4**order:
        raise ValueError(f"npix {npix} out of range for order {order}")
    if seed < 0:
        raise ValueError("seed must be non-negative")
    rng = np.random.default_rng([_STREAM_TAG, seed, order, npix])
    nside = 2**order
    lon_c, lat_c = healpix_to_lonlat(npix, nside, order="nested")
    b_c = float(galactic_latitude_deg(lon_c.to_value(u.deg), lat_c.to_value(u.deg)))
    n = int(rng.poisson(float(density_per_deg2(b_c)) * pixel_area_deg2(order)))

    # Positions: uniform offsets inside the pixel, then sky order.
    dx = _EDGE + (1.0 - 2 * _EDGE) * rng.random(n)
    dy = _EDGE + (1.0 - 2 * _EDGE) * rng.random(n)
    lon, lat = healpix_to_lonlat(np.full(n, npix, dtype=np.int64), nside, dx, dy, order="nested")
    ra = lon.to_value(u.deg)
    dec = lat.to_value(u.deg)
    hp29 = refcat.healpix29(ra, dec)
    srt = np.argsort(hp29, kind="stable")
    ra, dec, hp29 = ra[srt], dec[srt], hp29[srt]

    # Photometry.
    span = 10.0 ** (LF_SLOPE * (G_MAX - G_MIN)) - 1.0
    g = G_MIN + np.log10(1.0 + rng.random(n) * span) / LF_SLOPE
    bp_rp = 0.25 + rng.gamma(3.0, 0.25, n) + 0.4 * np.exp(-abs(b_c) / 8.0)
    bp_rp = np.minimum(bp_rp, 4.0)
    bp, rp = _g_colour_to_rp(g, bp_rp)

    # Astrometry: true parallax and proper motion, then Gaia-like errors.
    plx_true = 10.0 ** rng.normal(-0.3 - 0.1 * (g - 15.0), 0.35)
    pm_sigma = VELOCITY_DISPERSION_KMS * plx_true / _KMS_PER_MASYR_AT_1MAS
    pmra_true = rng.normal(0.0, 1.0, n) * pm_sigma
    pmdec_true = rng.normal(0.0, 1.0, n) * pm_sigma
    high = rng.random(n) < HIGH_PM_FRACTION
    mu = 10.0 ** rng.uniform(2.0, 3.0, n)
    theta = rng.uniform(0.0, 2 * np.pi, n)
    v_t = rng.uniform(40.0, 150.0, n)
    pmra_true = np.where(high, mu * np.sin(theta), pmra_true)
    pmdec_true = np.where(high, mu * np.cos(theta), pmdec_true)
    plx_true = np.where(high, _KMS_PER_MASYR_AT_1MAS * mu / v_t, plx_true)

    plx_err = np.hypot(0.015, 0.5 * 10.0 ** (0.25 * (g - 20.0)))
    pmra_err = 1.1 * plx_err
    pmdec_err = 1.0 * plx_err
    plx = plx_true + plx_err * rng.normal(0.0, 1.0, n)
    pmra = pmra_true + pmra_err * rng.normal(0.0, 1.0, n)
    pmdec = pmdec_true + pmdec_err * rng.normal(0.0, 1.0, n)
    p_two = TWO_PARAM_FLOOR + (1.0 - TWO_PARAM_FLOOR) / (
        1.0 + np.exp(-(g - TWO_PARAM_G50) / TWO_PARAM_WIDTH)
    )
    two = (rng.random(n) < p_two) & ~high
    for arr in (plx, plx_err, pmra, pmra_err, pmdec, pmdec_err):
        arr[two] = np.nan

    # Gaia-like source_id: order-12 pixel << 35 | running number within it.
    id12 = hp29 >> (2 * (refcat.HEALPIX_ORDER - 12))
    start = np.ones(n, dtype=bool)
    start[1:] = id12[1:] != id12[:-1]
    first = np.flatnonzero(start)
    rank = np.arange(n) - first[np.cumsum(start) - 1]
    source_id = (id12 << 35) + rank + 1

    columns = [
        source_id.astype(np.int64),
        ra,
        dec,
        plx,
        plx_err.astype(np.float32),
        pmra,
        pmra_err.astype(np.float32),
        pmdec,
        pmdec_err.astype(np.float32),
        g.astype(np.float32),
        bp.astype(np.float32),
        rp.astype(np.float32),
        np.full(n, refcat.GAIA_DR3_EPOCH),
        hp29,
    ]
    return pa.Table.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(columns, GAIA_COLUMNS, strict=True)],
        schema=GAIA_COLUMNS,
    )


def pixels_for_cone(ra: float, dec: float, radius_deg: float, order: int = SIM_ORDER) -> np.ndarray:
    """Generation pixels overlapping a cone (conservative superset, sorted int64)."""
    return refcat.healpix_cone(ra, dec, radius_deg, order)


def generate_cone(seed: int, ra: float, dec: float, radius_deg: float) -> pa.Table:
    """All synthetic stars within ``radius_deg`` of (ra, dec) at J2016.0 (exact cut, inclusive).

    The union of the :data:`SIM_ORDER` pixels overlapping the cone, cut in float64; rows in
    pixel then ``_healpix_29`` order, i.e. sky order.
    """
    tables = []
    for npix in pixels_for_cone(ra, dec, radius_deg):
        table = generate_pixel(seed, int(npix))
        ras = table.column("ra").to_numpy()
        decs = table.column("dec").to_numpy()
        tables.append(table.filter(pa.array(refcat.cone_mask(ras, decs, ra, dec, radius_deg))))
    if not tables:
        return GAIA_COLUMNS.empty_table()
    return pa.concat_tables(tables)


class _LazySky(Mapping):
    """(store order, npix) -> the generated stars of its :data:`SIM_ORDER` pixels, on access.

    A partition at ``order`` <= :data:`SIM_ORDER` holds the listed generation pixels it contains
    (one partition in memory at a time); their nested indices are contiguous, so the rows stay
    in ``_healpix_29`` order.
    """

    def __init__(self, seed: int, pixels: Iterable[int], order: int) -> None:
        self._seed = int(seed)
        shift = 2 * (SIM_ORDER - int(order))
        children: dict[tuple[int, int], list[int]] = {}
        for p in sorted({int(p) for p in pixels}):
            children.setdefault((int(order), p >> shift), []).append(p)
        self._children = children

    def __getitem__(self, key: tuple[int, int]) -> pa.Table:
        pixels = self._children[tuple(key)]
        return pa.concat_tables(generate_pixel(self._seed, p) for p in pixels)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._children)

    def __len__(self) -> int:
        return len(self._children)


def write_sim_catalog(
    url: str,
    seed: int,
    pixels: Iterable[int],
    order: int = STORE_ORDER,
    row_group_rows: int = STORE_ROW_GROUP_ROWS,
    creation_date: str | None = None,
) -> None:
    """Write the synthetic sky of some :data:`SIM_ORDER` pixels as a HATS catalogue.

    Parameters
    ----------
    url : str
        fsspec URL of the catalogue root.
    seed : int
        Sky seed (as for :func:`generate_pixel`).
    pixels : iterable of int
        NESTED pixels at :data:`SIM_ORDER` (duplicates ignored); e.g. the union of
        :func:`pixels_for_cone` over the fields of a night, with a margin for proper motion.
    order : int
        HEALPix order of the stored partitions (0..:data:`SIM_ORDER`); each holds the listed
        generation pixels inside it. The stars, and so every cone, do not depend on it.
    row_group_rows : int
        Rows per parquet row group (see :func:`ztfluigi.refcat.write_catalog`).
    creation_date : str, optional
        ``hats_creation_date`` to record instead of the wall clock: a product rebuilt from the
        same inputs is then byte-identical.
    """
    if not 0 <= int(order) <= SIM_ORDER:
        raise ValueError(f"store order must be in 0..{SIM_ORDER}, got {order}")
    refcat.write_catalog(
        url,
        _LazySky(seed, pixels, order),
        name=CATALOG_NAME,
        extra_properties={
            "ztfsim_seed": str(int(seed)),
            "ztfsim_generator": "ztfluigi.sim.gaia",
            "ztfsim_order": str(SIM_ORDER),
            **({"hats_creation_date": creation_date} if creation_date else {}),
        },
        row_group_rows=row_group_rows,
    )
