"""Stone validation: every problem at once, by field, in words a person understands."""

from __future__ import annotations

import pytest

from gemcast.schema import CATEGORIES, FEATURES, check_stone, encode, is_holdout, stone_id

GOOD = {"carat": 0.7, "cut": "Ideal", "color": "E", "clarity": "VS1", "depth": 61.8, "table": 56.0,
        "x": 5.7, "y": 5.73, "z": 3.53}


def fields_of(problems):
    return {p.field: p.reason for p in problems}


def test_a_good_stone_passes_and_is_typed():
    values, problems = check_stone(GOOD)
    assert problems == []
    assert values["carat"] == 0.7 and values["cut"] == "Ideal"


def test_numbers_given_as_strings_and_grades_in_other_case_are_read():
    values, problems = check_stone({**GOOD, "carat": "0.7", "cut": "ideal", "clarity": "vs1"})
    assert problems == []
    assert values["cut"] == "Ideal" and values["clarity"] == "VS1" and values["carat"] == 0.7


def test_every_problem_is_reported_at_once_by_field():
    bad = {**GOOD, "carat": "heavy", "cut": "Superb", "table": 95, "z": 0}
    del bad["color"]
    problems = fields_of(check_stone(bad)[1])
    assert set(problems) == {"carat", "cut", "color", "table", "z"}
    assert "number" in problems["carat"]
    assert "Superb" in problems["cut"] and "Ideal" in problems["cut"]
    assert problems["color"] == "is missing"
    assert "at most 80" in problems["table"]
    assert "greater than 0" in problems["z"]


@pytest.mark.parametrize("value", [True, None, [], {}, float("nan"), "inf"])
def test_non_numbers_are_refused(value):
    problems = fields_of(check_stone({**GOOD, "depth": value})[1])
    assert "depth" in problems


def test_depth_that_contradicts_the_dimensions_is_refused():
    problems = fields_of(check_stone({**GOOD, "depth": 44.0})[1])
    assert "contradicts" in problems["depth"]


def test_carat_impossible_for_the_dimensions_is_refused():
    problems = fields_of(check_stone({**GOOD, "carat": 2.5})[1])
    assert "impossible" in problems["carat"]


def test_price_is_checked_only_for_dataset_rows():
    assert check_stone({**GOOD, "price": -1})[1] == []
    problems = fields_of(check_stone({**GOOD, "price": -1}, with_price=True)[1])
    assert "greater than 0" in problems["price"]


def test_not_an_object():
    problems = check_stone(["0.7"])[1]  # type: ignore[arg-type]
    assert problems[0].field == "stone"


def test_encoding_uses_grade_order_worst_to_best():
    row = encode({**GOOD, "cut": "Fair", "color": "D", "clarity": "IF"})
    assert len(row) == len(FEATURES)
    assert row[1] == 0 and row[2] == len(CATEGORIES["color"]) - 1 and row[3] == len(CATEGORIES["clarity"]) - 1


def test_split_is_decided_by_the_stone_itself():
    same = {**GOOD, "carat": "0.70", "depth": "61.80"}
    assert stone_id(GOOD) == stone_id(same)
    assert is_holdout(GOOD) == is_holdout(same)
    # about a fifth of varied stones is held out
    stones = [{**GOOD, "carat": 0.3 + i / 1000} for i in range(2000)]
    share = sum(map(is_holdout, stones)) / len(stones)
    assert 0.15 < share < 0.25


@pytest.mark.parametrize(
    "edge",
    [
        {"x": 1e-200, "y": 1e-200, "z": 1e-200},  # the volume underflows to 0
        {"y": 5e-324},  # x / y overflows
        {"carat": 10**400},  # float() of it raises OverflowError
        {"depth": "1e400"},  # text that reads as infinity
        {"table": -(10**400), "cut": 10**400},
        {"z": float("-inf"), "x": float("nan")},
    ],
)
def test_numbers_at_the_edge_of_floating_point_are_refused_with_a_reason(edge):
    values, problems = check_stone({**GOOD, **edge})
    assert problems, edge
    for problem in problems:
        assert problem.reason and len(problem.reason) < 200


def test_an_overflowing_integer_is_named_briefly():
    problems = fields_of(check_stone({**GOOD, "carat": 10**400})[1])
    assert problems["carat"] == "must be a finite number of ordinary size, got an integer of about 401 digits"
