"""Request parsing and the batch check: the columnar check agrees with check_stone on every stone."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gemcast.errors import ValidationError
from gemcast.predict import PriceOptions, parse_options, parse_request, validate_batch, validate_stones
from gemcast.schema import CATEGORIES, EXAMPLE_STONE, FEATURES


def random_stone(rng: random.Random) -> Any:
    stone: dict[str, Any] = dict(EXAMPLE_STONE)
    for f in rng.sample(FEATURES, rng.randint(0, 3)):
        stone[f] = rng.choice([
            None, True, "", " 0.7 ", "ideal", "1e400", float("nan"), float("inf"), 10**400, -1, 0, 1e-200,
            rng.uniform(-5, 100), rng.choice(CATEGORIES["cut"]), rng.randint(0, 20), [], {},
            EXAMPLE_STONE[f] * rng.uniform(0.9, 1.1) if f not in CATEGORIES else EXAMPLE_STONE[f],
        ])
    if rng.random() < 0.05:
        del stone[rng.choice(FEATURES)]
    if rng.random() < 0.03:
        return rng.choice(["a stone", 7, None, [EXAMPLE_STONE[f] for f in FEATURES]])
    return stone


def test_the_batch_check_accepts_and_refuses_exactly_what_check_stone_does() -> None:
    rng = random.Random(11)
    stones = [random_stone(rng) for _ in range(3000)]
    errors, X, valid_at = validate_batch(stones)
    slow_errors, slow_valid = validate_stones(stones)
    assert errors == slow_errors
    assert len(valid_at) == len(slow_valid) == X.shape[0]
    assert 300 < len(valid_at) < 2700  # both kinds are well represented


def test_parameters_are_read_as_written() -> None:
    assert parse_options({"reasons": "false"}) == PriceOptions(reasons=False)
    assert parse_options({"reasons": False}).reasons is False
    assert parse_options(None) == PriceOptions()
    with pytest.raises(ValidationError) as refused:
        parse_options({"reasons": "perhaps", "colour": 1})
    assert set(refused.value.errors) == {"parameters.reasons", "parameters.colour"}


@pytest.mark.parametrize("body", [{}, {"parameters": {"reasons": False}}, {"instances": []}, []])
def test_a_body_without_instances_holds_no_stone(body: Any) -> None:
    with pytest.raises(ValidationError, match="no stones"):
        parse_request(body)


def test_vertex_parameters_travel_with_the_instances() -> None:
    stones, single, options = parse_request({"instances": [EXAMPLE_STONE], "parameters": {"reasons": "0"}})
    assert stones == [EXAMPLE_STONE] and not single and options.reasons is False
    stones, single, options = parse_request(EXAMPLE_STONE)
    assert single and options.reasons is True


def test_the_api_and_the_model_server_refuse_edge_numbers_per_stone_without_raising() -> None:
    edges = [{**EXAMPLE_STONE, "x": 1e-200, "y": 1e-200, "z": 1e-200}, {**EXAMPLE_STONE, "carat": 10**400},
             {**EXAMPLE_STONE, "y": 5e-324}, {**EXAMPLE_STONE, "depth": float("nan")}, EXAMPLE_STONE]
    errors, valid = validate_stones(edges)  # the API's check (no numpy)
    batch_errors, X, valid_at = validate_batch(edges)  # the model server's
    assert errors == batch_errors and valid_at == [4] and len(valid) == 1
    assert all(e is not None and e["fields"] for e in errors[:4])


def test_small_and_large_batches_are_checked_alike() -> None:
    rng = random.Random(5)
    stones = [random_stone(rng) for _ in range(40)]
    big_errors, big_X, big_at = validate_batch(stones)
    for start in range(0, 40, 8):
        errors, X, at = validate_batch(stones[start:start + 8])
        assert errors == big_errors[start:start + 8]
        assert [start + i for i in at] == [i for i in big_at if start <= i < start + 8]
        assert (big_X[[big_at.index(start + i) for i in at]] == X).all()
