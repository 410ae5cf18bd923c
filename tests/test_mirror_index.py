"""The RawIndex of a ``$ZTFDATA`` mirror: built from the raw files' headers when there is no
archive (``archive = none``) or it cannot be reached, and written under ``root`` when the mirror
is read-only."""

from __future__ import annotations

import datetime as dt
import io
import socket
import stat
from pathlib import Path

import luigi
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

from tests.helpers import DEMO_DATE, build, luigi_settings
from ztfluigi import naming, raw
from ztfluigi.archive import DATABASE_COLUMNS, ArchiveError, ArchiveUnreachable
from ztfluigi.archive.irsa import IrsaArchive
from ztfluigi.archive.mirror import night_metadata_from_headers
from ztfluigi.archive.sim import SimArchive
from ztfluigi.cli.status import status_table
from ztfluigi.sim.schedule import SimConfig
from ztfluigi.tasks import RawFile, RawFiles, RawIndex

SIM = {"seed": "0", "scale": "8", "n_fields": "1"}
SUCCESS = luigi.execution_summary.LuigiStatusCode.SUCCESS


def archive_index() -> pa.Table:
    return SimArchive(SimConfig(seed=0, scale=8, n_fields=1)).night_metadata(DEMO_DATE)


def mirror_files(index: pa.Table) -> list[str]:
    """A few raw files of the night: CCD 4's first three biases, two zr flats of different
    LEDs, its first two science files, and CCD 5's first science file."""

    def pick(ccdid: int, imgtype: str, n: int, filtercode: str = "") -> list[str]:
        mask = pc.and_(pc.equal(index["ccdid"], ccdid), pc.equal(index["imgtype"], imgtype))
        if filtercode:
            mask = pc.and_(mask, pc.equal(index["filtercode"], filtercode))
        return index.filter(mask)["filename"].to_pylist()[:n]

    flats = pick(4, "flat", 99, "zr")
    return (pick(4, "bias", 3) + [flats[0], flats[-1]] + pick(4, "object", 2)
            + pick(5, "object", 1))  # fmt: skip


def tree_state(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def set_writable(root: Path, writable: bool) -> None:
    bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~bits)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """A read-only ``$ZTFDATA`` tree holding a few raw files of the demo night (scale 8)."""
    root = tmp_path_factory.mktemp("mirror") / "ztfdata"
    archive = SimArchive(SimConfig(seed=0, scale=8, n_fields=1))
    names = mirror_files(archive.night_metadata(DEMO_DATE))
    for name in names:
        rawname = naming.parse_raw_filename(name)
        (root / rawname.relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / rawname.relpath).write_bytes(archive.fetch_raw(rawname))
    set_writable(root, False)
    yield root, names
    set_writable(root, True)


def expected_index(names: list[str]) -> pa.Table:
    """The archive's rows of those files, the database-only columns null."""
    index = archive_index()
    rows = index.filter(pc.is_in(index["filename"], pa.array(names)))
    for column in DATABASE_COLUMNS:
        i = rows.column_names.index(column)
        rows = rows.set_column(i, column, pa.nulls(rows.num_rows, rows.schema.field(column).type))
    return rows


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_headers_index_equals_the_archive_rows(mirror):
    root, names = mirror
    table = night_metadata_from_headers(str(root), DEMO_DATE)
    assert table.num_rows == len(names) == 8
    assert table.equals(expected_index(names))  # same columns, types, order and values
    flats = table.filter(pc.equal(table["imgtype"], "flat"))
    assert flats.num_rows == 2 and all(led > 0 for led in flats["ledid"].to_pylist())


def test_archive_none_indexes_a_read_only_mirror_under_root(mirror, tmp_path):
    root, names = mirror
    before = tree_state(root)
    products = tmp_path / "products"
    settings = {"ztfluigi": {"root": str(products), "raw_root": str(root), "archive": "none"},
                "sim": SIM}  # fmt: skip
    with luigi_settings(settings):
        task = RawIndex(date=DEMO_DATE)
        assert task.output().path == str(products / naming.rawindex_relpath(DEMO_DATE))
        assert build(task).status == SUCCESS
        table = pq.read_table(task.output().path)
        assert table.equals(expected_index(names))
        meta = table.schema.metadata
        assert meta[b"ztfluigi.source"] == b"raw file headers"
        assert meta[b"ztfluigi.archive"] == b"none"
        # the mirror's raw files count as they are: nothing fetched, nothing written there
        units = [RawFiles(date=DEMO_DATE, ccdid=4, imgtype=t) for t in ("bias", "flat", "object")]
        units.append(RawFiles(date=DEMO_DATE, ccdid=5, imgtype="object"))
        assert all(u.complete() for u in units)
        assert build(*units).status == SUCCESS
        # a file of the night the mirror lacks cannot be fetched: one line, nothing written
        missing = next(n for n in archive_index()["filename"].to_pylist() if n not in names)
        assert build(RawFile(filename=missing)).status != SUCCESS
        out = io.StringIO()  # indexed from the headers by design: nothing to say
        status_table(["RawIndex", "--date", str(DEMO_DATE)], out=out)
        assert "rawindex" in out.getvalue() and "unreachable" not in out.getvalue()
    assert tree_state(root) == before
    assert not (root / "meta").exists()


def test_unreachable_archive_falls_back_to_the_headers(mirror, tmp_path, monkeypatch):
    root, names = mirror
    monkeypatch.setenv("ZTFLUIGI_IRSA_ATTEMPTS", "1")
    products = tmp_path / "products"
    url = f"http://127.0.0.1:{closed_port()}"
    settings = {"ztfluigi": {"root": str(products), "raw_root": str(root), "archive": url},
                "sim": SIM}  # fmt: skip
    with luigi_settings(settings):
        task = RawIndex(date=DEMO_DATE)
        assert build(task).status == SUCCESS
        table = pq.read_table(task.output().path)
        assert table.equals(expected_index(names))
        assert table.schema.metadata[b"ztfluigi.source"] == b"raw file headers"
        assert table.schema.metadata[b"ztfluigi.archive"] == url.encode()
        units = [RawFiles(date=DEMO_DATE, ccdid=4, imgtype=t) for t in ("bias", "flat", "object")]
        assert build(*units).status == SUCCESS  # complete in the mirror: the archive never asked
        # status says which index may be partial (and how to ask the archive again)
        out = io.StringIO()
        status_table(["RawIndex", "--date", str(DEMO_DATE)], out=out)
        assert ("1 RawIndex made from the mirror's raw files while the archive was unreachable"
                in out.getvalue() and task.output().path in out.getvalue())  # fmt: skip


def test_archive_none_without_files_fails_in_one_line(tmp_path):
    empty = tmp_path / "ztfdata"
    empty.mkdir()
    settings = {"ztfluigi": {"root": str(tmp_path / "products"), "raw_root": str(empty),
                             "archive": "none"}, "sim": SIM}  # fmt: skip
    with luigi_settings(settings):
        task = RawIndex(date=DEMO_DATE)
        with pytest.raises(ArchiveError) as err:
            task.run()
        message = str(err.value)
        assert "\n" not in message and "no raw file of 2019-03-31 under" in message
        assert "archive = none" in message
        assert build(task).status != SUCCESS and not task.output().exists()


def test_rawindex_url_follows_the_mirror_writability(mirror, tmp_path):
    root, _ = mirror
    writable = tmp_path / "writable"
    writable.mkdir()
    relpath = naming.rawindex_relpath(DEMO_DATE)
    products = tmp_path / "products"
    for raw_root, where in ((writable, writable), (root, products)):
        settings = {"ztfluigi": {"root": str(products), "raw_root": str(raw_root),
                                 "archive": "sim"}, "sim": SIM}  # fmt: skip
        with luigi_settings(settings):
            assert RawIndex(date=DEMO_DATE).output().path == str(where / relpath)
    # a read-only mirror holding its own index: that one is read
    holder = tmp_path / "holder"
    (holder / relpath).parent.mkdir(parents=True)
    (holder / relpath).write_bytes(b"index")
    set_writable(holder, False)
    try:
        settings = {"ztfluigi": {"root": str(products), "raw_root": str(holder),
                                 "archive": "sim"}, "sim": SIM}  # fmt: skip
        with luigi_settings(settings):
            assert RawIndex(date=DEMO_DATE).output().path == str(holder / relpath)
    finally:
        set_writable(holder, True)


def test_unreachable_server_is_told_from_a_failing_one():
    client = IrsaArchive(f"http://127.0.0.1:{closed_port()}", attempts=1, timeout=5)
    with pytest.raises(ArchiveUnreachable, match="failed after 1 attempts"):
        client.night_metadata(DEMO_DATE)


def test_primary_header_read_from_the_first_blocks(mirror):
    root, names = mirror
    path = root / naming.parse_raw_filename(names[3]).relpath
    content = path.read_bytes()
    reads = []

    def read(start: int, end: int) -> bytes:
        reads.append((start, end))
        return content[start:end]

    header = raw.read_primary_header(read, path.name, probe=2880)
    assert header == fits.getheader(path, 0)
    assert header["ILUM_LED"] > 0
    assert reads[-1][1] < 10 * 2880  # the pixels are never read
    damaged = content[:400] + b"\x00" + content[401:]
    with pytest.raises(raw.RawFileError, match=path.name):
        raw.read_primary_header(lambda a, b: damaged[a:b], path.name)
    with pytest.raises(raw.RawFileError, match="no END card"):
        raw.read_primary_header(lambda a, b: content[:2880][a:b], path.name)


def test_another_night_of_the_mirror_has_no_files(mirror):
    root, _ = mirror
    other = DEMO_DATE + dt.timedelta(days=1)
    with pytest.raises(ArchiveError, match=f"no raw file of {other}"):
        night_metadata_from_headers(str(root), other)


def test_the_synthetic_table_holds_its_files_header_values():
    """The simulator's metadata take the cards of its raw files' primary headers (as IRSA's
    table does): the cheap per-exposure values equal the built headers', on the demo night and
    a survey night."""
    from ztfluigi.archive.sim import header_values
    from ztfluigi.sim import headers

    for cfg, date in ((SimConfig(seed=0, scale=8), DEMO_DATE),
                      (SimConfig(seed=0, scale=8, survey=True), dt.date(2019, 9, 15))):
        exposures = list(SimArchive(cfg).exposures(date).values())
        assert {e.imgtype for e in exposures} == {"bias", "flat", "object"}
        for exp in exposures[:: 1 if date == DEMO_DATE else 25]:
            header = headers.raw_primary_header(exp, 1)
            values = header_values(exp)
            assert values == {k: header.get(k, -1) for k in values}, exp.filefracday


def test_ipac_inputs_of_a_read_only_mirror_go_under_root(mirror, tmp_path):
    """The IPAC headers and masks fetched for a read-only mirror's quadrants are written under
    ``root`` (like its RawIndex) and read back from there; the mirror is not touched."""
    from ztfluigi.tasks.ipac import IpacHeaders, IpacMasks, stored_header, stored_mask

    root, _ = mirror
    before = tree_state(root)
    products = tmp_path / "products"
    settings = {"ztfluigi": {"root": str(products), "raw_root": str(root), "archive": "sim"},
                "sim": SIM}  # fmt: skip
    with luigi_settings(settings):
        units = [IpacHeaders(date=DEMO_DATE, ccdid=4, filtercode="zr"),
                 IpacMasks(date=DEMO_DATE, ccdid=4, filtercode="zr")]  # fmt: skip
        assert build(*units).status == SUCCESS and all(u.complete() for u in units)
        assert units[0].output().path.startswith(str(products))
        branches = units[1].branches()
        assert branches and all(units[1].branch_output(b).path.startswith(str(products))
                                for b in branches)  # fmt: skip
        rawname, qid = branches[0]
        ccd = raw.read_raw((root / rawname.relpath).read_bytes(), rawname.filename)
        shape = ccd.data[qid].shape
        assert stored_mask(rawname, qid, shape).shape == shape
        assert stored_header(rawname, qid)["CCDID"] == 4
    assert tree_state(root) == before
