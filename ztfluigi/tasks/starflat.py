"""StarflatFit: δZP(u, v) over the focal plane, fitted from a starflat night's catalogues."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import luigi

from ztfluigi import config, naming, starflat, storage
from ztfluigi.provenance import package_versions
from ztfluigi.tasks import progress
from ztfluigi.tasks.calib import MasterFlat, cal_target
from ztfluigi.tasks.catalog import ApertureCatalog, ApertureCatalogUnit
from ztfluigi.tasks.parameters import (
    CcdParameter,
    FieldParameter,
    FilterParameter,
    InvalidParameter,
    NightParameter,
)

TABLES = ("cells", "quadrants", "exposures", "terms", "stars", "stats")
PICTURES = ("residual_fp", "residual_quadnorm", "gain")
DEFAULT_GRID = starflat.StarflatConfig().grid[0]  #: δZP cells per quadrant side by default


def starflat_relpath(date: dt.date, filtercode: str, name: str, variant: str = "") -> str:
    """``cal/starflat/YYYY/MMDD/ztfin2p3_YYYYMMDD_000000_{filter}_starflat[_{variant}]_{name}``."""
    tag = f"starflat_{variant}" if variant else "starflat"
    return (f"cal/starflat/{date:%Y}/{date:%m%d}/"
            f"ztfin2p3_{date:%Y%m%d}_000000_{filtercode}_{tag}_{name}")  # fmt: skip


class CcdListParameter(luigi.Parameter):
    """CCD ids as a comma-separated list (``6,7,10,11``), normalised to a sorted tuple; empty =
    all 16."""

    def parse(self, s: str) -> tuple[int, ...]:
        return self.normalize([p for p in s.replace(" ", "").split(",") if p])

    def normalize(self, value: object) -> tuple[int, ...]:
        if isinstance(value, str):
            return self.parse(value)
        ids = sorted({CcdParameter().normalize(v) for v in (value or ())})
        return () if ids == list(range(1, 17)) else tuple(ids)

    def serialize(self, value: tuple[int, ...]) -> str:
        return ",".join(str(c) for c in value)


class StarflatFit(progress.OneLineFailures, luigi.Task):
    """Starflat fit of one night and filter (:mod:`ztfluigi.starflat`): parquet tables + PNGs.

    Requires the night's aperture catalogues of the filter (narrowed to one ``field`` and to
    some CCDs if given: each CCD's catalogues are an ``ApertureCatalog --ccdid``, whose
    focal-plane level still needs the 16 CCDs' master flats); the master flats they were built
    with are dynamic dependencies (their quadrant medians give the per-quadrant normalisation).
    A narrowed fit or another cell grid is another product: its file names carry
    :meth:`variant`. Deterministic: inputs are read in path order.
    """

    date = NightParameter()
    filtercode = FilterParameter()
    field = FieldParameter()
    ccdids = CcdListParameter(default=(), description="only these CCDs, e.g. 6,7,10,11 "
                                                      "(empty = all 16)")  # fmt: skip
    grid = luigi.IntParameter(default=DEFAULT_GRID,
                              description="δZP cells per full-size quadrant side")  # fmt: skip

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        if self.grid < 1:
            raise InvalidParameter(f"grid {self.grid} must be a positive number of cells")

    def ccds(self) -> list[int]:
        """The CCDs whose catalogues are fitted."""
        return list(self.ccdids) or list(range(1, 17))

    def variant(self) -> str:
        """File-name tag of a narrowed fit (``f000413_c06-07-10-11_g16``); empty by default."""
        parts = [f"f{self.field:06d}"] if self.field else []
        parts += [f"c{'-'.join(f'{c:02d}' for c in self.ccdids)}"] if self.ccdids else []
        parts += [f"g{self.grid}"] if self.grid != DEFAULT_GRID else []
        return "_".join(parts)

    def config(self) -> starflat.StarflatConfig:
        """The fit's cuts and model (defaults but the cell grid)."""
        return starflat.StarflatConfig(grid=(self.grid, self.grid))

    def requires(self) -> ApertureCatalog | list[ApertureCatalog]:
        if not self.ccdids:
            return ApertureCatalog(date=self.date, filtercode=self.filtercode, field=self.field)
        return [ApertureCatalog(date=self.date, filtercode=self.filtercode, field=self.field,
                                ccdid=c) for c in self.ccdids]  # fmt: skip

    def output(self) -> dict[str, storage.FsspecTarget]:
        def target(name: str) -> storage.FsspecTarget:
            return cal_target(starflat_relpath(self.date, self.filtercode, name, self.variant()))

        out = {name: target(f"{name}.parquet") for name in TABLES}
        out |= {name: target(f"{name}.png") for name in PICTURES}
        return out

    def catalogue_targets(self) -> list[storage.FsspecTarget]:
        """The night's catalogue targets of this filter (and CCDs), in path order."""
        targets = []
        for c in self.ccds():
            unit = ApertureCatalogUnit(date=self.date, ccdid=c, filtercode=self.filtercode,
                                       field=self.field)  # fmt: skip
            targets += unit.output()
        return sorted(targets, key=lambda t: t.path)

    def run(self) -> Iterator[list[luigi.Task]]:
        targets = self.catalogue_targets()
        tables = []
        for i, target in enumerate(targets):
            tables.append(storage.read_parquet(target))
            progress.report(self, i, len(targets), "catalogues read")
        if not tables:
            raise starflat.StarflatError(f"{self.date} {self.filtercode}: no aperture catalogue")
        flats = yield from self._flat_tasks(tables)
        levels = self._quadrant_levels(tables, flats)
        provenance = {
            "date": self.date.isoformat(), "filtercode": self.filtercode,
            "field": str(self.field), "ccdids": json.dumps(self.ccds()),
            "input_catalogues": json.dumps([t.path.rsplit("/", 1)[-1] for t in targets]),
            "input_flats": json.dumps(sorted(t.path.rsplit("/", 1)[-1] for t in flats.values())),
        }  # fmt: skip
        write_products(self.output(), tables, levels, provenance,
                       f"{self.date} {self.filtercode} starflat", self.config())  # fmt: skip

    def _flat_tasks(self, tables: list) -> Iterator[list[luigi.Task]]:  # noqa: ANN001
        """The master flats the catalogues used (dynamic dependencies), by CCD."""
        tasks = {}
        for table in tables:
            meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
            ccdid = naming.parse_raw_filename(meta["raw_file"]).ccdid
            night = meta.get("flat_night")
            if night and ccdid not in tasks:
                tasks[ccdid] = MasterFlat(date=dt.date.fromisoformat(night), ccdid=ccdid,
                                          filtercode=self.filtercode)  # fmt: skip
        yield list(tasks.values())
        return {c: t.output() for c, t in tasks.items()}

    def _quadrant_levels(self, tables: list, flats: dict) -> dict[tuple[int, int], float]:  # noqa: ANN001
        """Quadrant levels of the flats the catalogues used (their ``fltnorm_fp`` metadata)."""
        fp = {}
        for table in tables:
            meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
            if "fltnorm_fp" in meta:
                fp[naming.parse_raw_filename(meta["raw_file"]).ccdid] = float(meta["fltnorm_fp"])
        images = {}
        for ccdid, target in flats.items():
            hdu = storage.read_fits(target, require_checksum=True)[0]
            images[ccdid] = (hdu.data, float(hdu.header["FLTNORM"]))
        return starflat.quadrant_flat_levels(images, fp)


def write_products(
    out: dict[str, storage.FsspecTarget],
    tables: list,  # noqa: ANN001 - pyarrow tables
    levels: dict[tuple[int, int], float],
    provenance: dict[str, str],
    tag: str,
    cfg: starflat.StarflatConfig | None = None,
) -> starflat.StarflatResult:
    """Fit the catalogues and write the tables (with provenance) and pictures to ``out``."""
    from ztfluigi import plots  # matplotlib is an optional extra

    cfg = cfg or starflat.StarflatConfig()
    meas = starflat.measurements_from_catalogues(tables, cfg)
    result = starflat.fit_starflat(meas, cfg)
    products = starflat.result_tables(result, levels)
    metadata = {
        "ztfluigi.product": "StarflatFit", **provenance,
        "selection_counts": json.dumps(meas.counts, sort_keys=True),
        "solver": json.dumps(result.solver, sort_keys=True),
        "model": "m_ADU = m_s + dZP(cell) + ZP_e + dk_ccd (BP-RP - C0) + k (X - 1)",
        **cfg.as_metadata(),
        **{f"version.{k}": v for k, v in package_versions().items()},
    }  # fmt: skip
    # The lsmr timing is not part of the product (rebuilds must be identical).
    metadata["solver"] = json.dumps({k: v for k, v in result.solver.items() if k != "seconds"},
                                    sort_keys=True)  # fmt: skip
    for name, table in products.items():
        if name == "stats":
            table = table.drop_columns(["solver"]).append_column("solver", [[metadata["solver"]]])
        meta = {**metadata, "columns": starflat.TABLE_COLUMNS[name]}
        storage.write_parquet(out[name], table, metadata=meta)
    stats = (f"χ²/dof {result.chi2_dof:.2f}, {result.source_id.size} stars, "
             f"{result.n_measurements} measurements, "
             f"cells {cfg.grid[0]}×{cfg.grid[1]}/quadrant")  # fmt: skip
    pictures = plots.starflat_pictures(products["cells"].to_pydict(),
                                       products["quadrants"].to_pydict(), cfg.grid, tag, stats)
    for name, png in pictures.items():
        storage.write_bytes(out[name], png)
    return result


def starflat_url(date: dt.date, filtercode: str, name: str, variant: str = "") -> str:
    """URL of one StarflatFit output under ``cal_root`` (``variant``: StarflatFit.variant)."""
    return config.settings().cal_url(starflat_relpath(date, filtercode, name, variant))
