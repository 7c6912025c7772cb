"""Settings: every environment variable name, read once into a frozen object.

An explicit argument beats the environment, which beats a default. ``Settings.from_env``
names every missing or malformed variable in one ``ConfigError``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from gemcast.errors import ConfigError

# Environment variable names: the template (template.yaml), gcp/ env files and the local
# runner set these; nothing else in the code spells them.
STAGE = "GEMCAST_STAGE"
DATA_BUCKET = "DATA_BUCKET"
REGISTRY_URI = "REGISTRY_URI"
PREDICTION_LOG_TABLE = "PREDICTION_LOG_TABLE"
# Where log records too large for the table (or written while it fails) are kept whole:
# s3://<data bucket>/logs or gs://<data bucket>/logs (gemcast.log_overflow).
PREDICTION_LOG_URI = "PREDICTION_LOG_URI"
INVENTORY_TABLE = "INVENTORY_TABLE"
USERS_TABLE = "USERS_TABLE"
IDEMPOTENCY_TABLE = "IDEMPOTENCY_TABLE"
LOG_DLQ_URL = "LOG_DLQ_URL"
ENDPOINT_NAME = "ENDPOINT_NAME"
ENDPOINT_TIMEOUT_S = "ENDPOINT_TIMEOUT_S"
BATCH_JOB_QUEUE = "BATCH_JOB_QUEUE"
BATCH_JOB_DEFINITION = "BATCH_JOB_DEFINITION"
ALLOWED_EMAIL_DOMAINS = "ALLOWED_EMAIL_DOMAINS"
AUTO_CONFIRM = "AUTO_CONFIRM"
DEFAULT_TIER = "DEFAULT_TIER"
PROMOTION_MARGIN = "PROMOTION_MARGIN"
LOG_TTL_DAYS = "LOG_TTL_DAYS"
SERVING_IMAGE_URI = "SERVING_IMAGE_URI"
SAGEMAKER_ROLE_ARN = "SAGEMAKER_ROLE_ARN"
ENDPOINT_MODE = "ENDPOINT_MODE"
ENDPOINT_INSTANCE_TYPE = "ENDPOINT_INSTANCE_TYPE"
ROLLBACK_ALARM_NAMES = "ROLLBACK_ALARM_NAMES"
# GCP
GCP_PROJECT = "GOOGLE_CLOUD_PROJECT"
GCP_REGION = "GCP_REGION"
VERTEX_ENDPOINT_ID = "VERTEX_ENDPOINT_ID"
VERTEX_API_ENDPOINT = "VERTEX_API_ENDPOINT"
FIRESTORE_PREDICTIONS = "FIRESTORE_PREDICTIONS_COLLECTION"
FIRESTORE_INVENTORY = "FIRESTORE_INVENTORY_COLLECTION"
FIRESTORE_SNAPSHOTS = "FIRESTORE_SNAPSHOTS_COLLECTION"
TRAINING_IMAGE_URI = "TRAINING_IMAGE_URI"
IDENTITY_AUDIENCE = "IDENTITY_AUDIENCE"
IDENTITY_CERTS_URL = "IDENTITY_CERTS_URL"
# Set only where the Firebase Auth emulator stands in for Identity Platform: its ID tokens are
# unsigned, and are accepted only then (as the Firebase Admin SDK does).
FIREBASE_AUTH_EMULATOR_HOST = "FIREBASE_AUTH_EMULATOR_HOST"
TRAINING_SERVICE_ACCOUNT = "TRAINING_SERVICE_ACCOUNT"
# Drift monitoring (gemcast.drift)
DRIFT_THRESHOLD = "DRIFT_THRESHOLD"
DRIFT_MIN_STONES = "DRIFT_MIN_STONES"
DRIFT_WINDOW_HOURS = "DRIFT_WINDOW_HOURS"
MONITORING_API_ENDPOINT = "MONITORING_API_ENDPOINT"
SERVING_SERVICE_ACCOUNT = "SERVING_SERVICE_ACCOUNT"

# Where Identity Platform publishes the x509 certs its ID tokens are signed with.
SECURETOKEN_CERTS_URL = "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"


def _as_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _as_list(value: str) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Every setting gemcast reads. Unset optional settings keep their defaults."""

    stage: str = "dev"
    data_bucket: str = ""
    registry_uri: str = ""
    prediction_log_table: str = ""
    prediction_log_uri: str = ""
    inventory_table: str = ""
    users_table: str = ""
    idempotency_table: str = ""
    log_dlq_url: str = ""
    endpoint_name: str = ""
    endpoint_timeout_s: float = 5.0
    batch_job_queue: str = ""
    batch_job_definition: str = ""
    allowed_email_domains: tuple[str, ...] = ()
    auto_confirm: bool = False
    default_tier: str = "standard"
    promotion_margin: float = 0.0
    log_ttl_days: int = 90
    serving_image_uri: str = ""
    sagemaker_role_arn: str = ""
    endpoint_mode: str = "serverless"
    endpoint_instance_type: str = "ml.m5.large"
    rollback_alarm_names: tuple[str, ...] = ()
    gcp_project: str = ""
    gcp_region: str = "europe-west1"
    vertex_endpoint_id: str = ""
    vertex_api_endpoint: str = ""
    firestore_predictions: str = "predictions"
    firestore_inventory: str = "inventory"
    firestore_snapshots: str = "snapshots"
    training_image_uri: str = ""
    identity_audience: str = ""
    identity_certs_url: str = SECURETOKEN_CERTS_URL
    firebase_auth_emulator_host: str = ""
    training_service_account: str = ""
    drift_threshold: float = 0.25
    drift_min_stones: int = 200
    drift_window_hours: float = 24.0
    monitoring_api_endpoint: str = ""
    serving_service_account: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        required: tuple[str, ...] = (),
        **overrides: Any,
    ) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``).

        ``required`` lists field names that must end up non-empty; ``overrides`` (explicit
        arguments) win over the environment.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems: list[str] = []
        for f in fields(cls):
            if f.name == "extra":
                continue
            var = _ENV_OF[f.name]
            if f.name in overrides:
                values[f.name] = overrides[f.name]
                continue
            raw = env.get(var)
            if raw is None:
                continue
            try:
                values[f.name] = _PARSERS.get(f.name, str)(raw)
            except ValueError as exc:
                problems.append(f"{var}: {exc}")
        settings = cls(**values)
        for name in required:
            if not getattr(settings, name):
                problems.append(f"{_ENV_OF[name]}: required but not set")
        if settings.prediction_log_uri and not settings.prediction_log_uri.startswith(("s3://", "gs://", "file://")):
            problems.append(f"{PREDICTION_LOG_URI}: must be an s3://, gs:// or file:// folder URI")
        if settings.endpoint_mode not in {"serverless", "instance"}:
            problems.append(f"{ENDPOINT_MODE}: must be serverless or instance")
        if problems:
            raise ConfigError("invalid settings: " + "; ".join(problems))
        return settings


def _positive_float(value: str) -> float:
    number = float(value)
    if number < 0:
        raise ValueError(f"must be >= 0, got {value!r}")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"must be > 0, got {value!r}")
    return number


_ENV_OF: dict[str, str] = {
    "stage": STAGE,
    "data_bucket": DATA_BUCKET,
    "registry_uri": REGISTRY_URI,
    "prediction_log_table": PREDICTION_LOG_TABLE,
    "prediction_log_uri": PREDICTION_LOG_URI,
    "inventory_table": INVENTORY_TABLE,
    "users_table": USERS_TABLE,
    "idempotency_table": IDEMPOTENCY_TABLE,
    "log_dlq_url": LOG_DLQ_URL,
    "endpoint_name": ENDPOINT_NAME,
    "endpoint_timeout_s": ENDPOINT_TIMEOUT_S,
    "batch_job_queue": BATCH_JOB_QUEUE,
    "batch_job_definition": BATCH_JOB_DEFINITION,
    "allowed_email_domains": ALLOWED_EMAIL_DOMAINS,
    "auto_confirm": AUTO_CONFIRM,
    "default_tier": DEFAULT_TIER,
    "promotion_margin": PROMOTION_MARGIN,
    "log_ttl_days": LOG_TTL_DAYS,
    "serving_image_uri": SERVING_IMAGE_URI,
    "sagemaker_role_arn": SAGEMAKER_ROLE_ARN,
    "endpoint_mode": ENDPOINT_MODE,
    "endpoint_instance_type": ENDPOINT_INSTANCE_TYPE,
    "rollback_alarm_names": ROLLBACK_ALARM_NAMES,
    "gcp_project": GCP_PROJECT,
    "gcp_region": GCP_REGION,
    "vertex_endpoint_id": VERTEX_ENDPOINT_ID,
    "vertex_api_endpoint": VERTEX_API_ENDPOINT,
    "firestore_predictions": FIRESTORE_PREDICTIONS,
    "firestore_inventory": FIRESTORE_INVENTORY,
    "firestore_snapshots": FIRESTORE_SNAPSHOTS,
    "training_image_uri": TRAINING_IMAGE_URI,
    "identity_audience": IDENTITY_AUDIENCE,
    "identity_certs_url": IDENTITY_CERTS_URL,
    "firebase_auth_emulator_host": FIREBASE_AUTH_EMULATOR_HOST,
    "training_service_account": TRAINING_SERVICE_ACCOUNT,
    "drift_threshold": DRIFT_THRESHOLD,
    "drift_min_stones": DRIFT_MIN_STONES,
    "drift_window_hours": DRIFT_WINDOW_HOURS,
    "monitoring_api_endpoint": MONITORING_API_ENDPOINT,
    "serving_service_account": SERVING_SERVICE_ACCOUNT,
}

_PARSERS: dict[str, Any] = {
    "endpoint_timeout_s": _positive_float,
    "allowed_email_domains": _as_list,
    "auto_confirm": _as_bool,
    "promotion_margin": _positive_float,
    "log_ttl_days": _positive_int,
    "drift_threshold": _positive_float,
    "drift_min_stones": _positive_int,
    "drift_window_hours": _positive_float,
    "rollback_alarm_names": lambda v: tuple(p.strip() for p in v.split(",") if p.strip()),
}
