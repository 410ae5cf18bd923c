"""The processing specification of a run: which spec each step runs with, chosen in one place.

Every product is made by steps parameterised by spec objects (raw corrections, clipped stacks…);
:class:`ProcessingSpecs` bundles them so that masters and science frames are corrected by the
same :class:`~ztfluigi.corrections.CorrectionSpec` (they cannot drift apart), and so that
provenance records exactly these objects. :func:`ztfluigi.config.processing_specs` builds it
from luigi.cfg.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ztfluigi import calib
from ztfluigi.corrections import CorrectionSpec
from ztfluigi.fringes import FringeSpec
from ztfluigi.photometry import PhotometrySpec
from ztfluigi.stacking import ClipSpec, ClipStats


@dataclass(frozen=True)
class ProcessingSpecs:
    """The specs of every step: raw corrections (masters and science), the two stacks, the zi
    fringe correction and the aperture photometry."""

    correction: CorrectionSpec = field(default_factory=CorrectionSpec)
    bias_clip: ClipSpec = calib.BIAS_CLIP
    flat_clip: ClipSpec = calib.FLAT_CLIP
    photometry: PhotometrySpec = field(default_factory=PhotometrySpec)
    fringe: FringeSpec = field(default_factory=FringeSpec)

    def recorded_keywords(self) -> tuple[str, ...]:
        """Header keywords of the masters' steps (corrections, clipping and its counts) and their
        ``DATASUM``, which a catalogue copies from the calibrations it used (a catalogue whose
        recorded DATASUM differs from its calibration's was built from another version)."""
        stats = ClipStats(0, 0, 0, 0, 0)
        cards = [*self.correction.header_cards(), *self.bias_clip.header_cards(),
                 *stats.header_cards()]  # fmt: skip
        return (*dict.fromkeys(c[0] for c in cards), "DATASUM")
