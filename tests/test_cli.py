"""The ``ztfluigi`` command."""

from ztfluigi import cli


def test_night_summary(luigi_store, capsys):
    assert cli.main(["night", "2019-03-31"]) == 0
    out = capsys.readouterr().out
    assert "bias    bi:   320 files (20 exposures)" in out
    assert "flat    zr:   320 files (20 exposures)" in out
    assert "science fields:" in out


def test_bad_date_is_one_line(capsys):
    assert cli.main(["night", "2019-02-30"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid date" in err
