"""Master calibrations from corrected frames: master bias, master flat, focal-plane level.

Pure numpy (``reference_pipeline.md`` §3–4). Frames are sky-oriented CCD arrays (float32).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ztfluigi.stacking import ClipSpec, clipped_median

BIAS_SKIP = 10  #: the reference drops the night's first ten biases (warm-up)
MIN_FRAMES = 3  #: a stack needs more than two frames
BIAS_CLIP = ClipSpec(method="reference")  #: biases: the reference definition (N = 10)
FLAT_CLIP = ClipSpec(method="mad")  #: flats: robust σ, which can reject with 5 frames (trap 8)


class CalibrationError(ValueError):
    """Not enough (or inconsistent) input frames for a master calibration."""


def master_bias(frames: Sequence[np.ndarray], clip: ClipSpec = BIAS_CLIP) -> np.ndarray:
    """Per-pixel clipped median of overscan/NL-corrected bias frames (DN, float32)."""
    if len(frames) < MIN_FRAMES:
        raise CalibrationError(f"{len(frames)} bias frames: at least {MIN_FRAMES} are needed")
    return clipped_median(frames, clip)


@dataclass
class MasterFlat:
    """A normalised master flat and its normalisation."""

    flat: np.ndarray  #: mean over LEDs of each LED stack divided by its CCD median (≈1)
    fltnorm: float  #: mean of the LED medians (DN): the CCD's flat level
    led_levels: dict[int, float]  #: median of each LED stack (DN)
    nframes: dict[int, int]  #: frames stacked per LED


def master_flat(
    frames_by_led: Mapping[int, Sequence[np.ndarray]],
    bias: np.ndarray,
    clip: ClipSpec = FLAT_CLIP,
) -> MasterFlat:
    """Per-LED clipped stacks of bias-subtracted flats, each normalised by its CCD median, averaged.

    ``FLTNORM`` = mean of the LED medians, as the reference pipeline.
    """
    if not frames_by_led:
        raise CalibrationError("no flat frames")
    total = np.zeros(bias.shape, np.float64)
    levels, counts = {}, {}
    for led, frames in sorted(frames_by_led.items()):
        if len(frames) < MIN_FRAMES:
            raise CalibrationError(f"LED {led}: {len(frames)} frames, at least {MIN_FRAMES} needed")
        stack = clipped_median([f - bias for f in frames], clip)
        level = float(np.nanmedian(stack))
        if not np.isfinite(level) or level <= 0:
            raise CalibrationError(f"LED {led}: non-positive flat level {level}")
        total += stack / level
        levels[led], counts[led] = level, len(frames)
    flat = (total / len(levels)).astype(np.float32)
    return MasterFlat(flat, float(np.mean(list(levels.values()))), levels, counts)


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
