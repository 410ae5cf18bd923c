"""Forced aperture photometry of one science quadrant at reference-catalogue positions (pure numpy).

Two settings (:class:`PhotometrySpec`, recorded in every catalogue's metadata as ``photometry.*``):

* **default** — ztfluigi's: exact sums for all radii in one pass over each stamp (the compiled
  kernel of :mod:`ztfluigi.apertures`, equal to sep and photutils exact to ≤ 1e-12 of
  Σ|pixel × overlap|, 0.3–0.4× sep's time); a **star-masked background** (sep's mesh estimator
  with every reference star masked by a magnitude-dependent disk, :func:`star_mask_radius`: on
  synthetic quadrants 12 px blank-sky sums average −0.2 to −0.5 DN, against −15 to −27 DN with
  the reference's background, biased high by the light of stars outside the IPAC source mask);
  **saturation** flagged (2) and never rescaled; exact flags (table below).
* :meth:`PhotometrySpec.reference` — the reference's sep background and ``sep.sum_circle`` in its
  sky frame, bit for bit as described in the rest of this docstring.

Flags under the default spec (``f_k_f``, uint8):

====  ======================  ==============================================================
bit   name                    meaning
====  ======================  ==============================================================
1     :data:`FLAG_OFFIMAGE`   part of the circle is outside the image (exact); not rescaled
2     :data:`FLAG_SATURATED`  a saturated pixel (IPAC bit 8, or above the header's
                              ``SATURATE``) inside the circle: the flux is the sum of the
                              unmasked pixels, **not rescaled** — a lower bound
16    ``APER_TRUNC``          truncated by the image edge: the same apertures as 1 (exact)
32    ``APER_HASMASKED``      a masked pixel (MASK_PHOT bits, non-finite, saturated) overlaps
                              the circle; flux and error rescaled by in-image / unmasked area
                              unless flag 2. (sep also sets 32 for masked pixels within
                              r + 0.71 px that do not overlap the circle; we do not.)
64    ``APER_ALLMASKED``      no usable pixel: flux and errors NaN
====  ======================  ==============================================================

Reference behaviour (``reference_pipeline.md`` §6, traps 11 and 14–16) and where we differ:

* **Frames** (trap 11). Inputs are in *raw/IPAC* orientation (the orientation of IPAC's
  ``sciimg``/``mskimg`` and of their TPV WCS). The reference measures on the *sky*-oriented array
  ``raw[::-1, ::-1]`` (ztfimg ``reorder=True``) and stores ``x, y`` in that frame, 0-based. Three
  pixel coordinates therefore appear here (``ncols, nrows`` = quadrant width and height):

  ============  ==============================================  ================================
  name          definition                                      where
  ============  ==============================================  ================================
  ``x_raw``     0-based pixel centre of the array as stored     ``wcs.all_world2pix(..., 0)``
  ``x_ref``     ``ncols − 1 − x_raw`` (180° rotated, 0-based)   catalogue columns ``x``, ``y``
  ``x_ipac``    ``x_raw + 1`` (FITS 1-based, raw frame)         catalogue ``x_ipac``, ``y_ipac``
  ============  ==============================================  ================================

  (same for ``y`` with ``nrows``). Pixel centres are integers in every 0-based frame, pixel ``i``
  covers ``[i − 0.5, i + 0.5]`` (the convention of sep, photutils and astropy with origin 0).
* **sep runs in the reference's sky frame.** sep's background mesh is anchored at pixel (0, 0),
  so when the quadrant size is not a multiple of the mesh (192 × 220; the case at every synthetic
  ``scale`` > 1) a 180° rotation changes which pixels share a mesh cell (≈ 0.1 DN differences
  at scale 8); even at full size (3072 × 3080, an exact multiple) sep's map is not exactly
  rotation symmetric (≈ 0.02 DN measured). sep's ``APER_TRUNC`` flag is orientation dependent
  too: an aperture overhanging the low-index edges of the array by less than one pixel is not
  flagged (sep 1.4 ``boxextent`` truncates toward zero), the high-index edges are exact. We
  therefore rotate to the sky frame, make the same sep calls on the same arrays as the reference
  (background *and* sums), and rotate the background maps back when they are returned in raw
  orientation, so that numbers and flags follow ztfin2p3 (which ran sep 1.2.1). The sums
  themselves are orientation independent (exact overlap of a circle is symmetric under
  x → n − 1 − x; checked against photutils in both frames).
* **Background**: ``sep.Background(data, mask=M_all, bw=192, bh=220)`` (fw = fh = 3, fthresh = 0)
  with every IPAC bit 0–12 masked (:data:`MASK_ALL`, source bits included), as the reference.
  Non-finite pixels are masked too (the reference does not; the science layer already sets IPAC
  bit 10 on them).
* **Sums**: ``sep.sum_circle(data − back, x_ref, y_ref, r, err=rms, mask=M_phot, subpix=0)``, exact
  overlap, ``M_phot`` = all bits but 1 (SExtractor sources) and 11 (PSF sources)
  (:data:`MASK_PHOT` = 6141, the ZSDS "clean pixel" rule). Non-finite pixels are masked as well.
* **Flags** (``f_k_f``, uint8): sep's bits kept exactly as the reference gets them, plus bits 1
  and 64 set by us so that truncation and empty apertures are always visible (trap 14):

  ====  ======================  ==============================================================
  bit   name                    meaning
  ====  ======================  ==============================================================
  1     :data:`FLAG_OFFIMAGE`   ztfluigi: part of the aperture lies outside the image (exact
                                geometry). The sum is **not** rescaled: flux too low. Set even
                                where sep's own ``APER_TRUNC`` misses it.
  16    ``APER_TRUNC``          sep: aperture truncated by the image edge (as computed by sep in
                                the sky frame; not rescaled).
  32    ``APER_HASMASKED``      sep: masked pixels excluded; **flux rescaled** by q = in-image
                                area / unmasked area (sep's error by √q, see Errors).
  64    ``APER_ALLMASKED``      no usable pixel: flux and errors NaN (sep 1.4's ``sum_circle``
                                returns NaN with flag 32 or 16 only; we add 64).
  ====  ======================  ==============================================================

* **Errors** (trap 14): the reference's error is sep's background-only error,
  ``sqrt(q · Σ rms² × overlap)`` over unmasked pixels, with ``q`` = in-image area / unmasked area
  (1 without masked pixels), kept as ``f_k_ebkg``. ``f_k_e`` adds the source Poisson term through
  the gain (e⁻/DN, header ``GAIN``) and completes the mask rescaling (sep multiplies the variance
  by ``q`` while the flux it returns is ``q`` × the unmasked sum, whose variance is ``q²`` × …):
  ``f_k_e² = q · (f_k_ebkg² + max(f_k, 0) / GAIN)``, i.e. ``f_k_ebkg² + max(f_k, 0) / GAIN`` for
  every aperture without masked pixels. **Note** that the reference's column ``f_k_e`` is
  background-only, ours is not.
* **Positions and footprint** (§6.2): ``x_raw, y_raw = wcs.all_world2pix(ra, dec, 0)`` on the
  IPAC TPV WCS; a star is kept iff ``0 ≤ x_ref ≤ ncols`` and ``0 ≤ y_ref ≤ nrows`` (inclusive, as
  the reference: asymmetric by half a pixel with respect to the pixel edges −0.5 … n − 0.5, i.e.
  ``−1 ≤ x_raw ≤ ncols − 1``).
* **Isolation** (trap 16): a star is isolated iff no *other* catalogue source of any magnitude
  lies within 20″. The reference only looks among in-footprint sources, so stars at the quadrant
  edge miss their neighbours beyond it; we look among *all* sources the caller passes, who
  should pass the cone of the quadrant plus a margin ≥ the isolation radius
  (``isolation_scope="footprint"`` reproduces the reference).
* **Catalogue** (trap 15): ``ra, dec`` are the epoch-propagated positions in **float64** (the
  reference casts them to float32 and loses up to ≈ 55 mas). See :func:`catalogue_schema`.

* **Masks** are read in native byte order (a FITS big-endian mask is converted, not viewed).

Nothing here reads or writes files or imports luigi.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import sep
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from scipy.spatial import cKDTree

from ztfluigi import apertures

__all__ = [
    "APER_ALLMASKED",
    "APER_HASMASKED",
    "APER_TRUNC",
    "BACKGROUND_MESH",
    "CATALOGUE_COLUMNS",
    "FLAG_OFFIMAGE",
    "FLAG_SATURATED",
    "GAIA_COLUMNS",
    "ISOLATION_ARCSEC",
    "MASK_ALL",
    "MASK_PHOT",
    "MASK_SATURATED",
    "RADII",
    "PhotometrySpec",
    "aperture_photometry",
    "background",
    "catalogue_schema",
    "catalogue_table",
    "in_footprint",
    "ipac_to_raw",
    "isolation",
    "photometry_catalogue",
    "photometry_metadata",
    "positions",
    "quadrant_background",
    "quadrant_wcs",
    "raw_to_ipac",
    "raw_to_ref",
    "ref_to_raw",
    "star_mask",
    "star_mask_radius",
    "to_sky",
]

MASK_ALL = 0b1_1111_1111_1111
"""IPAC ``mskimg`` bits 0–12 (8191): the background mask of the reference (source bits included)."""

MASK_PHOT = MASK_ALL & ~((1 << 1) | (1 << 11))
"""6141: every IPAC bit but 1 (SExtractor source) and 11 (PSF source): pixels excluded from sums."""

RADII = (3, 4, 5, 6, 7, 8, 9, 10, 11, 12)
"""Aperture radii (pixels) of the production configuration (``config.yml`` ``aper_params``)."""

BACKGROUND_MESH = (192, 220)
"""sep background mesh ``(bw, bh)`` in pixels (width along x, height along y), as the reference."""

ISOLATION_ARCSEC = 20.0
"""Isolation radius (``seplimit``) of the reference, arcseconds."""

FLAG_OFFIMAGE = 0x01
"""ztfluigi flag: part of the aperture is outside the image (exact geometry, any edge)."""

FLAG_SATURATED = 0x02
"""ztfluigi flag: a saturated pixel (IPAC bit 8 or above the header's ``SATURATE``) lies inside
the aperture circle; the flux is the unmasked sum, **not** rescaled (a lower bound)."""

MASK_SATURATED = 1 << 8
"""IPAC ``mskimg`` bit 8 (SATURATED)."""

APER_TRUNC = int(sep.APER_TRUNC)  # 16
APER_HASMASKED = int(sep.APER_HASMASKED)  # 32
APER_ALLMASKED = int(sep.APER_ALLMASKED)  # 64

GAIA_COLUMNS = (
    "source_id",
    "ra",
    "dec",
    "phot_g_mean_mag",
    "phot_bp_mean_mag",
    "phot_rp_mean_mag",
)
"""Reference-catalogue columns copied into the aperture catalogue."""

_MAGS = GAIA_COLUMNS[3:]

CATALOGUE_COLUMNS = {
    "source_id": "Gaia DR3 source_id",
    "ra": "right ascension at the exposure epoch (deg, ICRS, float64)",
    "dec": "declination at the exposure epoch (deg, ICRS, float64)",
    "phot_g_mean_mag": "Gaia G magnitude",
    "phot_bp_mean_mag": "Gaia BP magnitude (NaN if absent)",
    "phot_rp_mean_mag": "Gaia RP magnitude (NaN if absent)",
    "x": "0-based column in the 180°-rotated (reference 'sky') frame: ncols − 1 − x_raw",
    "y": "0-based row in the 180°-rotated (reference 'sky') frame: nrows − 1 − y_raw",
    "x_ipac": "1-based FITS column of the IPAC/raw image: x_raw + 1 = ncols − x",
    "y_ipac": "1-based FITS row of the IPAC/raw image: y_raw + 1 = nrows − y",
    "isolated": "no other catalogue source (any magnitude) within the isolation radius",
    "f_k": "aperture sum of the background-subtracted image, radius RADII[k] (DN)",
    "f_k_e": "error of f_k: background rms and source Poisson noise (DN)",
    "f_k_ebkg": "background-only error of f_k, the reference's f_k_e (DN)",
    "f_k_f": "flags of f_k (metadata flag_bits): 1 off-image, 2 saturated (not rescaled), "
    "16 truncated, 32 masked (rescaled), 64 no pixel",
    "r_k": "aperture radius k (pixels), constant per column",
}
"""Column → description of the aperture catalogue (``k`` = 0-based index into the radii)."""

XY_CONVENTION = (
    "x,y: 0-based pixel centres in the 180-degree-rotated (ztfimg 'sky', ztfin2p3) frame, "
    "x = ncols-1-x_raw, y = nrows-1-y_raw; x_ipac,y_ipac: 1-based FITS pixel coordinates of the "
    "raw/IPAC-oriented sciimg, x_ipac = x_raw+1 = ncols-x, y_ipac = y_raw+1 = nrows-y"
)

FrameName = Literal["sky", "raw"]
"""Orientation in which sep is called: the reference's 180°-rotated "sky" frame or as stored."""

APERTURE_ENGINES = ("exact", "sep")
BACKGROUNDS = ("starmasked", "sep")


@dataclass(frozen=True)
class PhotometrySpec:
    """How a quadrant's aperture photometry is made, recorded in the catalogue's metadata.

    The default is ztfluigi's improved path; :meth:`reference` is the reference's (ztfin2p3 +
    sep, with ztfluigi's additions of flags 1/64 and the Poisson error term), kept bit for bit.

    * ``apertures``: ``"exact"`` — one pass over each stamp for all radii
      (:func:`ztfluigi.apertures.circular_apertures`, equal to sep / photutils exact to
      ≤ 1e-12 of Σ|pixel × overlap|) with exact flags: 1 and 16 where the circle leaves the image,
      32 only where a masked pixel lies inside the circle (sep also sets it for masked pixels
      just outside); ``"sep"`` — ``sep.sum_circle`` per radius in the reference's sky frame
      (sep's 16 and 32).
    * ``background``: ``"starmasked"`` — sep's mesh background in the raw frame with every known
      reference star masked too (disk of :func:`star_mask_radius` by Gaia G), removing the light
      of stars outside the IPAC source mask that biases sep's estimate high (12 px blank-sky sums
      −13 to −42 DN on synthetic nights); ``"sep"`` — the reference's (IPAC mask only, sky frame).
    * ``saturation``: flag 2 for apertures with a saturated pixel (IPAC bit 8 or a pixel above
      the header's ``SATURATE``), whose flux is then the unmasked sum, not rescaled; pixels above
      ``SATURATE`` are masked (needs ``apertures="exact"``).
    * ``star_mask_*``: the background star mask: radius ``r20 · 10^(slope · (20 − G))`` px,
      clipped to ``[rmin, rmax]`` (a Moffat β = 2.5 star's wing falls below a fixed surface
      brightness at a radius ∝ flux^(1/5), i.e. slope 0.08); G missing → ``rmin``; disks are
      painted brightest first, leaving out stars in a background mesh cell already more than
      ``max_fraction`` masked (IPAC mask included): dense fields keep enough sky for the mesh.
    """

    apertures: str = "exact"
    background: str = "starmasked"
    saturation: bool = True
    star_mask_r20: float = 8.0  #: px, mask radius of a G = 20 star
    star_mask_slope: float = 0.08  #: dex of radius per magnitude
    star_mask_rmin: float = 3.0  #: px
    star_mask_rmax: float = 40.0  #: px
    star_mask_max_fraction: float = 0.4  #: of a background mesh cell's pixels

    def __post_init__(self) -> None:
        if self.apertures not in APERTURE_ENGINES:
            raise ValueError(f"apertures must be one of {APERTURE_ENGINES}: {self.apertures!r}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}: {self.background!r}")
        if self.saturation and self.apertures != "exact":
            raise ValueError("saturation flags need apertures='exact'")
        if not 0 < self.star_mask_rmin <= self.star_mask_rmax:
            raise ValueError("star mask radii must satisfy 0 < rmin <= rmax")
        if not 0 < self.star_mask_max_fraction <= 1:
            raise ValueError("star_mask_max_fraction must be in (0, 1]")

    @classmethod
    def reference(cls) -> PhotometrySpec:
        """The reference's photometry (sep sums and background), as ztfluigi ≤ #14 made it."""
        return cls(apertures="sep", background="sep", saturation=False)

    def header_cards(self) -> list[tuple[str, object, str]]:
        """FITS-style cards describing the photometry (provenance of every catalogue)."""
        return [
            ("PHAPER", self.apertures, "aperture sums: exact one-pass kernel or sep"),
            ("PHBACK", self.background, "background: sep mesh, star-masked or as reference"),
            ("PHSATUR", self.saturation, "saturated apertures flagged (2), not rescaled"),
            ("PHSMR20", self.star_mask_r20, "[px] background star mask radius at G = 20"),
            ("PHSMSLP", self.star_mask_slope, "[dex/mag] star mask radius slope in G"),
            ("PHSMRMIN", self.star_mask_rmin, "[px] smallest star mask radius"),
            ("PHSMRMAX", self.star_mask_rmax, "[px] largest star mask radius"),
            ("PHSMFRAC", self.star_mask_max_fraction, "star mask: max masked fraction of a cell"),
        ]

    def metadata(self, prefix: str = "photometry") -> dict[str, str]:
        """The cards as parquet key-value strings ``{prefix.KEYWORD: value}``."""
        return {f"{prefix}.{k}": str(v) for k, v, _ in self.header_cards()}


# ------------------------------------------------------------------------------------------
# Frames and positions
# ------------------------------------------------------------------------------------------


def to_sky(array: np.ndarray) -> np.ndarray:
    """Rotate an image by 180° (raw ↔ ztfimg "sky" orientation), as a C-contiguous copy.

    The rotation is its own inverse.
    """
    return np.ascontiguousarray(np.asarray(array)[::-1, ::-1])


def raw_to_ref(
    x_raw: np.ndarray, y_raw: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """0-based raw-frame coordinates → the reference's 180°-rotated 0-based frame.

    Parameters
    ----------
    x_raw, y_raw : array_like
        0-based pixel coordinates in the array as stored (raw/IPAC orientation).
    shape : (nrows, ncols)
        Shape of the quadrant array.

    Returns
    -------
    x_ref, y_ref : ndarray
        ``ncols − 1 − x_raw``, ``nrows − 1 − y_raw`` (float64).
    """
    nrows, ncols = shape
    return ncols - 1.0 - np.asarray(x_raw, float), nrows - 1.0 - np.asarray(y_raw, float)


def ref_to_raw(
    x_ref: np.ndarray, y_ref: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`raw_to_ref` (the same formula: a 180° rotation is an involution)."""
    return raw_to_ref(x_ref, y_ref, shape)


def raw_to_ipac(x_raw: np.ndarray, y_raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based raw-frame coordinates → 1-based IPAC/FITS coordinates (``x_raw + 1``)."""
    return np.asarray(x_raw, float) + 1.0, np.asarray(y_raw, float) + 1.0


def ipac_to_raw(x_ipac: np.ndarray, y_ipac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based IPAC/FITS coordinates → 0-based raw-frame coordinates (``x_ipac − 1``)."""
    return np.asarray(x_ipac, float) - 1.0, np.asarray(y_ipac, float) - 1.0


def quadrant_wcs(wcs_or_header: WCS | fits.Header) -> WCS:
    """The 2-d WCS of a quadrant header (astropy's fix-up warnings silenced); a WCS as is."""
    if isinstance(wcs_or_header, WCS):
        return wcs_or_header
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(wcs_or_header, naxis=2)


def positions(
    wcs: WCS | fits.Header, ra: np.ndarray, dec: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions of sky coordinates in the raw/IPAC-oriented quadrant.

    Parameters
    ----------
    wcs : astropy.wcs.WCS or astropy.io.fits.Header
        The quadrant's (IPAC TPV) WCS, or a header holding it.
    ra, dec : array_like
        ICRS coordinates (degrees), already at the exposure epoch.

    Returns
    -------
    x_raw, y_raw : ndarray
        0-based pixel coordinates of the array as stored (``wcs.all_world2pix(ra, dec, 0)``),
        float64; NaN where the WCS cannot invert (e.g. far from the tangent point). Use
        :func:`raw_to_ref` and :func:`raw_to_ipac` for the other frames.
    """
    ra = np.atleast_1d(np.asarray(ra, dtype=np.float64))
    dec = np.atleast_1d(np.asarray(dec, dtype=np.float64))
    if ra.size == 0:
        return np.empty(0), np.empty(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        x, y = quadrant_wcs(wcs).all_world2pix(ra, dec, 0, quiet=True)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def in_footprint(x_ref: np.ndarray, y_ref: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The reference's in-quadrant selection, in the reference frame.

    ``0 ≤ x_ref ≤ ncols`` and ``0 ≤ y_ref ≤ nrows``, both inclusive (ztfin2p3 ``catalog.py``).
    The pixel edges are at −0.5 and n − 0.5, so the rule drops centres in the first half pixel
    beyond the low edges of the rotated frame (i.e. the high edges of the raw frame) and keeps
    centres up to half a pixel beyond the other edges. Non-finite positions are outside.

    Parameters
    ----------
    x_ref, y_ref : array_like
        0-based coordinates in the reference's 180°-rotated frame (:func:`raw_to_ref`).
    shape : (nrows, ncols)
        Shape of the quadrant array.

    Returns
    -------
    ndarray of bool
    """
    nrows, ncols = shape
    x_ref = np.asarray(x_ref, dtype=np.float64)
    y_ref = np.asarray(y_ref, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (x_ref >= 0) & (x_ref <= ncols) & (y_ref >= 0) & (y_ref <= nrows)


# ------------------------------------------------------------------------------------------
# Isolation
# ------------------------------------------------------------------------------------------


def _unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    cos_dec = np.cos(dec)
    return np.column_stack([cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)])


def isolation(
    ra: np.ndarray, dec: np.ndarray, radius_arcsec: float = ISOLATION_ARCSEC
) -> np.ndarray:
    """Whether each source has no *other* source within ``radius_arcsec``.

    Neighbours of any magnitude count, an exact duplicate position counts as a neighbour, and a
    separation equal to the radius counts as "within" (as astropy ``search_around_sky``). The
    search is among the given sources only: pass a catalogue extending beyond the quadrant by at
    least the radius so that stars at the edge see their neighbours (the reference only used
    the in-footprint sources, trap 16). Sources with non-finite coordinates are reported
    not isolated and are nobody's neighbour.

    Implementation: a KD-tree on unit vectors with the chord ``2 sin(θ/2)``, O(N log N)
    (≈ 20 ms for 20 000 sources).

    Parameters
    ----------
    ra, dec : array_like
        Coordinates in degrees.
    radius_arcsec : float
        Isolation radius.

    Returns
    -------
    ndarray of bool
    """
    ra = np.atleast_1d(np.asarray(ra, dtype=np.float64))
    dec = np.atleast_1d(np.asarray(dec, dtype=np.float64))
    if ra.shape != dec.shape:
        raise ValueError(f"ra and dec differ in shape: {ra.shape} != {dec.shape}")
    out = np.zeros(ra.shape, dtype=bool)
    good = np.isfinite(ra) & np.isfinite(dec)
    if not good.any():
        return out
    xyz = _unit_vectors(ra[good], dec[good])
    chord = 2.0 * math.sin(math.radians(radius_arcsec / 3600.0) / 2.0)
    # Allow for rounding of the unit vectors (≈1e-16) so that "≤ radius" is honoured.
    counts = cKDTree(xyz).query_ball_point(xyz, chord * (1 + 1e-12), return_length=True)
    out[good] = np.asarray(counts) <= 1  # the point itself is always found
    return out


# ------------------------------------------------------------------------------------------
# Background and sums (sep)
# ------------------------------------------------------------------------------------------


def _float32(array: np.ndarray) -> np.ndarray:
    """C-contiguous native-endian float32 (what sep needs); no copy when already so."""
    return np.ascontiguousarray(array, dtype=np.float32)


def _check_frame(frame: FrameName) -> None:
    if frame not in ("sky", "raw"):
        raise ValueError(f"frame must be 'sky' or 'raw', not {frame!r}")


def _bad_pixels(image: np.ndarray, mask: np.ndarray | None, bits: int) -> np.ndarray:
    """Boolean mask: IPAC ``bits`` set, or non-finite pixel value."""
    bad = ~np.isfinite(image)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != image.shape:
            raise ValueError(f"mask shape {mask.shape} != image shape {image.shape}")
        if mask.dtype.kind in "iu":  # same-width unsigned view: no 64-bit copy of the mask
            # native byte order first: a FITS (big-endian) mask viewed as native unsigned
            # would read swapped bytes (bit 1 as bit 9)
            native = mask.astype(mask.dtype.newbyteorder("="), copy=False)
            unsigned = native.view(f"u{mask.dtype.itemsize}")
            width_bits = unsigned.dtype.type(bits & ((1 << 8 * mask.dtype.itemsize) - 1))
            bad |= (unsigned & width_bits) != 0
        else:
            bad |= (mask.astype(np.int64) & bits) != 0
    return bad


def _sep_background(
    data: np.ndarray, bad: np.ndarray, bw: int, bh: int, nonfinite: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """sep background and rms maps of ``data`` as passed (no rotation); ``nonfinite``: whether
    ``data`` has non-finite pixels, when the caller knows."""
    data = _float32(data)
    if nonfinite is None:
        nonfinite = not np.isfinite(data).all()
    if nonfinite:  # masked anyway; keep NaN out of sep's histograms
        data = np.where(np.isfinite(data), data, np.float32(0.0))
    bkg = sep.Background(data, mask=np.ascontiguousarray(bad), bw=int(bw), bh=int(bh))
    return bkg.back(), bkg.rms()


def background(
    image: np.ndarray,
    mask: np.ndarray | None,
    bw: int = BACKGROUND_MESH[0],
    bh: int = BACKGROUND_MESH[1],
    *,
    frame: FrameName = "sky",
) -> tuple[np.ndarray, np.ndarray]:
    """sep background and background-rms maps of a raw-oriented quadrant.

    ``sep.Background(image, mask=M, bw, bh)`` with sep's defaults ``fw = fh = 3``,
    ``fthresh = 0``, ``M`` = any IPAC bit 0–12 (:data:`MASK_ALL`, as the reference) or a
    non-finite pixel.

    Parameters
    ----------
    image : ndarray
        Science quadrant (DN), raw/IPAC orientation, any float dtype/byte order.
    mask : ndarray of int or None
        IPAC bit mask of the quadrant (raw orientation).
    bw, bh : int
        Mesh cell width (along x, columns) and height (along y, rows), pixels.
    frame : {"sky", "raw"}
        ``"sky"`` (default): compute on the 180°-rotated array, like the reference, and rotate
        the maps back, so that the mesh alignment and hence the numbers match ztfin2p3 (sep's
        mesh starts at pixel (0, 0); the frames differ when the size is not a multiple of the
        mesh). ``"raw"``: compute on the array as stored.

    Returns
    -------
    back, rms : ndarray of float32
        Maps in the orientation of ``image`` (raw).
    """
    _check_frame(frame)
    image = np.asarray(image)
    bad = _bad_pixels(image, mask, MASK_ALL)
    if frame == "raw":
        return _sep_background(image, bad, bw, bh)
    back, rms = _sep_background(to_sky(image), to_sky(bad), bw, bh)
    return to_sky(back), to_sky(rms)


def star_mask_radius(gmag: np.ndarray, spec: PhotometrySpec | None = None) -> np.ndarray:
    """Background star-mask radius (pixels) of stars of Gaia G magnitude ``gmag``.

    ``r20 · 10^(slope · (20 − G))`` clipped to ``[rmin, rmax]`` (:class:`PhotometrySpec`; by
    default 8 px at G = 20, 6.6 px at G = 21, 12.7 px at G = 17.5, 20 px at G = 15, 40 px at
    G ≤ 11.3); a missing G gives ``rmin``.
    """
    spec = PhotometrySpec() if spec is None else spec
    g = np.asarray(gmag, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        r = spec.star_mask_r20 * 10.0 ** (spec.star_mask_slope * (20.0 - g))
    r = np.clip(r, spec.star_mask_rmin, spec.star_mask_rmax)
    return np.where(np.isfinite(g), r, spec.star_mask_rmin)


def star_mask(
    shape: tuple[int, int],
    x_raw: np.ndarray,
    y_raw: np.ndarray,
    gmag: np.ndarray,
    spec: PhotometrySpec | None = None,
    *,
    base: np.ndarray | None = None,
    mesh: tuple[int, int] = BACKGROUND_MESH,
    in_place: bool = False,
) -> np.ndarray:
    """``base`` (e.g. the IPAC mask) plus the pixels within :func:`star_mask_radius` of the
    reference stars (raw frame, bool; ``in_place``: painted into ``base``, a bool array).

    Stars off the image still mask the pixels their disk reaches. Disks are painted brightest
    first; a star is left out once the background mesh cell (``mesh`` = (bw, bh) px from pixel
    (0, 0)) holding it has more than ``spec.star_mask_max_fraction`` of its pixels masked
    (``base`` included), so that sep keeps every cell (it drops cells less than half usable).
    """
    spec = PhotometrySpec() if spec is None else spec
    g = np.asarray(gmag, dtype=np.float64)
    order = np.argsort(np.where(np.isfinite(g), g, np.inf), kind="stable")
    radius = star_mask_radius(g, spec)[order]
    out, _ = apertures.disk_mask(
        shape, np.asarray(x_raw, float)[order], np.asarray(y_raw, float)[order], radius,
        spec.star_mask_max_fraction, base=base, cell=mesh, in_place=in_place,
    )  # fmt: skip
    return out


def _header_saturate(header: fits.Header | Mapping[str, object] | None) -> float:
    """The header's ``SATURATE`` (DN of this image), or +inf when absent or not a number."""
    if header is None or "SATURATE" not in header:
        return math.inf
    try:
        value = float(header["SATURATE"])
    except (TypeError, ValueError):
        return math.inf
    return value if math.isfinite(value) else math.inf


def quadrant_background(
    image: np.ndarray,
    mask: np.ndarray | None,
    x_raw: np.ndarray,
    y_raw: np.ndarray,
    gmag: np.ndarray,
    spec: PhotometrySpec | None = None,
    *,
    saturate: float = math.inf,
    mesh: tuple[int, int] = BACKGROUND_MESH,
) -> tuple[np.ndarray, np.ndarray]:
    """Background and rms maps (DN, float32, raw orientation) of a quadrant under ``spec``.

    ``"sep"``: :func:`background` (the reference's, in its sky frame). ``"starmasked"``: the same
    sep mesh estimator on the raw-oriented array with, besides IPAC bits 0–12 and non-finite
    pixels, the :func:`star_mask` of the reference stars at ``(x_raw, y_raw)`` (0-based raw
    frame, all the stars passed, on or off the image) and, with ``spec.saturation``, pixels above
    ``saturate`` masked.
    """
    spec = PhotometrySpec() if spec is None else spec
    image = np.asarray(image)
    if spec.background == "sep":
        return background(image, mask, *mesh)
    # one pass: IPAC bits, non-finite and saturated pixels; the star disks painted into it
    level = saturate if spec.saturation and math.isfinite(saturate) else math.inf
    bad, nonfinite = apertures.background_mask(image, mask, MASK_ALL, level)
    bad = star_mask(image.shape, x_raw, y_raw, gmag, spec, base=bad, mesh=mesh, in_place=True)
    return _sep_background(image, bad, *mesh, nonfinite=nonfinite)


def _radii_array(radii: Sequence[float]) -> np.ndarray:
    r = np.atleast_1d(np.asarray(radii, dtype=np.float64))
    if r.ndim != 1 or r.size == 0 or not np.all(np.isfinite(r)) or np.any(r <= 0):
        raise ValueError(f"radii must be a non-empty sequence of positive numbers: {radii!r}")
    return r


def _sum_apertures(
    data: np.ndarray,
    bad: np.ndarray,
    err: np.ndarray | float,
    x: np.ndarray,
    y: np.ndarray,
    radii: np.ndarray,
    gain: float | None,
) -> dict[str, np.ndarray]:
    """sep.sum_circle on arrays as passed, coordinates in their frame; see aperture_photometry."""
    nrows, ncols = data.shape
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    r = radii[:, None]
    if x.size == 0:
        empty = np.empty((radii.size, 0))
        return {
            "flux": empty,
            "flux_err": empty.copy(),
            "flux_err_bkg": empty.copy(),
            "flag": np.empty((radii.size, 0), dtype=np.uint8),
        }
    if np.ndim(err) == 0:
        err = np.full(data.shape, float(err), dtype=np.float32)
    # Non-finite centres: far off the image (sep then reports no usable pixel, flags 1/16/64).
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = np.where(finite, x, -1e6), np.where(finite, y, -1e6)
    flux, ebkg, sflag = sep.sum_circle(
        _float32(data),
        x,
        y,
        r,
        err=_float32(err),
        mask=np.ascontiguousarray(bad),
        bkgann=None,
        subpix=0,
    )
    flag = np.asarray(sflag).astype(np.uint8)
    off = (x - r < -0.5) | (x + r > ncols - 0.5) | (y - r < -0.5) | (y + r > nrows - 0.5)
    flag |= np.where(off, FLAG_OFFIMAGE, 0).astype(np.uint8)
    nopix = ~np.isfinite(flux)
    flag |= np.where(nopix, APER_ALLMASKED, 0).astype(np.uint8)
    ebkg = np.where(nopix, np.nan, ebkg)
    var = ebkg**2
    if gain is not None:
        if not gain > 0:
            raise ValueError(f"gain must be positive (e-/DN), not {gain!r}")
        var = var + np.maximum(np.nan_to_num(flux, nan=0.0), 0.0) / gain
    # sep multiplies the *variance* by the rescaling factor q = in-image / unmasked area; the
    # rescaled sum q·S has variance q²·Var(S), so the full error needs one more factor q.
    var = var * _mask_rescaling(bad, x, y, radii, flag)
    return {"flux": flux, "flux_err": np.sqrt(var), "flux_err_bkg": ebkg, "flag": flag}


def _mask_rescaling(
    bad: np.ndarray, x: np.ndarray, y: np.ndarray, radii: np.ndarray, flag: np.ndarray
) -> np.ndarray:
    """sep's mask rescaling factor (in-image area / unmasked area) per aperture; 1 if unmasked."""
    q = np.ones(flag.shape)
    hit = np.flatnonzero(np.any((flag & APER_HASMASKED) != 0, axis=0))
    if hit.size == 0:
        return q
    r = radii[:, None]
    xs, ys = x[hit], y[hit]
    ones = np.ones(bad.shape, dtype=np.float32)
    area_in = sep.sum_circle(ones, xs, ys, r, subpix=0)[0]
    area_bad = sep.sum_circle(_float32(bad), xs, ys, r, subpix=0)[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        q[:, hit] = np.where(area_in > area_bad, area_in / (area_in - area_bad), np.nan)
    return q


def _sum_exact(
    image: np.ndarray,
    back: np.ndarray | None,
    mask: np.ndarray | None,
    err: np.ndarray | float,
    x_raw: np.ndarray,
    y_raw: np.ndarray,
    radii: np.ndarray,
    gain: float | None,
    saturation: bool,
    saturate: float,
) -> dict[str, np.ndarray]:
    """The ``"exact"`` engine on raw-oriented arrays (see :class:`PhotometrySpec`)."""
    nrows, ncols = image.shape
    x = np.atleast_1d(np.asarray(x_raw, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y_raw, dtype=np.float64))
    res = apertures.circular_apertures(
        image, x, y, radii, back=back, err=err, mask=mask, bits=MASK_PHOT,
        saturated_bits=MASK_SATURATED if saturation else 0,
        saturate=saturate if saturation else math.inf,
    )  # fmt: skip
    r = radii[:, None]
    with np.errstate(invalid="ignore"):
        off = (x - r < -0.5) | (x + r > ncols - 0.5) | (y - r < -0.5) | (y + r > nrows - 0.5)
    off |= ~(np.isfinite(x) & np.isfinite(y))
    saturated = res.n_saturated > 0
    usable = res.area - res.masked_area
    nopix = ~(usable > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # sep's rescaling q = in-image / unmasked area, except for saturated apertures
        q = np.where(saturated, 1.0, res.area / usable)
        flux = np.where(nopix, np.nan, res.sum * q)
        var_bkg = np.where(nopix, np.nan, res.var * q)
    flag = np.zeros(flux.shape, np.uint8)
    flag |= np.where(off, FLAG_OFFIMAGE | APER_TRUNC, 0).astype(np.uint8)
    flag |= np.where(res.n_masked > 0, APER_HASMASKED, 0).astype(np.uint8)
    flag |= np.where(saturated, FLAG_SATURATED, 0).astype(np.uint8)
    flag |= np.where(nopix, APER_ALLMASKED, 0).astype(np.uint8)
    var = var_bkg
    if gain is not None:
        if not gain > 0:
            raise ValueError(f"gain must be positive (e-/DN), not {gain!r}")
        var = var + np.maximum(np.nan_to_num(flux, nan=0.0), 0.0) / gain
    var = var * q  # q·S has variance q²·Var(S) (see _sum_apertures)
    return {"flux": flux, "flux_err": np.sqrt(var), "flux_err_bkg": np.sqrt(var_bkg), "flag": flag}


def aperture_photometry(
    image_bkgsub: np.ndarray,
    mask: np.ndarray | None,
    x_raw: np.ndarray,
    y_raw: np.ndarray,
    radii: Sequence[float] = RADII,
    rms: np.ndarray | float = 0.0,
    gain: float | None = None,
    *,
    frame: FrameName = "sky",
    spec: PhotometrySpec | None = None,
    saturate: float = math.inf,
) -> dict[str, np.ndarray]:
    """Exact circular-aperture sums (sep) on a background-subtracted raw-oriented quadrant.

    ``sep.sum_circle(image_bkgsub, x, y, radii[:, None], err=rms, mask=M, subpix=0)`` with ``M`` =
    IPAC bits of :data:`MASK_PHOT` (6141) or a non-finite pixel. Masked pixels are excluded and
    sep rescales flux and error by in-image area / unmasked area (flag 32); apertures crossing
    the edge are *not* rescaled (flags 1 and/or 16). See the module docstring for all flags.

    Parameters
    ----------
    image_bkgsub : ndarray
        Background-subtracted image (DN), raw/IPAC orientation.
    mask : ndarray of int or None
        IPAC bit mask (raw orientation).
    x_raw, y_raw : array_like, shape (n,)
        0-based raw-frame aperture centres (:func:`positions`); pixel centres are integers.
    radii : sequence of float
        Aperture radii (pixels).
    rms : ndarray or float
        Per-pixel background rms (DN), raw orientation (:func:`background`).
    gain : float or None
        Gain (e⁻/DN) for the source Poisson term; None: no Poisson term (the reference).
    frame : {"sky", "raw"}
        Orientation in which sep is called: ``"sky"`` (default) rotates arrays and coordinates
        by 180° as the reference, so that sep's ``APER_TRUNC`` flags match it bit for bit;
        ``"raw"`` calls sep on the arrays as given. Sums and errors agree either way. The
        ``"exact"`` engine ignores it (raw frame, exact flags).
    spec : PhotometrySpec, optional
        Engine and saturation handling; default :meth:`PhotometrySpec.reference` (sep), so that
        this function keeps its behaviour; pass ``PhotometrySpec()`` for the exact engine.
    saturate : float
        With ``spec.saturation``: pixels of ``image_bkgsub`` above this value (DN) are saturated.

    Returns
    -------
    dict of ndarray, each of shape (len(radii), n)
        ``flux`` (DN), ``flux_err`` (background + Poisson, DN), ``flux_err_bkg`` (background
        only, the reference's error, DN), ``flag`` (uint8).
    """
    _check_frame(frame)
    spec = PhotometrySpec.reference() if spec is None else spec
    image_bkgsub = np.asarray(image_bkgsub)
    if image_bkgsub.ndim != 2:
        raise ValueError(f"image must be 2-d, got shape {image_bkgsub.shape}")
    r = _radii_array(radii)
    x_raw = np.atleast_1d(np.asarray(x_raw, dtype=np.float64))
    y_raw = np.atleast_1d(np.asarray(y_raw, dtype=np.float64))
    if np.ndim(rms) != 0 and np.shape(rms) != image_bkgsub.shape:
        raise ValueError(f"rms shape {np.shape(rms)} != image shape {image_bkgsub.shape}")
    if spec.apertures == "exact":
        return _sum_exact(image_bkgsub, None, mask, rms, x_raw, y_raw, r, gain, spec.saturation,
                          saturate)  # fmt: skip
    bad = _bad_pixels(image_bkgsub, mask, MASK_PHOT)
    if frame == "raw":
        return _sum_apertures(image_bkgsub, bad, rms, x_raw, y_raw, r, gain)
    x_ref, y_ref = raw_to_ref(x_raw, y_raw, image_bkgsub.shape)
    err = rms if np.ndim(rms) == 0 else to_sky(rms)
    return _sum_apertures(to_sky(image_bkgsub), to_sky(bad), err, x_ref, y_ref, r, gain)


# ------------------------------------------------------------------------------------------
# Catalogue table
# ------------------------------------------------------------------------------------------


def _radius_type(radii: np.ndarray) -> pa.DataType:
    integral = np.all(radii == np.round(radii)) and np.all(radii <= 255)
    return pa.uint8() if integral else pa.float32()


def catalogue_schema(
    radii: Sequence[float] = RADII, metadata: Mapping[str, str] | None = None
) -> pa.Schema:
    """Arrow schema of the aperture catalogue for ``radii``.

    Columns, in order (``k`` = 0 … len(radii) − 1, the index into ``radii``):

    ``source_id`` int64; ``ra``, ``dec`` float64 (epoch-propagated, degrees);
    ``phot_g_mean_mag``, ``phot_bp_mean_mag``, ``phot_rp_mean_mag`` float32; ``x``, ``y`` float32
    (0-based, reference 180°-rotated frame); ``x_ipac``, ``y_ipac`` float32 (1-based, IPAC raw
    frame); ``isolated`` bool; ``f_k`` float32 flux (DN); ``f_k_e`` float32 error with Poisson
    term (DN); ``f_k_ebkg`` float32 background-only error (DN, the reference's ``f_k_e``);
    ``f_k_f`` uint8 flags; ``r_k`` radius in pixels, uint8 as the reference (float32 if a
    radius is not an integer ≤ 255). Descriptions: :data:`CATALOGUE_COLUMNS`.
    """
    r = _radii_array(radii)
    fields = [
        pa.field("source_id", pa.int64()),
        pa.field("ra", pa.float64()),
        pa.field("dec", pa.float64()),
        *[pa.field(m, pa.float32()) for m in _MAGS],
        pa.field("x", pa.float32()),
        pa.field("y", pa.float32()),
        pa.field("x_ipac", pa.float32()),
        pa.field("y_ipac", pa.float32()),
        pa.field("isolated", pa.bool_()),
    ]
    k = range(r.size)
    fields += [pa.field(f"f_{i}", pa.float32()) for i in k]
    fields += [pa.field(f"f_{i}_e", pa.float32()) for i in k]
    fields += [pa.field(f"f_{i}_ebkg", pa.float32()) for i in k]
    fields += [pa.field(f"f_{i}_f", pa.uint8()) for i in k]
    fields += [pa.field(f"r_{i}", _radius_type(r)) for i in k]
    return pa.schema(fields, metadata=dict(metadata) if metadata else None)


def _column(stars: pa.Table | Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if isinstance(stars, pa.Table):
        if name not in stars.column_names:
            raise KeyError(f"reference catalogue lacks column {name!r}")
        col = stars.column(name)
        if pa.types.is_floating(col.type):
            return col.to_numpy()  # nulls → NaN
        if col.null_count:
            raise ValueError(f"reference catalogue column {name!r} has nulls")
        return col.to_numpy()
    if name not in stars:
        raise KeyError(f"reference catalogue lacks column {name!r}")
    return np.asarray(stars[name])


def _format_radius(r: float) -> int | float:
    return int(r) if float(r).is_integer() else float(r)


def catalogue_table(
    stars: pa.Table | Mapping[str, np.ndarray],
    x_raw: np.ndarray,
    y_raw: np.ndarray,
    shape: tuple[int, int],
    isolated: np.ndarray,
    phot: Mapping[str, np.ndarray],
    radii: Sequence[float] = RADII,
    metadata: Mapping[str, str] | None = None,
    *,
    spec: PhotometrySpec | None = None,
) -> pa.Table:
    """Assemble the aperture catalogue (schema :func:`catalogue_schema`).

    Parameters
    ----------
    stars : pyarrow.Table or mapping of arrays
        The catalogue rows measured, with the :data:`GAIA_COLUMNS` (``ra``/``dec`` at the epoch).
    x_raw, y_raw : array_like
        0-based raw-frame positions of the rows.
    shape : (nrows, ncols)
        Quadrant shape (for the reference frame).
    isolated : array_like of bool
        :func:`isolation` of the rows.
    phot : mapping
        Output of :func:`aperture_photometry` for the rows.
    radii : sequence of float
        The radii used for ``phot``.
    metadata : mapping of str to str, optional
        Caller's key-value metadata (provenance, epoch, …). Merged with this module's keys
        ``radii`` (JSON list, pixels), ``radii_unit``, ``xy_convention``, ``mask_bits`` (6141,
        photometry), ``mask_bits_background`` (8191), ``flag_bits``, ``error_model``,
        ``image_shape``; this module's keys take precedence. The columns' descriptions are not
        repeated in every file: they are :data:`CATALOGUE_COLUMNS` (and the README's table).
    spec : PhotometrySpec, optional
        The spec ``phot`` was made with (the flag descriptions depend on it); default the
        reference's.

    Returns
    -------
    pyarrow.Table
    """
    r = _radii_array(radii)
    x_raw = np.asarray(x_raw, dtype=np.float64)
    y_raw = np.asarray(y_raw, dtype=np.float64)
    n = x_raw.size
    for key in ("flux", "flux_err", "flux_err_bkg", "flag"):
        if np.shape(phot[key]) != (r.size, n):
            raise ValueError(
                f"phot[{key!r}] has shape {np.shape(phot[key])}, expected {(r.size, n)}"
            )
    x_ref, y_ref = raw_to_ref(x_raw, y_raw, shape)
    x_ipac, y_ipac = raw_to_ipac(x_raw, y_raw)
    meta = dict(metadata or {})
    meta.update(photometry_metadata(r, shape, spec))
    schema = catalogue_schema(r, meta)
    cols: dict[str, np.ndarray] = {
        "source_id": _column(stars, "source_id").astype(np.int64),
        "ra": _column(stars, "ra").astype(np.float64),
        "dec": _column(stars, "dec").astype(np.float64),
    }
    for m in _MAGS:
        cols[m] = _column(stars, m).astype(np.float32)
    cols |= {
        "x": x_ref,
        "y": y_ref,
        "x_ipac": x_ipac,
        "y_ipac": y_ipac,
        "isolated": np.asarray(isolated, dtype=bool),
    }
    for i in range(r.size):
        cols[f"f_{i}"] = phot["flux"][i]
    for i in range(r.size):
        cols[f"f_{i}_e"] = phot["flux_err"][i]
    for i in range(r.size):
        cols[f"f_{i}_ebkg"] = phot["flux_err_bkg"][i]
    for i in range(r.size):
        cols[f"f_{i}_f"] = phot["flag"][i]
    for i in range(r.size):
        cols[f"r_{i}"] = np.full(n, r[i])
    for name, values in cols.items():
        if len(values) != n:
            raise ValueError(f"column {name!r} has {len(values)} rows, expected {n}")
    arrays = [
        pa.array(np.asarray(cols[f.name]).astype(f.type.to_pandas_dtype()), type=f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _flag_bits(spec: PhotometrySpec) -> dict[str, str]:
    if spec.apertures == "sep":
        return {
            str(FLAG_OFFIMAGE): "aperture partly outside the image (exact); not rescaled",
            str(APER_TRUNC): "sep APER_TRUNC (as computed in the reference's sky frame)",
            str(APER_HASMASKED): "sep APER_HASMASKED: masked pixels, flux and error rescaled",
            str(APER_ALLMASKED): "no usable pixel: flux NaN",
        }
    bits = {
        str(FLAG_OFFIMAGE): "aperture partly outside the image (exact); not rescaled",
        str(APER_TRUNC): "truncated by the image edge (exact, same as 1); not rescaled",
        str(APER_HASMASKED): "masked pixel inside the circle: flux and error rescaled by "
        "in-image/unmasked area unless flag 2",
        str(APER_ALLMASKED): "no usable pixel: flux NaN",
    }
    if spec.saturation:
        bits[str(FLAG_SATURATED)] = (
            "saturated pixel inside the circle (IPAC bit 8 or > SATURATE): flux is the sum of "
            "the unmasked pixels, not rescaled (a lower bound)"
        )
    return dict(sorted(bits.items(), key=lambda kv: int(kv[0])))


def photometry_metadata(
    radii: Sequence[float], shape: tuple[int, int], spec: PhotometrySpec | None = None
) -> dict[str, str]:
    """This module's key-value metadata for a catalogue (see :func:`catalogue_table`)."""
    r = _radii_array(radii)
    spec = PhotometrySpec.reference() if spec is None else spec
    return {
        "radii": json.dumps([_format_radius(v) for v in r]),
        "radii_unit": "pixel",
        "xy_convention": XY_CONVENTION,
        "mask_bits": str(MASK_PHOT),
        "mask_bits_background": str(MASK_ALL),
        "flag_bits": json.dumps(_flag_bits(spec)),
        "error_model": "f_k_e^2 = f_k_ebkg^2 + max(f_k, 0)/GAIN; "
        "f_k_ebkg = sqrt(sum(rms^2 * overlap)) x mask rescaling (sep)",
        "image_shape": json.dumps([int(shape[0]), int(shape[1])]),
    }


# ------------------------------------------------------------------------------------------
# The whole chain for one quadrant
# ------------------------------------------------------------------------------------------


def _header_gain(header: fits.Header | Mapping[str, object]) -> float:
    if "GAIN" not in header:
        raise KeyError("science header has no GAIN keyword (e-/DN), needed for the Poisson term")
    gain = float(header["GAIN"])
    if not gain > 0:
        raise ValueError(f"science header GAIN must be positive, not {gain!r}")
    return gain


def photometry_catalogue(
    image: np.ndarray,
    mask: np.ndarray,
    header: fits.Header,
    refcat: pa.Table,
    radii: Sequence[float] = RADII,
    isolation_arcsec: float = ISOLATION_ARCSEC,
    *,
    isolation_scope: str = "catalogue",
    gain: float | None = None,
    mesh: tuple[int, int] = BACKGROUND_MESH,
    metadata: Mapping[str, str] | None = None,
    spec: PhotometrySpec | None = None,
    wcs: WCS | None = None,
) -> pa.Table:
    """Aperture catalogue of one science quadrant (background, positions, cut, isolation, sums).

    Parameters
    ----------
    image : ndarray
        Science quadrant (DN, float), raw/IPAC orientation.
    mask : ndarray of int
        IPAC bit mask of the quadrant, raw orientation.
    header : astropy.io.fits.Header
        Science header: the IPAC TPV WCS, ``GAIN`` (e⁻/DN) and, if known, ``SATURATE`` (DN).
    refcat : pyarrow.Table
        Reference catalogue with the :data:`GAIA_COLUMNS`, positions already at the exposure
        epoch; may extend beyond the quadrant (a margin ≥ ``isolation_arcsec`` is recommended;
        the star-masked background masks every star passed).
    radii : sequence of float
        Aperture radii (pixels).
    isolation_arcsec : float
        Isolation radius.
    isolation_scope : {"catalogue", "footprint"}
        Neighbours searched among all ``refcat`` rows (default) or, as the reference, among the
        in-footprint rows only.
    gain : float, optional
        Overrides the header's ``GAIN``.
    mesh : (bw, bh)
        sep background mesh.
    metadata : mapping of str to str, optional
        Caller's key-value metadata for the table (see :func:`catalogue_table`).
    spec : PhotometrySpec, optional
        How to measure; default ``PhotometrySpec()`` (exact one-pass sums, star-masked
        background, saturation flag). ``PhotometrySpec.reference()`` reproduces the reference.
    wcs : astropy.wcs.WCS, optional
        ``quadrant_wcs(header)`` when the caller has built it already (≈ 12 ms for a TPV
        header); default: built from ``header``.

    Returns
    -------
    pyarrow.Table
        One row per reference source inside the footprint (:func:`in_footprint`), in ``refcat``
        order; schema :func:`catalogue_schema`. Metadata also records ``background``, ``gain``,
        ``saturate``, ``isolation_arcsec``, ``isolation_scope``, ``sep_version`` and the spec
        (:meth:`PhotometrySpec.metadata`, keys ``photometry.*``).
    """
    if isolation_scope not in ("catalogue", "footprint"):
        raise ValueError(f"isolation_scope must be 'catalogue' or 'footprint': {isolation_scope!r}")
    spec = PhotometrySpec() if spec is None else spec
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-d, got shape {image.shape}")
    shape = image.shape
    r = _radii_array(radii)
    gain = _header_gain(header) if gain is None else float(gain)
    saturate = _header_saturate(header)
    bw, bh = mesh

    ra_all = _column(refcat, "ra").astype(np.float64)
    dec_all = _column(refcat, "dec").astype(np.float64)
    x_raw, y_raw = positions(header if wcs is None else wcs, ra_all, dec_all)
    x_ref, y_ref = raw_to_ref(x_raw, y_raw, shape)
    inside = in_footprint(x_ref, y_ref, shape)
    if isolation_scope == "catalogue":
        isolated = isolation(ra_all, dec_all, isolation_arcsec)[inside]
    else:
        isolated = isolation(ra_all[inside], dec_all[inside], isolation_arcsec)

    if spec.apertures == "sep":
        # Everything sep sees is in the reference's sky orientation (see module docstring).
        sky_image = to_sky(image)
        sky_mask = to_sky(np.asarray(mask))
        if spec.background == "sep":
            back, rms = _sep_background(
                sky_image, _bad_pixels(sky_image, sky_mask, MASK_ALL), bw, bh
            )
        else:
            back, rms = quadrant_background(image, mask, x_raw, y_raw, _column(refcat, _MAGS[0]),
                                            spec, saturate=saturate, mesh=mesh)  # fmt: skip
            back, rms = to_sky(back), to_sky(rms)
        sky_image = _float32(sky_image)
        sky_image -= back
        del back
        bad = _bad_pixels(sky_image, sky_mask, MASK_PHOT)
        phot = _sum_apertures(sky_image, bad, rms, x_ref[inside], y_ref[inside], r, gain)
    else:
        back, rms = quadrant_background(image, mask, x_raw, y_raw, _column(refcat, _MAGS[0]),
                                        spec, saturate=saturate, mesh=mesh)  # fmt: skip
        phot = _sum_exact(image, back, mask, rms, x_raw[inside], y_raw[inside], r, gain,
                          spec.saturation, saturate)  # fmt: skip

    if spec.background == "sep":
        described = (
            f"sep.Background bw={bw} bh={bh} fw=3 fh=3 fthresh=0, mask bits {MASK_ALL} "
            "and non-finite pixels, computed in the reference's sky (180-degree) frame"
        )
    else:
        described = (f"sep.Background bw={bw} bh={bh} fw=3 fh=3 fthresh=0, mask bits {MASK_ALL}, "
                     "non-finite pixels and reference stars (star_mask_radius by G)"
                     + (", pixels above SATURATE" if spec.saturation else "")
                     + ", computed in the raw frame")  # fmt: skip
    meta = dict(metadata or {})
    meta.update(
        {
            "background": described,
            "gain": repr(gain),
            "isolation_arcsec": repr(float(isolation_arcsec)),
            "isolation_scope": isolation_scope,
            "sep_version": sep.__version__,
            **spec.metadata(),
        }
    )
    if spec.saturation:
        meta["saturate"] = repr(saturate)
    stars = refcat.filter(pa.array(inside))
    return catalogue_table(stars, x_raw[inside], y_raw[inside], shape, isolated, phot, r, meta,
                           spec=spec)  # fmt: skip
