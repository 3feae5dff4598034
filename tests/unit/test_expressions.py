"""derive/filter expressions: what parses, how they are typed, and what they compute."""

from __future__ import annotations

import pandas as pd
import pytest

from nightshift.config.expressions import ExpressionError, parse

TYPES = {"arr_delay": "float", "carrier": "string", "dep_time": "timestamp", "flights": "int"}


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "arr_delay": pd.array([20.0, None, 3.0, -4.0], dtype="Float64"),
            "carrier": pd.array(["AA", "DL", None, "aa"], dtype="string"),
            "dep_time": pd.to_datetime(
                ["2024-01-05T23:30:00Z", "2024-01-06T08:00:00Z"] * 2, utc=True
            ),
            "flights": pd.array([1, 2, 3, 4], dtype="Int64"),
        }
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("__import__('os').system('id')", "only these functions may be called"),
        ("carrier.upper()", "only these functions may be called"),
        ("carrier.str", "Attribute is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("flights[0]", "Subscript is not allowed"),
        ("arr_delay >", "is not a valid expression"),
    ],
)
def test_only_column_formulas_parse(text: str, problem: str) -> None:
    with pytest.raises(ExpressionError, match=problem):
        parse(text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("arr_dealy > 15", "unknown column 'arr_dealy'"),
        ("carrier + 1", "arithmetic needs numbers, not string and int"),
        ("carrier > 15", "cannot compare string with int"),
        ("arr_delay and flights", "'and'/'or' need true/false values"),
        ("hour(carrier)", "hour() argument 1 must be timestamp, not string"),
        ("carrier in [1, 2]", "cannot compare string with int"),
        ("carrier in ['AA', 3]", "cannot compare string with int"),
        ("arr_delay not in ['late']", "cannot compare float with string"),
    ],
)
def test_an_expression_is_typed_before_any_data_is_read(text: str, problem: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse(text).type_in(TYPES)
    assert problem in str(caught.value) and text in str(caught.value)


def test_types_of_the_usual_formulas() -> None:
    assert parse("arr_delay > 15").type_in(TYPES) == "bool"
    assert parse("arr_delay / flights").type_in(TYPES) == "float"
    assert parse("flights * 2 + 1").type_in(TYPES) == "int"
    assert parse("hour(dep_time)").type_in(TYPES) == "int"
    assert parse("where(arr_delay > 15, 1, 0)").type_in(TYPES) == "int"
    assert parse("carrier in ['AA', 'DL'] and arr_delay is not None").type_in(TYPES) == "bool"


def test_values_with_nulls_stay_unknown_and_date_parts_follow_the_timezone() -> None:
    frame = _frame()
    delayed = parse("arr_delay > 15").evaluate(frame)
    assert delayed.tolist()[0] is True and pd.isna(delayed.tolist()[1])
    assert parse("arr_delay is not None").evaluate(frame).tolist() == [True, False, True, True]
    assert parse("lower(carrier) in ['aa']").evaluate(frame).fillna(False).tolist() == [
        True,
        False,
        False,
        True,
    ]
    assert parse("flights * 2 - 1").evaluate(frame).tolist() == [1, 3, 5, 7]
    assert parse("10 / flights").evaluate(frame).tolist()[1] == 5.0
    assert parse("hour(dep_time)").evaluate(frame, "Europe/Amsterdam").tolist() == [0, 9, 0, 9]
    assert parse("day_of_week(dep_time)").evaluate(frame, "Europe/Amsterdam").tolist()[0] == 5
    assert parse("where(arr_delay > 15, 1, 0)").evaluate(frame).tolist() == [1, 0, 0, 0]
    assert parse("fillna(arr_delay, 0.0)").evaluate(frame).tolist() == [20.0, 0.0, 3.0, -4.0]
    assert parse("not (flights > 2)").evaluate(frame).tolist() == [True, True, False, False]
    assert parse("0 < flights <= 3").evaluate(frame).tolist() == [True, True, True, False]


@pytest.mark.parametrize("text", ["10 ** 10 ** 7", "page_views ** 1000", "2 ** page_views"])
def test_powers_are_small_numbers_only(text: str) -> None:
    """A big-integer power took 30 s (10**10**7) or never ended (10**10**10)."""
    with pytest.raises(ExpressionError, match=r"exponent of \*\* must be a number"):
        parse(text)


def test_the_usual_powers_parse() -> None:
    for text in ("x ** 2", "x ** 0.5", "x ** -1", "(x + 1) ** 3"):
        assert parse(text).text == text
