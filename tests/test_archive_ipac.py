"""IPAC inputs over HTTP: the cheapest IRSA requests, and damage retried or named in one line.

The IRSA client against the IRSA-compatible server in front of the synthetic archive, on a
loopback port: science headers are one ranged read per quadrant, masks one download; a flipped
header byte, a flipped mask pixel, a short or corrupt metadata CSV are retried, and when they
persist the error is one line naming the file.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow.compute as pc
import pytest

from tests.helpers import DEMO_DATE
from ztfluigi import ipac
from ztfluigi.archive import ArchiveError
from ztfluigi.archive.irsa import HEADER_PROBE, IrsaArchive
from ztfluigi.archive.server import DATA_PREFIX, SEARCH_PREFIX, Faults, IrsaServer
from ztfluigi.archive.sim import SimArchive
from ztfluigi.naming import (
    RawName,
    parse_raw_filename,
    science_quadrant_name,
    science_quadrant_relpath,
)
from ztfluigi.sim.schedule import SimConfig

SIM = SimConfig(seed=0, scale=32, n_fields=1)
CCD = 5
SHAPE = (96, 96)  # quadrant shape at scale 32


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch):
    for key in ("IRSA_USERNAME", "IRSA_PASSWORD", "ZTFLUIGI_IRSA_ATTEMPTS",
                "ZTFLUIGI_IRSA_BACKOFF", "ZTFLUIGI_IRSA_TIMEOUT"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")


@pytest.fixture(scope="module")
def sim():
    return SimArchive(SIM)


@pytest.fixture(scope="module")
def server(sim):
    with IrsaServer(sim) as srv:
        yield srv


@pytest.fixture(scope="module")
def quadrants(sim) -> list[tuple[RawName, int]]:
    """Every science quadrant of one CCD of the demo night (3 exposures x 4 quadrants)."""
    exposures = [e for e in sim.exposures(DEMO_DATE).values() if e.imgtype == "object"]
    return [(e.raw_name(CCD), qid) for e in exposures for qid in range(1, 5)]


def client(url: str, **kwargs) -> IrsaArchive:
    options = {"attempts": 3, "backoff": 0.01, "timeout": 5.0, "ztfquery_file": "/nonexistent"}
    return IrsaArchive(url, **{**options, **kwargs})


def data_path(raw: RawName, qid: int, suffix: str) -> str:
    return DATA_PREFIX + science_quadrant_relpath(raw, qid, suffix)


# -- the cheapest requests ------------------------------------------------------------------


def test_headers_are_one_ranged_read_per_quadrant(sim, server, quadrants):
    start = len(server.requests)
    table = client(server.url).fetch_science_headers(quadrants)
    reads = server.requests[start:]
    # what the sim archive gives directly is what IRSA serves (layout cards included)
    assert table.equals(sim.fetch_science_headers(quadrants))
    assert table.num_rows == 12 and table["ccdid"].to_pylist() == [CCD] * 12
    assert sorted(r.path for r in reads) == sorted(data_path(r, q, "sciimg.fits")
                                                   for r, q in quadrants)  # fmt: skip
    assert {(r.range, r.status, r.sent) for r in reads} == {
        (f"bytes=0-{HEADER_PROBE - 1}", 206, HEADER_PROBE)}  # fmt: skip
    header = ipac.header_for(table, *quadrants[5])
    assert header["QID"] == quadrants[5][1] and header["NAXIS1"] == SHAPE[1]


def test_a_longer_header_grows_the_range(sim, server, quadrants):
    raw, qid = quadrants[0]
    relpath = science_quadrant_relpath(raw, qid, "sciimg.fits")
    start = len(server.requests)
    header = client(server.url).primary_header(relpath, "sciimg", probe=2880)
    ranges = [r.range for r in server.requests[start:]]
    assert ranges == ["bytes=0-2879", "bytes=2880-5759", "bytes=5760-11519", "bytes=11520-23039"]
    assert header.tostring() == ipac.header_for(sim.fetch_science_headers([(raw, qid)]), raw,
                                                qid).tostring()  # fmt: skip


def test_a_server_without_ranges_is_read_up_to_the_header(sim, quadrants):
    with IrsaServer(sim, ranges=False) as srv:
        table = client(srv.url).fetch_science_headers(quadrants[:4])
        answers = [(r.range, r.status) for r in srv.requests]
    assert answers == [(f"bytes=0-{HEADER_PROBE - 1}", 200)] * 4  # whole files, read in part
    assert table.equals(sim.fetch_science_headers(quadrants[:4]))


def test_masks_are_one_verified_download(sim, server, quadrants):
    archive = client(server.url)
    for raw, qid in quadrants[:4]:
        start = len(server.requests)
        got = archive.fetch_mask(raw, qid, shape=SHAPE)
        assert [r.path for r in server.requests[start:]] == [data_path(raw, qid, "mskimg.fits")]
        assert got == sim.fetch_mask(raw, qid)
        assert got.name == science_quadrant_name(raw, qid, "mskimg.fits")
        np.testing.assert_array_equal(ipac.read_mask(got.content, got.name, SHAPE),
                                      sim.science_mask(raw, qid)[1])  # fmt: skip
    with pytest.raises(ArchiveError, match="mask shape") as err:
        client(server.url, attempts=1).fetch_mask(raw, qid, shape=(3080, 3072))
    assert "\n" not in str(err.value)


def test_gzipped_masks_are_found_and_remembered(sim, quadrants):
    with IrsaServer(sim, gzip_masks=True) as srv:
        archive = client(srv.url)
        first = archive.fetch_mask(*quadrants[0])
        second = archive.fetch_mask(*quadrants[1])
        statuses = [(r.path.rsplit("_", 1)[1], r.status) for r in srv.requests]
    # the plain name answers 404 once; the client then asks for .fits.gz first
    assert statuses == [("mskimg.fits", 404), ("mskimg.fits.gz", 200), ("mskimg.fits.gz", 200)]
    assert first.relpath.endswith("_q1_mskimg.fits.gz") and first.content[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(ipac.read_mask(second.content, second.name),
                                  sim.science_mask(*quadrants[1])[1])  # fmt: skip


def test_request_count_of_one_ccd_night(sim, server, quadrants):
    """A first build fetches each quadrant's header and mask once: 2 requests per quadrant."""
    archive = client(server.url)
    start = len(server.requests)
    table = archive.fetch_science_headers(quadrants)
    masks = [archive.fetch_mask(raw, qid, SHAPE) for raw, qid in quadrants]
    reads = server.requests[start:]
    assert len(reads) == 2 * len(quadrants) == 24
    sent = sum(r.sent for r in reads)
    stored = sum(len(ipac.gzip_bytes(m.content)) for m in masks)
    print(f"one CCD-night ({len(quadrants)} science quadrants): {len(reads)} requests, "
          f"{sent} bytes received; header table {table.nbytes} bytes in memory, "
          f"masks {sum(len(m.content) for m in masks)} bytes ({stored} gzipped)")


# -- damage ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("faults", "reason"),
    [
        (Faults(corrupt_header_first=1), "not printable ASCII"),
        (Faults(corrupt_first=1), "not printable ASCII"),  # the middle of a ranged read
    ],
    ids=["header-byte", "body-byte"],
)
def test_a_damaged_header_is_read_again(sim, quadrants, caplog, faults, reason):
    with IrsaServer(sim, faults=faults) as srv, caplog.at_level(logging.WARNING):
        table = client(srv.url).fetch_science_headers(quadrants[:4])
        records = list(srv.requests)
    assert table.equals(sim.fetch_science_headers(quadrants[:4]))
    assert len(records) == 8 and sum(r.fault != "" for r in records) == 4
    warnings = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(warnings) == 4 and all(reason in w and "_sciimg.fits" in w for w in warnings)


@pytest.mark.parametrize("gzip_masks", [False, True], ids=["fits", "fits.gz"])
def test_a_flipped_mask_pixel_is_downloaded_again(sim, quadrants, caplog, gzip_masks):
    raw, qid = quadrants[2]
    with IrsaServer(sim, faults=Faults(corrupt_pixel_first=1), gzip_masks=gzip_masks) as srv, \
            caplog.at_level(logging.WARNING):  # fmt: skip
        archive = client(srv.url)
        archive._mask_suffix = "mskimg.fits.gz" if gzip_masks else "mskimg.fits"
        got = archive.fetch_mask(raw, qid, SHAPE)
        faults = [r.fault for r in srv.requests]
    assert faults == ["pixel", ""]
    np.testing.assert_array_equal(ipac.read_mask(got.content, got.name),
                                  sim.science_mask(raw, qid)[1])  # fmt: skip
    (warning,) = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert got.name in warning and "outside the IPAC bits 0-12" in warning


@pytest.mark.parametrize(
    ("faults", "suffix", "reason"),
    [
        (Faults(corrupt_header_first=10**6), "sciimg.fits", "is not printable ASCII"),
        (Faults(corrupt_header_first=10**6), "mskimg.fits", "is not printable ASCII"),
        (Faults(corrupt_pixel_first=10**6), "mskimg.fits", "mask pixel(s) outside the IPAC bits"),
        (Faults(short_first=10**6), "mskimg.fits", "is truncated"),
    ],
    ids=["header", "mask-header", "mask-pixel", "mask-short"],
)
def test_persistent_damage_is_one_line_naming_the_file(sim, quadrants, faults, suffix, reason):
    raw, qid = quadrants[3]
    name = science_quadrant_name(raw, qid, suffix)
    with IrsaServer(sim, faults=faults) as srv:
        archive = client(srv.url)
        with pytest.raises(ArchiveError) as err:
            if suffix == "sciimg.fits":
                archive.fetch_science_headers([(raw, qid)])
            else:
                archive.fetch_mask(raw, qid)
        assert srv.request_count(data_path(raw, qid, suffix)) == 3
    message = str(err.value)
    assert message.startswith(f"{name}: failed after 3 attempts from {srv.url}")
    assert reason in message and "\n" not in message


class WrongQuadrant(SimArchive):
    """An archive whose q1 header is q2's (a mix-up on the server side)."""

    def science_header(self, raw, qid):
        return super().science_header(raw, 2 if qid == 1 else qid)


def test_the_header_of_another_quadrant_is_refused(quadrants):
    raw, _ = quadrants[0]
    with IrsaServer(WrongQuadrant(SIM)) as srv:
        with pytest.raises(ArchiveError, match="QID = 2 in the header, expected 1") as err:
            client(srv.url).fetch_science_headers([(raw, 1)])
    assert str(err.value).startswith(science_quadrant_name(raw, 1, "sciimg.fits"))


# -- metadata CSV ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "faults",
    [Faults(short_first=1, prefix=SEARCH_PREFIX), Faults(corrupt_first=1, prefix=SEARCH_PREFIX)],
    ids=["short", "flipped-byte"],
)
def test_a_damaged_metadata_answer_is_asked_again(sim, faults, caplog):
    with IrsaServer(sim, faults=faults) as srv, caplog.at_level(logging.WARNING):
        table = client(srv.url).night_metadata(DEMO_DATE)
        searches = [r for r in srv.requests if r.path.startswith(SEARCH_PREFIX)]
    assert table.equals(sim.night_metadata(DEMO_DATE))
    assert [r.fault for r in searches] == [faults.short_first and "short" or "corrupt", ""]
    (warning,) = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert warning.startswith(f"raw metadata of {DEMO_DATE}: attempt 1 of 3 failed")


def test_a_persistently_short_metadata_answer_is_one_line(sim):
    with IrsaServer(sim, faults=Faults(short_first=10**6, prefix=SEARCH_PREFIX)) as srv:
        with pytest.raises(ArchiveError) as err:
            client(srv.url).night_metadata(DEMO_DATE)
        assert sum(r.path.startswith(SEARCH_PREFIX) for r in srv.requests) == 3
    message = str(err.value)
    assert message.startswith(f"raw metadata of {DEMO_DATE}: failed after 3 attempts")
    assert "CSV answer ends in the middle of a line" in message and "\n" not in message


def test_only_science_quadrants_have_ipac_inputs(sim, server):
    index = sim.night_metadata(DEMO_DATE)
    bias = index.filter(pc.equal(index["imgtype"], "bias"))["filename"][0].as_py()
    with pytest.raises(ArchiveError, match="not found") as err:
        client(server.url).fetch_mask(parse_raw_filename(bias), 1)
    assert "\n" not in str(err.value)
