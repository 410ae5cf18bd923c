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


def test_environment_errors_are_one_line(capsys):
    """A port already in use (an OSError) is one line and exit status 2, not a traceback."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["archive", "serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ztfluigi: error: ") and "in use" in err and err.count("\n") == 1
