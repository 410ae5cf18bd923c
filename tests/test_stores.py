"""The chain on every kind of store: S3, local disk, a ztfquery ``$ZTFDATA`` mirror used in
place as the raw store, mixed roots (raw local, products on S3), and iRODS-like mounts (no
rename across directories, directory listings that lag behind writes).

One narrowed night (CCD 1, zr, scale 16, one field; its calibrations need all 16 CCDs) runs
three times against a real S3 endpoint (moto's server over HTTP): on ``s3://`` from scratch;
on local disk with the first run's raw files as a ``$ZTFDATA`` mirror; mixed (raw files from
the mirror, calibrations from the S3 night, catalogues to another S3 prefix).
"""

import contextlib
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import luigi
import numpy as np
import pyarrow as pa
import pytest
from fsspec.implementations.local import LocalFileSystem

from tests.helpers import DEMO_DATE, build, luigi_settings
from tests.s3server import REGION, clear_aws_env, moto_s3
from ztfluigi import config, naming, storage
from ztfluigi.archive.sim import SimArchive
from ztfluigi.sim.schedule import SimConfig
from ztfluigi.storage import FsspecTarget, ListingCache, read_fits, read_parquet
from ztfluigi.tasks import (
    ApertureCatalog,
    ApertureCatalogUnit,
    FocalPlaneLevel,
    MasterBias,
    MasterFlat,
    RawFiles,
    RawIndex,
)

pytestmark = pytest.mark.slow  # narrowed nights on local disk, S3 and a mirror

SIM = {"seed": "0", "scale": "16", "n_fields": "1"}
ENTRY = {"date": DEMO_DATE, "ccdid": 1, "filtercode": "zr"}
SUCCESS = luigi.execution_summary.LuigiStatusCode.SUCCESS



@contextlib.contextmanager
def counting_fetches():
    """Record every raw file the archive is asked for (the real archive still serves it)."""
    fetched: list[str] = []
    original = SimArchive.fetch_raw

    def fetch_raw(self, raw):  # noqa: ANN001, ANN202 - same signature as the archive's
        fetched.append(raw.filename)
        return original(self, raw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SimArchive, "fetch_raw", fetch_raw)
        yield fetched


@dataclass
class Night:
    """What a run built, read back while its configuration was active."""

    status: object
    seconds: float
    fetched: list[str]
    bias: dict[int, np.ndarray] = field(default_factory=dict)
    flat: dict[int, np.ndarray] = field(default_factory=dict)
    fp_level: float = 0.0
    fp_table: object = None
    catalogues: dict[str, pa.Table] = field(default_factory=dict)
    rawindex: pa.Table | None = None
    urls: list[str] = field(default_factory=list)


def run_night() -> Night:
    """Build the narrowed night under the current configuration and read its products back."""
    with counting_fetches() as fetched:
        t0 = time.perf_counter()
        result = build(ApertureCatalog(**ENTRY))
        seconds = time.perf_counter() - t0
    night = Night(result.status, seconds, list(fetched))
    for c in range(1, 17):
        for kind, target in (("bias", MasterBias(date=DEMO_DATE, ccdid=c).output()),
                             ("flat", MasterFlat(date=DEMO_DATE, ccdid=c,
                                                 filtercode="zr").output())):  # fmt: skip
            data = read_fits(target)[0].data
            assert data.dtype.kind == "f" and data.dtype.itemsize == 4
            getattr(night, kind)[c] = data
            night.urls.append(target.path)
    fp = FocalPlaneLevel(date=DEMO_DATE, filtercode="zr").output()
    hdul = read_fits(fp)
    night.fp_level, night.fp_table = hdul[0].header["FLTNORM_FP"], hdul[1].data
    unit = ApertureCatalogUnit(**ENTRY)
    for target in unit.output():
        night.catalogues[target.path.rsplit("/", 1)[1]] = read_parquet(target)
        night.urls.append(target.path)
    night.rawindex = read_parquet(RawIndex(date=DEMO_DATE).output())
    return night


def mtimes(tree: Path) -> dict[str, int]:
    return {str(p.relative_to(tree)): p.stat().st_mtime_ns for p in tree.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def server():
    with moto_s3() as srv:
        yield srv


@pytest.fixture(scope="module")
def bucket(server):
    return server.create_bucket(f"stores-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def s3_night(server, bucket):
    """``root = s3://bucket/night``; endpoint and credentials from the ``AWS_*`` environment."""
    settings = {"ztfluigi": {"root": f"s3://{bucket}/night", "archive": "sim", "refcat": "sim"},
                "sim": SIM}  # fmt: skip
    with pytest.MonkeyPatch.context() as mp, luigi_settings(settings):
        server.use_env(mp)
        return run_night()


@pytest.fixture(scope="module")
def mirror(server, bucket, s3_night, tmp_path_factory):
    """A ztfquery ``$ZTFDATA`` tree holding the S3 night's raw files under their IRSA names."""
    ztfdata = tmp_path_factory.mktemp("ztfdata")
    fs = fsspec.filesystem("s3", endpoint_url=server.endpoint, key="k", secret="s",
                           client_kwargs={"region_name": REGION},
                           skip_instance_cache=True)  # fmt: skip
    fs.get(f"{bucket}/night/raw/", str(ztfdata / "raw"), recursive=True)
    before = mtimes(ztfdata / "raw")
    assert len(before) == len(s3_night.fetched)
    return ztfdata, before


@pytest.fixture(scope="module")
def local_night(mirror, tmp_path_factory):
    """Products on local disk; raw files from the ``$ZTFDATA`` mirror (``raw_root``)."""
    ztfdata, _ = mirror
    root = tmp_path_factory.mktemp("local") / "store"
    settings = {"ztfluigi": {"root": str(root), "raw_root": str(ztfdata), "archive": "sim",
                             "refcat": "sim"}, "sim": SIM}  # fmt: skip
    with luigi_settings(settings):
        return run_night(), root


@pytest.fixture(scope="module")
def mixed_night(server, bucket, s3_night, mirror, local_night):
    """Raw files from the local mirror, calibrations read from the S3 night, catalogues written
    to another S3 prefix; S3 reached through ``[s3]`` only (no ``AWS_*`` environment)."""
    ztfdata, _ = mirror
    settings = {
        "ztfluigi": {"root": f"s3://{bucket}/mixed-root", "raw_root": f"file://{ztfdata}",
                     "cal_root": f"s3://{bucket}/night", "catalog_root": f"s3://{bucket}/mixed",
                     "archive": "sim", "refcat": "sim"},
        "sim": SIM,
        "s3": {"endpoint_url": server.endpoint, "region": REGION, "key": "mixed-key",
               "secret": "mixed-secret"},
    }  # fmt: skip
    client = server.client()
    etags = {k: client.head_object(Bucket=bucket, Key=k)["ETag"] for k in server.keys(bucket)}
    with pytest.MonkeyPatch.context() as mp:
        clear_aws_env(mp)
        try:
            with luigi_settings(settings):
                return run_night(), etags
        finally:
            config.install_store_settings()


def assert_same_products(a: Night, b: Night) -> None:
    """Calibration pixels bit for bit, catalogue values and metadata, RawIndex rows."""
    for c in range(1, 17):
        assert np.array_equal(a.bias[c], b.bias[c]) and np.array_equal(a.flat[c], b.flat[c])
    assert a.fp_level == b.fp_level
    for column in ("CCDID", "FLTNORM", "FLATFILE"):
        assert np.array_equal(a.fp_table[column], b.fp_table[column])
    assert sorted(a.catalogues) == sorted(b.catalogues) and len(a.catalogues) >= 4
    for name, table in a.catalogues.items():
        other = b.catalogues[name]
        assert table.num_rows > 0 and table.drop_columns([]).equals(other.drop_columns([]))
        meta_a, meta_b = dict(table.schema.metadata), dict(other.schema.metadata)
        refcat_a, refcat_b = meta_a.pop(b"refcat"), meta_b.pop(b"refcat")
        # the content digest covers the metadata, so it differs by the refcat's URL alone
        meta_a.pop(b"ztfluigi.sha256"), meta_b.pop(b"ztfluigi.sha256")
        assert meta_a == meta_b
        assert refcat_a.rsplit(b"/refcat/", 1)[1] == refcat_b.rsplit(b"/refcat/", 1)[1]
    assert a.rawindex.equals(b.rawindex)


# ------------------------------------------------------------------------------------------
# S3 root, local disk, $ZTFDATA mirror, mixed roots
# ------------------------------------------------------------------------------------------


def test_s3_root_builds_what_local_disk_builds(s3_night, local_night, mirror, bucket, server):
    night, root = local_night
    assert s3_night.status == SUCCESS and night.status == SUCCESS
    print(f"S3 run {s3_night.seconds:.1f} s, local run {night.seconds:.1f} s")
    assert_same_products(s3_night, night)
    assert all(u.startswith(f"s3://{bucket}/night/") for u in s3_night.urls)
    assert all(u.startswith(str(root)) for u in night.urls)
    # The raw objects on S3 are the archive's bytes, byte for byte (as a local run stores them).
    ztfdata, _ = mirror
    archive = SimArchive(SimConfig(seed=0, scale=16, n_fields=1))
    for name in (s3_night.fetched[0], s3_night.fetched[len(s3_night.fetched) // 2],
                 s3_night.fetched[-1]):  # fmt: skip
        rawname = naming.parse_raw_filename(name)
        key = f"night/{rawname.relpath}"
        stored = server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        assert stored == archive.fetch_raw(rawname) == (ztfdata / rawname.relpath).read_bytes()
    kinds = {naming.parse_raw_filename(n).imgtype for n in s3_night.fetched}
    assert kinds == {"bias", "flat", "object"}


def test_ztfdata_mirror_serves_raw_files_in_place(local_night, mirror):
    night, root = local_night
    ztfdata, before = mirror
    assert night.status == SUCCESS
    assert night.fetched == []  # nothing asked from the archive
    assert mtimes(ztfdata / "raw") == before  # nothing rewritten or added in the mirror
    assert not (root / "raw").exists()  # nor copied into the product store
    # The night's index is the one product the raw store gains (next to, not in, raw/).
    assert (ztfdata / naming.rawindex_relpath(DEMO_DATE)).is_file()


def test_mixed_roots_raw_local_products_on_s3(mixed_night, local_night, mirror, server, bucket):
    mixed, etags = mixed_night
    night, _ = local_night
    ztfdata, before = mirror
    assert mixed.status == SUCCESS
    assert mixed.fetched == [] and mtimes(ztfdata / "raw") == before  # raw: the local tree
    assert_same_products(mixed, night)
    client = server.client()
    keys = server.keys(bucket)
    new = sorted(set(keys) - set(etags))
    # Only the catalogues were built, under catalog_root; nothing went to root.
    assert new == sorted(u.split("/", 3)[3] for u in mixed.urls if "/sci/" in u)
    assert len(new) == len(night.catalogues) and all(k.startswith("mixed/sci/") for k in new)
    # The calibrations were found under cal_root on S3 and used as they are.
    assert all(u.startswith(f"s3://{bucket}/night/cal/") for u in mixed.urls if "/cal/" in u)
    assert {k: client.head_object(Bucket=bucket, Key=k)["ETag"] for k in etags} == etags


# ------------------------------------------------------------------------------------------
# iRODS-like mounts
# ------------------------------------------------------------------------------------------


def test_commits_never_rename_across_directories(tmp_path, monkeypatch):
    """On mounts where a rename between directories fails, every commit still works: the
    temporary always sits next to the product."""
    renames: list[tuple[str, str]] = []
    real_replace, real_rename = os.replace, os.rename

    def same_directory_only(real):  # noqa: ANN001, ANN202
        def rename(src, dst, *args, **kwargs):  # noqa: ANN001, ANN202
            src, dst = os.fspath(src), os.fspath(dst)
            if os.path.dirname(os.path.abspath(src)) != os.path.dirname(os.path.abspath(dst)):
                raise OSError(18, "Invalid cross-device link (rename across directories)", src)
            renames.append((src, dst))
            return real(src, dst, *args, **kwargs)

        return rename

    monkeypatch.setattr(os, "replace", same_directory_only(real_replace))
    monkeypatch.setattr(os, "rename", same_directory_only(real_rename))
    root = tmp_path / "irods"
    with luigi_settings({"ztfluigi": {"root": str(root), "archive": "sim"}, "sim": SIM}):
        assert build(MasterBias(date=DEMO_DATE, ccdid=1)).status == SUCCESS
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert len(files) == 13  # the store identity, the RawIndex, 10 raw biases, the master bias
    assert sorted(os.path.relpath(dst, root) for _, dst in renames) == files
    assert all(os.path.basename(src).startswith(".") for src, _ in renames)
    with pytest.raises(OSError, match="across directories"):
        os.replace(root / files[0], tmp_path / "elsewhere")


class LaggingListingFileSystem(LocalFileSystem):
    """A local tree whose directory listings miss entries younger than ``lag`` seconds (a FUSE
    mount's readdir cache), while a stat of the file itself sees it at once."""

    protocol = ("laggy",)
    lag = 600.0

    @classmethod
    def _strip_protocol(cls, path):  # noqa: ANN001, ANN206
        path = os.fspath(path)
        path = path[len("laggy://") :] if path.startswith("laggy://") else path
        return super()._strip_protocol(path)

    def ls(self, path, detail=False, **kwargs):  # noqa: ANN001, ANN201
        now = time.time()
        entries = super().ls(path, detail=True, **kwargs)
        entries = [e for e in entries if now - e["mtime"] > self.lag]
        return entries if detail else [e["name"] for e in entries]


fsspec.register_implementation("laggy", LaggingListingFileSystem, clobber=True)


def test_listing_that_lags_behind_writes(tmp_path):
    directory = f"laggy://{tmp_path}/sci/2019/0331/084088"
    written, absent = f"{directory}/a_apcat.parquet", f"{directory}/b_apcat.parquet"
    storage.write_bytes(FsspecTarget(written), b"catalogue")
    assert FsspecTarget(written).exists()  # a stat sees it ...
    lagging = ListingCache()
    assert lagging.exists(written) is False  # ... the listing does not yet
    lagging.note_written(written)  # the writer's own cache stays right
    assert lagging.exists(written) is True and lagging.n_listings == 1

    confirming = ListingCache(confirm_missing=True)
    assert confirming.exists_many([written, absent, written, absent]) == [True, False, True, False]
    assert confirming.n_listings == 1 and confirming.n_confirmations == 2  # once per name
    os.utime(str(tmp_path / "sci/2019/0331/084088/a_apcat.parquet"), (0, 0))  # listed at last
    fresh = ListingCache(confirm_missing=True)
    assert fresh.exists(written) is True and fresh.n_confirmations == 0


def test_lagging_mount_fails_a_unit_unless_missing_names_are_confirmed(tmp_path):
    settings = {"ztfluigi": {"root": f"laggy://{tmp_path}/store", "archive": "sim"}, "sim": SIM}
    unit = RawFiles(date=DEMO_DATE, ccdid=1, imgtype="bias", first=10)
    with luigi_settings(settings):
        # Every file is written, none is listed yet: luigi's check_complete_on_run fails it.
        assert build(unit).status != SUCCESS
        assert len(list((tmp_path / "store" / "raw").rglob("*.fits.fz"))) == 10
        assert not unit.complete()
    settings["ztfluigi"]["listing_confirm_missing"] = "true"
    try:
        with luigi_settings(settings):
            assert unit.complete()
            other = RawFiles(date=DEMO_DATE, ccdid=2, imgtype="bias", first=10)
            assert build(other).status == SUCCESS and other.complete()
    finally:
        config.install_store_settings()
    assert ListingCache().confirm_missing is False
