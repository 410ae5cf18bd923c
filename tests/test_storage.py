"""Tests for ztfluigi.storage on local paths, file:// URLs and memory:// URLs (no mocks)."""

import gc
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from astropy.io import fits
from fsspec.implementations.memory import MemoryFileSystem
from luigi.target import FileAlreadyExists

from ztfluigi.storage import (
    FsspecFileSystem,
    FsspecTarget,
    ListingCache,
    ProductError,
    bulk_exists,
    get_target,
    read_bytes,
    read_fits,
    read_parquet,
    url_join,
    write_bytes,
    write_fits,
    write_parquet,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_memory_fs():
    MemoryFileSystem.store.clear()
    MemoryFileSystem.pseudo_dirs[:] = [""]
    yield
    MemoryFileSystem.store.clear()
    MemoryFileSystem.pseudo_dirs[:] = [""]


@pytest.fixture(params=["local", "file", "memory"])
def root(request, tmp_path):
    """A root URL of each supported kind."""
    if request.param == "local":
        return str(tmp_path)
    if request.param == "file":
        return f"file://{tmp_path}"
    return f"memory://test-{uuid.uuid4().hex}"


def _local_listing(directory):
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


# ------------------------------------------------------------------------------------------
# URLs and targets
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("root", "parts", "expected"),
    [
        ("s3://b/p", ("a", "f.fits"), "s3://b/p/a/f.fits"),
        ("s3://b/p/", ("/a/",), "s3://b/p/a/"),
        ("memory://x", ("y",), "memory://x/y"),
        ("memory://", ("y",), "memory://y"),
        ("/abs/path", ("a", "b"), "/abs/path/a/b"),
        ("rel/path", ("a",), "rel/path/a"),
        ("file:///x", ("a",), "file:///x/a"),
        ("file:///", ("a",), "file:///a"),
        ("/", ("a",), "/a"),
        ("/abs", (), "/abs"),
        ("/abs", ("", "a"), "/abs/a"),
    ],
)
def test_url_join(root, parts, expected):
    assert url_join(root, *parts) == expected


def test_target_path_normalisation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert FsspecTarget("a/b.fits").path == str(tmp_path / "a" / "b.fits")
    assert FsspecTarget(tmp_path / "c").path == str(tmp_path / "c")
    assert FsspecTarget("memory://x/y").path == "memory://x/y"
    assert FsspecTarget("s3://bucket/k", {"anon": True}).path == "s3://bucket/k"
    assert isinstance(get_target("memory://x/y"), FsspecTarget)


def test_bytes_round_trip(root):
    target = get_target(url_join(root, "sub", "dir", "blob.bin"))
    assert not target.exists()
    write_bytes(target, b"\x00hello")
    assert target.exists()
    assert read_bytes(target) == b"\x00hello"
    assert read_bytes(target.path) == b"\x00hello"
    # Products are immutable: committing identical bytes again over them is allowed.
    write_bytes(target, b"\x00hello")
    assert read_bytes(target) == b"\x00hello"
    target.remove()
    assert not target.exists()


def test_text_open_round_trip(root):
    target = get_target(url_join(root, "notes.txt"))
    with target.open("w") as f:
        f.write("héllo\n")
    with target.open("r") as f:
        assert f.read() == "héllo\n"
    with target.open("rb") as f:
        assert f.read() == "héllo\n".encode()
    with pytest.raises(ValueError):
        target.open("a")


def test_fits_round_trip(root):
    data = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    hdu = fits.PrimaryHDU(data)
    hdu.header["GAIN"] = (6.2, "e-/ADU")
    mask = fits.ImageHDU(np.ones((3, 4), dtype=np.int16), name="MASK")
    target = get_target(url_join(root, "night", "img.fits"))
    write_fits(target, fits.HDUList([hdu, mask]))
    hdul = read_fits(target.path)
    assert hdul[0].data.dtype.kind == "f" and hdul[0].data.dtype.itemsize == 4  # FITS is >f4
    np.testing.assert_array_equal(hdul[0].data, data)
    assert hdul[0].header["GAIN"] == 6.2
    assert hdul["MASK"].data.sum() == 12
    hdul.close()
    assert hdul[0].data.sum() == pytest.approx(data.sum())  # data loaded before close


def test_fits_compressed_round_trip(root):
    data = np.random.default_rng(1).normal(size=(64, 64)).astype(np.float32)
    comp = fits.CompImageHDU(data, compression_type="GZIP_2", quantize_level=0.0)
    target = get_target(url_join(root, "raw.fits.fz"))
    write_fits(target, fits.HDUList([fits.PrimaryHDU(), comp]))
    np.testing.assert_array_equal(read_fits(target)[1].data, data)


def test_parquet_round_trip(root):
    table = pa.table({"ra": [1.0, 2.0, 3.0], "flux": pa.array([1, 2, 3], pa.float32())})
    table = table.replace_schema_metadata({"origin": "test"})
    target = get_target(url_join(root, "cat", "sources.parquet"))
    write_parquet(target, table, metadata={"version": "2", "field": "655"})
    out = read_parquet(target)
    assert out.to_pydict() == table.to_pydict()
    assert out.column("flux").type == pa.float32()
    meta = out.schema.metadata
    assert meta[b"version"] == b"2" and meta[b"field"] == b"655" and meta[b"origin"] == b"test"
    assert read_parquet(target.path, columns=["ra"]).column_names == ["ra"]


def test_missing_products_raise_product_error(root):
    url = url_join(root, "nope", "missing.fits")
    for reader in (read_bytes, read_fits, read_parquet):
        with pytest.raises(ProductError, match="missing.fits"):
            reader(url)


def test_corrupt_parquet_raises_product_error(root):
    target = get_target(url_join(root, "bad.parquet"))
    write_bytes(target, b"not a parquet file at all")
    with pytest.raises(ProductError, match="bad.parquet"):
        read_parquet(target)


@pytest.mark.parametrize("cut", [-5000, 44000, 2000, 0])
def test_read_fits_truncated(root, cut):
    primary = fits.PrimaryHDU(np.ones((100, 100), np.float32))
    ext = fits.ImageHDU(np.zeros((50, 50), np.float32), name="X")
    full = get_target(url_join(root, "full.fits"))
    write_fits(full, fits.HDUList([primary, ext]))
    raw = read_bytes(full)
    trunc = get_target(url_join(root, "ztf_trunc_sciimg.fits"))
    write_bytes(trunc, raw[:cut])
    with pytest.raises(ProductError, match="ztf_trunc_sciimg.fits") as info:
        read_fits(trunc)
    assert "\n" not in str(info.value)
    assert info.value.url == trunc.path


def test_product_error_is_picklable_and_one_line():
    err = ProductError("corrupt FITS product /a/b.fits:\n  Header missing END", "/a/b.fits")
    assert "\n" not in str(err)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ProductError
    assert str(back) == str(err) and back.url == "/a/b.fits"


def test_target_pickle_round_trip(root):
    target = get_target(url_join(root, "p", "x.bin"))
    target.fs.fsspec  # noqa: B018 - instantiate the cached fsspec filesystem first
    write_bytes(target, b"abc")
    back = pickle.loads(pickle.dumps(target))
    assert back.path == target.path
    assert back.exists()
    assert read_bytes(back) == b"abc"
    assert b"MemoryFileSystem" not in pickle.dumps(target)
    assert b"LocalFileSystem" not in pickle.dumps(target)


# ------------------------------------------------------------------------------------------
# Atomic commits
# ------------------------------------------------------------------------------------------


def test_temporary_path_local_location(tmp_path):
    target = FsspecTarget(str(tmp_path / "new" / "dir" / "img.fits"))
    with target.temporary_path() as tmp:
        assert os.path.dirname(tmp) == str(tmp_path / "new" / "dir")
        assert os.path.basename(tmp).startswith(".img.fits.tmp-")
        Path(tmp).write_bytes(b"x")
        assert not target.exists()
    assert target.exists()
    assert _local_listing(tmp_path / "new" / "dir") == ["img.fits"]


def test_temporary_path_remote_is_local_file():
    target = FsspecTarget(f"memory://t-{uuid.uuid4().hex}/a/img.fits")
    with target.temporary_path() as tmp:
        assert os.path.isabs(tmp) and not tmp.startswith("memory")
        Path(tmp).write_bytes(b"payload")
        assert not target.exists()
    assert not os.path.exists(tmp)
    assert read_bytes(target) == b"payload"


def test_temporary_path_exception_commits_nothing(root):
    target = get_target(url_join(root, "d", "out.bin"))
    with pytest.raises(RuntimeError):
        with target.temporary_path() as tmp:
            Path(tmp).write_bytes(b"partial")
            raise RuntimeError("writer failed")
    assert not target.exists()
    assert not os.path.exists(tmp)
    if not root.startswith("memory://"):
        assert _local_listing(target.fs._path(url_join(root, "d"))) == []


def test_open_write_exception_commits_nothing(root):
    for mode in ("w", "wb"):
        target = get_target(url_join(root, "d", f"out-{mode}.txt"))
        with pytest.raises(RuntimeError):
            with target.open(mode) as f:
                f.write("partial" if mode == "w" else b"partial")
                raise RuntimeError("boom")
        assert not target.exists()
    if not root.startswith("memory://"):
        assert _local_listing(target.fs._path(url_join(root, "d"))) == []


def test_unclosed_writer_is_discarded(tmp_path):
    target = FsspecTarget(str(tmp_path / "gc.bin"))
    f = target.open("wb")
    f.write(b"partial")
    del f
    gc.collect()
    assert not target.exists()
    assert _local_listing(tmp_path) == []


def test_commit_over_existing_file(tmp_path):
    target = FsspecTarget(str(tmp_path / "same.bin"))
    write_bytes(target, b"one")
    with target.temporary_path() as tmp:
        Path(tmp).write_bytes(b"two")
    assert read_bytes(target) == b"two"


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from ztfluigi.storage import FsspecTarget
    target = FsspecTarget(sys.argv[1])
    with target.temporary_path() as tmp:
        with open(tmp, "wb") as f:
            for _ in range(8):
                f.write(b"\\x01" * (1 << 20))
            f.flush()
            print(tmp, flush=True)
            time.sleep(120)
            f.write(b"never")
    """
)


@pytest.mark.parametrize("kind", ["local", "file"])
def test_killed_writer_leaves_nothing_under_final_name(tmp_path, kind):
    final = tmp_path / "night" / "big.fits"
    url = str(final) if kind == "local" else f"file://{final}"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        tmp = proc.stdout.readline().strip()
        assert tmp, proc.stderr.read()
        assert os.path.getsize(tmp) == 8 << 20  # the writer is mid-write, inside the context
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not final.exists()
    target = FsspecTarget(url)
    assert not target.exists()
    # The orphaned hidden temporary is left behind but never counts as the product.
    assert os.path.exists(tmp)
    assert ListingCache().exists(url) is False


# ------------------------------------------------------------------------------------------
# ListingCache
# ------------------------------------------------------------------------------------------


def test_listing_cache_one_listing_per_directory(root):
    dirs = [url_join(root, "night", f"d{i}") for i in range(3)]
    urls, expected = [], []
    for i in range(200):
        url = url_join(dirs[i % 3], f"f{i:03d}.fits")
        urls.append(url)
        present = i % 4 == 0
        expected.append(present)
        if present:
            write_bytes(get_target(url), b"x")
    cache = ListingCache()
    assert cache.exists_many(urls) == expected
    assert cache.n_listings == 3
    assert [cache.exists(u) for u in urls[:10]] == expected[:10]
    assert cache.n_listings == 3
    assert bulk_exists(urls) == expected


def test_listing_cache_missing_directory(root):
    cache = ListingCache()
    urls = [url_join(root, "absent", f"f{i}.fits") for i in range(20)]
    assert cache.exists_many(urls) == [False] * 20
    assert cache.n_listings == 1


def test_listing_cache_note_written_and_invalidate(root):
    directory = url_join(root, "d")
    a, b = url_join(directory, "a.fits"), url_join(directory, "b.fits")
    write_bytes(get_target(a), b"a")
    cache = ListingCache()
    assert cache.exists_many([a, b]) == [True, False]
    assert cache.n_listings == 1

    write_bytes(get_target(b), b"b")
    assert cache.exists(b) is False  # stale listing, by design
    cache.note_written(b)
    assert cache.exists(b) is True
    assert cache.n_listings == 1

    get_target(a).remove()
    assert cache.exists(a) is True  # still cached
    cache.invalidate(a)  # a file URL invalidates its directory
    assert cache.exists(a) is False
    assert cache.n_listings == 2
    cache.invalidate(directory)  # so does the directory itself
    assert cache.exists(b) is True
    assert cache.n_listings == 3
    cache.invalidate()
    assert cache.exists(b) is True
    assert cache.n_listings == 4


def test_listing_cache_ttl(tmp_path):
    url = str(tmp_path / "a.fits")
    cache = ListingCache(ttl=0.0)
    assert cache.exists(url) is False
    write_bytes(FsspecTarget(url), b"a")
    assert cache.exists(url) is True
    assert cache.n_listings == 2


def test_listing_cache_ignores_temporaries(tmp_path):
    final = tmp_path / "img.fits"
    tmp_name = f".img.fits.tmp-{uuid.uuid4().hex}"
    (tmp_path / tmp_name).write_bytes(b"partial")
    cache = ListingCache()
    assert cache.exists(str(final)) is False
    assert cache.exists(str(tmp_path / tmp_name)) is False
    cache.note_written(str(tmp_path / tmp_name))
    assert cache.exists(str(tmp_path / tmp_name)) is False


def test_listing_cache_file_and_plain_paths_share_listing(tmp_path):
    write_bytes(FsspecTarget(str(tmp_path / "a")), b"a")
    cache = ListingCache()
    assert cache.exists(str(tmp_path / "a")) and cache.exists(f"file://{tmp_path}/a")
    assert cache.n_listings == 1


# ------------------------------------------------------------------------------------------
# FsspecFileSystem
# ------------------------------------------------------------------------------------------


def test_filesystem_operations(root):
    fs = FsspecFileSystem(root)
    d = url_join(root, "ops")
    fs.mkdir(d)
    write_bytes(get_target(url_join(d, "a.bin")), b"a")
    write_bytes(get_target(url_join(d, "sub", "b.bin")), b"b")
    assert fs.isdir(d)
    assert fs.exists(url_join(d, "a.bin"))
    assert fs.listdir(d) == [url_join(d, "a.bin"), url_join(d, "sub", "b.bin")]

    fs.copy(url_join(d, "a.bin"), url_join(d, "copy", "a.bin"))
    assert read_bytes(url_join(d, "copy", "a.bin")) == b"a"
    fs.move(url_join(d, "a.bin"), url_join(d, "moved", "a.bin"))
    assert not fs.exists(url_join(d, "a.bin"))
    assert read_bytes(url_join(d, "moved", "a.bin")) == b"a"

    fs.rename_dont_move(url_join(d, "moved", "a.bin"), url_join(d, "renamed.bin"))
    assert fs.exists(url_join(d, "renamed.bin"))
    with pytest.raises(FileAlreadyExists):
        fs.rename_dont_move(url_join(d, "copy", "a.bin"), url_join(d, "renamed.bin"))

    assert fs.remove(url_join(d, "sub")) is True
    assert not fs.exists(url_join(d, "sub", "b.bin"))
    assert fs.remove(url_join(d, "never-existed")) is False


def test_filesystem_is_picklable_and_lazy():
    fs = FsspecFileSystem("memory://x", {})
    fs.fsspec  # noqa: B018
    back = pickle.loads(pickle.dumps(fs))
    assert back.protocol == "memory" and back.fsspec is fs.fsspec
    assert FsspecFileSystem("/tmp").is_local and not fs.is_local


def test_unclosed_text_writer_is_discarded(tmp_path):
    target = FsspecTarget(str(tmp_path / "gc.txt"))
    f = target.open("w")
    f.write("partial")
    del f
    gc.collect()
    assert not target.exists()
    assert _local_listing(tmp_path) == []
