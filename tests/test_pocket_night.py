"""Photometry of a pocket-era night against the truth (issue #14): with the pocket correction on
by default from 2019-10-22 and the star-masked background, no isolated star is off by more than
5σ, and stars whose aperture reaches the first read columns (where the pocket acts) are measured
like the others.

The zr catalogues of 2020-01-15 (16 CCDs, 3 exposures) at the default scale.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from tests.helpers import build, luigi_settings
from ztfluigi import camera, storage
from ztfluigi.sim import psf
from ztfluigi.tasks import ApertureCatalog, SimTruth

pytestmark = pytest.mark.slow  # a night's zr catalogues and the 16 CCDs' calibrations

DATE, FILTER = dt.date(2020, 1, 15), "zr"
RADIUS = 12.0  #: px, f_9
POCKET_COLUMNS = 6  #: read columns 0-5


@pytest.fixture(scope="module")
def pulls(tmp_path_factory):
    """(pull, distance in read columns from the aperture's edge to read column 0) per isolated,
    unflagged, well-measured star of the CCD's catalogues."""
    root = tmp_path_factory.mktemp("pocket") / "store"
    settings = {"ztfluigi": {"root": str(root), "archive": "sim"},
                "sim": {"seed": "0", "scale": "8", "n_fields": "3"}}  # fmt: skip
    with luigi_settings(settings):
        entry = ApertureCatalog(date=DATE, filtercode=FILTER)
        assert build(entry, SimTruth(date=DATE), workers=2).status.name == "SUCCESS"
        truth = storage.read_parquet(SimTruth(date=DATE).output()["stars"])
        key = {k: i for i, k in enumerate(zip(*(truth[c].to_pylist() for c in
               ("filefracday", "ccdid", "qid", "source_id")), strict=True))}  # fmt: skip
        pull, edge = [], []
        ncols = camera.quadrant_shape(8)[1]
        quadrants = [(b, t) for unit in entry.requires()
                     for b, t in zip(unit.branches(), unit.output(), strict=True)]  # fmt: skip
        for (rawname, qid), target in quadrants:
            cat = storage.read_parquet(target)
            meta = cat.schema.metadata
            assert meta[b"science.POCKET"] == b"on" and meta[b"flat.POCKET"] == b"on"
            for i, source in enumerate(cat["source_id"].to_pylist()):
                j = key[(int(rawname.filefracday), rawname.ccdid, qid, source)]
                counts = truth["counts"][j].as_py()
                if cat["f_9_f"][i].as_py() or not cat["isolated"][i].as_py():
                    continue
                if not 1e3 < counts < 4e5:
                    continue
                ee = psf.encircled_energy(RADIUS, truth["fwhm_pix"][j].as_py())
                flux, err = cat["f_9"][i].as_py() / ee, cat["f_9_e"][i].as_py() / ee
                pull.append((flux - counts) / err)
                x_raw = cat["x_ipac"][i].as_py() - 1
                read_col = x_raw if qid in (1, 4) else ncols - 1 - x_raw
                edge.append(read_col - RADIUS)
    return np.array(pull), np.array(edge)


def test_no_isolated_star_is_off_by_more_than_5_sigma(pulls):
    pull, _ = pulls
    print(f"pocket-era night: {pull.size} stars, pull mean {pull.mean():.3f} std {pull.std():.3f}"
          f", max |pull| {np.abs(pull).max():.2f}")  # fmt: skip
    assert pull.size >= 300
    assert np.abs(pull).max() < 5
    assert abs(pull.mean()) < 0.1
    assert 0.9 < pull.std() < 1.15


def test_stars_on_the_first_read_columns_are_measured_like_the_others(pulls):
    pull, edge = pulls
    near, inner = pull[edge < POCKET_COLUMNS], pull[edge >= POCKET_COLUMNS]
    print(f"apertures on read columns 0-5: {near.size} stars, mean {near.mean():.3f} "
          f"std {near.std():.3f}; interior mean {inner.mean():.3f} std {inner.std():.3f}")
    assert near.size >= 10
    assert abs(near.mean() - inner.mean()) < 3 * np.sqrt(1 / near.size + 1 / inner.size)
    assert np.abs(near).max() < 5 and near.std() < 1.3
