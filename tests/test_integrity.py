"""Integrity end to end: a damaged product is never trusted, a bad setting never runs.

The fault cases of a hostile user: a corrupt master flat, a truncated master bias, a zero-length
raw file, random bytes in a catalogue or an IPAC mask, typos and impossible values in luigi.cfg,
a field that does not exist, killed writers' temporaries, a full disk.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import luigi
import numpy as np
import pytest

from tests.helpers import DEMO_DATE, build, luigi_settings
from ztfluigi import storage
from ztfluigi.cli import main as ztfluigi_main
from ztfluigi.settings_check import SettingsError
from ztfluigi.storage import targets as storage_targets
from ztfluigi.tasks import ApertureCatalog, IpacMasks, MasterBias, MasterFlat, RawFiles, RawIndex
from ztfluigi.tasks.parameters import InvalidParameter

CCD, FILTER = 3, "zr"
SUCCESS = luigi.execution_summary.LuigiStatusCode.SUCCESS


@pytest.fixture(scope="module")
def narrowed_night(tmp_path_factory):
    """One CCD and filter of the demo night (its focal-plane level needs the 16 CCDs' flats)."""
    root = tmp_path_factory.mktemp("integrity") / "store"
    settings = {"ztfluigi": {"root": str(root), "archive": "sim"},
                "sim": {"seed": "0", "scale": "16", "n_fields": "1"}}  # fmt: skip
    with luigi_settings(settings):
        entry = ApertureCatalog(date=DEMO_DATE, ccdid=CCD, filtercode=FILTER)
        assert build(entry).status == SUCCESS
        yield entry, root


def catalogues(entry):
    unit = next(iter(entry.requires()))
    return {t.path: storage.read_parquet(t) for t in unit.output()}


def victims():
    """A master flat, a master bias, a raw science file and an IPAC mask of the unit."""
    flat = MasterFlat(date=DEMO_DATE, ccdid=CCD, filtercode=FILTER).output()
    bias = MasterBias(date=DEMO_DATE, ccdid=CCD).output()
    science = RawFiles(date=DEMO_DATE, ccdid=CCD, imgtype="object", filtercode=FILTER).output()[0]
    mask = IpacMasks(date=DEMO_DATE, ccdid=CCD, filtercode=FILTER).output()[1]
    return {"flat": flat, "bias": bias, "raw": science, "mask": mask}


def damage(targets):
    """4 KiB of garbage inside the flat's pixels, the bias cut in half, a zero-length raw file,
    64 random bytes in the mask (its gzip stream). Returns the original bytes."""
    rng = np.random.default_rng(12)
    original = {k: storage.read_bytes(t) for k, t in targets.items()}
    for kind, target in targets.items():
        content = bytearray(original[kind])
        if kind == "flat":
            at = len(content) // 2
            content[at : at + 4096] = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
        elif kind == "bias":
            content = content[: len(content) // 2]
        elif kind == "raw":
            content = bytearray()
        else:
            at = len(content) // 2
            content[at : at + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        target.remove()
        with open(target.path, "wb") as f:  # behind the store's back, as a disk fault would
            f.write(bytes(content))
    return original


def test_damaged_inputs_are_rebuilt_before_they_reach_a_catalogue(narrowed_night):
    entry, _ = narrowed_night
    with luigi_settings({"ztfluigi": {"root": str(narrowed_night[1])}}):
        expected = catalogues(entry)
        targets = victims()
        original = damage(targets)
        for path in expected:
            os.remove(path)
        assert build(entry).status == SUCCESS
        for kind, target in targets.items():  # set aside, then rebuilt or fetched again, whole
            assert storage.read_bytes(target) == original[kind], kind
        got = catalogues(entry)
        assert got.keys() == expected.keys()
        assert all(got[p].equals(expected[p]) for p in expected)  # right, not garbage


def test_status_verify_names_damaged_products_and_the_run_rebuilds_them(narrowed_night, capsys):
    entry, root = narrowed_night
    with luigi_settings({"ztfluigi": {"root": str(root)}}):
        targets = victims()
        original = damage(targets)
        words = ["ApertureCatalog", "--date", str(DEMO_DATE), "--ccdid", str(CCD),
                 "--filtercode", FILTER]  # fmt: skip
        assert ztfluigi_main(["status", "--verify", "--check", *words]) == 1
        out = capsys.readouterr().out
        for target in targets.values():
            assert "damaged: " in out and target.path in out
            assert not target.exists()  # set aside: missing for the next run
        assert "4 damaged" in out
        assert build(entry).status == SUCCESS
        for kind, target in targets.items():
            assert storage.read_bytes(target) == original[kind], kind
        assert ztfluigi_main(["status", "--verify", "--check", *words]) == 0


def test_random_bytes_in_a_catalogue_never_read_back_as_other_values(narrowed_night, tmp_path):
    entry, root = narrowed_night
    with luigi_settings({"ztfluigi": {"root": str(root)}}):
        source = next(iter(catalogues(entry)))
    good = storage.read_bytes(source)
    reference = storage.read_parquet(source)
    rng = np.random.default_rng(3)
    detected = 0
    for trial in range(20):
        content = bytearray(good)
        at = int(rng.integers(0, len(content) - 64))
        content[at : at + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        path = tmp_path / f"trial{trial}.parquet"
        path.write_bytes(bytes(content))
        try:
            table = storage.read_parquet(str(path))
        except storage.DamagedProduct as exc:
            assert str(path) in str(exc)
            detected += 1
            continue
        # bytes that landed where no value lives (e.g. column statistics) change nothing
        assert table.equals(reference) and table.schema.metadata == reference.schema.metadata
    assert detected >= 15


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("[ztfluigi]\nroott = elsewhere\n", "unknown key 'roott' (did you mean 'root'?)"),
        ("[ztfluigi]\narchve = irsa\n", "unknown key 'archve' (did you mean 'archive'?)"),
        ("[ztfluigi]\narchive = nonsense\n", "archive = 'nonsense'"),
        ("[ztfluigi]\nroot = foo://x\n", "unknown storage protocol 'foo'"),
        ("[sim]\nscale = 0\n", "scale = 0: must be in 1..96"),
        ("[sim]\nscale = 3.5\n", "scale = '3.5': not a whole number"),
        ("[sim]\nseed = x\n", "seed = 'x': not a whole number"),
        ("[ztfluigi]\nfringe = maybe\n", "fringe = 'maybe': expected auto | off | on"),
        ("[ztfluigi]\npocket = yes\n", "pocket = 'yes': expected auto | off | on"),
        ("[ztfluigi]\nfringe_window = 0\n", "fringe_window = 0: must be in 1..366"),
    ],
)
def test_bad_settings_stop_before_anything_runs(tmp_path, lines, message):
    (tmp_path / "luigi.cfg").write_text(lines + "[retcode]\nunhandled_exception = 40\n")
    result = run_luigi(tmp_path, "RawIndex", "--date", str(DEMO_DATE))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["luigi.cfg"]  # nothing written


def test_read_only_root_stops_before_anything_runs():
    base = Path(tempfile.mkdtemp(prefix="ztfluigi-ro-"))
    try:
        base.chmod(0o755)
        home, store = base / "home", base / "ro"
        home.mkdir(mode=0o777)
        home.chmod(0o777)  # whoever runs needs a home for astropy's configuration
        store.mkdir()
        store.chmod(0o555)
        (base / "luigi.cfg").write_text(f"[ztfluigi]\nroot = {store}/data\n"
                                        "[retcode]\nunhandled_exception = 40\n")  # fmt: skip
        result = run_luigi(base, "RawIndex", "--date", str(DEMO_DATE), home=home,
                           unprivileged=True)  # fmt: skip
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
        assert len(errors) == 1 and "not writable" in errors[0], result.stderr
        assert list(store.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_field_that_is_not_observed_is_a_named_failure(luigi_store):
    entry = ApertureCatalog(date=DEMO_DATE, ccdid=CCD, filtercode=FILTER, field=1234)
    assert build(entry).status != SUCCESS  # not "complete with 0 catalogues"
    assert not entry.complete()
    with pytest.raises(InvalidParameter, match="field 1234 has no science exposure on 2019-03-31"):
        next(entry.run())
    with pytest.raises(InvalidParameter, match="field 99999 is not in the ZTF field grid"):
        ApertureCatalog(date=DEMO_DATE, field=99999)


def run_luigi(cwd, *args, home=None, unprivileged=False):
    """The ``luigi`` command in ``cwd`` (its luigi.cfg), as a user types it; ``unprivileged``:
    as user nobody when the tests run as root (root writes into read-only directories)."""
    env = dict(os.environ, LUIGI_CONFIG_PATH=str(cwd / "luigi.cfg"))
    if home is not None:
        env["HOME"] = str(home)
    command = [sys.executable, "-m", "luigi", "--module", "ztfluigi", *args, "--local-scheduler"]
    if unprivileged and os.geteuid() == 0:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_temporaries_of_killed_writers_are_swept_by_the_next_write(tmp_path):
    directory = tmp_path / "d"
    directory.mkdir()
    host = storage_targets._HOST
    dead = _dead_pid()
    stale_pid = directory / f".a.fits.tmp-{host}{dead:08x}{uuid.uuid4().hex}"
    stale_old = directory / f".b.fits.tmp-{uuid.uuid4().hex}"
    alive = directory / f".c.fits.tmp-{host}{os.getpid():08x}{uuid.uuid4().hex}"
    for path in (stale_pid, stale_old, alive):
        path.write_bytes(b"partial")
    old = time.time() - storage_targets.STALE_TEMPORARY_S - 60
    os.utime(stale_old, (old, old))
    storage_targets._SWEPT.discard(str(directory))
    storage.write_bytes(storage.get_target(str(directory / "product.bin")), b"whole")
    assert sorted(p.name for p in directory.iterdir()) == sorted([alive.name, "product.bin"])


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_full_disk_is_one_line_naming_the_product(tmp_path, monkeypatch):
    def no_space(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage_targets._AtomicWriter, "write", no_space)
    target = storage.get_target(str(tmp_path / "cal" / "x_bias.fits"))
    with pytest.raises(storage.ProductError) as info:
        storage.write_bytes(target, b"\0" * 2880)
    message = str(info.value)
    assert target.path in message and "No space left on device" in message
    assert "\n" not in message
    assert list((tmp_path / "cal").iterdir()) == []  # neither the product nor a temporary


def test_a_store_never_mixes_synthetic_and_real_data(tmp_path):
    """The first night indexed records what the store holds; a run configured for another
    archive, or for another synthetic seed or scale, is refused before anything runs."""
    sim = {"seed": "0", "scale": "32", "n_fields": "1"}
    with luigi_settings({"ztfluigi": {"root": str(tmp_path), "archive": "sim"}, "sim": sim}):
        assert build(RawIndex(date=DEMO_DATE)).status == SUCCESS
    held = (tmp_path / "ztfluigi-store.json").read_text()
    assert '"archive": "sim"' in held and '"scale": 32' in held and '"seed": 0' in held
    for archive, seed in (("irsa", "0"), ("http://127.0.0.1:1", "0"), ("sim", "1")):
        settings = {"ztfluigi": {"root": str(tmp_path), "archive": archive},
                    "sim": {**sim, "seed": seed}}  # fmt: skip
        luigi.task_register.Register.clear_instance_cache()  # built anew, so checked anew
        with luigi_settings(settings), pytest.raises(SettingsError) as info:
            RawIndex(date=DEMO_DATE + dt.timedelta(days=1))
        message = str(info.value)
        assert "archive = sim, scale = 32, seed = 0" in message and "\n" not in message
    indexed = [p.name for p in tmp_path.rglob("*_rawindex.parquet")]
    assert indexed == ["ztf_20190331_rawindex.parquet"]  # the refused runs wrote nothing
