"""Luigi wiring: one task class per data product (parameters, requires, output, run)."""

import warnings

from ztfluigi.tasks.calib import FocalPlaneFlatImage, FocalPlaneLevel, MasterBias, MasterFlat
from ztfluigi.tasks.campaign import ApertureCatalogCampaign, RegionCatalogUnit, RegionNight
from ztfluigi.tasks.catalog import ApertureCatalog, ApertureCatalogUnit, QuadrantCatalog
from ztfluigi.tasks.fringe import FringeModel
from ztfluigi.tasks.ipac import IpacHeaders, IpacMasks
from ztfluigi.tasks.ranges import ApertureCatalogRange
from ztfluigi.tasks.raw import RawFile, RawFiles, RawIndex, RawNight
from ztfluigi.tasks.science import ScienceQuadrant
from ztfluigi.tasks.sim import SimRefCatalog, SimTruth
from ztfluigi.tasks.starflat import StarflatFit

# Luigi's RPC client reads luigi.cfg's [core] rpc-* keys itself, but its `core` Config class does
# not declare them, so every worker would warn that they are unconsumed.
warnings.filterwarnings(
    "ignore", message="The configuration contains the parameter 'rpc_", category=UserWarning
)

__all__ = [
    "ApertureCatalog",
    "ApertureCatalogCampaign",
    "ApertureCatalogRange",
    "ApertureCatalogUnit",
    "FocalPlaneFlatImage",
    "FocalPlaneLevel",
    "FringeModel",
    "IpacHeaders",
    "IpacMasks",
    "MasterBias",
    "MasterFlat",
    "QuadrantCatalog",
    "RawFile",
    "RawFiles",
    "RawIndex",
    "RawNight",
    "RegionCatalogUnit",
    "RegionNight",
    "ScienceQuadrant",
    "SimRefCatalog",
    "SimTruth",
    "StarflatFit",
]
