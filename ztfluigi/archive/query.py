"""IBE ``WHERE`` clauses: parse, evaluate on metadata rows, and find the UT nights they bound.

IRSA's IBE search takes a restricted SQL ``WHERE`` (ztf_formats.md §3.2): comparisons, ``AND``,
``OR``, ``NOT``, ``IN (…)``, ``BETWEEN … AND …``, ``LIKE '…%'``, ``IS [NOT] NULL`` and
parentheses, no functions. The IRSA-compatible server answers from a synthetic archive that
generates nights on demand, so :func:`night_range` works out which UT dates a clause can match
from its ``obsjd``, ``filefracday``, ``obsdate`` or ``nid`` conditions.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

JD_UNIX_EPOCH = 2440587.5  #: Julian date of 1970-01-01 00:00 UT
NID_EPOCH = dt.date(2017, 1, 1)  #: IRSA ``nid`` counts days from this UT date
_EPS = 1e-9  #: days; turns a strict upper bound into an inclusive one

Value = int | float | str


class QueryError(ValueError):
    """A WHERE clause that cannot be parsed or evaluated (one-line message for a 400 answer)."""


@dataclass(frozen=True)
class Comparison:
    column: str
    op: str  #: one of = != < <= > >=
    value: Value


@dataclass(frozen=True)
class InList:
    column: str
    values: tuple[Value, ...]
    negated: bool = False


@dataclass(frozen=True)
class Between:
    column: str
    low: Value
    high: Value
    negated: bool = False


@dataclass(frozen=True)
class Like:
    column: str
    pattern: str
    negated: bool = False


@dataclass(frozen=True)
class IsNull:
    column: str
    negated: bool = False


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


Node = Comparison | InList | Between | Like | IsNull | And | Or | Not

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<op><=|>=|<>|!=|=|<|>|\(|\)|,))"
)
_KEYWORDS = {"AND", "OR", "NOT", "IN", "BETWEEN", "LIKE", "IS", "NULL"}


def _tokens(text: str) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise QueryError(f"WHERE: cannot parse near {text[pos : pos + 20].strip()!r}")
        pos = m.end()
        if m["str"] is not None:
            out.append(("value", m["str"][1:-1].replace("''", "'")))
        elif m["num"] is not None:
            s = m["num"]
            out.append(("value", int(s) if re.fullmatch(r"[+-]?\d+", s) else float(s)))
        elif m["id"] is not None:
            word = m["id"]
            if word.upper() in _KEYWORDS:
                out.append(("kw", word.upper()))
            else:
                out.append(("id", word.lower()))
        else:
            out.append(("op", "!=" if m["op"] == "<>" else m["op"]))
    return out


class _Parser:
    """Recursive descent: or := and (OR and)*; and := not (AND not)*; not := NOT not | atom."""

    def __init__(self, tokens: list[tuple[str, object]], columns: frozenset[str] | None) -> None:
        self.tokens, self.pos, self.columns = tokens, 0, columns

    def peek(self, kind: str, value: object = None) -> bool:
        if self.pos >= len(self.tokens):
            return False
        k, v = self.tokens[self.pos]
        return k == kind and (value is None or v == value)

    def take(self, kind: str, value: object = None, what: str = "") -> object:
        if not self.peek(kind, value):
            found = self.tokens[self.pos][1] if self.pos < len(self.tokens) else "end of clause"
            raise QueryError(f"WHERE: expected {what or value or kind}, found {found!r}")
        self.pos += 1
        return self.tokens[self.pos - 1][1]

    def parse(self) -> Node:
        if not self.tokens:
            raise QueryError("WHERE: empty clause")
        node = self.or_expr()
        if self.pos != len(self.tokens):
            raise QueryError(f"WHERE: unexpected {self.tokens[self.pos][1]!r}")
        return node

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.peek("kw", "OR"):
            self.pos += 1
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while self.peek("kw", "AND"):
            self.pos += 1
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Node:
        if self.peek("kw", "NOT"):
            self.pos += 1
            return Not(self.not_expr())
        if self.peek("op", "("):
            self.pos += 1
            node = self.or_expr()
            self.take("op", ")")
            return node
        return self.predicate()

    def value(self) -> Value:
        return self.take("value", what="a literal value")  # type: ignore[return-value]

    def predicate(self) -> Node:
        column = str(self.take("id", what="a column name"))
        if self.columns is not None and column not in self.columns:
            raise QueryError(f"WHERE: unknown column {column!r}")
        negated = False
        if self.peek("kw", "IS"):
            self.pos += 1
            if self.peek("kw", "NOT"):
                self.pos += 1
                negated = True
            self.take("kw", "NULL")
            return IsNull(column, negated)
        if self.peek("kw", "NOT"):
            self.pos += 1
            negated = True
        if self.peek("kw", "IN"):
            self.pos += 1
            self.take("op", "(")
            values = [self.value()]
            while self.peek("op", ","):
                self.pos += 1
                values.append(self.value())
            self.take("op", ")")
            return InList(column, tuple(values), negated)
        if self.peek("kw", "BETWEEN"):
            self.pos += 1
            low = self.value()
            self.take("kw", "AND")
            return Between(column, low, self.value(), negated)
        if self.peek("kw", "LIKE"):
            self.pos += 1
            pattern = self.value()
            if not isinstance(pattern, str):
                raise QueryError(f"WHERE: LIKE needs a quoted pattern, got {pattern!r}")
            return Like(column, pattern, negated)
        if negated:
            raise QueryError(f"WHERE: NOT after {column!r} must precede IN, BETWEEN or LIKE")
        op = self.take("op", what="a comparison operator")
        if op not in ("=", "!=", "<", "<=", ">", ">="):
            raise QueryError(f"WHERE: unexpected {op!r} after {column!r}")
        return Comparison(column, str(op), self.value())


def parse_where(text: str, columns: Iterable[str] | None = None) -> Node:
    """Parse a WHERE clause; with ``columns``, names outside it are an error."""
    known = frozenset(c.lower() for c in columns) if columns is not None else None
    return _Parser(_tokens(text), known).parse()


# -- evaluation -------------------------------------------------------------------------------


def _coerce(row_value: object, literal: Value) -> tuple[object, object]:
    """Both sides of a comparison in one type (a quoted number against a numeric column…)."""
    if isinstance(row_value, bool):
        row_value = int(row_value)
    if isinstance(row_value, int | float) and isinstance(literal, str):
        try:
            return row_value, float(literal)
        except ValueError:
            raise QueryError(f"WHERE: {literal!r} compared with a numeric column") from None
    if isinstance(row_value, str) and not isinstance(literal, str):
        return row_value, str(literal)
    return row_value, literal


def _compare(row_value: object, op: str, literal: Value) -> bool:
    a, b = _coerce(row_value, literal)
    if op == "=":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b  # type: ignore[operator]
    if op == "<=":
        return a <= b  # type: ignore[operator]
    if op == ">":
        return a > b  # type: ignore[operator]
    return a >= b  # type: ignore[operator]


def like_regex(pattern: str) -> re.Pattern[str]:
    """SQL LIKE (``%`` any run, ``_`` one character; case-sensitive) as a regular expression."""
    parts = [".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern]
    return re.compile("".join(parts), re.DOTALL)


def evaluate(node: Node, row: Mapping[str, object]) -> bool:
    """Whether a metadata row satisfies the clause (NULL never matches a predicate, as in SQL)."""
    if isinstance(node, And):
        return all(evaluate(n, row) for n in node.items)
    if isinstance(node, Or):
        return any(evaluate(n, row) for n in node.items)
    if isinstance(node, Not):
        return not evaluate(node.item, row)
    if node.column not in row:
        raise QueryError(f"WHERE: unknown column {node.column!r}")
    value = row[node.column]
    if isinstance(node, IsNull):
        return (value is None) != node.negated
    if value is None:
        return False
    if isinstance(node, Comparison):
        return _compare(value, node.op, node.value)
    if isinstance(node, InList):
        return any(_compare(value, "=", v) for v in node.values) != node.negated
    if isinstance(node, Between):
        inside = _compare(value, ">=", node.low) and _compare(value, "<=", node.high)
        return inside != node.negated
    text = value if isinstance(value, str) else repr(value)
    return (like_regex(node.pattern).fullmatch(text) is not None) != node.negated


# -- which nights a clause can match ------------------------------------------------------------

Interval = tuple[float, float]  #: closed interval of Julian dates
_ALL: Interval = (-math.inf, math.inf)


def jd_of_date(date: dt.date) -> float:
    """Julian date of 00:00 UT of a date."""
    return (date - dt.date(1970, 1, 1)).days + JD_UNIX_EPOCH


def ut_date(jd: float) -> dt.date:
    """UT date containing a Julian date."""
    return dt.date(1970, 1, 1) + dt.timedelta(days=math.floor(jd - JD_UNIX_EPOCH))


def _as_jd(column: str, value: Value) -> Interval:
    """The JD interval one value of a time column stands for."""
    try:
        if column == "obsjd":
            jd = float(value)
            return jd, jd
        if column == "nid":
            start = jd_of_date(NID_EPOCH + dt.timedelta(days=int(float(value))))
            return start, start + 1 - _EPS
        if column == "filefracday":
            text = f"{int(float(value)):014d}"
            date = dt.datetime.strptime(text[:8], "%Y%m%d").date()
            start = jd_of_date(date) + int(text[8:]) / 1e6
            return start, start + 1e-6 - _EPS
        text = str(value).strip()  # obsdate: 'YYYY-MM-DD[ HH:MM:SS[.fff]][+00]'
        m = re.match(r"(\d{4}-\d{2}-\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2}(?:\.\d*)?))?)?", text)
        if m is None:
            raise ValueError(text)
        start = jd_of_date(dt.date.fromisoformat(m[1]))
        if m[2] is None:
            return start, start + 1 - _EPS
        seconds = int(m[2]) * 3600 + int(m[3]) * 60 + float(m[4] or 0)
        return start + seconds / 86400, start + seconds / 86400
    except (ValueError, OverflowError):
        raise QueryError(f"WHERE: {value!r} is not a valid {column} value") from None


def _like_interval(column: str, pattern: str) -> Interval:
    """A LIKE on a time column bounds the date when its fixed prefix holds the whole date."""
    prefix = re.split(r"[%_]", pattern, maxsplit=1)[0]
    if column == "filefracday" and len(prefix) >= 8 and prefix[:8].isdigit():
        start = jd_of_date(_as_date(prefix[:8], "%Y%m%d", column))
        return start, start + 1 - _EPS
    if column == "obsdate" and len(prefix) >= 10:
        start = jd_of_date(_as_date(prefix[:10], "%Y-%m-%d", column))
        return start, start + 1 - _EPS
    return _ALL


def _as_date(text: str, fmt: str, column: str) -> dt.date:
    try:
        return dt.datetime.strptime(text, fmt).date()
    except ValueError:
        raise QueryError(f"WHERE: {text!r} is not a valid {column} date") from None


_TIME_COLUMNS = ("obsjd", "nid", "filefracday", "obsdate")


def _interval(node: Node) -> Interval:
    """A closed JD interval outside which the clause matches no row (possibly unbounded)."""
    if isinstance(node, And):
        lo, hi = _ALL
        for item in node.items:
            a, b = _interval(item)
            lo, hi = max(lo, a), min(hi, b)
        return lo, hi
    if isinstance(node, Or):
        spans = [_interval(item) for item in node.items]
        return min(a for a, _ in spans), max(b for _, b in spans)
    if isinstance(node, Not | IsNull) or node.column not in _TIME_COLUMNS:
        return _ALL
    if isinstance(node, Like):
        return _ALL if node.negated else _like_interval(node.column, node.pattern)
    if isinstance(node, InList):
        if node.negated:
            return _ALL
        spans = [_as_jd(node.column, v) for v in node.values]
        return min(a for a, _ in spans), max(b for _, b in spans)
    if isinstance(node, Between):
        if node.negated:
            return _ALL
        return _as_jd(node.column, node.low)[0], _as_jd(node.column, node.high)[1]
    lo, hi = _as_jd(node.column, node.value)
    if node.op == "=":
        return lo, hi
    if node.op in (">", ">="):
        # a strict bound on a whole-day value (nid, a bare date) starts after that day
        start = hi + _EPS if node.op == ">" and hi > lo else lo
        return start, math.inf
    if node.op in ("<", "<="):
        return -math.inf, (lo - _EPS if node.op == "<" else hi)
    return _ALL  # !=


def night_range(node: Node) -> tuple[dt.date, dt.date] | None:
    """First and last UT date the clause can match; None if it bounds no time column.

    An empty range (contradictory bounds) comes back with the first date after the last.
    """
    lo, hi = _interval(node)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    if hi < lo:
        first = ut_date(lo)
        return first, first - dt.timedelta(days=1)
    return ut_date(lo), ut_date(hi)
