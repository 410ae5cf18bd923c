"""Validated Luigi parameters: a bad value fails with a one-line message before any work starts."""

from __future__ import annotations

import datetime as dt
import functools
import logging

import luigi

from ztfluigi import naming
from ztfluigi.settings_check import SettingsError

FIRST_NIGHT = dt.date(2017, 11, 1)  #: ZTF first light


class InvalidParameter(ValueError):
    """A bad task parameter; the ``luigi`` command reports it as one line, without a traceback."""


class _OneLineParameterErrors(logging.Filter):
    """Turn luigi's "Uncaught exception" traceback for a bad parameter into its one-line message."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, InvalidParameter | naming.InvalidName | SettingsError):
            record.msg, record.args, record.exc_info, record.exc_text = str(exc), (), None, None
        return True


logging.getLogger("luigi-interface").addFilter(_OneLineParameterErrors())


class NightParameter(luigi.DateParameter):
    """A UT date (YYYY-MM-DD) between ZTF's first light and today."""

    def parse(self, s: str) -> dt.date:
        try:
            date = dt.datetime.strptime(s, "%Y-%m-%d").date()
        except ValueError:
            raise InvalidParameter(
                f"invalid date {s!r}: expected YYYY-MM-DD, e.g. 2019-03-31"
            ) from None
        return self.normalize(date)

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("description", "UT date of the night, YYYY-MM-DD")
        super().__init__(*args, **kwargs)

    def normalize(self, value: dt.date | dt.datetime | str | None) -> dt.date | None:
        if value is None:
            return None
        if isinstance(value, str):  # luigi.build([Task(date="2019-03-31")]) from Python
            return self.parse(value)
        if isinstance(value, dt.datetime):
            value = value.date()
        if not isinstance(value, dt.date):
            raise InvalidParameter(f"date {value!r}: expected a datetime.date or 'YYYY-MM-DD'")
        today = dt.datetime.now(dt.UTC).date()
        if not FIRST_NIGHT <= value <= today:
            raise InvalidParameter(
                f"date {value} outside the ZTF era ({FIRST_NIGHT} to today, {today})"
            )
        return value


class _IdParameter(luigi.IntParameter):
    """A whole-number id: parsed and normalised to int, then checked by :meth:`check`."""

    name = "id"

    def parse(self, s: str) -> int:
        return self._whole(s)

    def normalize(self, value: int | str | None) -> int | None:
        if value is None:
            return None
        value = self._whole(value)
        self.check(value)
        return value

    def _whole(self, value: int | str) -> int:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise InvalidParameter(f"{self.name} {value!r} is not a whole number") from None

    def check(self, value: int) -> None:
        """Raise :class:`InvalidParameter` when ``value`` is not a valid id."""


class CcdParameter(_IdParameter):
    """A CCD id, 1–16 (or 0 for all, where allowed)."""

    name = "ccdid"

    def __init__(self, *args: object, allow_all: bool = False, **kwargs: object) -> None:
        kwargs.setdefault("description", "CCD id 1-16" + (" (0 = all 16)" if allow_all else ""))
        super().__init__(*args, **kwargs)
        self.allow_all = allow_all

    def check(self, value: int) -> None:
        if not (1 <= value <= 16 or (value == 0 and self.allow_all)):
            raise InvalidParameter(f"ccdid {value} is not a ZTF CCD id (1-16)")


class FieldParameter(_IdParameter):
    """A ZTF field id of the real field grid, or 0 for all fields."""

    name = "field"

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("default", 0)
        kwargs.setdefault("description", "only this ZTF field (0 = all)")
        super().__init__(*args, **kwargs)

    def check(self, value: int) -> None:
        if value and value not in _field_ids():
            raise InvalidParameter(f"field {value} is not in the ZTF field grid "
                                   f"({min(_field_ids())}-{max(_field_ids())})")  # fmt: skip


@functools.cache
def _field_ids() -> frozenset[int]:
    from ztfluigi.sim.schedule import ztf_fields

    return frozenset(int(i) for i in ztf_fields()["id"])


class QidParameter(_IdParameter):
    """A quadrant id, 1–4."""

    name = "qid"

    def check(self, value: int) -> None:
        if not 1 <= value <= 4:
            raise InvalidParameter(f"qid {value} is not a ZTF quadrant id (1-4)")


class FilterParameter(luigi.Parameter):
    """A ZTF science filter code (zg, zr, zi), or '' for all where allowed."""

    def __init__(self, *args: object, allow_all: bool = False, **kwargs: object) -> None:
        every = " ('' = all)" if allow_all else ""
        kwargs.setdefault("description", f"ZTF filter: zg, zr or zi{every}")
        super().__init__(*args, **kwargs)
        self.allow_all = allow_all

    def normalize(self, value: str | None) -> str | None:
        if value is None or (value == "" and self.allow_all):
            return value
        if value not in naming.SCIENCE_FILTERS:
            raise InvalidParameter(f"filtercode {value!r} is not one of zg, zr, zi")
        return value


class ImgTypeParameter(luigi.Parameter):
    """An IRSA image type: object, bias or flat."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("description", "IRSA image type: object, bias or flat")
        super().__init__(*args, **kwargs)

    def normalize(self, value: str | None) -> str | None:
        if value is not None and value not in ("object", "bias", "flat"):
            raise InvalidParameter(f"imgtype {value!r} is not one of object, bias, flat")
        return value


class RawFilenameParameter(luigi.Parameter):
    """An IRSA raw CCD file name (``ztf_…_cCC_{o|b|f}.fits.fz``)."""

    def normalize(self, value: str | None) -> str | None:
        if value is None:
            return None
        raw = naming.parse_raw_filename(value)  # raises naming.InvalidName
        NightParameter().normalize(raw.date)
        return raw.filename
