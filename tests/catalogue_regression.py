"""The demo night's catalogues do not change under speed work: the catalogues of one CCD of the
demo night (default scale, zr), built through the real tasks, each reduced to a few numbers and
compared with golden values committed under ``tests/data/`` (generated from the code before the
per-quadrant speed work of issue #15). The test is ``test_catalog.py``'s (it reads the CCD from
that module's night, the same configuration); this module holds the digests and the writer.

Regenerate (only when a change of the catalogues is intended, and say so in the commit):
``python -m tests.catalogue_regression --write``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

from tests.helpers import DEMO_DATE, build_ok, luigi_settings
from ztfluigi import storage
from ztfluigi.photometry import RADII

#: the demo night's configuration (``test_catalog.py``'s night)
SETTINGS = {
    "ztfluigi": {"archive": "sim", "refcat": "sim"},
    "sim": {"seed": "0", "scale": "8", "n_fields": "3"},
}
GOLDEN = Path(__file__).with_name("data") / "catalogue_regression.json"
CCDID, FILTERCODE = 7, "zr"
RTOL = 1e-6  #: relative tolerance of every compared number (sums: of the sum of |values|)
N_ROWS = 5  #: rows whose fluxes are compared one by one (the first ones of each catalogue)


def catalogue_digest(table: pa.Table) -> dict[str, object]:
    """A catalogue reduced to its row count, identity checksums, per-radius sums and the first
    rows' fluxes (JSON-able)."""
    col = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    out: dict[str, object] = {
        "rows": table.num_rows,
        "source_id_sum": int(np.sum(col["source_id"].astype(np.int64) % 1_000_003)),
        "isolated": int(np.count_nonzero(col["isolated"])),
        "xy_sum": float(np.sum(col["x_ipac"].astype(np.float64) + col["y_ipac"])),
    }
    for k in range(len(RADII)):
        for suffix in ("", "_e", "_ebkg"):
            values = col[f"f_{k}{suffix}"].astype(np.float64)
            finite = values[np.isfinite(values)]
            out[f"f_{k}{suffix}_sum"] = float(finite.sum())
            out[f"f_{k}{suffix}_abs"] = float(np.abs(finite).sum())
            out[f"f_{k}{suffix}_nan"] = int(values.size - finite.size)
        flags = col[f"f_{k}_f"].astype(np.int64)
        out[f"f_{k}_f_hist"] = [int(np.count_nonzero(flags & bit)) for bit in (1, 2, 16, 32, 64)]
    out["first_rows"] = [[float(col[f"f_{k}"][i]) for k in range(len(RADII))]
                         for i in range(min(N_ROWS, table.num_rows))]  # fmt: skip
    return out


def demo_ccd_catalogues() -> dict[str, dict[str, object]]:
    """Digests (by catalogue file name) of CCD :data:`CCDID` of the demo night in
    :data:`FILTERCODE`, built (or completed) in the configured store: the caller sets
    :data:`SETTINGS` and a ``root``."""
    from ztfluigi.tasks import ApertureCatalog, ApertureCatalogUnit

    entry = ApertureCatalog(date=DEMO_DATE, ccdid=CCDID, filtercode=FILTERCODE)
    assert build_ok(entry, workers=2)
    digests = {}
    for unit in entry.requires():
        assert isinstance(unit, ApertureCatalogUnit)
        for target in unit.output():
            digests[Path(target.path).name] = catalogue_digest(storage.read_parquet(target))
    return digests


def _close(new: object, old: object, scale: float) -> bool:
    if isinstance(old, list):
        return isinstance(new, list) and len(new) == len(old) and all(
            _close(a, b, scale) for a, b in zip(new, old, strict=True))  # fmt: skip
    if isinstance(old, int) and not isinstance(old, bool):
        return new == old
    a, b = float(new), float(old)
    if math.isnan(b):
        return math.isnan(a)
    return abs(a - b) <= RTOL * max(abs(b), scale)


def differences(new: dict[str, object], old: dict[str, object]) -> list[str]:
    """Keys of one catalogue's digest that differ beyond :data:`RTOL` (a signed sum against the
    sum of the absolute values of the same column)."""
    bad = []
    for key, value in old.items():
        scale = float(old.get(key[: -len("_sum")] + "_abs", 0.0)) if key.endswith("_sum") else 0.0
        if key not in new or not _close(new[key], value, scale):
            bad.append(f"{key}: {new.get(key)!r} != {value!r}")
    return bad


def golden_differences(digests: dict[str, dict[str, object]]) -> dict[str, list[str]]:
    """The catalogues whose digests differ from the golden ones (all names must match)."""
    golden = json.loads(GOLDEN.read_text())
    assert sorted(digests) == sorted(golden["catalogues"])
    assert sum(d["rows"] for d in digests.values()) > 100  # not a trivially empty comparison
    return {name: diff for name in golden["catalogues"]
            if (diff := differences(digests[name], golden["catalogues"][name]))}  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.catalogue_regression --write")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        settings = {**SETTINGS, "ztfluigi": {**SETTINGS["ztfluigi"], "root": f"{tmp}/store"}}
        with luigi_settings(settings):
            catalogues = demo_ccd_catalogues()
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({
        "what": f"digests of the demo night's CCD {CCDID} {FILTERCODE} aperture catalogues "
                "(scale 8, seed 0, 3 fields), tests/catalogue_regression.py",
        "rtol": RTOL, "catalogues": catalogues,
    }, indent=1) + "\n")  # fmt: skip
    print(f"written {GOLDEN} ({len(catalogues)} catalogues)")
