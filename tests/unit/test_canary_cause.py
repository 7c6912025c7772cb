"""gemcast.vertex_deploy.canary_cause: which message on the canary topic starts, watches, or is ignored."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from gemcast.vertex_deploy import canary_cause

REGISTRY = "gs://gemcast-dev-data/models"


def message(attributes: dict[str, str] | None = None, body: Any = None) -> dict[str, Any]:
    data = base64.b64encode(json.dumps(body).encode() if body is not None else b"").decode()
    return {"message": {"data": data, "messageId": "1", **({"attributes": attributes} if attributes else {})}}


def notification(name: str, bucket: str = "gemcast-dev-data", event: str = "OBJECT_FINALIZE") -> dict[str, Any]:
    return message({"eventType": event, "bucketId": bucket, "objectId": name, "payloadFormat": "JSON_API_V1"},
                   {"name": name})


def test_the_champion_pointer_written_starts_and_the_schedule_watches() -> None:
    assert canary_cause(notification("models/champion.json"), REGISTRY) == "champion"
    assert canary_cause(message(body={"source": "schedule"}), REGISTRY) == "schedule"


@pytest.mark.parametrize("data", [
    notification("models/champion.json.tmp"),
    notification("models/champion.json", bucket="another-bucket"),
    notification("models/champion.json", event="OBJECT_DELETE"),
    message(body={"source": "manual"}),
    message(body=None),
    {"message": {"data": "not base64 json!"}},
    {"no": "message"},
    None,
])
def test_anything_else_is_ignored(data: Any) -> None:
    assert canary_cause(data, REGISTRY) is None


def test_a_registry_at_the_bucket_root_has_its_pointer_there() -> None:
    assert canary_cause(notification("champion.json"), "gs://gemcast-dev-data") == "champion"
