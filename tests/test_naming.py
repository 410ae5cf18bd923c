"""File names and paths: the one canonical builder/parser, round trips and validation."""

import datetime as dt

import pytest

from ztfluigi import naming


@pytest.mark.parametrize(
    "name",
    [
        "ztf_20190321080278_000000_bi_c01_b.fits.fz",
        "ztf_20190314080532_000000_zg_c04_f.fits.fz",
        "ztf_20200401152477_000517_zg_c06_o.fits.fz",
        "ztf_20220704387176_000695_zr_c11_o.fits.fz",
    ],
)
def test_real_raw_names_round_trip(name):
    raw = naming.parse_raw_filename(name)
    assert raw.filename == name
    f = raw.filefracday
    assert raw.relpath == f"raw/{f[:4]}/{f[4:8]}/{f[8:]}/{name}"
    assert naming.parse_raw_filename("some/dir/" + name) == raw


@pytest.mark.parametrize(
    "bad",
    [
        "ztf_2019032108027_000000_bi_c01_b.fits.fz",
        "ztf_20190321080278_000000_bi_c17_b.fits.fz",
        "ztf_20191321080278_000000_bi_c01_b.fits.fz",
        "foo.fits",
        "ztf_20190321080278_000000_zq_c01_o.fits.fz",
    ],
)
def test_bad_names_give_one_line_errors(bad):
    with pytest.raises(ValueError) as err:
        naming.parse_raw_filename(bad)
    assert "\n" not in str(err.value) and "not a ZTF raw file name" in str(err.value)


def test_filefracday_truncates_the_ut_day_fraction():
    # The real file ztf_20200924431759 has OBSJD 2459116.9317708: its name is stamped ~1 s
    # before OBSJD by the camera. The simulator names files by the truncated OBSJD fraction.
    assert naming.filefracday(2459116.9317708) == "20200924431770"
    assert naming.filefracday(2458573.5) == "20190331000000"
    assert naming.night_id(dt.date(2020, 9, 24)) == 1362


def test_science_quadrant_paths():
    raw = naming.parse_raw_filename("ztf_20200924431759_000655_zr_c13_o.fits.fz")
    assert naming.science_quadrant_relpath(raw, 3, "sciimg.fits") == (
        "sci/2020/0924/431759/ztf_20200924431759_000655_zr_c13_o_q3_sciimg.fits"
    )
    assert naming.science_quadrant_name(raw, 3, "apcat.parquet", prefix="ztfin2p3") == (
        "ztfin2p3_20200924431759_000655_zr_c13_o_q3_apcat.parquet"
    )
