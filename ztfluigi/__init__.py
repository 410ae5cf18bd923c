"""ztfluigi: a declarative build system for the ZTF in2p3 data products, on Luigi and fsspec.

``luigi --module ztfluigi <Task> …`` finds every product task here.
"""

__version__ = "0.1.0"

from ztfluigi.tasks import (  # noqa: E402
    ApertureCatalog,
    ApertureCatalogUnit,
    FocalPlaneFlatImage,
    FocalPlaneLevel,
    MasterBias,
    MasterFlat,
    QuadrantCatalog,
    RawFile,
    RawFiles,
    RawIndex,
    RawNight,
    SimRefCatalog,
    SimTruth,
)

__all__ = [
    "ApertureCatalog",
    "ApertureCatalogUnit",
    "FocalPlaneFlatImage",
    "FocalPlaneLevel",
    "MasterBias",
    "MasterFlat",
    "QuadrantCatalog",
    "RawFile",
    "RawFiles",
    "RawIndex",
    "RawNight",
    "SimRefCatalog",
    "SimTruth",
    "__version__",
]
