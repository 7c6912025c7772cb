"""The gemcast API as the web app sees it: HTTP calls with the signed-in user's ID token.

This is the web app's only way to gemcast: no table, bucket or model is read directly, so the
page sees exactly what an API client sees, under the same authorizer and the same log. Each
call names its route by operationId; method and path come from the route table
(``gemcast.routes``, in the bundle beside gemcast_web/).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import requests

from gemcast.routes import by_operation

logger = logging.getLogger(__name__)


class ApiUnavailableError(Exception):
    """The API could not be reached, timed out, or answered 5xx; ``str(exc)`` is for the user."""


class ApiAuthError(Exception):
    """The API refused the token (401/403): the session must refresh or end."""


@dataclass(frozen=True)
class ApiAnswer:
    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error_message(self) -> str:
        error = self.body.get("error")
        if isinstance(error, dict):
            return str(error.get("message", ""))
        return str(error or self.body.get("message") or "")

    @property
    def field_errors(self) -> dict[str, str]:
        error = self.body.get("error")
        fields = error.get("fields") if isinstance(error, dict) else None
        return {str(k): str(v) for k, v in fields.items()} if isinstance(fields, dict) else {}


class GemcastApi:
    def __init__(
        self, base_url: str, *, timeout_s: float = 10.0, session: requests.Session | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = session or requests.Session()

    def _call(
        self,
        operation: str,
        token: str | None,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        expect_json: bool = True,
    ) -> ApiAnswer:
        route = by_operation(operation)
        method, path = route.method, route.path
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = self.session.request(
                method,
                self.base_url + path,
                headers=headers,
                json=json_body,
                params=params,
                timeout=self.timeout_s,
            )
        except requests.RequestException as exc:
            logger.error("API %s %s failed: %s", method, path, exc)
            raise ApiUnavailableError(
                "The pricing service cannot be reached right now; try again shortly."
            ) from exc
        if response.status_code in (401, 403):
            raise ApiAuthError(f"{method} {path}: {response.status_code}")
        try:
            body = response.json() if expect_json else {"text": response.text}
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {"items": body}
        if response.status_code >= 500:
            answer = ApiAnswer(response.status_code, body)
            logger.error(
                "API %s %s answered %s: %s", method, path, response.status_code, answer.error_message
            )
            raise ApiUnavailableError(
                answer.error_message or "The pricing service is unavailable right now; try again shortly."
            )
        return ApiAnswer(response.status_code, body)

    def health(self) -> ApiAnswer:
        return self._call("getHealth", None)

    def predict(self, token: str, stone: dict[str, Any]) -> ApiAnswer:
        return self._call("createPrediction", token, json_body=stone)

    def similar(self, token: str, *, carat: Any, cut: str, color: str, clarity: str, n: int) -> ApiAnswer:
        params = {"carat": carat, "cut": cut, "color": color, "clarity": clarity, "n": n}
        return self._call("listSimilarDiamonds", token, params=params)

    def my_predictions(self, token: str, limit: int = 20) -> ApiAnswer:
        return self._call("listMyPredictions", token, params={"limit": limit})

    def current_model(self, token: str) -> ApiAnswer:
        return self._call("getCurrentModel", token)

    def model_card(self, token: str) -> ApiAnswer:
        """``{"version", "markdown", "plot_svg"}``."""
        return self._call("getCurrentModelCard", token)

    def model_history(self, token: str) -> ApiAnswer:
        """``{"count", "champion", "models": [...]}``, newest first."""
        return self._call("listModels", token)
