"""The GCP half on one laptop: emulators, each Cloud Function under functions-framework, the
serving process as the Vertex AI endpoint, the web page, and a local stand-in for the one
Google service that has no emulator (Vertex AI custom jobs).

    gemcast-local up --cloud gcp    # or: make demo-gcp
    gemcast-local drift --cloud gcp # the drift check on its log; on alarm, retraining (make drift-gcp)

Everything the functions reach goes through the settings they read in the cloud:
``FIRESTORE_EMULATOR_HOST``, ``STORAGE_EMULATOR_HOST``, ``VERTEX_API_ENDPOINT`` (the serving
process answers the Vertex REST path; the jobs stand-in answers ``customJobs``) and
``FIREBASE_AUTH_EMULATOR_HOST`` (the Firebase Auth emulator of firebase-tools serves the
Identity Toolkit REST API that Identity Platform serves: sign-up, sign-in, the blocking functions).
This module is the one place that knows it is local.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from gemcast.errors import GemcastError
from gemcast_local.servers import (
    HOST,
    FirestoreEmulator,
    GcsEmulator,
    ServerGroup,
    ServerStartError,
    StandInServer,
    free_port,
    stop_on_interrupt,
)
from gemcast_local.webapp_runner import WebAppServer

REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / "gcp" / "functions" / "main.py"
ENTRY_POINTS = ("ingest_upload", "trigger_training", "api", "before_create", "before_sign_in")
# The drift check and the alert's way to the training trigger (gemcast-local drift --cloud gcp).
DRIFT_ENTRY_POINTS = ("check_drift", "retrain_on_drift")
STATE_FILE = "stack.json"  # in the stack's workdir while it runs: what `gemcast-local drift` reaches
PROJECT = "gemcast-local"
# The Firebase Auth emulator's project: a "demo-" id, so firebase-tools never looks for a real one.
IDENTITY_PROJECT = "demo-gemcast-local"
REGION = "europe-west1"
BUCKET = "gemcast-local-data"
ENDPOINT_ID = "410000001"
FIREBASE_TOOLS_DIR = REPO / ".tools"
FIREBASE_CLI = FIREBASE_TOOLS_DIR / "node_modules" / "firebase-tools" / "lib" / "bin" / "firebase.js"
DEMO_EMAIL = "demo@example.com"
# The web API key is not checked by the emulator; the page sends it as it would in the cloud.
LOCAL_API_KEY = "local-web-api-key"


# -- Identity Platform, locally: the Firebase Auth emulator ---------------------------------------
class FirebaseAuthEmulator(StandInServer):
    """``firebase emulators:start --only auth`` (npm firebase-tools in ``.tools/``, installed by
    ``make firebase-tools``), with its hub and logging ports free ports too and its own temp
    folder, so several can run at once. It serves the Identity Toolkit REST API at
    ``{url}/identitytoolkit.googleapis.com/v1/...``; its ID tokens are unsigned (``alg: none``)
    and are accepted only where ``FIREBASE_AUTH_EMULATOR_HOST`` is set."""

    name = "firebase-auth"
    default_timeout_s = 180.0  # Node builds the emulator's API validator: slow on 2 busy cores

    def __init__(self, *, project: str = IDENTITY_PROJECT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.project = project
        self._home: str | None = None

    def launch(self) -> None:
        if not FIREBASE_CLI.is_file():
            raise ServerStartError(f"{FIREBASE_CLI} is missing: run `make firebase-tools` (npm install)")
        node = shutil.which("node")
        if node is None:
            raise ServerStartError("node is not on PATH: the Firebase Auth emulator needs Node.js 20+")
        self._home = tempfile.mkdtemp(prefix="gemcast-firebase-")
        self._extra_env.update(TMPDIR=self._home, NO_UPDATE_NOTIFIER="1", CI="true",
                               FIREBASE_CLI_DISABLE_UPDATE_CHECK="true")
        super().launch()

    def command(self) -> list[str]:
        assert self._home is not None
        config = Path(self._home) / "firebase.json"
        config.write_text(json.dumps({"emulators": {
            "auth": {"host": self.host, "port": self.port},
            "hub": {"host": self.host, "port": free_port()},
            "logging": {"host": self.host, "port": free_port()},
            "ui": {"enabled": False},
            "singleProjectMode": True,
        }}))
        return [shutil.which("node") or "node", str(FIREBASE_CLI), "emulators:start", "--only", "auth",
                "--project", self.project, "--config", str(config)]

    def stop(self, timeout_s: float = 10.0, *, keep_log: bool = False) -> None:
        super().stop(timeout_s, keep_log=keep_log)
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    @property
    def host_port(self) -> str:
        return f"{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        return {"FIREBASE_AUTH_EMULATOR_HOST": self.host_port}

    # -- the Identity Toolkit REST API and the emulator's own API --------------------------------
    def _call(self, method: str, path: str, body: Any = None, *, admin: bool = False) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if admin:  # the emulator takes any bearer "owner" token for admin calls
            headers["Authorization"] = "Bearer owner"
        sep = "&" if "?" in path else "?"
        url = f"{self.url}{path}{'' if admin else sep + 'key=' + LOCAL_API_KEY}"
        req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return dict(json.loads(resp.read() or b"{}"))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise IdentityError(f"{method} {path}: HTTP {exc.code} {detail}") from exc

    def sign_up(self, email: str, password: str, *, exist_ok: bool = False) -> dict[str, Any]:
        """accounts:signUp, as a new user does (the beforeCreate blocking function runs);
        ``exist_ok``: an account of that e-mail already there is fine (its answer is ``{}``)."""
        try:
            return self._call("POST", "/identitytoolkit.googleapis.com/v1/accounts:signUp",
                              {"email": email, "password": password, "returnSecureToken": True})
        except IdentityError as exc:
            if exist_ok and "EMAIL_EXISTS" in str(exc):
                return {}
            raise

    def sign_in(self, email: str, password: str) -> dict[str, Any]:
        """accounts:signInWithPassword: ``idToken``, ``refreshToken`` (beforeSignIn runs)."""
        return self._call("POST", "/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword",
                          {"email": email, "password": password, "returnSecureToken": True})

    def id_token(self, email: str, password: str) -> str:
        return str(self.sign_in(email, password)["idToken"])

    def use_blocking_functions(self, before_create: str | None, before_sign_in: str | None) -> None:
        """Register the blocking functions' URLs, as ``gcloud identity-platform`` does in the cloud."""
        triggers = {event: {"functionUri": url} for event, url in
                    (("beforeCreate", before_create), ("beforeSignIn", before_sign_in)) if url}
        self._call("PATCH", f"/emulator/v1/projects/{self.project}/config",
                   {"blockingFunctions": {"triggers": triggers}}, admin=True)

    def set_custom_claims(self, local_id: str, claims: Mapping[str, Any]) -> None:
        """What an administrator does with the Admin SDK's set_custom_user_claims."""
        self._call("POST", f"/identitytoolkit.googleapis.com/v1/projects/{self.project}/accounts:update",
                   {"localId": local_id, "customAttributes": json.dumps(dict(claims))}, admin=True)

    def clear(self) -> None:
        """Delete every account of the project (the emulator's own API)."""
        self._call("DELETE", f"/emulator/v1/projects/{self.project}/accounts", admin=True)


class IdentityError(GemcastError):
    """The Firebase Auth emulator refused a call (the message holds its error answer)."""


# -- a small HTTP server in a thread (the Vertex AI jobs stand-in) -------------------------------
class _QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _send(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


class _ThreadServer:
    """A ThreadingHTTPServer on 127.0.0.1 in a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer((HOST, 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.port = int(self.httpd.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> _ThreadServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=type(self).__name__,
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> _ThreadServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- Vertex AI custom jobs, locally --------------------------------------------------------------
_JOBS_PATH = re.compile(r"^/v1/(projects/[^/]+/locations/[^/]+)/customJobs(?:/(\d+))?$")


@dataclass
class LocalJob:
    name: str
    spec: dict[str, Any]
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def state(self) -> str:
        if self.process is None:
            return "JOB_STATE_QUEUED"
        code = self.process.poll()
        if code is None:
            return "JOB_STATE_RUNNING"
        return "JOB_STATE_SUCCEEDED" if code == 0 else "JOB_STATE_FAILED"


class _JobsHandler(_QuietHandler):
    def do_POST(self) -> None:  # noqa: N802
        jobs: LocalVertexJobs = self.server.owner  # type: ignore[attr-defined]
        match = _JOBS_PATH.match(self.path.split("?")[0])
        if not match or match.group(2):
            self._send(404, {"error": {"code": 404, "message": f"no route {self.path}",
                                       "status": "NOT_FOUND"}})
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        job = jobs.create(match.group(1), body)
        self._send(200, jobs.describe(job))

    def do_GET(self) -> None:  # noqa: N802
        jobs: LocalVertexJobs = self.server.owner  # type: ignore[attr-defined]
        match = _JOBS_PATH.match(self.path.split("?")[0])
        job = None
        if match and match.group(2):
            job = jobs.jobs.get(f"{match.group(1)}/customJobs/{match.group(2)}")
        if job is None:
            self._send(404, {"error": {"code": 404, "message": "no such job", "status": "NOT_FOUND"}})
            return
        self._send(200, jobs.describe(job))


class LocalVertexJobs(_ThreadServer):
    """Answers ``JobServiceClient.create_custom_job`` (REST) and runs the worker pool's container
    args with the image's entrypoint (``python -m gemcast.container``) as a subprocess.

    ``run=False`` only records the jobs (tests check what the function asked for).
    ``extra_args`` are appended to the job's args (a smaller search budget on a laptop).
    """

    def __init__(self, *, run: bool = True, env: Mapping[str, str] | None = None,
                 extra_args: Sequence[str] = (), log_dir: Path | None = None) -> None:
        super().__init__(_JobsHandler)
        self.run = run
        self.env = dict(env or {})
        self.extra_args = list(extra_args)
        self.log_dir = log_dir
        self.jobs: dict[str, LocalJob] = {}
        self._lock = threading.Lock()
        self._next = 1

    def create(self, parent: str, spec: dict[str, Any]) -> LocalJob:
        with self._lock:
            name = f"{parent}/customJobs/{self._next}"
            self._next += 1
        pools = spec.get("jobSpec", {}).get("workerPoolSpecs", [{}])
        args = list(pools[0].get("containerSpec", {}).get("args", []))
        job = LocalJob(name, spec, args)
        if self.run:
            log = (self.log_dir or Path("/tmp")) / f"vertex-job-{name.rsplit('/', 1)[1]}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            job.log_path = log
            with open(log, "ab") as out:
                job.process = subprocess.Popen(
                    [sys.executable, "-m", "gemcast.container", *args, *self.extra_args],
                    stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env},
                )
        with self._lock:
            self.jobs[name] = job
        return job

    def describe(self, job: LocalJob) -> dict[str, Any]:
        return {"name": job.name, "displayName": job.spec.get("displayName", ""),
                "jobSpec": job.spec.get("jobSpec"), "labels": job.spec.get("labels", {}), "state": job.state}

    def wait(self, job: LocalJob, timeout_s: float = 1800) -> str:
        if job.process is not None:
            job.process.wait(timeout=timeout_s)
        return job.state

    def stop(self) -> None:
        for job in self.jobs.values():
            if job.process is not None and job.process.poll() is None:
                job.process.terminate()
                job.process.wait(timeout=10)
        super().stop()


# -- processes -----------------------------------------------------------------------------------
class FunctionServer(StandInServer):
    """One entry point of gcp/functions/main.py under functions-framework (gunicorn)."""

    default_timeout_s = 60.0

    def __init__(self, target: str, *, env: Mapping[str, str], source: Path = MAIN, **kwargs: Any) -> None:
        super().__init__(extra_env={"THREADS": "8", **env}, **kwargs)
        self.name = f"function-{target}"
        self.target = target
        self.source = source

    def command(self) -> list[str]:
        binary = Path(sys.executable).parent / "functions-framework"
        return [str(binary), "--target", self.target, "--source", str(self.source),
                "--host", self.host, "--port", str(self.port)]

    def env(self) -> dict[str, str]:
        return {}


class ServingProcess(StandInServer):
    """``gemcast serve``: the serving image's process, answering the Vertex AI REST path."""

    name = "serve"
    probe_path = "/ping"
    default_timeout_s = 120.0

    def __init__(self, registry_uri: str, *, workers: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.registry_uri = registry_uri
        self.workers = workers

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gemcast.cli", "serve", "--registry", self.registry_uri,
                "--host", self.host, "--port", str(self.port), "--workers", str(self.workers)]

    def env(self) -> dict[str, str]:
        return {"VERTEX_API_ENDPOINT": self.url}


def function_env(*, emulators: Mapping[str, str], vertex_api_endpoint: str, bucket: str = BUCKET,
                 project: str = PROJECT, identity_project: str = IDENTITY_PROJECT,
                 **overrides: str) -> dict[str, str]:
    """The environment of every function: what gcp/env/<stage>.yaml gives in the cloud."""
    env = {
        **emulators,
        "GEMCAST_STAGE": "local",
        "GOOGLE_CLOUD_PROJECT": project,
        "GCP_REGION": REGION,
        "DATA_BUCKET": bucket,
        "REGISTRY_URI": f"gs://{bucket}/models",
        "PREDICTION_LOG_URI": f"gs://{bucket}/logs",
        "FIRESTORE_PREDICTIONS_COLLECTION": "predictions",
        "FIRESTORE_INVENTORY_COLLECTION": "inventory",
        "FIRESTORE_SNAPSHOTS_COLLECTION": "snapshots",
        "VERTEX_ENDPOINT_ID": ENDPOINT_ID,
        "VERTEX_API_ENDPOINT": vertex_api_endpoint,
        "ENDPOINT_TIMEOUT_S": "5",
        "TRAINING_IMAGE_URI": "gemcast-training:local",
        "TRAINING_SERVICE_ACCOUNT": f"gemcast-training@{project}.iam.gserviceaccount.com",
        # Identity Platform's project: the audience and issuer of its ID tokens (locally the
        # emulator's demo project; in the cloud the same project as the rest).
        "IDENTITY_AUDIENCE": identity_project,
        "ALLOWED_EMAIL_DOMAINS": "example.com",
        "DEFAULT_TIER": "standard",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(overrides)
    return env


def post_cloud_event(url: str, event: Mapping[str, Any], timeout_s: float = 300) -> int:
    """POST a CloudEvent in structured mode, as Eventarc delivers it; the HTTP status."""
    req = urllib.request.Request(url, data=json.dumps(event).encode(), method="POST",
                                 headers={"Content-Type": "application/cloudevents+json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return int(resp.status)


def pubsub_event(topic: str, data: bytes, attributes: Mapping[str, str] | None = None,
                 project: str = PROJECT) -> dict[str, Any]:
    """The messagePublished CloudEvent Eventarc delivers to a function with --trigger-topic."""
    import base64

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    message_id = str(uuid.uuid4().int % 10**16)
    message: dict[str, Any] = {"data": base64.b64encode(data).decode(), "messageId": message_id,
                               "publishTime": now}
    if attributes:
        message["attributes"] = dict(attributes)
    return {"specversion": "1.0", "id": message_id, "time": now,
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "source": f"//pubsub.googleapis.com/projects/{project}/topics/{topic}",
            "datacontenttype": "application/json",
            "data": {"message": message, "subscription": f"projects/{project}/subscriptions/eventarc-{topic}"}}


def storage_notification(bucket: str, name: str, topic: str, project: str = PROJECT) -> dict[str, Any]:
    """A bucket's Pub/Sub notification (OBJECT_FINALIZE, JSON_API_V1) of one object written, as
    Eventarc delivers it: the canary's champion event (``gs://<bucket>/models/champion.json``)."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    generation = str(time.time_ns() // 1000)
    resource = {"kind": "storage#object", "bucket": bucket, "name": name, "generation": generation,
                "id": f"{bucket}/{name}/{generation}", "contentType": "application/json", "timeCreated": now,
                "updated": now}
    attributes = {"notificationConfig": f"projects/_/buckets/{bucket}/notificationConfigs/1",
                  "eventType": "OBJECT_FINALIZE", "payloadFormat": "JSON_API_V1", "bucketId": bucket,
                  "objectId": name, "objectGeneration": generation, "eventTime": now}
    return pubsub_event(topic, json.dumps(resource).encode(), attributes, project=project)


def storage_event(bucket: str, name: str, size: int, template: Path | None = None) -> dict[str, Any]:
    """The object-finalized CloudEvent of events/gcp/ingest_upload_finalized.json for one object."""
    path = template or REPO / "events" / "gcp" / "ingest_upload_finalized.json"
    event = json.loads(path.read_text())
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    event.update(id=uuid.uuid4().hex, time=now, subject=f"objects/{name}",
                 source=f"//storage.googleapis.com/projects/_/buckets/{bucket}")
    event["data"].update(bucket=bucket, name=name, id=f"{bucket}/{name}/1", size=str(size), timeCreated=now,
                         updated=now, selfLink=f"https://www.googleapis.com/storage/v1/b/{bucket}/o/{name}")
    return event


# -- the running stack's state (for `gemcast-local drift --cloud gcp`) ---------------------------
def write_state(workdir: Path, *, env: Mapping[str, str], functions: Mapping[str, str], jobs_url: str,
                monitoring_url: str, bucket: str = BUCKET, project: str = PROJECT) -> Path:
    """``<workdir>/stack.json``: this process, the emulators' env, each function's URL, the
    Vertex AI jobs and Cloud Monitoring stand-ins; removed when the stack stops."""
    path = workdir / STATE_FILE
    path.write_text(json.dumps({"pid": os.getpid(), "env": dict(env), "functions": dict(functions),
                                "jobs": jobs_url, "monitoring": monitoring_url, "bucket": bucket,
                                "project": project}, indent=2))
    return path


def read_state(workdir: Path) -> dict[str, Any]:
    """The running GCP stack's state file; a GemcastError when there is none or it stopped."""
    from gemcast_local.stack import StackError
    from gemcast_local.stack import read_state as read_any

    try:
        return read_any(workdir)
    except StackError as exc:
        raise GemcastError(f"no GCP stack running with {workdir / STATE_FILE}: start it with "
                           "`make demo-gcp` (gemcast-local up --cloud gcp)") from exc


# -- the whole stack -----------------------------------------------------------------------------
def webapp_env(api_url: str, identity: FirebaseAuthEmulator) -> dict[str, str]:
    """The web page's environment on the GCP half: what app.yaml's env.yaml gives on App Engine,
    with the Firebase Auth emulator standing in for Identity Platform."""
    return {
        "API_URL": api_url,
        "AUTH_PROVIDER": "identity_platform",
        "IDENTITY_API_KEY": LOCAL_API_KEY,
        **identity.env(),
        "SECRET_KEY": secrets.token_hex(32),
        "TRUST_PROXY": "false",  # no proxy in front locally
        "PYTHONUNBUFFERED": "1",
    }


@dataclass
class GcpStack:
    """``gemcast-local up --cloud gcp``: start everything, run the data flow, print curl lines, wait."""

    data: Path = REPO / "data" / "diamonds.csv"
    workdir: Path = REPO / ".gemcast" / "gcp"
    kind: str = "gbm"
    train_budget_s: float = 30.0
    trials: int = 2
    demo_email: str = DEMO_EMAIL
    demo_password: str = "Gemcast-Demo-2024"
    group: ServerGroup = field(default_factory=ServerGroup)
    functions: dict[str, FunctionServer] = field(default_factory=dict)

    def say(self, text: str) -> None:
        print(f"[gemcast gcp] {text}", flush=True)

    identity: FirebaseAuthEmulator | None = None
    webapp: StandInServer | None = None
    jobs: LocalVertexJobs | None = None
    monitoring: Any = None  # gemcast_local.gcp_standins.MonitoringStandIn: the drift metrics
    _servers: dict[str, StandInServer] = field(default_factory=dict)

    def run(self) -> int:
        """Start, print the banner, wait for Ctrl-C, stop: ``make demo-gcp``."""
        stop_on_interrupt()
        try:
            if not self.start():
                return 1
            print(self.banner(), flush=True)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            self.say("stopping")
            return 0
        finally:
            self.stop()

    def start(self) -> bool:
        """Everything up and the data flow run: False when training failed (see its log)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.say("starting the Firestore, Cloud Storage and Firebase Auth emulators")
        # An Auth emulator given to the stack (a test session's) is used, and left running.
        given = self.identity
        gcs, firestore, *started = self.group.start(
            GcsEmulator(project=PROJECT), FirestoreEmulator(project=PROJECT),
            *([] if given else [FirebaseAuthEmulator(log_path=self.workdir / "firebase-auth.log")]))
        identity = given or started[0]
        assert isinstance(identity, FirebaseAuthEmulator)
        self.identity = identity
        self._servers.update(gcs=gcs, firestore=firestore)
        emulators = {**self.group.env(), **identity.env()}
        os.environ.update(emulators)
        from google.cloud import storage  # type: ignore[attr-defined]

        bucket = storage.Client(project=PROJECT).create_bucket(BUCKET)
        # The job runs the CustomJob's args; a laptop adds a smaller search than the cloud's.
        laptop = ["--kind", self.kind, "--budget", str(self.train_budget_s), "--trials", str(self.trials)]
        runner = LocalVertexJobs(env=emulators, extra_args=laptop, log_dir=self.workdir)
        self.jobs = runner
        runner.start()
        from gemcast_local.gcp_standins import MonitoringStandIn

        self.monitoring = MonitoringStandIn().__enter__()
        serve_port = free_port()
        targets = (*ENTRY_POINTS, *DRIFT_ENTRY_POINTS)
        self.say(f"starting the {len(targets)} Cloud Functions under functions-framework")
        for target in targets:
            # The trainers' Vertex AI is the jobs stand-in; the API's is the serving process.
            trains = target in {"trigger_training", "retrain_on_drift"}
            vertex = runner.url if trains else f"http://{HOST}:{serve_port}"
            self.functions[target] = FunctionServer(target, env=function_env(
                emulators=emulators, vertex_api_endpoint=vertex, MONITORING_API_ENDPOINT=self.monitoring.url),
                log_path=self.workdir / f"{target}.log")
        self.group.start(*self.functions.values())
        identity.use_blocking_functions(self.functions["before_create"].url, self.functions["before_sign_in"].url)

        blob_name = f"raw/{self.data.name}"
        self.say(f"uploading {self.data} to gs://{BUCKET}/{blob_name}")
        bucket.blob(blob_name).upload_from_filename(str(self.data), content_type="text/csv")
        self.say("ingest_upload <- object finalized CloudEvent")
        post_cloud_event(self.functions["ingest_upload"].url,
                         storage_event(BUCKET, blob_name, self.data.stat().st_size))
        self.say("trigger_training <- Cloud Scheduler POST; Vertex AI CustomJob runs `train` locally")
        answer = _post_json(self.functions["trigger_training"].url, {"source": "schedule"})
        if answer.get("started"):
            job = runner.jobs[answer["job"]["job_name"]]
            self.say(f"training: {' '.join(job.args)} (log {job.log_path})")
            state = runner.wait(job)
            if state != "JOB_STATE_SUCCEEDED":
                self.say(f"training failed ({state}); see {job.log_path}")
                return False
        else:
            self.say(f"no training needed: {answer.get('reason')}")
        self.say("starting the serving process (the Vertex AI endpoint) and the web page")
        self.webapp = WebAppServer(extra_env=webapp_env(self.functions["api"].url, identity),
                                   log_path=self.workdir / "webapp.log")
        self.group.start(ServingProcess(f"gs://{BUCKET}/models", port=serve_port,
                                        log_path=self.workdir / "serve.log"), self.webapp)
        self.say(f"demo user {self.demo_email}: accounts:signUp (beforeCreate runs)")
        identity.sign_up(self.demo_email, self.demo_password, exist_ok=True)
        write_state(self.workdir, env=emulators, functions={t: f.url for t, f in self.functions.items()},
                    jobs_url=runner.url, monitoring_url=self.monitoring.url)
        return True

    def stop(self) -> None:
        (self.workdir / STATE_FILE).unlink(missing_ok=True)
        self.group.stop()
        if self.jobs is not None:
            self.jobs.stop()
            self.jobs = None
        if self.monitoring is not None:
            self.monitoring.__exit__(None, None, None)
            self.monitoring = None

    def __enter__(self) -> GcpStack:
        try:
            started = self.start()
        except BaseException:
            self.stop()
            raise
        if not started:
            self.stop()
            raise GemcastError(f"the GCP stack's training failed; see the logs in {self.workdir}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def banner(self) -> str:
        """What the stack prints for its user: addresses, the demo user, a line per route family."""
        from gemcast.routes import by_operation
        from gemcast.schema import EXAMPLE_STONE

        identity, webapp = self.identity, self.webapp
        assert identity is not None and webapp is not None, "the stack is not started"
        gcs, firestore = self._servers["gcs"], self._servers["firestore"]
        api = self.functions["api"].url
        stone = json.dumps(EXAMPLE_STONE, separators=(",", ":"))
        sign_in = json.dumps({"email": self.demo_email, "password": self.demo_password, "returnSecureToken": True})
        read_token = "import json,sys; print(json.load(sys.stdin)[\"idToken\"])"
        token_cmd = (f"curl -s -X POST '{identity.url}/identitytoolkit.googleapis.com/v1/"
                     f"accounts:signInWithPassword?key={LOCAL_API_KEY}' -H 'Content-Type: application/json' "
                     f"-d '{sign_in}' | {sys.executable} -c '{read_token}'")
        json_header = "-H 'Content-Type: application/json'"

        def path(operation: str) -> str:
            return api + by_operation(operation).path

        return f"""
gemcast on the GCP stand-ins is up (Ctrl-C stops everything)
  web page       {webapp.url}   sign in as {self.demo_email} / {self.demo_password}
  API            {api}/v1   (one Cloud Function, every route; OpenAPI: {path("getOpenApi")})
  functions      {", ".join(f"{t} {f.url}" for t, f in self.functions.items())}
  Firestore      {firestore.env()["FIRESTORE_EMULATOR_HOST"]}
  Cloud Storage  {gcs.url}
  Identity       Firebase Auth emulator {identity.url} (project {identity.project})
  logs           {self.workdir}

Get an ID token (Identity Toolkit accounts:signInWithPassword, as Identity Platform serves it):
  TOKEN=$({token_cmd})

Price a stone:
  curl -s -X POST {path("createPrediction")} -H "Authorization: Bearer $TOKEN" {json_header} -d '{stone}'

Comparable stones:
  curl -s -H "Authorization: Bearer $TOKEN" '{path("listSimilarDiamonds")}?carat=0.7&cut=Ideal&color=E&clarity=VS1&n=3'

Your own requests, and every model trained:
  curl -s -H "Authorization: Bearer $TOKEN" {path("listMyPredictions")}
  curl -s -H "Authorization: Bearer $TOKEN" {path("listModels")}

Drift of the prediction log, now (on alarm, a retraining job that the gate judges):
  make drift-gcp    # gemcast-local drift --cloud gcp --state {self.workdir.parent}
"""


def _post_json(url: str, body: Any, timeout_s: float = 120) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return dict(json.loads(resp.read()))


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m gemcast_local.gcp_stack",
                                     description="the GCP half on local stand-ins")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "diamonds.csv")
    parser.add_argument("--kind", choices=("gbm", "linear"), default="gbm")
    parser.add_argument("--budget", type=float, default=30.0, help="training search budget in seconds")
    parser.add_argument("--trials", type=int, default=2, help="training search candidates at most")
    args = parser.parse_args(argv)
    return GcpStack(data=args.data, kind=args.kind, train_budget_s=args.budget, trials=args.trials).run()


if __name__ == "__main__":
    sys.exit(main())
