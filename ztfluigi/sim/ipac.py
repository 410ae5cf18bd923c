"""IPAC-like products of a synthetic science quadrant: ``sciimg`` header and ``mskimg`` mask.

The pipeline reuses IPAC's headers (WCS, ids, observing conditions) and masks rather than
recomputing them; the simulator provides both, consistent with the pixels it rendered.
"""

from __future__ import annotations

import datetime as dt
import functools

import numpy as np
from astropy.io import fits

from ztfluigi import camera, naming
from ztfluigi.sim import astrometry, detector, fringes, headers, psf, rawfile, sky
from ztfluigi.sim.schedule import Exposure, SimConfig

BIT = {"sexsources": 1, "lowresponsivity": 2, "noisy": 4, "spikes": 7, "saturated": 8,
       "dead": 9, "psfsources": 11}  # fmt: skip
FIXAPERS = (2, 3, 4, 6, 10, 14)  #: IPAC fixed aperture diameters (pixels)
IPAC_PIPEID = 15


def ipac_ids(exp: Exposure, ccdid: int, qid: int) -> dict[str, int]:
    """IPAC database ids of a quadrant (ztf_formats.md §2.6)."""
    date = dt.datetime.strptime(exp.filefracday[:8], "%Y%m%d").date()
    nid = naming.night_id(date)
    expid = nid * 100000 + int(exp.filefracday[8:13])
    rc = camera.rcid(ccdid, qid)
    rid = expid * 100 + rc
    return {"nid": nid, "expid": expid, "rcid": rc, "rid": rid, "pid": rid * 100 + IPAC_PIPEID}


def science_header(
    cfg: SimConfig, date: dt.date, exp: Exposure, ccdid: int, qid: int
) -> fits.Header:
    """The IPAC-like science header (raw primary + extension + IPAC keys, TPV WCS).

    A copy of a per-process cached header: the archive serves it and the mask header is made
    from it, so each quadrant's header is built once (≈25 ms at any scale).
    """
    return _science_header(cfg, date, exp, ccdid, qid).copy()


@functools.lru_cache(maxsize=128)
def _science_header(
    cfg: SimConfig, date: dt.date, exp: Exposure, ccdid: int, qid: int
) -> fits.Header:
    """The science header (cached; callers must not modify it)."""
    shape = camera.quadrant_shape(cfg.scale)
    amp = detector.amplifier(cfg.seed, ccdid, qid, date)
    wcs = astrometry.quadrant_wcs_header(exp.ra, exp.dec, ccdid, qid, shape)
    primary = headers.raw_primary_header(exp, ccdid)
    ext = headers.raw_extension_header(amp, wcs)
    cond = rawfile.conditions(exp)
    ids = ipac_ids(exp, ccdid, qid)
    zp_dn = sky.zero_point_e(exp.filtercode, cond.airmass) - 2.5 * np.log10(amp.gain)
    sky_e = sky.sky_electrons(exp, cond.airmass, cond.moon_illumination)
    # 5σ point-source limit in an optimal (≈ 1.2 FWHM radius) aperture, sky-noise dominated.
    npix = np.pi * (1.2 * cond.fwhm_pix) ** 2
    maglim = sky.zero_point_e(exp.filtercode, cond.airmass) - 2.5 * np.log10(
        5 * np.sqrt(npix * sky_e)
    )
    values: dict[str, object] = {
        "MAGZP": round(float(zp_dn), 6),
        "SATURATE": round(0.97 * (amp.saturation - amp.pedestal), 3),
        "SEEING": round(cond.fwhm_pix, 3), "CCDID": ccdid, "QID": qid, "RCID": ids["rcid"],
        "EXPID": ids["expid"], "INFOBITS": 0, "STATUS": 1, "MAGLIM": round(float(maglim), 2),
        "CREATED": headers.ipac_created(exp.obsjd), "DBPID": ids["pid"], "DBFIELD": exp.field,
        "DBNID": ids["nid"], "DBEXPID": ids["expid"], "DBRID": ids["rid"], "DBRCID": ids["rcid"],
        "DBFID": naming.FILTER_IDS[exp.filtercode],
        "SCAMPFIL": f"gaia_{exp.field:06d}_c{ccdid:02d}_q{qid}.fits",
        "SCAMPPTH": f"/ztf/ops/static/rc{ids['rcid']:02d}/astrom",
    }  # fmt: skip
    for i, diameter in enumerate(FIXAPERS, start=1):
        ee = psf.encircled_energy(diameter / 2.0, cond.fwhm_pix)
        values[f"APCOR{i}"] = round(float(2.5 * np.log10(ee)), 8)
    return headers.ipac_science_header(primary, ext, wcs, values)


def mask(cfg: SimConfig, date: dt.date, exp: Exposure, ccdid: int, qid: int) -> np.ndarray:
    """The IPAC-like int16 bit mask (raw orientation) of a science quadrant.

    Equal, bit for bit, to :func:`mask_reference` (the definition), but the saturated bit is
    found without rendering every star of the quadrant: see :func:`saturated_pixels`.
    """
    shape = camera.quadrant_shape(cfg.scale)
    amp = detector.amplifier(cfg.seed, ccdid, qid, date)
    cond = rawfile.conditions(exp)
    stars = sky.quadrant_stars(cfg.seed, exp, ccdid, qid, shape, cond.airmass)
    sky_e = sky.sky_electrons(exp, cond.airmass, cond.moon_illumination)
    out = np.zeros(shape, np.int16)
    rows, cols = saturated_pixels(
        cfg, exp, ccdid, qid, amp, stars, sky_e, cond.fwhm_pix, cond.airmass
    )
    out[rows, cols] |= 1 << BIT["saturated"]
    _defect_and_source_bits(out, cfg, exp, ccdid, qid, stars, sky_e, cond.fwhm_pix)
    return out


def mask_reference(
    cfg: SimConfig, date: dt.date, exp: Exposure, ccdid: int, qid: int
) -> np.ndarray:
    """The mask by its definition: saturated where the full noise-free image reaches saturation.

    Renders the whole expected-electrons image (≈1.6 CPU-s per quadrant at scale 1); kept as
    the reference :func:`mask` is tested and benchmarked against.
    """
    shape = camera.quadrant_shape(cfg.scale)
    amp = detector.amplifier(cfg.seed, ccdid, qid, date)
    cond = rawfile.conditions(exp)
    out = np.zeros(shape, np.int16)
    electrons = rawfile.expected_electrons(cfg, exp, ccdid, qid, shape)
    level = electrons / amp.gain + detector.bias_structure(cfg.seed, ccdid, qid, shape)
    out[level + amp.pedestal + 5.0 >= amp.saturation] |= 1 << BIT["saturated"]
    stars = sky.quadrant_stars(cfg.seed, exp, ccdid, qid, shape, cond.airmass)
    sky_e = sky.sky_electrons(exp, cond.airmass, cond.moon_illumination)
    _defect_and_source_bits(out, cfg, exp, ccdid, qid, stars, sky_e, cond.fwhm_pix, False)
    return out


def saturated_pixels(
    cfg: SimConfig,
    exp: Exposure,
    ccdid: int,
    qid: int,
    amp: detector.Amplifier,
    stars: sky.QuadrantStars,
    sky_e: float,
    fwhm_pix: float,
    airmass: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) where the noise-free science image reaches saturation (raw orientation).

    Same test and same float32 arithmetic as :func:`mask_reference`, evaluated only where it
    can be true. The window is cut into square cells wider than the largest stamp, so a star
    reaches only the 3×3 cells around its own. A cell is a candidate when an upper bound of its
    electrons, (max of sky [+ fringes] + Σ over the stars of its 3×3 cells of the Moffat profile
    at their closest approach to the cell × counts) × max response (× 1.0001, + 1 ADU of
    margin), could reach saturation; only the stars
    near candidate cells are rendered (:func:`ztfluigi.sim.psf.render`, in their original
    order, on the same sky [+ fringe] image, so each pixel sums the same float32 terms in the
    same order as :func:`ztfluigi.sim.rawfile.expected_electrons`).
    """
    shape = camera.quadrant_shape(cfg.scale)
    # The image the stars are added to, as rawfile.expected_electrons builds it.
    light = np.full(shape, sky_e, np.float32)
    base_max: float | np.ndarray = sky_e
    cell = 32
    if stars.x.size:
        cell = max(cell, int(psf.stamp_radius(stars.electrons).max()) + 1)  # pixels
    if fringes.applies(cfg, exp):
        light += fringes.fringe_electrons(cfg, exp, ccdid, qid, shape, airmass)
        base_max = _cell_max(light, cell)
    pad = 2 + int(np.ceil(sky.STAR_MARGIN_PIX / cell))  # cells of stars outside the window
    ncy, ncx = -(-shape[0] // cell), -(-shape[1] // cell)
    # Stamps are centred on the rounded star position (psf._render_chunk).
    x0 = np.floor(stars.x + 0.5).astype(np.int64)
    y0 = np.floor(stars.y + 0.5).astype(np.int64)
    cy = np.clip(y0 // cell + pad, 0, ncy + 2 * pad - 1)
    cx = np.clip(x0 // cell + pad, 0, ncx + 2 * pad - 1)
    alpha = psf.moffat_alpha(fwhm_pix)
    peak = (psf.BETA - 1.0) / (np.pi * alpha**2)  # largest flux fraction of one pixel
    # Σ over stars of the most each can put in one pixel of a cell: its profile at the
    # smallest distance between the star and the cell's sub-pixel samples (≤ √2/3 pixel
    # from pixel centres), zero beyond the 3×3 cells around its own.
    reached = np.zeros((ncy + 2 * pad, ncx + 2 * pad))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            ty, tx = cy + dy, cx + dx  # target cell (padded indices)
            lo_y, lo_x = (ty - pad) * cell, (tx - pad) * cell  # first pixel centre of the cell
            gap_y = np.maximum(np.maximum(lo_y - stars.y, stars.y - (lo_y + cell - 1)), 0.0)
            gap_x = np.maximum(np.maximum(lo_x - stars.x, stars.x - (lo_x + cell - 1)), 0.0)
            gap = np.maximum(np.hypot(gap_x, gap_y) - np.sqrt(2.0) / 3.0, 0.0)
            most = stars.electrons * peak * (1.0 + (gap / alpha) ** 2) ** (-psf.BETA)
            ok = (ty >= 0) & (ty < ncy + 2 * pad) & (tx >= 0) & (tx < ncx + 2 * pad)
            np.add.at(reached, (ty[ok], tx[ok]), most[ok])
    near = reached[pad : pad + ncy, pad : pad + ncx]
    response = detector.sky_response(cfg.seed, ccdid, qid, shape)
    bias = detector.bias_structure(cfg.seed, ccdid, qid, shape)
    response_max, bias_max = _cell_maxima(cfg.seed, ccdid, qid, shape, cell)
    bound_e = (base_max + near) * response_max * 1.0001 + 1.0
    bound_level = bound_e / amp.gain + bias_max + amp.pedestal + 5.0 + 1.0
    candidate = bound_level >= amp.saturation
    if not candidate.any():
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    reach = np.zeros_like(reached, dtype=bool)
    reach[pad : pad + ncy, pad : pad + ncx] = candidate
    reach = _box3(reach.astype(np.float64)) > 0
    chosen = np.flatnonzero(reach[cy, cx])
    psf.render(light, stars.x[chosen], stars.y[chosen], stars.electrons[chosen], fwhm_pix)
    rows_out, cols_out = [], []
    for i, j in zip(*np.nonzero(candidate), strict=True):
        win = (slice(i * cell, (i + 1) * cell), slice(j * cell, (j + 1) * cell))
        electrons = light[win] * response[win]
        level = electrons / amp.gain + bias[win]
        r, c = np.nonzero(level + amp.pedestal + 5.0 >= amp.saturation)
        rows_out.append(r + i * cell)
        cols_out.append(c + j * cell)
    return np.concatenate(rows_out), np.concatenate(cols_out)


def _box3(grid: np.ndarray) -> np.ndarray:
    """Sum of each cell's 3×3 neighbourhood (zero outside the grid)."""
    padded = np.pad(grid, 1)
    out = np.zeros_like(grid)
    for dy in range(3):
        for dx in range(3):
            out += padded[dy : dy + grid.shape[0], dx : dx + grid.shape[1]]
    return out


@functools.lru_cache(maxsize=128)
def _cell_maxima(
    seed: int, ccdid: int, qid: int, shape: tuple[int, int], cell: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell maxima of the sky response and of the bias structure (cached like them)."""
    response = detector.sky_response(seed, ccdid, qid, shape)
    bias = detector.bias_structure(seed, ccdid, qid, shape)
    return _cell_max(response, cell), _cell_max(bias, cell)


def _cell_max(image: np.ndarray, cell: int) -> np.ndarray:
    """Maximum of each ``cell``×``cell`` block of ``image`` (partial blocks at the edges)."""
    ny, nx = image.shape
    ncy, ncx = -(-ny // cell), -(-nx // cell)
    full = np.full((ncy * cell, ncx * cell), -np.inf)
    full[:ny, :nx] = image
    return full.reshape(ncy, cell, ncx, cell).max(axis=(1, 3))


def _defect_and_source_bits(
    out: np.ndarray,
    cfg: SimConfig,
    exp: Exposure,
    ccdid: int,
    qid: int,
    stars: sky.QuadrantStars,
    sky_e: float,
    fwhm_pix: float,
    vectorized: bool = True,
) -> None:
    """OR the detector-defect, cosmic-ray and source-footprint bits into ``out`` (in place).

    ``vectorized=False``: the footprints star by star (the definition :func:`mask_reference`
    keeps); otherwise :func:`_footprints`, same pixels.
    """
    shape = out.shape
    out[:, detector.dead_columns(cfg.seed, ccdid, qid, shape)] |= (1 << BIT["dead"]) | (
        1 << BIT["lowresponsivity"]
    )
    out[:, detector.hot_columns(cfg.seed, ccdid, qid, shape)] |= 1 << BIT["noisy"]
    rows, cols, _ = rawfile.cosmic_rays(cfg, exp, ccdid, qid, shape)
    out[rows, cols] |= 1 << BIT["spikes"]
    # Source footprints: where a star's profile exceeds 1.5σ of the sky (SExtractor-like), and
    # the pixel holding each star detected at S/N > 5 (PSF-fit catalogue).
    alpha = psf.moffat_alpha(fwhm_pix)
    peak = stars.electrons * (psf.BETA - 1) / (np.pi * alpha**2)
    threshold = 1.5 * np.sqrt(sky_e)
    radius = alpha * np.sqrt(np.maximum((peak / threshold) ** (1 / psf.BETA) - 1, 0.0))
    if vectorized:
        _footprints(out, stars.x, stars.y, radius)
    else:
        for x, y, r in zip(stars.x, stars.y, radius, strict=True):
            if r < 0.5:
                continue
            r_int = int(np.ceil(r))
            r0, r1 = max(int(y) - r_int, 0), min(int(y) + r_int + 2, shape[0])
            c0, c1 = max(int(x) - r_int, 0), min(int(x) + r_int + 2, shape[1])
            if r0 >= r1 or c0 >= c1:
                continue
            yy = np.arange(r0, r1)[:, None]
            xx = np.arange(c0, c1)[None, :]
            disk = (yy - y) ** 2 + (xx - x) ** 2 <= r**2
            out[r0:r1, c0:c1][disk] |= 1 << BIT["sexsources"]
    snr = stars.electrons / np.sqrt(stars.electrons + np.pi * (1.2 * fwhm_pix) ** 2 * sky_e)
    px, py = np.round(stars.x).astype(int), np.round(stars.y).astype(int)
    detected = (snr > 5) & (px >= 0) & (px < shape[1]) & (py >= 0) & (py < shape[0])
    out[py[detected], px[detected]] |= 1 << BIT["psfsources"]


def _footprints(out: np.ndarray, x: np.ndarray, y: np.ndarray, radius: np.ndarray) -> None:
    """OR the ``sexsources`` bit on the disks of ``radius`` around each star, stars of equal
    integer radius at once: the same window (from the truncated position), the same float64
    distance test and so the same pixels as one star at a time."""
    ny, nx = out.shape
    keep = radius >= 0.5
    x, y, radius = x[keep], y[keep], radius[keep]
    r_int = np.ceil(radius).astype(np.int64)
    bit = np.int16(1 << BIT["sexsources"])
    for k in np.unique(r_int):
        members = np.flatnonzero(r_int == k)
        offsets = np.arange(-k, k + 2)
        per_star = offsets.size**2
        step = max(1, 4_000_000 // per_star)  # bounds the (n, w, w) temporaries
        for start in range(0, members.size, step):
            sel = members[start : start + step]
            xs, ys, rs = x[sel], y[sel], radius[sel]
            rows = np.trunc(ys).astype(np.int64)[:, None, None] + offsets[None, :, None]
            cols = np.trunc(xs).astype(np.int64)[:, None, None] + offsets[None, None, :]
            disk = (rows - ys[:, None, None]) ** 2 + (cols - xs[:, None, None]) ** 2 <= (rs**2)[
                :, None, None
            ]
            disk &= (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
            rows, cols = np.broadcast_arrays(rows, cols)
            out[rows[disk], cols[disk]] |= bit


def mask_header(cfg: SimConfig, date: dt.date, exp: Exposure, ccdid: int, qid: int) -> fits.Header:
    """The mskimg header: the science header's cards without IPAC's calibration keys."""
    sci = _science_header(cfg, date, exp, ccdid, qid)
    template = headers.real_mask_header()
    out = fits.Header()
    for card in template.cards:
        if card.keyword in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "HISTORY", "COMMENT"):
            continue
        value = (
            sci[card.keyword]
            if card.keyword in sci and not card.keyword.startswith("BIT")
            else card.value
        )
        out.append((card.keyword, value, card.comment))
    for key in ("CCD_ID", "ILUM_LED"):
        if key in sci and key not in out:
            out.append((key, sci[key], sci.comments[key]))
    return out
