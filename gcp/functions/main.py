"""Cloud Functions (2nd gen) entry points: doorways into the gemcast package.

Each entry point parses its request or event, takes clients created once per instance, calls
one function of ``gemcast`` and shapes the answer. Settings come from the environment
(gcp/env/<stage>.yaml); clients reach the emulators or the cloud through standard settings.

``api`` is the one HTTPS entry of the API: it routes by path through the route table
(``gemcast.routes``), as API Gateway routes to the Lambdas on AWS.

    functions-framework --source gcp/functions/main.py --target api --port 8081
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import functions_framework
from cloudevents.http import CloudEvent
from flask import Request

from gemcast import gcp
from gemcast.api import error_body
from gemcast.config import Settings
from gemcast.errors import ValidationError
from gemcast.ingest import ingest_object
from gemcast.registry import Registry
from gemcast.storage import GCSStorage, split_uri

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
logger = logging.getLogger("gemcast.functions")


# -- created once per instance, on first use (an instance runs one entry point) ------------------
@functools.cache
def _settings(*required: str) -> Settings:
    return Settings.from_env(required=required)


@functools.cache
def _firestore() -> Any:
    from google.cloud import firestore

    return firestore.Client(project=_settings("gcp_project").gcp_project)


@functools.cache
def _gcs() -> Any:
    from google.cloud import storage  # type: ignore[attr-defined]

    return storage.Client()


@functools.cache
def _verifier() -> gcp.IdTokenVerifier:
    settings = _settings("identity_audience")
    return gcp.IdTokenVerifier(settings.identity_audience, settings.identity_certs_url,
                               emulator_host=settings.firebase_auth_emulator_host)


@functools.cache
def _blocking_verifier() -> gcp.IdTokenVerifier:
    # Issued by Identity Platform's project (IDENTITY_AUDIENCE) to this function's own URL.
    settings = _settings("gcp_project", "identity_audience")
    return gcp.IdTokenVerifier(settings.identity_audience, settings.identity_certs_url,
                               audience_matcher=gcp.blocking_audience(settings.gcp_project),
                               emulator_host=settings.firebase_auth_emulator_host)


@functools.cache
def _inventory() -> gcp.FirestoreInventory:
    return gcp.FirestoreInventory(_firestore(), _settings().firestore_inventory)


class _ApiDeps:
    """gemcast.api.ApiDeps of this instance: each client created at the first route that needs
    it, so a health check or a token refusal never pays for the others."""

    @functools.cached_property
    def endpoint(self) -> gcp.VertexEndpoint:
        s = _settings("gcp_project", "vertex_endpoint_id", "vertex_api_endpoint")
        return gcp.VertexEndpoint(gcp.vertex_session(s.vertex_api_endpoint), s.vertex_api_endpoint,
                                  gcp.endpoint_path(s.gcp_project, s.gcp_region, s.vertex_endpoint_id),
                                  timeout_s=s.endpoint_timeout_s)

    @functools.cached_property
    def log(self) -> gcp.FirestorePredictionLog:
        return gcp.FirestorePredictionLog(_firestore(), _settings().firestore_predictions, overflow=_log_bucket())

    @functools.cached_property
    def registry(self) -> Registry:
        return Registry(_settings("registry_uri").registry_uri)

    @functools.cached_property
    def inventory(self) -> gcp.FirestoreInventory:
        return _inventory()

    @property
    def history(self) -> Callable[[str, int], list[dict[str, Any]]]:
        return lambda caller, limit: gcp.recent_for_caller(_firestore(), _settings().firestore_predictions,
                                                           caller, limit, _log_bucket())

    @property
    def ttl_days(self) -> int:
        return _settings().log_ttl_days


@functools.cache
def _log_bucket() -> GCSStorage | None:
    uri = _settings().prediction_log_uri
    if not uri:
        return None
    _, bucket, prefix = split_uri(uri)
    return GCSStorage(bucket, prefix, client=_gcs())


API_DEPS = _ApiDeps()


# -- entry points --------------------------------------------------------------------------------
@functions_framework.cloud_event
def ingest_upload(event: CloudEvent) -> None:
    """Cloud Storage object finalized: ingest raw/<name>.csv (idempotent on redelivery)."""
    data = event.data or {}
    try:
        result = ingest_object(GCSStorage(data["bucket"], client=_gcs()), str(data["name"]), _inventory())
    except ValidationError as exc:  # not a raw batch: nothing to do, and nothing to retry
        logger.info("ignored gs://%s/%s: %s", data.get("bucket"), data.get("name"), exc)
        return
    logger.info("ingested %s", result.as_dict())


@functions_framework.http
def trigger_training(request: Request) -> gcp.HttpResult:
    """Cloud Scheduler (OIDC, checked by Cloud Run IAM): start a CustomJob if the data changed."""
    if request.method != "POST":
        return gcp.json_response(405, error_body("trigger_training takes POST"))
    return gcp.json_response(200, _start_training(None))


def _start_training(request: Any) -> dict[str, Any]:
    """The training trigger's decision and submission; ``request``: a drift alarm's RetrainRequest."""
    s = _settings("data_bucket", "registry_uri", "gcp_project", "vertex_api_endpoint", "training_image_uri")
    submit = gcp.vertex_submitter(gcp.job_client(s.vertex_api_endpoint), project=s.gcp_project,
                                  region=s.gcp_region, image_uri=s.training_image_uri,
                                  service_account=s.training_service_account)
    return gcp.start_training(GCSStorage(s.data_bucket, client=_gcs()), Registry(s.registry_uri),
                              gcp.SnapshotClaims(_firestore(), s.firestore_snapshots), submit, request)


@functions_framework.http
def api(request: Request) -> gcp.HttpResult:
    """Every route of the API (gemcast.routes), with an Identity Platform ID token where needed."""
    return gcp.serve_api(request, API_DEPS, _verifier)


@functions_framework.http
@gcp.blocking_errors
def before_create(request: Request) -> gcp.HttpResult:
    """Identity Platform beforeCreate: allowed e-mail domains only; the default tier claim."""
    body = request.get_json(silent=True)
    claims = gcp.blocking_claims(body, _blocking_verifier(), gcp.EVENT_BEFORE_CREATE)
    s = _settings()
    return gcp.json_response(200, gcp.before_create(claims, s.allowed_email_domains, s.default_tier))


@functions_framework.http
@gcp.blocking_errors
def before_sign_in(request: Request) -> gcp.HttpResult:
    """Identity Platform beforeSignIn: the tier claim in the ID token."""
    body = request.get_json(silent=True)
    claims = gcp.blocking_claims(body, _blocking_verifier(), gcp.EVENT_BEFORE_SIGN_IN)
    return gcp.json_response(200, gcp.before_sign_in(claims, _settings().default_tier))


# -- drift and the Vertex AI canary (gemcast.drift, gemcast.vertex_deploy) ------------------------
@functools.cache
def _metric_client() -> Any:
    from gemcast.gcp_monitoring import metric_client

    return metric_client(_settings().monitoring_api_endpoint)


@functions_framework.http
@gcp.api_errors
def check_drift(request: Request) -> gcp.HttpResult:
    """Cloud Scheduler (daily, OIDC): drift of the last window of the prediction log; a body
    may name ``window_end`` and ``window_hours``. Publishes custom.googleapis.com/gemcast/*."""
    from gemcast import drift
    from gemcast.gcp_monitoring import publish_drift

    s = _settings("data_bucket", "registry_uri", "gcp_project")
    window = drift.window_for(request.get_json(silent=True), s.drift_window_hours)
    report = drift.check_drift(drift.firestore_items(_firestore(), s.firestore_predictions, window),
                               gcp.from_document, Registry(s.registry_uri), GCSStorage(s.data_bucket, client=_gcs()),
                               window, threshold=s.drift_threshold, min_stones=s.drift_min_stones)
    publish_drift(_metric_client(), s.gcp_project, report, stage=s.stage)
    keys = ("status", "message", "score", "worst_feature", "alarm", "counts", "report_uri")
    return gcp.json_response(200, {k: report[k] for k in keys})


@functions_framework.cloud_event
def retrain_on_drift(event: CloudEvent) -> None:
    """Pub/Sub, from the drift alert policy's notification channel: an opened incident runs the
    training trigger even when the data did not change (the job's gate decides)."""
    from gemcast.gcp_monitoring import incident
    from gemcast.trigger import retrain_request

    request = retrain_request(incident(event.data))
    if request is None:
        logger.info("not an opened drift incident: nothing to do")
        return
    logger.info("drift incident: %s", _start_training(request))


def _canary_step(*, start: bool) -> dict[str, Any]:
    """One step of the Vertex AI canary to the registry's champion (gemcast.vertex_deploy)."""
    from gemcast.gcp_monitoring import VertexMetrics
    from gemcast.vertex_deploy import VertexTarget, clients, roll_champion

    s = _settings("gcp_project", "vertex_endpoint_id", "vertex_api_endpoint", "serving_image_uri", "registry_uri")
    endpoints, models = clients(s.vertex_api_endpoint)
    target = VertexTarget(s.gcp_project, s.gcp_region, s.vertex_endpoint_id, s.serving_image_uri, s.registry_uri,
                          stage=s.stage, service_account=s.serving_service_account)
    step = roll_champion(endpoints, models, VertexMetrics(_metric_client(), s.gcp_project), Registry(s.registry_uri),
                         target, start=start)
    return step.as_dict()


@functions_framework.cloud_event
def roll_champion(event: CloudEvent) -> None:
    """Pub/Sub topic gemcast-<stage>-canary, fed by two publishers: the bucket's notification of
    the registry's champion.json (the champion event, as S3's ObjectCreated starts
    DeployModelFunction on AWS) starts the canary at once; Cloud Scheduler's message (every 5
    minutes) watches one under way and never starts one. The pointer is read from the
    registry, so a late or repeated event changes nothing."""
    from gemcast.vertex_deploy import canary_cause

    cause = canary_cause(event.data, _settings("registry_uri").registry_uri)
    if cause is None:
        logger.info("neither the champion pointer's notification nor the canary schedule: nothing to do")
        return
    logger.info("canary step (%s): %s", cause, _canary_step(start=cause == "champion"))
