"""The synthetic instrument's reference catalogue and truth products."""

import numpy as np
import pyarrow.compute as pc
import pytest

from tests.helpers import DEMO_DATE, build
from ztfluigi import storage
from ztfluigi.refcat import RefCatalog
from ztfluigi.tasks import SimRefCatalog, SimTruth


def test_reference_catalogue_holds_every_rendered_star(luigi_store):
    cat_task, truth_task = SimRefCatalog(date=DEMO_DATE), SimTruth(date=DEMO_DATE)
    assert build(cat_task, truth_task).status.name == "SUCCESS"
    catalog = RefCatalog(cat_task.catalog_url())
    stars = storage.read_parquet(truth_task.output()["stars"])
    assert stars.num_rows > 100
    detector = storage.read_parquet(truth_task.output()["detector"])
    assert detector.num_rows == 64 and 5.0 < pc.mean(detector["gain"]).as_py() < 7.0
    # Every star the simulator rendered in one quadrant is in the catalogue it wrote.
    one = stars.filter(pc.and_(pc.equal(stars["ccdid"], 9), pc.equal(stars["qid"], 1)))
    ra, dec = pc.mean(one["ra"]).as_py(), pc.mean(one["dec"]).as_py()
    cone = catalog.cone(ra, dec, 0.1, columns=["source_id", "ra", "dec", "pmra"])
    assert set(one["source_id"].to_pylist()) <= set(cone["source_id"].to_pylist())
    # Science-image counts differ from electrons by a smooth factor (~1/gain), PRNU-free.
    ratio = (pc.divide(one["counts"], one["electrons"])).to_numpy()
    assert np.all((ratio > 0.1) & (ratio < 0.3))
    assert np.std(ratio) / np.mean(ratio) < 0.05


def test_truth_refuses_other_archives(luigi_store):
    import luigi.configuration

    luigi.configuration.get_config().set("ztfluigi", "archive", "irsa")
    with pytest.raises(ValueError, match="only for archive = sim"):
        SimTruth(date=DEMO_DATE).run()
