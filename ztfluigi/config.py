"""luigi.cfg sections as Luigi ``Config`` classes (``[ztfluigi]``, ``[sim]``, ``[s3]``).

Store settings (``[s3]``, the listing policy) are handed to :mod:`ztfluigi.storage` once per
configuration, as a :class:`~ztfluigi.storage.StoreSettings` value, when :func:`settings` reads
``[ztfluigi]``; credentials never become task parameters or part of a target.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import luigi
from luigi.cmdline_parser import CmdlineParser
from luigi.parameter import ParameterVisibility

from ztfluigi import archive, fringes, settings_check, storage
from ztfluigi.archive import Archive
from ztfluigi.corrections import CorrectionSpec
from ztfluigi.photometry import PhotometrySpec
from ztfluigi.sim.schedule import SimConfig
from ztfluigi.specs import ProcessingSpecs
from ztfluigi.storage import url_join

#: the package's own luigi.cfg: the embedded default, read before every other configuration file
PACKAGED_DEFAULTS = str(resources.files("ztfluigi") / "data" / "luigi.cfg")


def install_packaged_defaults() -> None:
    """Make the package's luigi.cfg the lowest-priority configuration file Luigi reads.

    Luigi reads ``/etc/luigi/luigi.cfg``, ``./luigi.cfg`` and ``$LUIGI_CONFIG_PATH`` in that order
    (later files win); the packaged defaults go before all of them, so the documented behaviour
    (exit codes, retries, ``check_complete_on_run``, the ``[ztfluigi]`` and ``[sim]`` defaults)
    holds from any working directory, and every usual file still overrides it. Idempotent.
    """
    parser = luigi.configuration.LuigiConfigParser
    if PACKAGED_DEFAULTS in parser._config_paths:
        return
    parser._config_paths.insert(0, PACKAGED_DEFAULTS)
    if parser._instance is not None:  # already read: read again, defaults first
        parser.reload()


class ztfluigi(luigi.Config):  # noqa: N801 - the class name is the luigi.cfg section name
    """Where products live and where raw data come from."""

    root = luigi.Parameter(
        default="ztfdata", description="fsspec URL or local path under which every product lives"
    )
    archive = luigi.Parameter(
        default="sim", description="sim | irsa | none (index a $ZTFDATA mirror from its raw "
        "files' headers) | http(s)://host:port of an IRSA-compatible server",
    )  # fmt: skip
    raw_root = luigi.Parameter(
        default="", description="raw files and RawIndex (default: root; the RawIndex and IPAC "
        "inputs of a read-only raw_root go under root)",
    )  # fmt: skip
    cal_root = luigi.Parameter(default="", description="calibration products (default: root)")
    catalog_root = luigi.Parameter(default="", description="aperture catalogues (default: root)")
    refcat = luigi.Parameter(
        default="sim", description="Gaia DR3 HATS store URL, or 'sim' for the synthetic one"
    )
    store_science = luigi.BoolParameter(
        default=False, description="also store science quadrants (FITS) next to their catalogues"
    )
    calib_window = luigi.IntParameter(
        default=10, description="calibration nights are searched within ±N days"
    )
    pocket = luigi.ChoiceParameter(
        default="auto", choices=("auto", "on", "off"),
        description="pocket-effect correction of masters and science (auto: from 2019-10-22)",
    )  # fmt: skip
    photometry = luigi.ChoiceParameter(
        default="default", choices=("default", "reference"),
        description="default: star-masked background, exact one-pass apertures, saturation "
        "flag; reference: the reference pipeline's sep background and sums",
    )  # fmt: skip
    fringe = luigi.ChoiceParameter(
        default="auto", choices=("auto", "on", "off"),
        description="subtract the fitted fringe model from zi science (auto: on for real data, "
        "and for the synthetic instrument when [sim] fringes = true)",
    )  # fmt: skip
    fringe_window = luigi.IntParameter(
        default=fringes.DEFAULT_WINDOW, description="nights per zi fringe-model period"
    )
    listing_confirm_missing = luigi.BoolParameter(
        default=False,
        description="confirm names missing from a directory listing with a direct check "
        "(mounts whose listings lag behind writes, e.g. iRODS FUSE)",
    )

    def raw_url(self, relpath: str) -> str:
        """URL of a raw-store path."""
        return url_join(self.raw_root or self.root, relpath)

    def catalog_url(self, relpath: str) -> str:
        """URL of a catalogue-store path."""
        return url_join(self.catalog_root or self.root, relpath)

    def cal_url(self, relpath: str) -> str:
        """URL of a calibration-store path."""
        return url_join(self.cal_root or self.root, relpath)


def _secret(description: str) -> luigi.Parameter:
    """A credential: not significant (never in task ids or reprs), never sent to the scheduler."""
    return luigi.Parameter(
        default="", significant=False, visibility=ParameterVisibility.PRIVATE,
        description=description,
    )  # fmt: skip


class s3(luigi.Config):  # noqa: N801
    """S3 endpoint and credentials; empty keys leave s3fs/botocore's usual settings in force.

    Those are the ``AWS_*`` environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_PROFILE``) and ``~/.aws`` files.
    """

    endpoint_url = luigi.Parameter(default="", description="e.g. https://s3.example.org")
    region = luigi.Parameter(default="", description="region name, e.g. us-east-1")
    profile = luigi.Parameter(default="", description="profile of ~/.aws/credentials")
    key = _secret("access key id")
    secret = _secret("secret access key")
    token = _secret("session token")
    anon = luigi.BoolParameter(default=False, description="unsigned requests (public buckets)")
    addressing_style = luigi.Parameter(default="", description="path | virtual | auto")
    multipart_chunksize = luigi.IntParameter(
        default=storage.S3_DEFAULT_PART_SIZE >> 20,
        description="MiB per multipart part (>= 5); products of two parts or more go multipart",
    )

    def storage_options(self) -> dict[str, Any]:
        """The s3fs ``S3FileSystem`` options these keys stand for (empty keys left out)."""
        options: dict[str, Any] = {}
        for name in ("endpoint_url", "profile", "key", "secret", "token"):
            if getattr(self, name):
                options[name] = getattr(self, name)
        if self.anon:
            options["anon"] = True
        if self.region:
            options["client_kwargs"] = {"region_name": self.region}
        if self.addressing_style:
            options["config_kwargs"] = {"s3": {"addressing_style": self.addressing_style}}
        return options


def _stamp() -> tuple:
    """A cheap fingerprint of the settings :func:`settings` reads (file + command line)."""
    cfg = luigi.configuration.get_config()
    sections = tuple(
        tuple(cfg.items(name, raw=True)) if cfg.has_section(name) else ()
        for name in ("s3", "ztfluigi")
    )
    return sections, id(CmdlineParser.get_instance())


def store_settings(section: ztfluigi) -> storage.StoreSettings:
    """The store settings of a configuration: ``[s3]`` options and the listing policy."""
    s3_section = s3()
    options = s3_section.storage_options()
    return storage.StoreSettings(
        options={"s3": options} if options else {},
        s3_part_size=s3_section.multipart_chunksize << 20,
        confirm_missing=section.listing_confirm_missing,
    )


_settings: tuple[tuple, ztfluigi] | None = None  # (stamp, instance) of settings()


def settings() -> ztfluigi:
    """The ``[ztfluigi]`` section, built once per configuration (product URLs are built tens of
    thousands of times per night, and Luigi needs ≈0.3 ms to build a Config instance); the store
    settings of a new configuration are handed to :mod:`ztfluigi.storage` here."""
    global _settings
    stamp = _stamp()
    if _settings is None or _settings[0] != stamp:
        section = ztfluigi()
        storage.configure(store_settings(section))
        _settings = (stamp, section)
    return _settings[1]


class sim(luigi.Config):  # noqa: N801
    """The synthetic instrument: a pure function of (seed, date)."""

    seed = luigi.IntParameter(default=0, description="seed of the synthetic sky and detector")
    scale = luigi.IntParameter(
        default=8, description="quadrants are (3080/scale, 3072/scale) windows; 1 = real size"
    )
    n_fields = luigi.IntParameter(default=3, description="science fields observed per night")
    calib_gaps = luigi.BoolParameter(
        default=False, description="some nights lack calibrations or one filter's flats"
    )
    weather_losses = luigi.FloatParameter(
        default=0.0, description="fraction of nights closed by weather (no science exposure)"
    )

    starflat_dates = luigi.ListParameter(
        default=(), description="UT dates whose science block is a starflat sequence"
    )
    fringes = luigi.BoolParameter(
        default=False, description="zi science exposures carry an additive fringe pattern"
    )
    survey = luigi.BoolParameter(
        default=False, description="survey-like science block: the real-grid fields that are up "
        "each night (ztfluigi.sim.survey)",
    )  # fmt: skip

    def sim_config(self) -> SimConfig:
        """These settings as the simulator's :class:`~ztfluigi.sim.schedule.SimConfig`."""
        return SimConfig(
            seed=self.seed, scale=self.scale, n_fields=self.n_fields,
            calib_gaps=self.calib_gaps, weather_losses=self.weather_losses,
            starflat_dates=tuple(str(d) for d in self.starflat_dates), fringes=self.fringes,
            survey=self.survey,
        )  # fmt: skip


def get_archive() -> Archive:
    """The configured archive (one instance per process and configuration)."""
    return _archive(settings().archive, sim().sim_config())


@functools.cache
def _archive(spec: str, sim_config: SimConfig) -> Archive:
    return archive.get_archive(spec, sim_config)


def install_store_settings() -> None:
    """Hand the current configuration's store settings to :mod:`ztfluigi.storage` now (as
    :func:`settings` does whenever the configuration changed), e.g. after removing ``[s3]``."""
    settings()


def processing_specs() -> ProcessingSpecs:
    """The specs every step runs with under the current configuration (one place; built once
    per configuration: it is asked for per quadrant)."""
    section = settings()
    return _processing_specs(section.pocket, section.photometry, fringe_spec())


def fringe_spec() -> fringes.FringeSpec:
    """The zi fringe correction of this configuration: ``auto`` is on where the data fringe —
    real data, and the synthetic instrument only when it injects fringes (``[sim] fringes``)."""
    section = settings()
    enabled = section.fringe == "on" or (
        section.fringe == "auto" and (section.archive != "sim" or sim().fringes))
    return fringes.FringeSpec(enabled=enabled, window=section.fringe_window)


@functools.lru_cache(maxsize=8)
def _processing_specs(pocket: str, photometry: str, fringe: fringes.FringeSpec) -> ProcessingSpecs:
    return ProcessingSpecs(
        correction=CorrectionSpec(pocket=pocket),
        photometry=PhotometrySpec.reference() if photometry == "reference" else PhotometrySpec(),
        fringe=fringe,
    )


_checked: tuple | None = None  # the configuration stamp last found valid


def check_settings() -> None:
    """Refuse unknown keys and impossible values of ``[ztfluigi]``, ``[sim]`` and ``[s3]``
    (:class:`~ztfluigi.settings_check.SettingsError`, one line), once per configuration."""
    global _checked
    cfg = luigi.configuration.get_config()
    stamp = (_stamp(), tuple(tuple(cfg.items("sim", raw=True)) if cfg.has_section("sim") else ()))
    if stamp == _checked:
        return
    known = {cls.__name__: [name for name, _ in cls.get_params()] for cls in (ztfluigi, sim, s3)}
    sections = {name: dict(cfg.items(name, raw=True)) if cfg.has_section(name) else {}
                for name in known}  # fmt: skip
    choices = {cls.__name__: {name: sorted(param._choices) for name, param in cls.get_params()
                              if isinstance(param, luigi.ChoiceParameter)}
               for cls in (ztfluigi, sim, s3)}  # fmt: skip
    settings_check.check(sections, known, choices)
    check_store_identity()
    _checked = stamp


STORE_IDENTITY = "ztfluigi-store.json"  #: what a store holds, written once under ``root``


def store_identity() -> dict[str, object]:
    """What the configured archive puts in a store: the synthetic instrument (its seed and
    scale: other values make other data) or real data from IRSA or an IRSA-compatible server."""
    spec = settings().archive
    if spec == "sim":
        return {"archive": "sim", "seed": sim().seed, "scale": sim().scale}
    if spec == "none":  # whatever the mirror holds: it cannot be told from the configuration
        return {"archive": "none"}
    return {"archive": "irsa" if spec == "irsa" else "irsa-compatible"}


def _identity_target() -> storage.FsspecTarget:
    return storage.get_target(url_join(settings().root, STORE_IDENTITY))


def record_store_identity() -> None:
    """Write the store's identity record if it has none (the first night indexed writes it)."""
    target = _identity_target()
    if not target.exists():
        storage.write_bytes(target, (json.dumps(store_identity(), sort_keys=True) + "\n").encode())


def check_store_identity() -> None:
    """Refuse, in one line naming both, a run whose archive differs from what the store holds."""
    target = _identity_target()
    try:
        held = json.loads(storage.read_bytes(target))
    except storage.MissingProduct:
        return  # a new store (or one written before identity records): nothing to compare
    except ValueError as exc:
        raise settings_check.SettingsError(
            f"{target.path} is not a store identity record: {exc}") from None
    wanted = store_identity()
    if held != wanted:
        def describe(identity: dict) -> str:
            return ", ".join(f"{k} = {v}" for k, v in sorted(identity.items()))

        raise settings_check.SettingsError(
            f"store {settings().root} holds {describe(held)} but this run is configured for "
            f"{describe(wanted)}: a store never mixes them; set [ztfluigi] root to another store")


def check_refcat() -> None:
    """Refuse, before scheduling, a reference catalogue that cannot serve the archive's data:
    the synthetic one with a real archive, or a ``refcat`` URL holding no HATS catalogue."""
    section = settings()
    if section.refcat == "sim":
        if section.archive != "sim":
            raise settings_check.SettingsError(
                f"refcat = sim serves only archive = sim (archive = {section.archive}): set "
                "[ztfluigi] refcat to a Gaia DR3 HATS catalogue or collection, e.g. "
                "https://data.lsdb.io/hats/gaia_dr3 or a local copy")
        return
    _resolved_refcat(section.refcat)


@functools.cache
def _resolved_refcat(url: str) -> str:
    from ztfluigi import refcat

    try:
        return refcat.resolve_catalog_url(url)
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise settings_check.SettingsError(f"refcat = {url}: {exc}") from None
