"""Master calibrations from corrected frames: master bias, master flat, focal-plane level.

Pure numpy (``reference_pipeline.md`` §3–4). Frames are sky-oriented CCD arrays (float32).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from ztfluigi.stacking import ClipSpec, ClipStats, clipped_median_stats

BIAS_SKIP = 10  #: the reference drops the night's first ten biases (warm-up)
MIN_FRAMES = 3  #: a stack needs more than two frames
BIAS_CLIP = ClipSpec(method="reference")  #: biases: the reference definition (N = 10)
FLAT_CLIP = ClipSpec(method="mad")  #: flats: robust σ, which can reject with 5 frames (trap 8)


class CalibrationError(ValueError):
    """Not enough (or inconsistent) input frames for a master calibration."""


def master_bias(frames: Sequence[np.ndarray], clip: ClipSpec = BIAS_CLIP) -> np.ndarray:
    """Per-pixel clipped median of overscan/NL-corrected bias frames (DN, float32)."""
    return master_bias_stats(frames, clip)[0]


def master_bias_stats(
    frames: Sequence[np.ndarray], clip: ClipSpec = BIAS_CLIP
) -> tuple[np.ndarray, ClipStats]:
    """:func:`master_bias` and the clip's counts over the stack (for the product header)."""
    if len(frames) < MIN_FRAMES:
        raise CalibrationError(f"{len(frames)} bias frames: at least {MIN_FRAMES} are needed")
    return clipped_median_stats(frames, clip)


def total_stats(stats: Sequence[ClipStats]) -> ClipStats:
    """The counts of several stacks added up (a master flat stacks one per LED)."""
    return ClipStats(*(sum(getattr(s, f) for s in stats) for f in
                       ("n_frames", "n_pixels", "n_nonfinite", "n_clipped", "n_empty")))


@dataclass
class MasterFlat:
    """A normalised master flat and its normalisation."""

    flat: np.ndarray  #: mean over LEDs of each LED stack divided by its CCD median (≈1)
    fltnorm: float  #: mean of the LED medians (DN): the CCD's flat level
    led_levels: dict[int, float]  #: median of each LED stack (DN)
    nframes: dict[int, int]  #: frames stacked per LED
    stats: ClipStats | None = None  #: the clip's counts over the LED stacks


def master_flat(
    frames_by_led: Mapping[int, Sequence[np.ndarray]],
    bias: np.ndarray | None,
    clip: ClipSpec = FLAT_CLIP,
) -> MasterFlat:
    """Per-LED clipped stacks of bias-subtracted flats, each normalised by its CCD median, averaged.

    ``FLTNORM`` = mean of the LED medians, as the reference pipeline. ``bias``: the master bias
    to subtract from each frame, or None when the frames are bias-subtracted already (corrected
    with ``corrections.correct_ccd(..., minus=bias)``: the same float32 values, no copies).
    """
    if not frames_by_led:
        raise CalibrationError("no flat frames")
    shape = np.shape(next(iter(frames_by_led.values()))[0])
    total = np.zeros(shape, np.float64)
    levels, counts, stats = {}, {}, []
    for led, frames in sorted(frames_by_led.items()):
        if len(frames) < MIN_FRAMES:
            raise CalibrationError(f"LED {led}: {len(frames)} frames, at least {MIN_FRAMES} needed")
        stack, led_stats = clipped_median_stats(
            frames if bias is None else [f - bias for f in frames], clip
        )
        stats.append(led_stats)
        level = float(np.nanmedian(stack))
        if not np.isfinite(level) or level <= 0:
            raise CalibrationError(f"LED {led}: non-positive flat level {level}")
        total += stack / level
        levels[led], counts[led] = level, len(frames)
    flat = (total / len(levels)).astype(np.float32)
    return MasterFlat(flat, float(np.mean(list(levels.values()))), levels, counts,
                      total_stats(stats))


def focal_plane_level(flats: Mapping[int, tuple[np.ndarray, float]]) -> float:
    """FLTNORM_FP: the median of every pixel of the 16 de-normalised flats (Fn × FLTNORM), NaN-safe.

    The exact global median is computed without concatenating the 16 CCDs (≈2.4 GB at full
    size): a histogram narrows the median to one bin, then only that bin's values are sorted.
    """
    if len(flats) != 16:
        missing = sorted(set(range(1, 17)) - set(flats))
        raise CalibrationError(f"incomplete focal plane: no flat for CCD(s) {missing}")
    return _global_nanmedian([flat * norm for flat, norm in flats.values()])


def _global_nanmedian(arrays: Sequence[np.ndarray]) -> float:
    finite = [a[np.isfinite(a)] for a in arrays]
    n = sum(f.size for f in finite)
    if n == 0:
        return float("nan")
    lo = min(float(f.min()) for f in finite if f.size)
    hi = max(float(f.max()) for f in finite if f.size)
    if lo == hi:
        return lo
    edges = np.linspace(lo, hi, 4097)
    counts = sum(np.histogram(f, bins=edges)[0] for f in finite)
    cum = np.cumsum(counts)
    # Median of n values: element (n-1)//2 and n//2 (0-based) of the sorted set.
    ranks = ((n - 1) // 2, n // 2)
    values = []
    for rank in ranks:
        b = int(np.searchsorted(cum, rank + 1))
        below = int(cum[b - 1]) if b > 0 else 0
        lo_e, hi_e = edges[b], edges[b + 1]
        last = b == len(counts) - 1
        inside = np.concatenate(
            [f[(f >= lo_e) & ((f <= hi_e) if last else (f < hi_e))] for f in finite]
        )
        values.append(float(np.sort(inside)[rank - below]))
    return float(np.float32(0.5 * (values[0] + values[1])))


# --- the inputs and outputs of the products ------------------------------------------------


@dataclass
class LedSelection:
    """Flat frames of one filter grouped by LED, and those left out (LED missing or foreign)."""

    by_led: dict[int, list[np.ndarray]]
    used: list[str]  #: file names stacked
    rejected: list[str]  #: "file (ILUM_LED=…)" of the frames left out


def select_flats_by_led(
    frames: Iterable[tuple[str, Mapping[str, object], np.ndarray]], led_ids: Sequence[int]
) -> LedSelection:
    """Group (file name, primary header, corrected frame) by ``ILUM_LED``; frames whose LED is
    missing or not in ``led_ids`` (the filter's LEDs) are left out and named, never stacked."""
    selection = LedSelection({}, [], [])
    for name, header, frame in frames:
        led = header.get("ILUM_LED", -1)
        if led not in led_ids:
            selection.rejected.append(f"{name} (ILUM_LED={led})")
            continue
        selection.by_led.setdefault(int(led), []).append(frame)
        selection.used.append(name)
    return selection


def flat_cards(
    result: MasterFlat, filtercode: str, bias_file: str, rejected: Sequence[str]
) -> list[tuple[str, object, str]]:
    """Product-specific cards of a master flat: filter, FLTNORM, LED levels, bias, rejects."""
    cards = [
        ("FILTRKEY", filtercode, "filter"),
        ("LEDID", 0, "0 = all LEDs of the filter combined"),
        ("FLTNORM", result.fltnorm, "mean of the LED medians (DN)"),
    ]
    cards += [(f"LEDNRM{led:02d}", level, f"median of the LED {led} stack (DN)")
              for led, level in result.led_levels.items()]  # fmt: skip
    cards += [("BIASFILE", bias_file, "master bias used"),
              ("NBADLED", len(rejected), "flats left out (ILUM_LED missing/wrong)")]  # fmt: skip
    cards += [(f"BADLED{i:02d}", reason[:68], "") for i, reason in enumerate(rejected, start=1)]
    return cards


def focal_plane_columns(
    fltnorms: Mapping[int, float], flat_files: Mapping[int, str]
) -> fits.BinTableHDU:
    """The focal-plane level's table: CCDID, FLTNORM (DN) and the master flat of each CCD."""
    ccds = sorted(fltnorms)
    return fits.BinTableHDU.from_columns([
        fits.Column("CCDID", "I", array=np.asarray(ccds)),
        fits.Column("FLTNORM", "D", array=[fltnorms[c] for c in ccds]),
        fits.Column("FLATFILE", "80A", array=[flat_files[c] for c in ccds]),
    ])  # fmt: skip


def read_focal_plane_level(hdul: fits.HDUList) -> tuple[float, dict[int, float]]:
    """(FLTNORM_FP, {ccdid: FLTNORM}) from a FocalPlaneLevel product."""
    rows = hdul[1].data
    return float(hdul[0].header["FLTNORM_FP"]), dict(
        zip(rows["CCDID"].tolist(), rows["FLTNORM"].tolist(), strict=True)
    )


def denormalised_flats(
    flats: Mapping[int, np.ndarray], fltnorms: Mapping[int, float], fltnorm_fp: float
) -> dict[int, np.ndarray]:
    """Each CCD's flat on the focal-plane scale, Fn × FLTNORM / FLTNORM_FP (the picture's)."""
    return {c: flat * fltnorms[c] / fltnorm_fp for c, flat in flats.items()}
