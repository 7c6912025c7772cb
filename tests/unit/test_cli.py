"""The gemcast command as scripts use it: exit codes, JSON output, history, promote, rollback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gemcast.cli import main
from gemcast.training import GBM_INPUTS

DATA = str(Path(__file__).resolve().parents[2] / "data" / "diamonds.csv")
STONE = '{"carat": 0.7, "cut": "Ideal", "color": "E", "clarity": "VS1", "depth": 61.8, "table": 56, ' \
        '"x": 5.7, "y": 5.73, "z": 3.53}'


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    uri = (tmp_path_factory.mktemp("cli") / "models").as_uri()
    assert main(["train", "--data", DATA, "--registry", uri, "--kind", "linear"]) == 0
    assert main(["train", "--data", DATA, "--registry", uri, "--kind", "gbm", "--trials", "1",
                 "--max-iter", "100"]) == 0
    return uri


def history(uri, capsys):
    capsys.readouterr()
    assert main(["models", "list", "--registry", uri, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_train_prints_version_and_metrics(tmp_path, capsys):
    uri = (tmp_path / "m").as_uri()
    assert main(["train", "--data", DATA, "--registry", uri, "--kind", "linear", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["promoted"] is True and out["metrics"]["mape"] > 0 and out["version"]


def test_models_list_shows_the_history_and_the_champion(registry, capsys):
    rows = history(registry, capsys)
    assert [r["kind"] for r in rows] == ["linear", "gbm"]
    assert [r["champion"] for r in rows] == [False, True]
    assert main(["models", "list", "--registry", registry]) == 0
    text = capsys.readouterr().out
    assert text.count("\n") == 3 and "* " in text


def test_predict_prints_price_and_reasons(registry, capsys):
    capsys.readouterr()
    assert main(["predict", "--registry", registry, "--json", STONE]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["price"] > 0
    # one reason per model input: the nine features and the derived ones (x/y, carat/xyz, ...)
    assert {r["feature"] for r in out["reasons"]} == set(GBM_INPUTS)
    total = sum(r["effect_usd"] for r in out["reasons"])
    assert total == pytest.approx(out["price"] - out["base_price"], abs=0.1)


def test_predict_a_list_with_an_invalid_stone(registry, capsys):
    capsys.readouterr()
    body = f'[{STONE}, {{"carat": "heavy"}}]'
    assert main(["predict", "--registry", registry, "--json", body, "--no-reasons"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["predictions"][0]["price"] > 0
    assert "carat" in out["predictions"][1]["error"]["fields"]


def test_promote_and_rollback(registry, capsys):
    rows = history(registry, capsys)
    linear, gbm = rows[0]["version"], rows[1]["version"]
    assert main(["models", "rollback", "--registry", registry]) == 0
    assert history(registry, capsys)[0]["champion"] is True
    assert main(["models", "promote", gbm, "--registry", registry]) == 0
    assert history(registry, capsys)[1]["champion"] is True
    assert main(["models", "show", linear, "--registry", registry]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == linear


def test_errors_exit_non_zero_with_one_line(registry, tmp_path, capsys):
    capsys.readouterr()
    assert main(["predict", "--registry", registry, "--json", "{not json"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["models", "show", "nope", "--registry", registry]) == 2
    assert "no model version 'nope'" in capsys.readouterr().err
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main(["train", "--data", str(empty), "--registry", (tmp_path / "r").as_uri()]) == 2
    assert "empty" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["models", "list", "--help"],
                                  ["predict", "--help"], ["serve", "--help"]])
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "usage: gemcast" in capsys.readouterr().out
