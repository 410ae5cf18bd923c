"""Luigi wiring: one task class per data product (parameters, requires, output, run)."""

from ztfluigi.tasks.raw import RawFile, RawFiles, RawIndex, RawNight

__all__ = ["RawFile", "RawFiles", "RawIndex", "RawNight"]
