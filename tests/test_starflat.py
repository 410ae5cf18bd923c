"""Starflat fit: recovers an injected δZP(u, v) and a one-amplifier gain error from catalogues
synthesised from the simulator's truth (no pixels)."""

import dataclasses
import datetime as dt
import json

import numpy as np
import pytest

from ztfluigi import starflat
from ztfluigi.sim import detector, truth
from ztfluigi.sim import starflat as simflat
from ztfluigi.sim.schedule import SimConfig

DEMO_DATE = dt.date(2019, 3, 31)  #: the demo night (a starflat night here)
INNER_CCDS = (6, 7, 10, 11)  #: the four central CCDs: 16 quadrants keep the test fast
GAIN_ERROR = (7, 2), 0.01  #: +1 % gain on CCD 7 q2 (what its flat removed is 1 % off)
CATALOGUES: list = []  #: the fixture's synthetic catalogues
GRID = (16, 16)  #: 192-px cells: 2 × 2 cells on each scale-8 quadrant window


@pytest.fixture(scope="module")
def fitted():
    """A zr starflat of the inner CCDs at scale 8: catalogues, truth and the fit."""
    cfg = SimConfig(scale=8, starflat_dates=(DEMO_DATE.isoformat(),))
    quads = [(c, q) for c in INNER_CCDS for q in range(1, 5)]
    tables, true = simflat.synthetic_catalogues(
        cfg, DEMO_DATE, "zr", quadrants=quads, gain_errors=dict([GAIN_ERROR])
    )
    config = starflat.StarflatConfig(grid=GRID)
    meas = starflat.measurements_from_catalogues(tables, config)
    result = starflat.fit_starflat(meas, config)
    CATALOGUES[:] = tables
    return cfg, meas, true, result


def true_cells(result, true, without_gain_error=False):
    """The truth's δZP averaged over each fitted cell, in the fit's gauge."""
    dzp = true["dzp"].to_numpy().copy()
    if without_gain_error:
        (c, q), eps = GAIN_ERROR
        sel = (true["ccdid"].to_numpy() == c) & (true["qid"].to_numpy() == q)
        dzp[sel] -= 2.5 * np.log10(1 + eps)
    ix, iy = starflat.cell_index(true["x"].to_numpy(), true["y"].to_numpy(), result.config.grid)
    keys = list(zip(true["ccdid"].to_numpy(), true["qid"].to_numpy(), ix, iy, strict=True))
    by_cell: dict[tuple, list[float]] = {}
    for key, value in zip(keys, dzp, strict=True):
        by_cell.setdefault(tuple(int(k) for k in key), []).append(value)
    cells = zip(result.cell_ccdid, result.cell_qid, result.cell_ix, result.cell_iy, strict=True)
    out = np.array([np.mean(by_cell[tuple(int(k) for k in cell)]) for cell in cells])
    return result.in_gauge(out)


def test_fit_recovers_the_injected_dzp_with_honest_errors(fitted):
    _, meas, true, result = fitted
    assert result.solver["istop"] in (1, 2) and result.iterations <= 3
    print(result.n_measurements, result.source_id.size, meas.counts)
    assert result.n_measurements > 1000 and result.source_id.size > 250
    assert result.dzp.size == 16 * 4  # 2 × 2 cells on each of the 16 windows
    assert 0.9 < result.chi2_dof < 1.1, result.chi2_dof
    assert result.n_clipped < 0.001 * result.n_measurements
    resid = result.dzp - true_cells(result, true)
    pull = resid / result.dzp_err
    rms = 1000 * np.sqrt(np.mean(resid**2))
    print(f"cells {resid.size}, fit-truth rms {rms:.2f} mmag, pull std {pull.std():.3f}, "
          f"chi2/dof {result.chi2_dof:.3f}")  # fmt: skip
    assert 0.8 < pull.std() < 1.2
    assert abs(pull.mean()) < 0.3
    # The injected pattern is far above the errors: the fit sees it.
    assert np.ptp(true_cells(result, true)) > 10 * np.median(result.dzp_err)
    # No colour or airmass term in the truth.
    assert np.all(np.abs(result.dk / result.dk_err) < 4)
    assert abs(result.k / result.k_err) < 4


def test_gain_error_found_at_its_quadrant_only(fitted):
    _, _, true, result = fitted
    (c, q), eps = GAIN_ERROR
    gains = starflat.quadrant_gains(result)
    err = gains["dzp_mean_err"]

    def gains_of(cells):
        return starflat.quadrant_gains(dataclasses.replace(result, dzp=cells))["dzp_mean"]

    excess = gains["dzp_mean"] - gains_of(true_cells(result, true, without_gain_error=True))
    injected = np.where((result.cell_ccdid == c) & (result.cell_qid == q),
                        2.5 * np.log10(1 + eps), 0.0)  # fmt: skip
    expected = gains_of(result.in_gauge(injected))  # the gauge takes a share of any bump
    at = np.flatnonzero((gains["ccdid"] == c) & (gains["qid"] == q))[0]
    print("excess (mmag)", np.round(1000 * excess, 2), "pull", np.round(excess / err, 1))
    print("expected", np.round(1000 * expected, 2), "err", np.round(1000 * err, 2))
    # Found where it was put, with the amplitude the gauge leaves it ...
    assert abs(excess[at] - expected[at]) < 4 * err[at] and excess[at] > 15 * err[at]
    assert np.argmax(np.abs(excess)) == at
    # ... and nowhere else: elsewhere only the gauge's share of that one bump (mean, gradients
    # and, at scale 8, the East/West and North/South halves of the CCDs).
    assert np.all(np.abs(excess - expected) < 4 * err)
    # The jump from a smooth focal plane (the gain column) singles it out without any truth.
    jump = gains["jump"] / gains["jump_err"]
    print("jump pull", np.round(jump, 1))
    assert np.argmax(np.abs(jump)) == at and jump[at] > 10


def test_quadrant_normalisation_brings_back_the_amplifier_gains(fitted):
    cfg, _, _, result = fitted
    levels = truth.quadrant_flat_levels(cfg, DEMO_DATE, "zr")
    tables = starflat.result_tables(result, levels)
    quads = tables["quadrants"].to_pydict()
    gain = np.array([detector.amplifier(cfg.seed, c, q, DEMO_DATE).gain
                     for c, q in zip(quads["ccdid"], quads["qid"], strict=True)])  # fmt: skip
    fitted_gain = np.array(quads["gain_rel_quadnorm"])
    # Per-quadrant flats lose each amplifier's gain; the starflat finds it (× the quadrant's
    # illumination, nearly the same for these central CCDs).
    print("corr", np.corrcoef(fitted_gain, gain)[0, 1])
    assert np.corrcoef(fitted_gain, gain)[0, 1] > 0.9
    assert np.std(np.array(quads["gain_rel"])) < 0.5 * np.std(fitted_gain)
    assert set(tables) == {"cells", "quadrants", "exposures", "terms", "stars", "stats"}
    assert tables["stats"]["n_measurements"][0].as_py() == result.n_measurements


def test_lsmr_solution_is_the_least_squares_minimum_in_the_gauge(fitted):
    """The sparse iterative solve reaches the χ² of a dense solve and satisfies the gauge."""
    _, meas, _, _ = fitted
    config = starflat.StarflatConfig(grid=GRID, max_iterations=1, colour_term="none",
                                     fit_airmass=False)  # fmt: skip
    small = meas.subset(np.isin(meas.ccdid, (6, 7)))
    fit = starflat.fit_starflat(small, config)
    sub = small.subset(np.isin(small.source_id, fit.source_id))
    ix, iy = starflat.cell_index(sub.x, sub.y, GRID)
    rc = 4 * (sub.ccdid.astype(int) - 1) + sub.qid - 1
    cells = np.unique((rc * GRID[1] + iy) * GRID[0] + ix, return_inverse=True)[1]
    stars = np.unique(sub.source_id, return_inverse=True)[1]
    exps = np.unique(sub.exposure, return_inverse=True)[1]
    ns, nc, ne = stars.max() + 1, cells.max() + 1, exps.max() + 1
    n = sub.size
    a = np.zeros((n, ns + nc + ne))
    a[np.arange(n), stars] = 1
    a[np.arange(n), ns + cells] = 1
    a[np.arange(n), ns + nc + exps] = 1
    w = 1 / sub.mag_err
    direct = np.linalg.lstsq(a * w[:, None], sub.mag * w, rcond=None)[0]
    chi2_direct = np.sum(((a @ direct - sub.mag) * w) ** 2)
    mine = np.concatenate([fit.mag, fit.dzp, fit.zp[np.isfinite(fit.zp)]])
    chi2_mine = np.sum(((a @ mine - sub.mag) * w) ** 2)
    assert abs(chi2_mine - chi2_direct) < 1e-8 * chi2_direct
    assert abs(fit.chi2 - chi2_direct) < 1e-8 * chi2_direct
    # Gauge: cells without mean or gradient, nothing along the free directions; ZP mean 0.
    assert np.all(np.abs(fit.gauge_cells.T @ fit.dzp) < 1e-6)
    assert abs(np.nanmean(fit.zp)) < 1e-9
    assert fit.n_free == 3  # this scale-8 subset cannot tell East/West, North/South halves


def test_products_are_written_with_provenance_and_rebuilt_identically(fitted, tmp_path):
    from ztfluigi import storage
    from ztfluigi.tasks.starflat import PICTURES, TABLES, write_products

    cfg, _, _, _ = fitted
    levels = truth.quadrant_flat_levels(cfg, DEMO_DATE, "zr")
    config = starflat.StarflatConfig(grid=GRID)
    contents = []
    for run in ("a", "b"):
        out = {name: storage.get_target(str(tmp_path / run / f"{name}.parquet"))
               for name in TABLES}  # fmt: skip
        out |= {name: storage.get_target(str(tmp_path / run / f"{name}.png"))
                for name in PICTURES}  # fmt: skip
        write_products(out, CATALOGUES, levels, {"input_catalogues": "[]"}, "test", config)
        contents.append({name: (tmp_path / run / t.path.rsplit("/", 1)[-1]).read_bytes()
                         for name, t in out.items()})  # fmt: skip
    assert contents[0] == contents[1]
    cells = storage.read_parquet(str(tmp_path / "a" / "cells.parquet"))
    meta = {k.decode(): v.decode() for k, v in cells.schema.metadata.items()}
    assert meta["ztfluigi.product"] == "StarflatFit" and "lsmr" in meta["solver"]
    assert json.loads(meta["starflat.grid"]) == list(GRID)
    assert {"dzp", "dzp_err", "dzp_quadnorm", "xi", "eta"} <= set(cells.column_names)
    assert all(contents[0][p].startswith(b"\x89PNG") for p in PICTURES)


def test_selection_cuts_and_full_size_positions():
    """Flagged, faint, crowded and colourless stars are left out; window pixels become full-size
    quadrant pixels; the exposure comes from the raw file name."""
    from ztfluigi import photometry

    n = 6
    stars = {"source_id": np.arange(n), "ra": np.full(n, 120.0), "dec": np.full(n, 0.0),
             "phot_g_mean_mag": np.array([15.0, 15.0, 15.0, 15.0, 16.5, 15.0]),
             "phot_bp_mean_mag": np.array([15.5, 15.5, 15.5, 15.5, 17.0, np.nan]),
             "phot_rp_mean_mag": np.full(n, 14.5)}  # fmt: skip
    x = np.array([10.0, 50.0, 100.0, 150.0, 152.0, 50.0])  # star 4 is 2 px from star 3
    y = np.array([100.0, 100.0, 100.0, 100.0, 100.0, 160.0])
    flux = np.array([1e5, 1e5, 1e3, 1e5, 3e4, 1e5])
    phot = {"flux": flux[None], "flux_err": np.full((1, n), 100.0),
            "flux_err_bkg": np.full((1, n), 100.0),
            "flag": np.array([[0, 32, 0, 0, 0, 0]], np.uint8)}  # fmt: skip
    meta = {"raw_file": "ztf_20190331123456_000413_zr_c07_o.fits.fz", "qid": "2",
            "epoch_mjd": "58573.2"}  # fmt: skip
    table = photometry.catalogue_table(stars, x, y, (192, 192), np.ones(n, bool), phot, (8.0,),
                                       meta)  # fmt: skip
    meas = starflat.measurements_from_catalogues([table])
    # 0 kept; 1 flagged; 2 S/N 10; 3 has a brighter-than-G+3 neighbour (4) and 4 a brighter
    # one (3); 5 has no BP.
    assert meas.source_id.tolist() == [0]
    assert meas.counts == {"rows": 6, "flagged": 1, "low_snr": 1, "not_isolated": 2,
                           "no_colour": 1, "selected": 1}  # fmt: skip
    y0, x0 = 1444, 1440  # the centred 192 × 192 window of a 3080 × 3072 quadrant
    assert meas.x[0] == pytest.approx(10.0 + x0) and meas.y[0] == pytest.approx(100.0 + y0)
    assert meas.exposures == ["20190331123456"] and meas.ccdid[0] == 7 and meas.qid[0] == 2
    assert meas.mag[0] == pytest.approx(-12.5) and meas.colour[0] == pytest.approx(1.0)
    with pytest.raises(starflat.StarflatError):
        starflat.fit_starflat(meas.subset(np.zeros(1, bool)))


def test_narrowed_fit_is_another_product():
    """A CCD subset or another grid names its own outputs; the 16 CCDs are the default."""
    from ztfluigi.tasks.parameters import InvalidParameter
    from ztfluigi.tasks.starflat import StarflatFit

    full = StarflatFit(date=DEMO_DATE, filtercode="zr")
    same = StarflatFit(date=DEMO_DATE, filtercode="zr", ccdids=list(range(16, 0, -1)))
    assert same.task_id == full.task_id and full.variant() == "" and full.ccds() == [*range(1, 17)]
    narrow = StarflatFit(date=DEMO_DATE, filtercode="zr", ccdids="11, 6,7,10,7", grid=16)
    assert narrow.ccdids == (6, 7, 10, 11) and narrow.config().grid == (16, 16)
    assert narrow.variant() == "c06-07-10-11_g16"
    assert narrow.output()["cells"].path.endswith("_zr_starflat_c06-07-10-11_g16_cells.parquet")
    assert full.output()["cells"].path.endswith("_zr_starflat_cells.parquet")
    assert [t.ccdid for t in narrow.requires()] == [6, 7, 10, 11]
    with pytest.raises(InvalidParameter, match="ccdid 17"):
        StarflatFit(date=DEMO_DATE, filtercode="zr", ccdids="6,17")
    with pytest.raises(InvalidParameter, match="grid 0"):
        StarflatFit(date=DEMO_DATE, filtercode="zr", grid=0)
