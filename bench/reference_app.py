"""The reference users would reach for: gunicorn + Flask serving scikit-learn's own model.

``python -m bench.reference_app fit PATH`` fits a HistGradientBoostingRegressor on log(price) of
the bundled data's accepted rows (the 9 features, grades as ordinal codes) and pickles it to
PATH; ``gunicorn 'bench.reference_app:create_app("PATH")'`` serves ``POST /invocations``
(``{"instances": [stone, ...]}`` -> ``{"predictions": [{"price"}, ...]}``) the plain way: check
each stone has its fields, encode it, ``model.predict``. It is a yardstick, not a product.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np

from gemcast.schema import CATEGORIES, FEATURES


def _row(stone: dict[str, Any]) -> list[float]:
    return [float(CATEGORIES[f].index(stone[f])) if f in CATEGORIES else float(stone[f]) for f in FEATURES]


def fit(path: str) -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    from bench.stones import DATA
    from gemcast.cleaning import clean_csv

    rows = clean_csv(DATA.read_bytes()).accepted
    X = np.array([_row(r) for r in rows])
    y = np.log([r["price"] for r in rows])
    model = HistGradientBoostingRegressor(max_iter=500, learning_rate=0.1, max_leaf_nodes=31, random_state=0)
    model.fit(X, y)
    Path(path).write_bytes(pickle.dumps(model))


def create_app(path: str) -> Any:
    from flask import Flask, jsonify, request

    model = pickle.loads(Path(path).read_bytes())  # noqa: S301 - our own file, just written
    app = Flask("reference")

    @app.post("/invocations")
    def invocations() -> Any:
        body = request.get_json(force=True)
        stones = body["instances"] if isinstance(body, dict) else body
        out: list[dict[str, Any]] = []
        rows, at = [], []
        for i, stone in enumerate(stones):
            try:
                rows.append(_row(stone))
                at.append(i)
                out.append({})
            except (KeyError, ValueError, TypeError) as exc:
                out.append({"error": str(exc)})
        if rows:
            for i, price in zip(at, np.exp(model.predict(np.array(rows))), strict=True):
                out[i] = {"price": round(float(price), 2)}
        return jsonify({"predictions": out})

    @app.get("/ping")
    def ping() -> Any:
        return jsonify({"status": "healthy"})

    return app


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "fit":
        fit(sys.argv[2])
    else:
        print("usage: python -m bench.reference_app fit PATH", file=sys.stderr)
        sys.exit(2)
