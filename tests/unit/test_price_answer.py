"""A priced stone's range, grouped reasons and what-if table; ranges calibrated and reported."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gemcast import intervals, reasons
from gemcast.answer import check_coverage
from gemcast.api import price_stones
from gemcast.errors import ValidationError
from gemcast.model import DERIVED_INPUTS
from gemcast.pipeline import Progress, load_dataset, run_training
from gemcast.predict import Predictor, PriceOptions, parse_options
from gemcast.registry import Registry
from gemcast.schema import EXAMPLE_STONE, FEATURES, encode
from gemcast.serving import ModelApp

ROOT = Path(__file__).resolve().parents[2]
QUIET = {"budget_s": 30.0, "max_trials": 1, "max_iter": 80}


@pytest.fixture(autouse=True, scope="module")
def one_openmp_thread():  # type: ignore[no-untyped-def]
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory):  # type: ignore[no-untyped-def]
    uri = (tmp_path_factory.mktemp("registry") / "models").as_uri()
    outcome = run_training(str(ROOT / "data" / "diamonds.csv"), uri, kind="gbm", progress=Progress(lambda _m: None),
                           **QUIET)
    registry = Registry(uri)
    return registry, outcome.version, registry.load(outcome.version).model


def stone(**changes: Any) -> dict[str, Any]:
    return {**EXAMPLE_STONE, **changes}


def test_every_input_belongs_to_one_group():
    for name in (*FEATURES, *DERIVED_INPUTS):
        assert reasons.group_of(name) in reasons.GROUPS
    with pytest.raises(KeyError):
        reasons.group_of("color*clarity")


def test_grouped_reasons_add_up_exactly_to_the_price(trained):
    _registry, _version, model = trained
    X = np.asarray([encode(stone()), encode(stone(carat=1.52, x=7.4, y=7.35, z=4.5, color="J", clarity="SI2"))])
    base_log, phi = model.explain(X)
    groups, phi_g = reasons.group_phi(model.input_names, phi)
    assert groups == ("size", "color", "clarity", "cut", "proportions")
    np.testing.assert_allclose(phi_g.sum(axis=1), model.predict_log(X) - base_log, rtol=0, atol=1e-9)
    explained = model.reasons_batch(X)
    for j, raw in enumerate([stone(), stone(carat=1.52, x=7.4, y=7.35, z=4.5, color="J", clarity="SI2")]):
        lines = reasons.grouped(explained[j]["reasons"], raw, model.metadata.get("typical_stone"))
        assert [g["group"] for g in lines] == list(groups)
        price = float(model.predict(X[j : j + 1])[0])
        assert sum(g["effect_usd"] for g in lines) == pytest.approx(price - explained[j]["base_price"], abs=1e-6)
        for g, value in zip(lines, phi_g[j], strict=True):
            assert g["effect_pct"] == pytest.approx(math.expm1(value) * 100, abs=1e-9)


def test_a_priced_stone_reads_in_the_trades_words(trained):
    _registry, version, model = trained
    out = Predictor(model, version).price([stone()])[0]
    by_group = {g["group"]: g for g in out["reason_groups"]}
    typical = model.metadata["typical_stone"]
    assert by_group["color"]["meaning"].startswith("E: colorless")
    assert f"the typical stone ({typical['color']})" in by_group["color"]["meaning"] or "typical stone's grade" in \
        by_group["color"]["meaning"]
    assert {"carat", "x", "y", "z"} <= set(by_group["size"]["inputs"]) <= set(reasons.GROUPS["size"])
    assert "0.70 ct" in by_group["size"]["meaning"]
    assert {"depth", "table", "x/y"} <= set(by_group["proportions"]["inputs"])
    assert len(out["reasons"]) == len(model.input_names)  # the per-input details stay


def test_the_range_holds_the_price_and_widens_with_coverage(trained):
    _registry, version, model = trained
    predictor = Predictor(model, version)
    widths = []
    for c in (50, 80, 95):
        out = predictor.price([stone()], PriceOptions(coverage=c))[0]
        r = out["price_range"]
        assert r["coverage"] == c and r["low"] < out["price"] < r["high"]
        widths.append(r["high"] - r["low"])
    assert widths[0] < widths[1] < widths[2]
    assert predictor.price([stone()])[0]["price_range"]["coverage"] == 80
    # the width depends on the stone: a cheap and a dear stone get their own bins
    cheap, dear = predictor.price([stone(carat=0.3, x=4.3, y=4.32, z=2.66), stone(carat=2.0, x=8.1, y=8.05, z=5.0)])
    assert (cheap["price_range"]["high"] / cheap["price"]) != pytest.approx(dear["price_range"]["high"] / dear["price"])


def test_what_if_prices_the_neighbouring_grades_and_the_next_milestone(trained):
    _registry, version, model = trained
    out = Predictor(model, version).price([stone(), stone(color="D", carat=0.6, x=5.4, y=5.42, z=3.34)],
                                          PriceOptions(what_if=True))
    changes = {(w["change"], w["direction"]): w for w in out[0]["what_if"]}
    assert set(changes) == {("color", "up"), ("color", "down"), ("clarity", "up"), ("clarity", "down"),
                            ("cut", "down"), ("carat", "up")}  # Ideal is the best cut; 0.7 ct is just under 0.75
    assert (changes["color", "up"]["from"], changes["color", "up"]["to"]) == ("E", "D")
    assert changes["carat", "up"]["to"] == 0.75
    bigger = encode(stone(carat=0.75, x=round(5.7 * (0.75 / 0.7) ** (1 / 3), 2),
                          y=round(5.72 * (0.75 / 0.7) ** (1 / 3), 2), z=round(3.53 * (0.75 / 0.7) ** (1 / 3), 2)))
    assert changes["carat", "up"]["price"] == pytest.approx(float(model.predict(np.asarray([bigger]))[0]), abs=0.01)
    assert changes["carat", "up"]["delta_usd"] == pytest.approx(changes["carat", "up"]["price"] - out[0]["price"],
                                                                abs=0.02)
    second = {(w["change"], w["direction"]) for w in out[1]["what_if"]}
    assert ("color", "up") not in second and ("carat", "up") not in second  # D is the top; 0.6 ct is far from 0.75
    assert "what_if" not in Predictor(model, version).price([stone()])[0]


def test_parameters_are_checked_and_name_their_field():
    assert parse_options(None) == PriceOptions(reasons=True, coverage=80, what_if=False)
    assert parse_options({"coverage": 0.95, "what_if": True}) == PriceOptions(coverage=95, what_if=True)
    assert parse_options({"coverage": "50"}, where="query").coverage == 50  # a query string's text
    assert check_coverage(95.0) == 95
    for bad, field in (({"coverage": 70}, "parameters.coverage"), ({"coverage": "much"}, "parameters.coverage"),
                       ({"what_if": "maybe"}, "parameters.what_if"), ({"reasons": 1}, "parameters.reasons")):
        with pytest.raises(ValidationError) as err:
            parse_options(bad)
        assert field in err.value.errors


def test_the_api_and_the_model_server_pass_the_parameters_on(trained):
    _registry, version, model = trained
    app = ModelApp(Predictor(model, version))

    class Endpoint:
        def invoke(self, instances: list[dict[str, Any]], parameters: dict[str, Any] | None = None) -> dict[str, Any]:
            body = json.dumps({"instances": instances, "parameters": parameters or {}}).encode()
            environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/invocations", "CONTENT_LENGTH": str(len(body)),
                       "wsgi.input": io.BytesIO(body)}
            return json.loads(b"".join(app(environ, lambda _status, _headers: None)))

    answer = price_stones(json.dumps({**stone(), "parameters": {"coverage": 95, "what_if": True}}), Endpoint())
    assert answer.status == 200, answer.body
    assert answer.body["price_range"]["coverage"] == 95 and answer.body["what_if"]
    bad = price_stones(json.dumps({"instances": [stone()], "parameters": {"coverage": 99}}), Endpoint())
    assert bad.status == 400 and "parameters.coverage" in bad.body["error"]["fields"]


def test_the_model_card_reports_each_ranges_coverage_and_width(trained):
    registry, version, _model = trained
    manifest = registry.manifest(version)
    ranges = manifest["metrics"]["ranges"]
    assert set(ranges) == {"50", "80", "90", "95"}
    for r in ranges.values():
        assert r["n"] == manifest["data"]["holdout_rows"] and r["median_width_pct"] > 0
    card = registry.read_file(version, "model_card.md").decode()
    assert "## Price ranges" in card and "price_ranges.svg" in card
    assert registry.read_file(version, "price_ranges.svg").startswith(b"<svg")


def test_stated_coverage_holds_on_the_held_out_rows_of_the_large_data():
    """The calibration promise, on 9,800 held-out stones: within two points of the stated share."""
    from gemcast.model import load_model
    from gemcast.training import TrainConfig, export, fit, split_indices

    clean = load_dataset(str(ROOT / "data" / "diamonds_large.csv"))
    X_list, y_list = clean.matrix()
    X, y = np.asarray(X_list, dtype=float), np.asarray(y_list, dtype=float)
    train, test = split_indices(clean.accepted)
    trained = fit(X[train], y[train], [clean.accepted[i] for i in train], TrainConfig(kind="linear"))
    model = load_model(export(trained))
    table = model.metadata["intervals"]
    assert table["calibration_rows"] > 3000
    result = intervals.evaluate(table, model.predict_log(X[test]), y[test])
    for c, r in result.items():
        assert abs(r["covered"] - float(c)) <= 2.0, (c, r)


def test_gemcast_predict_prints_the_range_groups_and_what_if(trained, capsys):
    from gemcast.cli import main

    registry, _version, _model = trained
    assert main(["predict", "--registry", registry.uri, "--json", json.dumps(stone()), "--coverage", "95",
                 "--what-if"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["price_range"]["coverage"] == 95 and out["price_range"]["low"] < out["price"]
    assert [g["group"] for g in out["reason_groups"]][0] == "size" and out["what_if"]
    assert main(["predict", "--registry", registry.uri, "--json", json.dumps(stone()), "--coverage", "70"]) != 0
    assert "coverage" in capsys.readouterr().err
