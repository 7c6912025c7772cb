"""The GCP half on one laptop: emulators, each Cloud Function under functions-framework, the
serving process as the Vertex AI endpoint, and local stand-ins for the two Google services
that have no emulator (Identity Platform's token signing, Vertex AI custom jobs).

    gemcast-local up --cloud gcp    # or: make demo-gcp

Everything the functions reach goes through the settings they read in the cloud:
``FIRESTORE_EMULATOR_HOST``, ``STORAGE_EMULATOR_HOST``, ``VERTEX_API_ENDPOINT`` (the serving
process answers the Vertex REST path; the jobs stand-in answers ``customJobs``) and
``IDENTITY_CERTS_URL`` (the local issuer's x509 certs, in the format Google publishes).
This module is the one place that knows it is local.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from gemcast_local.servers import (
    HOST,
    FirestoreEmulator,
    GcsEmulator,
    ServerGroup,
    StandInServer,
    free_port,
    stop_on_interrupt,
)

REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / "gcp" / "functions" / "main.py"
ENTRY_POINTS = ("ingest_upload", "trigger_training", "predict", "similar", "before_create", "before_sign_in")
PROJECT = "gemcast-local"
REGION = "europe-west1"
BUCKET = "gemcast-local-data"
ENDPOINT_ID = "410000001"
ISSUER_PREFIX = "https://securetoken.google.com/"


# -- Identity Platform's signing, locally -------------------------------------------------------
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


class _CertsHandler(_QuietHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        issuer: LocalIdentity = self.server.owner  # type: ignore[attr-defined]
        if self.path.split("?")[0] in {"/certs", "/"}:
            self._send(200, issuer.certs(), {"Cache-Control": "public, max-age=3600"})
        else:
            self._send(404, {"error": "not found"})


class LocalIdentity(_ThreadServer):
    """Signs RS256 ID tokens as Identity Platform does (iss, aud, sub, kid) with a local key and
    serves its certificate at ``certs_url`` as ``{kid: x509 PEM}``, the format of Google's
    securetoken certs URL, so the functions verify them with the same code as in the cloud."""

    def __init__(self, project: str = PROJECT) -> None:
        super().__init__(_CertsHandler)
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.project = project
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gemcast-local-securetoken")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
        self.kid = uuid.uuid4().hex
        self._private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())
        self._cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def certs_url(self) -> str:
        return f"{self.url}/certs"

    def certs(self) -> dict[str, str]:
        return {self.kid: self._cert_pem}

    def sign(self, payload: Mapping[str, Any]) -> str:
        from google.auth import crypt, jwt

        signer = crypt.RSASigner.from_string(self._private_pem, key_id=self.kid)
        return jwt.encode(signer, dict(payload)).decode()

    def id_token(self, sub: str, *, email: str = "", tier: str | None = None, ttl_s: int = 3600,
                 audience: str | None = None, now: float | None = None) -> str:
        """An Identity Platform ID token for user ``sub`` (aud and iss name the project)."""
        moment = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": ISSUER_PREFIX + self.project, "aud": audience or self.project, "sub": sub, "user_id": sub,
            "iat": moment, "auth_time": moment, "exp": moment + ttl_s,
            "firebase": {"sign_in_provider": "password", "identities": {"email": [email]} if email else {}},
        }
        if email:
            claims.update(email=email, email_verified=True)
        if tier:
            claims["tier"] = tier
        return self.sign(claims)

    def blocking_token(self, event_type: str, user_record: Mapping[str, Any], *,
                       audience: str = "https://gemcast-local-blocking-abc123-ew.a.run.app",
                       ttl_s: int = 300) -> str:
        """The JWT Identity Platform posts to a blocking function as ``{"data": {"jwt": ...}}``."""
        moment = int(time.time())
        return self.sign({
            "iss": ISSUER_PREFIX + self.project, "aud": audience, "sub": user_record["uid"],
            "iat": moment, "exp": moment + ttl_s, "event_id": uuid.uuid4().hex, "event_type": event_type,
            "ip_address": "127.0.0.1", "user_agent": "gemcast-local", "user_record": dict(user_record),
        })


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


def function_env(*, emulators: Mapping[str, str], certs_url: str, vertex_api_endpoint: str,
                 bucket: str = BUCKET, project: str = PROJECT, **overrides: str) -> dict[str, str]:
    """The environment of every function: what gcp/env/<stage>.yaml gives in the cloud."""
    env = {
        **emulators,
        "GEMCAST_STAGE": "local",
        "GOOGLE_CLOUD_PROJECT": project,
        "GCP_REGION": REGION,
        "DATA_BUCKET": bucket,
        "REGISTRY_URI": f"gs://{bucket}/models",
        "FIRESTORE_PREDICTIONS_COLLECTION": "predictions",
        "FIRESTORE_INVENTORY_COLLECTION": "inventory",
        "FIRESTORE_SNAPSHOTS_COLLECTION": "snapshots",
        "VERTEX_ENDPOINT_ID": ENDPOINT_ID,
        "VERTEX_API_ENDPOINT": vertex_api_endpoint,
        "ENDPOINT_TIMEOUT_S": "5",
        "TRAINING_IMAGE_URI": "gemcast-training:local",
        "TRAINING_SERVICE_ACCOUNT": f"gemcast-training@{project}.iam.gserviceaccount.com",
        "IDENTITY_AUDIENCE": project,
        "IDENTITY_CERTS_URL": certs_url,
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


# -- the whole stack -----------------------------------------------------------------------------
@dataclass
class GcpStack:
    """``gemcast-local up --cloud gcp``: start everything, run the data flow, print a curl line, wait."""

    data: Path = REPO / "data" / "diamonds.csv"
    workdir: Path = REPO / ".gemcast" / "gcp"
    kind: str = "gbm"
    train_budget_s: float = 30.0
    trials: int = 2
    group: ServerGroup = field(default_factory=ServerGroup)
    functions: dict[str, FunctionServer] = field(default_factory=dict)

    def say(self, text: str) -> None:
        print(f"[gemcast gcp] {text}", flush=True)

    def run(self) -> int:
        stop_on_interrupt()
        self.workdir.mkdir(parents=True, exist_ok=True)
        identity = LocalIdentity()
        jobs: LocalVertexJobs | None = None
        try:
            identity.start()
            self.say("starting the Firestore and Cloud Storage emulators")
            gcs, firestore = self.group.start(GcsEmulator(project=PROJECT),
                                              FirestoreEmulator(project=PROJECT))
            emulators = self.group.env()
            os.environ.update(emulators)
            from google.cloud import storage  # type: ignore[attr-defined]

            bucket = storage.Client(project=PROJECT).create_bucket(BUCKET)
            # The job runs the CustomJob's args; a laptop adds a smaller search than the cloud's.
            laptop = ["--kind", self.kind, "--budget", str(self.train_budget_s), "--trials", str(self.trials)]
            runner = LocalVertexJobs(env=emulators, extra_args=laptop, log_dir=self.workdir)
            jobs = runner
            runner.start()
            serve_port = free_port()
            self.say("starting the six Cloud Functions under functions-framework")
            for target in ENTRY_POINTS:
                # trigger_training's Vertex AI is the jobs stand-in; predict's is the serving process.
                vertex = runner.url if target == "trigger_training" else f"http://{HOST}:{serve_port}"
                env = function_env(emulators=emulators, certs_url=identity.certs_url,
                                   vertex_api_endpoint=vertex)
                self.functions[target] = FunctionServer(target, env=env,
                                                        log_path=self.workdir / f"{target}.log")
            self.group.start(*self.functions.values())

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
                    return 1
            else:
                self.say(f"no training needed: {answer.get('reason')}")
            self.say("starting the serving process (the Vertex AI endpoint)")
            self.group.start(ServingProcess(f"gs://{BUCKET}/models", port=serve_port,
                                            log_path=self.workdir / "serve.log"))
            token = identity.id_token("demo-user-1", email="demo@example.com", ttl_s=12 * 3600)
            self._print_summary(token, gcs, firestore, identity)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            self.say("stopping")
            return 0
        finally:
            self.group.stop()
            if jobs is not None:
                jobs.stop()
            identity.stop()

    def _print_summary(self, token: str, gcs: StandInServer, firestore: StandInServer,
                       identity: LocalIdentity) -> None:
        stone = '{"carat":0.7,"cut":"Ideal","color":"E","clarity":"VS1","depth":61.5,"table":55,' \
                '"x":5.7,"y":5.72,"z":3.52}'
        predict, similar = self.functions["predict"].url, self.functions["similar"].url
        print(f"""
gemcast on the GCP stand-ins is up (Ctrl-C stops everything)
  predict        {predict}
  similar        {similar}
  functions      {", ".join(f"{t} {f.url}" for t, f in self.functions.items())}
  Firestore      {firestore.env()["FIRESTORE_EMULATOR_HOST"]}
  Cloud Storage  {gcs.url}
  certs          {identity.certs_url}
  logs           {self.workdir}
  ID token       user demo-user-1 (demo@example.com), valid 12 hours

curl -s -X POST {predict} -H "Authorization: Bearer {token}" -H "Content-Type: application/json" -d '{stone}'

curl -s "{similar}?carat=0.7&cut=Ideal&color=E&clarity=VS1&n=3" -H "Authorization: Bearer {token}"
""", flush=True)


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
