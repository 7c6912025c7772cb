"""What an API client relies on, on AWS and on GCP alike: the same request gives the same
answer, the same status code and the same error fields (see conftest.py for the two sides)."""

from __future__ import annotations

from tests.shared.conftest import Api, body_of, query_of
from tests.shared.stack import MODEL_VERSION

# A few stones of one grade group, and one lonely stone in another, loaded on both clouds;
# prices are floats, as the cleaning step hands them to the inventory.
BASE = {"cut": "Ideal", "color": "E", "clarity": "VS1", "depth": 61.5, "table": 55.0,
        "x": 5.7, "y": 5.72, "z": 3.52}
STONES = [{**BASE, "carat": c, "price": float(p)} for c, p in
          ((0.5, 1500), (0.62, 1900), (0.7, 2600), (0.71, 2650), (0.75, 2800), (0.9, 3900), (1.1, 6100))]
STONES.append({**BASE, "cut": "Fair", "color": "J", "clarity": "I1", "carat": 2.4, "price": 7200.0,
               "x": 8.5, "y": 8.4, "z": 5.4})


def test_one_stone_gets_a_price_reasons_and_the_model_version(api: Api) -> None:
    status, body = api.predict(body_of("predict_one_stone"))

    assert status == 200
    assert body["model_version"] == MODEL_VERSION and body["request_id"]
    assert body["price"] > 0 and body["base_price"] > 0 and body["reasons"]


def test_an_invalid_stone_in_a_list_gets_its_own_error_and_the_others_a_price(api: Api) -> None:
    status, body = api.predict(body_of("predict_list_with_invalid"))

    assert status == 200
    good, bad = body["predictions"]
    assert good["price"] > 0
    assert set(bad["error"]["fields"]) == {"carat", "cut"}


def test_a_bad_stone_is_a_400_naming_its_fields(api: Api) -> None:
    status, body = api.predict(body_of("predict_bad_stone"))

    assert status == 400
    assert set(body["error"]["fields"]) == {"carat", "cut"} and body["request_id"]


def test_bad_json_is_a_400_about_the_body(api: Api) -> None:
    status, body = api.predict(body_of("predict_bad_json"))

    assert status == 400
    assert body["error"]["fields"] == {"body": "must be JSON"}


def test_similar_with_an_unknown_category_is_a_400_naming_it(api: Api) -> None:
    api.load(STONES)

    status, body = api.similar(query_of("similar_unknown_category"))

    assert status == 400
    assert set(body["error"]["fields"]) == {"cut"} and "Superb" in body["error"]["fields"]["cut"]


def test_similar_returns_the_nearest_carats_of_the_same_grades(api: Api) -> None:
    api.load(STONES)

    status, body = api.similar(query_of("similar_ok"))

    assert status == 200
    assert [s["carat"] for s in body["stones"]] == [0.7, 0.71, 0.75]
    assert body["count"] == 3 and "note" not in body


def test_similar_with_fewer_stones_than_asked_says_so(api: Api) -> None:
    api.load(STONES)

    status, body = api.similar(query_of("similar_fewer_than_n"))

    assert status == 200
    assert body["count"] == 1 and [s["price"] for s in body["stones"]] == [7200]
    assert "fewer than the 50 asked" in body["note"]
