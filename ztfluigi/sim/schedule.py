"""The synthetic night log: which exposures the camera takes on a UT date, and when.

A pure function of (seed, date). The sequence follows the real camera (``ztf_formats.md`` §4):
20 biases at sunset, then dome flats (5 per LED; LEDs 2–5 zg, 7–10 zr, 11–13 zi), then, from the
end of nautical twilight, 30 s science exposures of a few real ZTF fields in zg, zr and zi,
≈40 s apart. Every exposure reads all 16 CCDs (one raw file per CCD).

On the dates of ``SimConfig.starflat_dates`` the science block is a *starflat* sequence instead
(:func:`starflat_sequence`): per filter, :data:`STARFLAT_DITHERS` dithered exposures of one dense
real field, offsets moving stars onto other quadrants and CCDs; calibrations are unchanged.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ztfluigi import camera, naming
from ztfluigi.sim import ephemeris

LED_FILTERS = camera.LED_FILTER
LED_WAVELENGTH_NM = {2: 451.4, 3: 479.8, 4: 499.9, 5: 525.9, 7: 593.5, 8: 620.7, 9: 633.1,
                     10: 652.9, 11: 738.9, 12: 833.6, 13: 864.6}  # fmt: skip
N_BIAS = 20
FLATS_PER_LED = 5
SCIENCE_EXPTIME = 30.0  #: s
SCIENCE_CADENCE = 40.0  #: s between consecutive science exposures
STARFLAT_CADENCE = 50.0  #: s between starflat exposures (30 s + readout + a dither slew)
STARFLAT_JITTER = 0.015  #: deg, uniform extra pointing offset (moves stars within the quadrants)
BIAS_CADENCE = 15.0  #: s
FLAT_EXPTIME = 10.0  #: s (dome flats; not documented for ZTF)
FLAT_CADENCE = 22.0  #: s, as the real 2019-03-14 LED-4 sequence
FIRST_LIGHT = dt.date(2017, 11, 1)


@dataclass(frozen=True)
class SimConfig:
    """Parameters of the synthetic instrument (the ``[sim]`` section)."""

    seed: int = 0
    scale: int = 8  #: quadrants are (3080/scale, 3072/scale) windows of the real ones
    n_fields: int = 3  #: science fields per night
    calib_gaps: bool = False  #: some nights lack calibrations or one filter's flats
    weather_losses: float = 0.0  #: fraction of nights closed by weather (calibrations only)
    #: UT dates (YYYY-MM-DD) whose science block is a dithered starflat sequence per filter
    starflat_dates: tuple[str, ...] = ()
    fringes: bool = False  #: zi science exposures carry an additive fringe pattern
    survey: bool = False  #: science block from ztfluigi.sim.survey (real-grid fields up that night)

    def __post_init__(self) -> None:
        if not 0.0 <= self.weather_losses <= 1.0:
            raise ValueError(f"[sim] weather_losses must be in 0..1, got {self.weather_losses}")
        if self.scale < 1 or 3072 // self.scale < 32:
            raise ValueError(f"[sim] scale must be an integer in 1..96, got {self.scale}")
        if self.n_fields < 0:
            raise ValueError(f"[sim] n_fields must be >= 0, got {self.n_fields}")


@dataclass(frozen=True)
class Exposure:
    """One camera exposure (16 raw CCD files share it)."""

    obsjd: float
    imgtype: str  #: 'object', 'bias' or 'flat'
    filtercode: str  #: 'zg', 'zr', 'zi' ('bi' for biases, as IRSA names them)
    field: int  #: ZTF field id, 0 for calibrations
    exptime: float  #: s
    ra: float  #: telescope pointing, deg
    dec: float
    led: int = -1  #: ILUM_LED of dome flats, -1 otherwise
    seeing: float = 2.0  #: PSF FWHM, arcsec
    framenum: int = 0

    @property
    def filefracday(self) -> str:
        return naming.filefracday(self.obsjd)

    @property
    def wheel_filter(self) -> str:
        """The filter in the beam (biases are read with whatever filter is in place: zr)."""
        return "zr" if self.filtercode == "bi" else self.filtercode

    def raw_name(self, ccdid: int) -> naming.RawName:
        return naming.RawName(
            self.filefracday, self.field, self.filtercode, ccdid,
            naming.IMGTYPE_CODES[self.imgtype],
        )  # fmt: skip


def rng_for(seed: int, *keys: object) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``keys`` (never on call order); numpy
    scalars key as the Python values they hold (``repr(np.int64(6))`` is not ``'6'``)."""
    keys = tuple(k.item() if isinstance(k, np.generic) else k for k in keys)
    digest = hashlib.sha256(repr((int(seed),) + keys).encode()).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype=np.uint32))


@functools.cache
def ztf_fields() -> np.ndarray:
    """The real ZTF field grid (structured array: id, ra, dec, gal_b)."""
    text = (resources.files("ztfluigi") / "data" / "ztf_fields.txt").read_text()
    rows = [line.split(",") for line in text.splitlines()[1:] if line.strip()]
    return np.array(
        [(int(r[0]), float(r[1]), float(r[2]), float(r[5])) for r in rows],
        dtype=[("id", int), ("ra", float), ("dec", float), ("gal_b", float)],
    )


@dataclass(frozen=True)
class CalibrationPlan:
    """Which calibration exposures a night has (all, by default)."""

    bias: bool = True
    flat_filters: tuple[str, ...] = ("zg", "zr", "zi")


def calibration_plan(cfg: SimConfig, date: dt.date) -> CalibrationPlan:
    """With ``calib_gaps``: a third of nights lack calibrations, a third one filter's flats."""
    if not cfg.calib_gaps:
        return CalibrationPlan()
    u = rng_for(cfg.seed, "calib_gaps", date.isoformat()).random(2)
    if u[0] < 1 / 3:
        return CalibrationPlan(bias=False, flat_filters=())
    if u[0] < 2 / 3:
        missing = ("zg", "zr", "zi")[int(u[1] * 3)]
        return CalibrationPlan(flat_filters=tuple(f for f in ("zg", "zr", "zi") if f != missing))
    return CalibrationPlan()


def dome_closed(cfg: SimConfig, date: dt.date) -> bool:
    """Whether weather keeps the dome closed all night (no science; calibrations are taken)."""
    if not cfg.weather_losses:
        return False
    return bool(rng_for(cfg.seed, "weather", date.isoformat()).random() < cfg.weather_losses)


def night_log(cfg: SimConfig, date: dt.date) -> list[Exposure]:
    """All exposures of the UT ``date``, in time order."""
    rng = rng_for(cfg.seed, "night", date.isoformat())
    jd0 = _jd_of_date(date)
    sunset = ephemeris.sun_crossing_jd(jd0, -0.83, rising=False)
    dusk = ephemeris.sun_crossing_jd(jd0, -12.0, rising=False)
    dawn = ephemeris.sun_crossing_jd(dusk, -12.0, rising=True)
    dome_ra, dome_dec = _dome_pointing(sunset)
    plan = calibration_plan(cfg, date)
    exposures: list[Exposure] = []
    frame = int(rng.integers(100, 500))
    t = sunset - 10.0 / 1440.0

    def add(**kw: object) -> None:
        nonlocal frame
        frame += 1
        exposures.append(Exposure(framenum=frame, **kw))

    if plan.bias:
        for _ in range(N_BIAS):
            add(obsjd=t, imgtype="bias", filtercode="bi", field=0, exptime=0.0,
                ra=dome_ra, dec=dome_dec)  # fmt: skip
            t += BIAS_CADENCE / 86400.0
    for led, filt in LED_FILTERS.items():
        if filt not in plan.flat_filters:
            continue
        for _ in range(FLATS_PER_LED):
            add(obsjd=t, imgtype="flat", filtercode=filt, field=0, exptime=FLAT_EXPTIME,
                ra=dome_ra, dec=dome_dec, led=led)  # fmt: skip
            t += FLAT_CADENCE / 86400.0
    if date.isoformat() in cfg.starflat_dates and not dome_closed(cfg, date):
        for exp in starflat_sequence(cfg, date, max(t, dusk), rng):
            add(**exp)
        return exposures
    if cfg.survey:
        if not dome_closed(cfg, date):
            from ztfluigi.sim import survey

            for exp in survey.science_sequence(cfg, date, max(t, dusk), dawn, rng):
                add(**exp)
        return exposures
    fields = [] if dome_closed(cfg, date) else _choose_fields(cfg, date, dusk, dawn, rng)
    for slot, field in enumerate(fields):
        # Each field is observed near its meridian transit, in zg then zr then zi.
        t = max(t, dusk + (slot + 0.5) / max(cfg.n_fields, 1) * (dawn - dusk))
        for filt in ("zg", "zr", "zi"):
            # A few arcsec of pointing scatter, as the real telescope.
            ra = field["ra"] + rng.normal(0, 2.0) / 3600.0 / np.cos(np.radians(field["dec"]))
            dec = field["dec"] + rng.normal(0, 2.0) / 3600.0
            alt, _ = ephemeris.altaz(ra, dec, t)
            seeing = 2.0 * ephemeris.airmass(alt) ** 0.6 * rng.uniform(0.85, 1.15)
            add(obsjd=t, imgtype="object", filtercode=filt, field=int(field["id"]),
                exptime=SCIENCE_EXPTIME, ra=float(ra), dec=float(dec),
                seeing=float(seeing))  # fmt: skip
            t += SCIENCE_CADENCE / 86400.0
    return exposures


def _jd_of_date(date: dt.date) -> float:
    return (date - dt.date(2000, 1, 1)).days + 2451544.5


def _dome_pointing(jd: float) -> tuple[float, float]:
    """Where the telescope points for dome flats (az ≈ 149°, el ≈ 5.6°, airmass ≈ 10 as real)."""
    alt, az = np.radians(5.65), np.radians(148.7)
    lat = np.radians(ephemeris.PALOMAR_LAT)
    dec = np.arcsin(np.sin(alt) * np.sin(lat) + np.cos(alt) * np.cos(lat) * np.cos(az))
    ha = np.arctan2(-np.sin(az) * np.cos(alt),
                    np.sin(alt) * np.cos(lat) - np.cos(alt) * np.sin(lat) * np.cos(az))  # fmt: skip
    ra = np.mod(ephemeris.lst_deg(jd) - np.degrees(ha), 360.0)
    return float(ra), float(np.degrees(dec))


def _choose_fields(
    cfg: SimConfig, date: dt.date, dusk: float, dawn: float, rng: np.random.Generator
) -> list[np.void]:
    """One primary-grid field per time slot, within 30° of the meridian, away from the plane."""
    fields = ztf_fields()
    base = (fields["id"] < 880) & (fields["dec"] > -15) & (fields["dec"] < 70)
    base &= np.abs(fields["gal_b"]) > 10
    chosen: list[np.void] = []
    for slot in range(cfg.n_fields):
        jd = dusk + (slot + 0.5) / cfg.n_fields * (dawn - dusk)
        ok = base & (np.abs(ephemeris.hour_angle_deg(fields["ra"], jd)) < 30)
        ok &= ~np.isin(fields["id"], [f["id"] for f in chosen])
        candidates = fields[ok]
        if candidates.size == 0:
            raise ValueError(f"no observable ZTF field at JD {jd:.4f} ({date})")
        chosen.append(candidates[rng.integers(candidates.size)])
    return chosen


# --- starflats ------------------------------------------------------------------------------


@functools.cache
def _layout_steps() -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Focal-plane steps (deg) that move a quadrant onto another: East–West and North–South.

    (next quadrant of the same CCD, next quadrant across the CCD gap, next CCD), averaged over
    the real layout (0.863/0.989/1.852° EW, 0.863/1.049/1.912° NS).
    """
    from ztfluigi import camera

    lay = camera.focal_plane_layout()

    def centre(c: int, q: int) -> np.ndarray:
        return np.array([lay[(c, q)].xi_center, lay[(c, q)].eta_center])

    ew_in = np.mean([centre(c, 1)[0] - centre(c, 2)[0] for c in range(1, 17)])
    ns_in = np.mean([centre(c, 1)[1] - centre(c, 4)[1] for c in range(1, 17)])
    ew_ccd = np.mean([centre(c, 1)[0] - centre(c + 1, 1)[0] for c in range(1, 17) if c % 4])
    ns_ccd = np.mean([centre(c + 4, 1)[1] - centre(c, 1)[1] for c in range(1, 13)])
    return (
        (float(ew_in), float(ew_ccd - ew_in), float(ew_ccd)),
        (float(ns_in), float(ns_ccd - ns_in), float(ns_ccd)),
    )


def starflat_dithers() -> list[tuple[float, float]]:
    """The 21 pointing offsets (deg East, deg North) of a starflat, before the jitter.

    The centre; ± each East–West and North–South step of :func:`_layout_steps` (a star seen on
    one quadrant lands on the neighbouring quadrant of the same CCD, across the gap, or on the
    same quadrant of the next CCD); the four diagonal quadrant steps and the four diagonal CCD
    steps. Offsets are up to a CCD width (1.9°), so every star crosses quadrants and CCDs, and a
    quadrant window of any ``scale`` still sees the same stars on other quadrants.
    """
    (ew_in, ew_gap, ew_ccd), (ns_in, ns_gap, ns_ccd) = _layout_steps()
    offsets = [(0.0, 0.0)]
    for step in (ew_in, ew_gap, ew_ccd):
        offsets += [(step, 0.0), (-step, 0.0)]
    for step in (ns_in, ns_gap, ns_ccd):
        offsets += [(0.0, step), (0.0, -step)]
    for ew, ns in ((ew_in, ns_in), (ew_ccd, ns_ccd)):
        offsets += [(ew, ns), (-ew, ns), (ew, -ns), (-ew, -ns)]
    return offsets


STARFLAT_DITHERS = 21  #: exposures per filter of a starflat sequence (len(starflat_dithers()))


def starflat_field(date: dt.date, jd: float) -> np.void:
    """The starflat field: a dense primary-grid field (10° ≤ |b| < 20°) transiting near ``jd``.

    Among those within 20° of the meridian, the one closest to the equator: there a pointing
    offset in RA moves the focal plane by a near-pure translation (no field rotation), so the
    dithers put stars on the other quadrants' centres.
    """
    fields = ztf_fields()
    ok = (fields["id"] < 880) & (np.abs(fields["gal_b"]) >= 10) & (np.abs(fields["gal_b"]) < 20)
    ok &= np.abs(ephemeris.hour_angle_deg(fields["ra"], jd)) < 20
    ok &= np.abs(fields["dec"]) < 30
    candidates = fields[ok]
    if candidates.size == 0:
        raise ValueError(f"no starflat field near the meridian at JD {jd:.4f} ({date})")
    return candidates[np.lexsort((candidates["id"], np.abs(candidates["dec"])))[0]]


def starflat_sequence(
    cfg: SimConfig, date: dt.date, start_jd: float, rng: np.random.Generator
) -> list[dict[str, object]]:
    """Keyword arguments of the starflat exposures (zg, then zr, then zi) from ``start_jd``.

    Pointings are the field centre moved by :func:`starflat_dithers` in the tangent plane, plus
    a uniform jitter of ±:data:`STARFLAT_JITTER` deg per axis.
    """
    from ztfluigi.sim import astrometry

    dithers = starflat_dithers()
    n = len(dithers) * 3
    field = starflat_field(date, start_jd + 0.5 * n * STARFLAT_CADENCE / 86400.0)
    out: list[dict[str, object]] = []
    t = start_jd
    for filt in ("zg", "zr", "zi"):
        for d_xi, d_eta in dithers:
            j_xi, j_eta = rng.uniform(-STARFLAT_JITTER, STARFLAT_JITTER, 2)
            ra, dec = astrometry.deproject(d_xi + j_xi, d_eta + j_eta, field["ra"], field["dec"])
            alt, _ = ephemeris.altaz(ra, dec, t)
            seeing = 2.0 * ephemeris.airmass(alt) ** 0.6 * rng.uniform(0.85, 1.15)
            out.append(dict(obsjd=t, imgtype="object", filtercode=filt, field=int(field["id"]),
                            exptime=SCIENCE_EXPTIME, ra=float(ra), dec=float(dec),
                            seeing=float(seeing)))  # fmt: skip
            t += STARFLAT_CADENCE / 86400.0
    return out
