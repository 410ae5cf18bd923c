"""The IBE WHERE parser: syntax, evaluation on metadata rows, and the nights a clause bounds."""

import datetime as dt

import pytest

from ztfluigi.archive import RAW_METADATA_COLUMNS
from ztfluigi.archive.query import (
    And,
    Between,
    Comparison,
    InList,
    Like,
    Or,
    QueryError,
    evaluate,
    jd_of_date,
    night_range,
    parse_where,
)

D = dt.date(2019, 3, 31)
JD = jd_of_date(D)  # 2458573.5

ROW = {
    "ccdid": 2, "imgtype": "bias", "filtercode": "bi", "obsjd": 2458573.580790135,
    "filefracday": 20190331080790, "obsdate": "2019-03-31 01:56:20.268+00", "nid": 819,
    "exptime": 0.0, "field": 0,
}  # fmt: skip


def test_jd_of_date():
    assert JD == 2458573.5
    assert jd_of_date(dt.date(2000, 1, 1)) == 2451544.5


def test_parse_the_documented_example():
    node = parse_where(
        "obsjd BETWEEN 2458573.5 AND 2458574.5 AND ccdid IN (1,2) AND imgtype='bias'",
        RAW_METADATA_COLUMNS,
    )
    assert node == And((
        Between("obsjd", 2458573.5, 2458574.5),
        InList("ccdid", (1, 2)),
        Comparison("imgtype", "=", "bias"),
    ))  # fmt: skip
    assert evaluate(node, ROW)
    assert not evaluate(node, {**ROW, "ccdid": 3})
    assert not evaluate(node, {**ROW, "imgtype": "flat"})


def test_keywords_are_case_insensitive_and_precedence_is_sql():
    node = parse_where("ccdid = 1 or ccdid = 2 and imgtype = 'flat'")
    # AND binds tighter than OR
    assert node == Or((
        Comparison("ccdid", "=", 1),
        And((Comparison("ccdid", "=", 2), Comparison("imgtype", "=", "flat"))),
    ))  # fmt: skip
    assert not evaluate(node, ROW)  # ccdid 2 but a bias
    assert evaluate(parse_where("(ccdid = 1 OR ccdid = 2) AND imgtype = 'bias'"), ROW)


@pytest.mark.parametrize(
    ("clause", "expected"),
    [
        ("obsjd > 2458573.5", True),
        ("obsjd >= 2458573.580790135", True),
        ("obsjd < 2458573.580790135", False),
        ("obsjd <= 2458573.580790135", True),
        ("ccdid != 2", False),
        ("ccdid <> 3", True),
        ("ccdid NOT IN (1, 3)", True),
        ("ccdid NOT BETWEEN 1 AND 3", False),
        ("NOT ccdid = 2", False),
        ("imgtype LIKE 'bi%'", True),
        ("imgtype LIKE 'b_as'", True),
        ("imgtype LIKE 'BI%'", False),  # LIKE is case-sensitive
        ("imgtype NOT LIKE 'fl%'", True),
        ("filefracday LIKE '20190331%'", True),
        ("obsdate LIKE '2019-03-31%'", True),
        ("filefracday = '20190331080790'", True),  # quoted number against a numeric column
        ("imgtype IS NULL", False),
        ("imgtype IS NOT NULL", True),
        ("exptime = 0", True),
        ("exptime = -1.5e0", False),
    ],
)
def test_predicates(clause, expected):
    assert evaluate(parse_where(clause, ROW), ROW) is expected


def test_string_literals_escape_quotes():
    node = parse_where("imgtype = 'it''s'")
    assert node == Comparison("imgtype", "=", "it's")
    assert evaluate(node, {**ROW, "imgtype": "it's"})


def test_like_with_regex_characters_is_literal():
    assert Like("imgtype", "a.c%") == parse_where("imgtype LIKE 'a.c%'")
    assert not evaluate(parse_where("imgtype LIKE 'a.c%'"), {**ROW, "imgtype": "abcd"})
    assert evaluate(parse_where("imgtype LIKE 'a.c%'"), {**ROW, "imgtype": "a.cd"})


@pytest.mark.parametrize(
    ("clause", "message"),
    [
        ("", "empty"),
        ("ccdid = ", "literal"),
        ("ccdid IN (1, 2", "expected )"),
        ("imgtype = 'bias", "cannot parse"),
        ("ledid = 3", "unknown column 'ledid'"),  # IRSA's raw table has no LED column
        ("ccdid == 2", "literal"),
        ("ccdid = 1 ccdid = 2", "unexpected"),
        ("imgtype LIKE 3", "quoted pattern"),
        ("ccdid NOT = 2", "NOT after"),
        ("count(ccdid) > 1", "unknown column 'count'"),  # no functions
    ],
)
def test_bad_clauses_are_one_line_errors(clause, message):
    with pytest.raises(QueryError) as err:
        parse_where(clause, RAW_METADATA_COLUMNS)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_comparing_a_number_with_a_word_is_an_error():
    with pytest.raises(QueryError, match="numeric column"):
        evaluate(parse_where("ccdid = 'two'"), ROW)


@pytest.mark.parametrize(
    ("clause", "nights"),
    [
        (f"obsjd BETWEEN {JD} AND {JD + 1}", (D, D + dt.timedelta(days=1))),
        (f"obsjd >= {JD} AND obsjd < {JD + 1}", (D, D)),  # the client's query: one night
        (f"obsjd > {JD + 0.2} AND obsjd <= {JD + 0.7}", (D, D)),
        (f"obsjd = {JD + 0.3}", (D, D)),
        ("filefracday BETWEEN 20190331000000 AND 20190401999999", (D, D + dt.timedelta(days=1))),
        ("filefracday = 20190331080790", (D, D)),
        ("filefracday LIKE '20190331%'", (D, D)),
        ("obsdate LIKE '2019-03-31%'", (D, D)),
        ("obsdate >= '2019-03-31' AND obsdate < '2019-04-01'", (D, D)),
        ("obsdate BETWEEN '2019-03-30 23:00:00' AND '2019-03-31 02:00'",
         (D - dt.timedelta(days=1), D)),
        ("nid = 819", (D, D)),
        ("nid > 818 AND nid < 820", (D, D)),
        ("nid IN (819, 821)", (D, D + dt.timedelta(days=2))),
        ("(nid = 819 OR nid = 820) AND ccdid = 1", (D, D + dt.timedelta(days=1))),
        (f"ccdid = 1 AND obsjd > {JD} AND obsjd < {JD + 0.5} AND imgtype = 'bias'", (D, D)),
    ],
)  # fmt: skip
def test_night_range(clause, nights):
    assert night_range(parse_where(clause, RAW_METADATA_COLUMNS)) == nights


@pytest.mark.parametrize(
    "clause",
    [
        "ccdid = 1",
        f"obsjd > {JD}",  # one-sided
        f"obsjd < {JD} OR ccdid = 1",  # one branch of an OR unbounded
        f"NOT obsjd BETWEEN {JD} AND {JD + 1}",
        f"obsjd NOT BETWEEN {JD} AND {JD + 1}",
        "obsdate LIKE '2019%'",  # prefix shorter than a date
    ],
)
def test_unbounded_clauses(clause):
    assert night_range(parse_where(clause, RAW_METADATA_COLUMNS)) is None


def test_contradictory_bounds_give_an_empty_range():
    first, last = night_range(parse_where("nid = 819 AND nid = 830"))
    assert last < first


def test_bad_time_values_are_errors():
    with pytest.raises(QueryError, match="not a valid obsdate"):
        night_range(parse_where("obsdate = 'yesterday'"))
    with pytest.raises(QueryError, match="not a valid filefracday"):
        night_range(parse_where("filefracday LIKE '20191399%'"))
