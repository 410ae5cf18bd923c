"""Master bias, master flat and focal-plane level on the synthetic night recover the truth."""

import io
import json

import luigi
import numpy as np
import PIL.Image
import pytest

from tests.helpers import DEMO_DATE, build_ok, night_without_calibration
from ztfluigi import calib, camera, fitschecksum, storage
from ztfluigi.sim import detector, schedule, truth
from ztfluigi.stacking import ClipSpec, clipped_median
from ztfluigi.tasks import FocalPlaneFlatImage, FocalPlaneLevel, MasterBias, MasterFlat

SEED, SCALE = 0, 16
SHAPE = camera.quadrant_shape(SCALE)


def median_noise_factor(n: int, spec: ClipSpec, trials: int = 200_000) -> float:
    """σ of the clipped median of ``n`` unit Gaussians (Monte Carlo with our own kernel)."""
    rng = np.random.default_rng(42)
    draws = rng.standard_normal((n, 1, trials)).astype(np.float32)
    return float(np.std(clipped_median(draws, spec)))


def test_master_bias_recovers_the_true_bias_structure(luigi_store):
    ccdid = 11
    task = MasterBias(date=DEMO_DATE, ccdid=ccdid)
    assert build_ok(task)
    hdul = storage.read_fits(task.output())
    bias, header = hdul[0].data.astype(np.float64), hdul[0].header
    assert bias.shape == (2 * SHAPE[0], 2 * SHAPE[1]) and hdul[0].data.dtype.kind == "f"
    assert header["IMGTYPE"] == "bias" and header["NFRAMES"] == 10 and header["CCDID"] == ccdid
    assert header["PERIOD"] == "20190331" and header["PIPELINE"] == "ZTFLUIGI"
    assert header["CLIPMETH"] == "reference" and header["CORRORD"] == "overscan-first"
    assert header["INPUT001"].endswith("_bi_c11_b.fits.fz")
    # where the frames came from: the synthetic instrument's seed and scale make every pixel
    assert (header["ARCHIVE"], header["SIMSEED"], header["SIMSCALE"]) == ("sim", SEED, SCALE)
    truth = camera.assemble_ccd(
        {q: detector.bias_structure(SEED, ccdid, q, SHAPE) for q in range(1, 5)}
    )
    factor = median_noise_factor(10, ClipSpec(method="reference"))
    for q in range(1, 5):
        amp = detector.amplifier(SEED, ccdid, q, DEMO_DATE)
        rows, cols = camera.quadrant_slice(q, bias.shape)
        resid = (bias - truth)[rows, cols]
        sigma = amp.read_noise / amp.gain * factor
        assert abs(resid.mean()) < 5 * sigma / np.sqrt(resid.size) + 0.02  # overscan fit error
        assert resid.std() == pytest.approx(sigma, rel=0.08)


def true_flat(ccdid: int, filtercode: str) -> np.ndarray:
    """The noise-free normalised master flat implied by the simulator's truth."""
    return truth.true_master_flat(
        schedule.SimConfig(seed=SEED, scale=SCALE), DEMO_DATE, ccdid, filtercode
    )[0]


def test_master_flat_recovers_the_true_flat_within_the_noise(luigi_store):
    ccdid, filtercode = 6, "zr"
    task = MasterFlat(date=DEMO_DATE, ccdid=ccdid, filtercode=filtercode)
    assert build_ok(task)
    hdu = storage.read_fits(task.output())[0]
    flat, header = hdu.data.astype(np.float64), hdu.header
    assert header["FILTRKEY"] == "zr" and header["NFRAMES"] == 20 and header["CLIPMETH"] == "mad"
    assert 25_000 < header["FLTNORM"] < 45_000 and header["BIASFILE"].endswith("_c06_bias.fits")
    assert (header["ARCHIVE"], header["SIMSEED"], header["SIMSCALE"]) == ("sim", SEED, SCALE)
    truth = true_flat(ccdid, filtercode)
    assert np.median(flat) == pytest.approx(1.0, abs=0.01)
    # Expected per-pixel noise: Poisson of each frame through the robust 5-frame median,
    # averaged over the filter's 4 LEDs.
    factor = median_noise_factor(5, ClipSpec(method="mad"))
    sigma = np.zeros_like(flat)
    for q in range(1, 5):
        amp = detector.amplifier(SEED, ccdid, q, DEMO_DATE)
        rows, cols = camera.quadrant_slice(q, flat.shape)
        level = float(np.median(truth[rows, cols]))
        adu = level * header["FLTNORM"]
        sigma[rows, cols] = (
            np.sqrt(adu * amp.gain + amp.read_noise**2) / amp.gain / header["FLTNORM"]
        )
    sigma *= factor / np.sqrt(len(camera.FILTER_LEDS[filtercode]))
    live = truth > 0.5  # dead columns have a different (tiny) noise
    pull = ((flat - truth) / (sigma * np.sqrt(truth)))[live]
    assert abs(np.mean(pull)) < 0.1
    assert np.std(pull) == pytest.approx(1.0, rel=0.1)


def test_focal_plane_level_and_picture(tmp_path, luigi_store):
    cfg = luigi.configuration.get_config()
    cfg.set("sim", "scale", "64")
    level_task = FocalPlaneLevel(date=DEMO_DATE, filtercode="zg")
    image = FocalPlaneFlatImage(date=DEMO_DATE, filtercode="zg")
    assert build_ok(image, workers=2)
    hdul = storage.read_fits(level_task.output())
    fp = hdul[0].header["FLTNORM_FP"]
    rows = hdul[1].data
    assert list(rows["CCDID"]) == list(range(1, 17))
    flats = {}
    for c in range(1, 17):
        hdu = storage.read_fits(level_task.input()[c])[0]
        flats[c] = hdu.data.astype(np.float64) * hdu.header["FLTNORM"]
        assert hdu.header["FLTNORM"] == pytest.approx(rows["FLTNORM"][c - 1])
    assert fp == pytest.approx(
        np.median(np.concatenate([f.ravel() for f in flats.values()])), rel=1e-6
    )
    assert (hdul[0].header["ARCHIVE"], hdul[0].header["SIMSCALE"]) == ("sim", 64)
    png = storage.read_bytes(image.output())
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "fp_flat.png").write_bytes(png)
    # provenance in the PNG's text chunks, no date: a rebuilt picture is byte-identical
    text = PIL.Image.open(io.BytesIO(png)).text
    assert float(text["FLTNORM_FP"]) == fp and text["ztfluigi.product"] == "FocalPlaneFlatImage"
    inputs = text["ztfluigi.inputs"].split(", ")
    assert inputs[0].endswith("_zg_fp_flatnorm.fits") and len(inputs) == 17
    assert all(f"_zg_c{c:02d}_l00_flat.fits" in inputs[c] for c in range(1, 17))
    assert "numpy=" in text["ztfluigi.versions"] and "matplotlib=" in text["ztfluigi.versions"]
    assert text["ztfluigi.ARCHIVE"] == "sim" and text["ztfluigi.SIMSEED"] == str(SEED)
    assert text["Software"].startswith("ztfluigi ")
    assert not {"Creation Time", "Date", "date:create"} & set(text)
    image.output().remove()
    assert build_ok(image)
    assert storage.read_bytes(image.output()) == png


def test_incomplete_focal_plane_is_a_failure():
    flats = {c: (np.ones((4, 4), np.float32), 1.0) for c in range(1, 16)}
    with pytest.raises(calib.CalibrationError, match="CCD"):
        calib.focal_plane_level(flats)
    flats[16] = (np.full((4, 4), np.nan, np.float32), 1.0)
    assert calib.focal_plane_level(flats) == 1.0  # NaN-safe


def test_global_median_matches_numpy():
    rng = np.random.default_rng(3)
    arrays = [rng.normal(1, 0.1, (37, 41)).astype(np.float32) for _ in range(16)]
    arrays[3][5, 5] = np.nan
    ref = np.nanmedian(np.concatenate([a.ravel() for a in arrays]))
    flats = {c + 1: (a, 1.0) for c, a in enumerate(arrays)}
    assert calib.focal_plane_level(flats) == pytest.approx(ref, rel=1e-7)


def test_night_without_calibration_fails_cleanly(luigi_store):
    cfg = luigi.configuration.get_config()
    cfg.set("sim", "calib_gaps", "true")
    no_cal = night_without_calibration()
    task = MasterBias(date=no_cal, ccdid=1)
    assert not build_ok(task)
    assert not task.output().exists()


def test_flat_without_led_is_reported_not_silently_dropped(luigi_store):
    from ztfluigi.tasks import RawFiles

    ccdid = 2
    flats = RawFiles(date=DEMO_DATE, ccdid=ccdid, imgtype="flat", filtercode="zg")
    assert build_ok(flats)
    victim = flats.output()[7]
    content = storage.read_bytes(victim)
    at = content.index(b"ILUM_LED=")
    damaged = content[:at] + b"COMMENT  " + content[at + 9 :]  # the card no longer has a value
    # ... in a file the archive served whole (valid checksums): a damaged one would be re-fetched
    damaged = fitschecksum.add_checksums(damaged)
    victim.remove()
    storage.write_bytes(victim, damaged)
    task = MasterFlat(date=DEMO_DATE, ccdid=ccdid, filtercode="zg")
    assert build_ok(task)
    header = storage.read_fits(task.output())[0].header
    assert header["NBADLED"] == 1 and header["NFRAMES"] == 19
    assert victim.path.rsplit("/", 1)[-1] in header["BADLED01"]


def test_failures_reach_the_scheduler_as_one_line(luigi_store):
    """What luigid's page shows for a failed task: the named reason, not a traceback."""
    import luigi.scheduler
    import luigi.worker

    luigi.configuration.get_config().set("sim", "calib_gaps", "true")
    no_cal = night_without_calibration()
    task = MasterBias(date=no_cal, ccdid=3)
    sch = luigi.scheduler.Scheduler()
    with luigi.worker.Worker(scheduler=sch, no_install_shutdown_handler=True) as w:
        w.add(task)
        w.run()
    error = json.loads(sch.fetch_error(task.task_id)["error"])  # luigi JSON-encodes it
    assert error.startswith("CalibrationError: ") and "\n" not in error
    assert str(no_cal) in error and "CCD 3" in error
