"""Synthetic aperture catalogues of a starflat sequence, made from truth without pixels.

For tests and benchmarks of :mod:`ztfluigi.starflat`: the stars of the synthetic Gaia sky on
each quadrant window of each exposure, their true science-image fluxes (δZP(u, v) from
:func:`ztfluigi.sim.truth.dzp_map`, or the analytic dome/sky ratio at real size where noise-free
flats are too costly), optional per-amplifier gain errors, and the noise of an aperture sum
(sky + read noise over the aperture, source Poisson noise). The tables have the aperture
catalogue's schema and key-value metadata, so the fit reads them like the pipeline's.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping

import numpy as np
import pyarrow as pa

from ztfluigi import camera, photometry, refcat, starflat
from ztfluigi.sim import astrometry, detector, gaia, psf, rawfile, sky, truth
from ztfluigi.sim.schedule import Exposure, SimConfig, night_log, rng_for

TRUTH_SCHEMA = pa.schema([
    ("filefracday", pa.string()), ("ccdid", pa.int8()), ("qid", pa.int8()),
    ("source_id", pa.int64()), ("x", pa.float64()), ("y", pa.float64()), ("dzp", pa.float64()),
])  # fmt: skip
"""Truth of each catalogue row: full-size raw 0-based pixel and the δZP it saw (mag)."""


def starflat_exposures(cfg: SimConfig, date: dt.date, filtercode: str) -> list[Exposure]:
    """The science exposures of ``filtercode`` on a starflat night (``date`` in the config)."""
    if date.isoformat() not in cfg.starflat_dates:
        cfg = SimConfig(**{**cfg.__dict__, "starflat_dates": (date.isoformat(),)})
    return [e for e in night_log(cfg, date) if e.imgtype == "object" and e.filtercode == filtercode]


@functools.lru_cache(maxsize=4096)
def _pixel_stars(seed: int, npix: int) -> dict[str, np.ndarray]:
    table = gaia.generate_pixel(seed, npix)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in (
        "source_id", "ra", "dec", "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag")}


def _cone_stars(
    seed: int, ra: float, dec: float, radius: float, g_max: float
) -> dict[str, np.ndarray]:
    parts = [_pixel_stars(seed, int(p)) for p in gaia.pixels_for_cone(ra, dec, radius)]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    keep = refcat.cone_mask(out["ra"], out["dec"], ra, dec, radius)
    keep &= out["phot_g_mean_mag"] <= g_max
    return {k: v[keep] for k, v in out.items()}


def _quadrant_positions(
    seed: int, exp: Exposure, ccdid: int, qid: int, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Window pixel positions (raw, 0-based) of the stars around a quadrant window.

    Through the simulator's gnomonic focal-plane map (the header WCS is its local linearisation
    plus sub-arcsecond TPV terms): much faster than building an astropy WCS per quadrant, and
    equivalent for photometry without pixels. Stars within the isolation radius of the window
    are included (as isolation neighbours).
    """
    lay = camera.focal_plane_layout()[(ccdid, qid)]
    y0, x0 = camera.window_offset(shape)
    step = camera.PIXEL_SCALE / 3600.0
    xi_c, eta_c = lay.pixel_to_focal(x0 + (shape[1] - 1) / 2, y0 + (shape[0] - 1) / 2)
    ra_c, dec_c = astrometry.deproject(xi_c, eta_c, exp.ra, exp.dec)
    radius = 0.5 * np.hypot(*shape) * step + (photometry.ISOLATION_ARCSEC + 5) / 3600.0
    stars = _cone_stars(seed, float(ra_c), float(dec_c), float(radius), 21.5)
    xi, eta = astrometry.project(stars["ra"], stars["dec"], exp.ra, exp.dec)
    xc = (camera.QUADRANT_SHAPE[1] - 1) / 2.0
    yc = (camera.QUADRANT_SHAPE[0] - 1) / 2.0
    x_raw = xc - (xi - lay.xi_center) / step - x0
    y_raw = yc - (eta - lay.eta_center) / step - y0
    return x_raw, y_raw, stars


_DZP_CACHE: dict[tuple, np.ndarray] = {}


def _dzp_window(cfg: SimConfig, date: dt.date, exp: Exposure, ccdid: int, qid: int) -> np.ndarray:
    """:func:`ztfluigi.sim.truth.dzp_map`, cached (it depends on the exposure's filter only)."""
    key = (cfg, date, exp.filtercode, ccdid, qid)
    if key not in _DZP_CACHE:
        if len(_DZP_CACHE) > 256:
            _DZP_CACHE.clear()
        _DZP_CACHE[key] = truth.dzp_map(cfg, date, exp, ccdid, qid)
    return _DZP_CACHE[key]


def true_dzp_at(
    cfg: SimConfig, date: dt.date, filtercode: str, ccdid: np.ndarray, qid: np.ndarray,
    x: np.ndarray, y: np.ndarray,
) -> np.ndarray:
    """The δZP (mag) injected at full-size raw-oriented 0-based pixels ``(x, y)`` of quadrants
    ``(ccdid, qid)`` of a scale's windows (:func:`ztfluigi.sim.truth.dzp_map` at the nearest
    pixel): what a star measured there saw in the pipeline's photometry."""
    exposure = starflat_exposures(cfg, date, filtercode)[0]  # dzp_map depends on its filter only
    shape = camera.quadrant_shape(cfg.scale)
    y0, x0 = camera.window_offset(shape)
    ccdid, qid = np.asarray(ccdid), np.asarray(qid)
    out = np.full(np.shape(x), np.nan)
    for c, q in sorted(set(zip(ccdid.tolist(), qid.tolist(), strict=True))):
        # Python ints: the simulator's random streams are keyed on repr(), and np.int64(6)
        # is not 6 there.
        sel = (ccdid == c) & (qid == q)
        window = _dzp_window(cfg, date, exposure, int(c), int(q))
        px = np.clip(np.round(np.asarray(x)[sel] - x0).astype(int), 0, shape[1] - 1)
        py = np.clip(np.round(np.asarray(y)[sel] - y0).astype(int), 0, shape[0] - 1)
        out[sel] = window[py, px]
    return out


def true_cells(
    result: starflat.StarflatResult, cfg: SimConfig, date: dt.date, filtercode: str
) -> np.ndarray:
    """The truth of every fitted cell in the fit's gauge: the 1/σ²-weighted mean of the injected
    δZP over the cell's kept measurements (the average the cell's parameter estimates)."""
    res = result.residuals
    rcid = np.asarray(res["rcid"], np.int64)
    dzp = true_dzp_at(cfg, date, filtercode, rcid // 4 + 1, rcid % 4 + 1, res["x"], res["y"])
    nx, ny = result.config.grid
    ix, iy = starflat.cell_index(res["x"], res["y"], result.config.grid)
    key = (rcid * ny + iy) * nx + ix
    w = 1.0 / np.asarray(res["sigma"]) ** 2
    sums = np.bincount(key, weights=w * dzp, minlength=64 * nx * ny)
    weights = np.bincount(key, weights=w, minlength=64 * nx * ny)
    fitted = ((4 * (result.cell_ccdid.astype(np.int64) - 1) + result.cell_qid - 1) * ny
              + result.cell_iy) * nx + result.cell_ix  # fmt: skip
    return result.in_gauge(sums[fitted] / weights[fitted])


def analytic_dzp(filtercode: str, xi: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """δZP (mag) of the dome/sky ratio and the mean LED pattern of the filter (no flats needed).

    Equal to :func:`ztfluigi.sim.truth.dzp_map` up to a constant and the per-CCD effect of
    normalising each LED separately (≲ 0.1 mmag).
    """
    from ztfluigi.camera import FILTER_LEDS

    ratio = detector.dome_over_sky(filtercode, xi, eta)
    leds = np.mean([detector.led_pattern(led, xi, eta) for led in FILTER_LEDS[filtercode]], axis=0)
    return 2.5 * np.log10(ratio * leds)


def synthetic_catalogues(
    cfg: SimConfig,
    date: dt.date,
    filtercode: str,
    *,
    exposures: list[Exposure] | None = None,
    quadrants: Iterable[tuple[int, int]] | None = None,
    radius: float = 8.0,
    gain_errors: Mapping[tuple[int, int], float] | None = None,
    exact: bool = True,
    g_max: float = 19.5,
    noise_seed: int = 0,
) -> tuple[list[pa.Table], pa.Table]:
    """Aperture catalogues (one table per exposure × quadrant) and the truth of their rows.

    ``gain_errors[(ccdid, qid)] = ε`` makes that amplifier's true gain (e⁻/DN) 1 + ε times what
    its flat removed (fluxes / (1 + ε)). ``exact`` uses the noise-free flats of the scale
    (:func:`~ztfluigi.sim.truth.dzp_map`), otherwise :func:`analytic_dzp`. Sources fainter than
    ``g_max`` are left out (they would fail any S/N cut) except as isolation neighbours.
    """
    exposures = starflat_exposures(cfg, date, filtercode) if exposures is None else exposures
    quadrants = [(c, q) for c in range(1, 17) for q in range(1, 5)] if quadrants is None \
        else list(quadrants)  # fmt: skip
    gain_errors = dict(gain_errors or {})
    shape = camera.quadrant_shape(cfg.scale)
    y0, x0 = camera.window_offset(shape)
    tables, truths = [], []
    for exp in exposures:
        cond = rawfile.conditions(exp)
        zp_e = sky.zero_point_e(exp.filtercode, cond.airmass)
        sky_e = sky.sky_electrons(exp, cond.airmass, cond.moon_illumination)
        ee = float(psf.encircled_energy(radius, cond.fwhm_pix))
        alpha = psf.moffat_alpha(cond.fwhm_pix, psf.BETA)
        peak_fraction = (psf.BETA - 1) / (np.pi * alpha**2)
        for ccdid, qid in quadrants:
            amp = detector.amplifier(cfg.seed, ccdid, qid, date)
            x_raw, y_raw, stars = _quadrant_positions(cfg.seed, exp, ccdid, qid, shape)
            x_ref, y_ref = photometry.raw_to_ref(x_raw, y_raw, shape)
            inside = photometry.in_footprint(x_ref, y_ref, shape)
            isolated = photometry.isolation(stars["ra"], stars["dec"])
            keep = inside & (stars["phot_g_mean_mag"] <= g_max)
            sel = {k: v[keep] for k, v in stars.items()}
            xr, yr, iso = x_raw[keep], y_raw[keep], isolated[keep]
            n = xr.size
            mag = sky.filter_magnitude(
                exp.filtercode, sel["phot_g_mean_mag"], sel["phot_bp_mean_mag"],
                sel["phot_rp_mean_mag"],
            )
            electrons = 10 ** (-0.4 * (mag - zp_e)) * exp.exptime / 30.0
            px = np.clip(np.round(xr).astype(int), 0, shape[1] - 1)
            py = np.clip(np.round(yr).astype(int), 0, shape[0] - 1)
            if exact:
                dzp = _dzp_window(cfg, date, exp, ccdid, qid)[py, px]
            else:
                lay = camera.focal_plane_layout()[(ccdid, qid)]
                dzp = analytic_dzp(exp.filtercode, *lay.pixel_to_focal(xr + x0, yr + y0))
                dzp = dzp + 2.5 * np.log10(amp.gain)  # ≈ the DN/e⁻ scale of the science image
            dzp = dzp + 2.5 * np.log10(1.0 + gain_errors.get((ccdid, qid), 0.0))
            per_e = 10 ** (-0.4 * dzp)  # science DN per photo-electron
            flux_true = electrons * per_e * ee
            sky_var = (sky_e + amp.read_noise**2) * per_e**2  # DN² per pixel
            var_bkg = np.pi * radius**2 * sky_var
            rng = rng_for(cfg.seed, "starflat-noise", noise_seed, exp.filefracday, ccdid, qid)
            flux = flux_true + np.sqrt(var_bkg + flux_true * per_e) * rng.standard_normal(n)
            err = np.sqrt(var_bkg + np.maximum(flux, 0.0) * per_e)
            flag = np.zeros(n, np.uint8)
            off = (xr - radius < -0.5) | (xr + radius > shape[1] - 0.5) | \
                (yr - radius < -0.5) | (yr + radius > shape[0] - 0.5)  # fmt: skip
            flag[off] |= photometry.FLAG_OFFIMAGE
            saturated = electrons * peak_fraction + sky_e > detector.FULL_WELL
            flag[saturated] |= photometry.APER_HASMASKED
            rawname = exp.raw_name(ccdid)
            meta = {"ztfluigi.product": "ApertureCatalog (synthetic, no pixels)",
                    "raw_file": rawname.filename, "qid": str(qid),
                    "epoch_mjd": f"{exp.obsjd - 2400000.5:.7f}"}  # fmt: skip
            phot = {"flux": flux[None, :].astype(np.float32),
                    "flux_err": err[None, :].astype(np.float32),
                    "flux_err_bkg": np.full((1, n), np.sqrt(var_bkg), np.float32),
                    "flag": flag[None, :]}  # fmt: skip
            tables.append(photometry.catalogue_table(sel, xr, yr, shape, iso, phot, (radius,),
                                                     meta))  # fmt: skip
            truths.append(pa.table({
                "filefracday": [exp.filefracday] * n, "ccdid": pa.array([ccdid] * n, pa.int8()),
                "qid": pa.array([qid] * n, pa.int8()), "source_id": sel["source_id"],
                "x": xr + x0, "y": yr + y0, "dzp": dzp,
            }, schema=TRUTH_SCHEMA))  # fmt: skip
    truth_table = pa.concat_tables(truths) if truths else TRUTH_SCHEMA.empty_table()
    return tables, truth_table

