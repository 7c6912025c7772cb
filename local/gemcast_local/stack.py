"""The AWS half on one laptop: ``gemcast-local up`` (``make demo``).

1. moto in server mode on 127.0.0.1 (S3, DynamoDB, SQS, Cognito, CloudWatch);
2. the data bucket, the DynamoDB tables, the SQS queues, the Cognito user pool and its client,
   created from template.yaml's own definitions (gemcast_local.template), never restated here;
3. data/diamonds.csv uploaded to raw/ and ingested by the preprocess function's handler, called
   with the S3 event of events/preprocess_raw_batch.json (curated/, rejected/, inventory table),
   in a process of its own (``python -m gemcast_local.invoke``), so serving never waits for it;
4. a model trained and promoted by the image's ``train`` entrypoint, as a subprocess;
5. ``gemcast serve`` as the model endpoint; the proxy's own boto3 ``sagemaker-runtime`` client
   reaches it through ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``;
6. the local API gateway (gemcast_local.gateway) on 127.0.0.1:3000, calling the functions'
   handlers in process (gemcast_local.runtime), behind the Cognito authorizer;
7. a demo user in the pool.

While it runs, :meth:`LocalStack.tick` plays the bucket's notifications and keeps it whole: a
new champion is started and checked beside the serving one before it replaces it; a model
server that died is restarted; a paused moto is waited out. What each part last did is in
``LocalStack.status`` and the state file.

State of a run lives in ``.gemcast/`` (git-ignored): ``stack.json`` (what gemcast_local.invoke
and ``gemcast-local token`` read) and ``logs/``. Ctrl-C (or SIGTERM) stops every process started,
and a second run starts cleanly: moto keeps nothing on disk, and a state file whose process
is gone is replaced.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemcast.errors import GemcastError
from gemcast.schema import EXAMPLE_STONE
from gemcast_local.gateway import CognitoAuthorizer, LocalGateway, table_routes
from gemcast_local.provision import boto3_factory, parameter_defaults, provision
from gemcast_local.runtime import LocalFunction
from gemcast_local.sagemaker_runtime import LocalRuntime
from gemcast_local.servers import HOST, MotoServer, ServerStartError, StandInServer, free_port, stop_on_interrupt
from gemcast_local.template import load_template, resources_of_type
from gemcast_local.webapp_runner import WebAppServer, start_webapp

REPO = Path(__file__).resolve().parents[2]
DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "Gemcast-Demo-2024"  # meets the template's password policy
SAMPLE_STONE = EXAMPLE_STONE


class StackError(GemcastError):
    """The local stack cannot start: another one runs, a port is taken, a step failed."""


@dataclass
class StackConfig:
    state_dir: Path = field(default_factory=lambda: Path(".gemcast"))
    api_port: int = 3000
    web_port: int | None = 8050  # None: a free port
    serve_port: int | None = None  # None: a free port
    moto_port: int | None = None
    region: str = "us-east-1"
    data: Path = REPO / "data" / "diamonds.csv"
    template: Path = REPO / "template.yaml"
    kind: str = "gbm"
    budget_s: float = 30.0
    trials: int = 1
    serve_workers: int = 2
    demo_email: str = DEMO_EMAIL
    demo_password: str = DEMO_PASSWORD
    parameters: dict[str, str] = field(default_factory=dict)  # template parameter overrides


class ModelServer(StandInServer):
    """``gemcast serve`` on the registry in the data bucket, as the SageMaker endpoint."""

    name = "serve"
    probe_path = "/ping"
    default_timeout_s = 60.0

    def __init__(self, registry_uri: str, *, workers: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.registry_uri = registry_uri
        self.workers = workers

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gemcast.cli",
            "serve",
            "--registry",
            self.registry_uri,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.url}

    def stop(self, timeout_s: float = 10.0, *, keep_log: bool = False) -> None:
        # SIGTERM is gunicorn's graceful stop, which waits out the proxy's keep-alive
        # connections; SIGQUIT is its quick stop, what a Ctrl-C should mean here.
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGQUIT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        super().stop(timeout_s, keep_log=keep_log)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalStack:
    """Start with :meth:`start`, stop with :meth:`stop` (or use ``with``)."""

    def __init__(
        self, config: StackConfig | None = None, *, say: Callable[[str], None] | None = None
    ) -> None:
        self.config = config or StackConfig()
        self.say = say or (lambda msg: print(msg, flush=True))
        self.template = load_template(self.config.template)
        self.state_dir = self.config.state_dir.resolve()
        self.logs = self.state_dir / "logs"
        self.moto: MotoServer | None = None
        self.serving: ModelServer | None = None
        # SageMaker runtime in front of the model server: failing answers reach boto3 as ModelError.
        self.runtime: LocalRuntime | None = None
        self.gateway: LocalGateway | None = None
        self.webapp: WebAppServer | None = None
        self.values: dict[str, str] = {}  # Ref / GetAtt values of the local resources
        self.user_pool_id = ""
        self.client_id = ""
        self.demo_sub = ""
        self.timings: dict[str, float] = {}
        self.status: dict[str, str] = {}  # what the player last did, per part (read by the banner/tests)
        self._functions: dict[str, LocalFunction] = {}
        self._functions_lock = threading.Lock()
        self._seen_raw: dict[str, str] = {}
        self._seen_champion = ""
        # The S3-notification player's ingest runs here, in its own process per batch: serving
        # never waits for it (one batch at a time, as uploaded).
        self._ingest_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gemcast-ingest")
        self._ingest_jobs: list[Future[dict[str, Any]]] = []
        self._next_serving_attempt = 0.0

    # -- pieces ------------------------------------------------------------------------------
    @property
    def aws_env(self) -> dict[str, str]:
        assert self.moto is not None
        return self.moto.env()

    def client(self, service: str) -> Any:
        return boto3_factory(self.aws_env)(service)

    @property
    def bucket(self) -> str:
        return self.values["DataBucket"]

    @property
    def registry_uri(self) -> str:
        return f"s3://{self.bucket}/models"

    def base_env(self) -> dict[str, str]:
        """What every function's process sees besides its template variables: the stand-ins."""
        env = dict(self.aws_env)
        if self.runtime is not None:
            env.update(self.runtime.env())
        elif self.serving is not None:
            env.update(self.serving.env())
        return env

    def function(self, logical_id: str) -> LocalFunction:
        """The function's container, started (imported) on first use, as Lambda does."""
        with self._functions_lock:
            if logical_id not in self._functions:
                self._functions[logical_id] = LocalFunction.from_template(
                    self.template, logical_id, self.values, self.base_env())
            return self._functions[logical_id]

    def _retire_functions(self) -> None:
        """A configuration change (a new endpoint URL): the next call starts a new container, as
        Lambda does after UpdateFunctionConfiguration; calls in flight finish on the old one."""
        with self._functions_lock:
            old, self._functions = self._functions, {}
        for function in old.values():
            with function._lock:
                pass

    # -- the run -----------------------------------------------------------------------------
    def start(self) -> LocalStack:
        self._claim_state_dir()
        try:
            self._step("stand-ins", self._start_moto)
            self._step("resources", self._create_resources)
            self._write_state()  # the preprocess process finds the stack by it
            self._step("ingest", self._ingest)
            self._step("train", self._train)
            self._step("serve", self._start_serving)
            self._step("gateway", self._start_gateway)
            self._step("demo user", self._create_demo_user)
            self._step("web app", self._start_webapp)
            self._remember_bucket()
            self._write_state()
        except BaseException:
            self.stop()
            raise
        return self

    def _step(self, name: str, action: Callable[[], None]) -> None:
        started = time.perf_counter()
        self.say(f"[{name}] ...")
        action()
        self.timings[name] = round(time.perf_counter() - started, 2)
        self.say(f"[{name}] done in {self.timings[name]:.1f}s")

    def _claim_state_dir(self) -> None:
        state_file = self.state_dir / "stack.json"
        if state_file.is_file():
            with contextlib.suppress(OSError, ValueError):
                pid = int(json.loads(state_file.read_text()).get("pid", 0))
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise StackError(
                        f"a local stack is already running (pid {pid}, {state_file}); "
                        "stop it with Ctrl-C first"
                    )
            state_file.unlink(missing_ok=True)  # left by a run that is gone
        # Fail now, not after a minute of training, when the API port is taken. SO_REUSEADDR,
        # as the gateway's own server sets it: sockets of a stopped run in TIME_WAIT are no owner.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((HOST, self.config.api_port))
            except OSError as exc:
                raise StackError(f"port {self.config.api_port} on {HOST} is in use ({exc.strerror}); "
                                 "choose another: gemcast-local up --api-port N") from exc
        self.logs.mkdir(parents=True, exist_ok=True)
        for old in self.logs.glob("*.log"):
            old.unlink(missing_ok=True)

    def _start_moto(self) -> None:
        self.moto = MotoServer(
            region=self.config.region, port=self.config.moto_port, log_path=self.logs / "moto.log"
        ).start()
        self.say(f"    moto {self.moto.url} (S3, DynamoDB, SQS, Cognito, CloudWatch)")

    def _create_resources(self) -> None:
        self.values = provision(self.template, self.client, self.config.region, self.config.parameters)
        self.user_pool_id = self.values["UserPool"]
        self.client_id = self.values["UserPoolClient"]
        tables = sum(1 for _ in resources_of_type(self.template, "AWS::DynamoDB::Table"))
        self.say(f"    bucket {self.bucket}; {tables} tables; user pool {self.user_pool_id}")

    def _ingest(self) -> None:
        key = "raw/diamonds.csv"
        self.client("s3").put_object(
            Bucket=self.bucket, Key=key, Body=self.config.data.read_bytes(), ContentType="text/csv"
        )
        self._preprocess(key, self.config.data.stat().st_size)

    def _preprocess(self, key: str, size: int) -> dict[str, Any]:
        """What S3's notification does in AWS: call the preprocess function with an event
        naming the object (the sample event, retargeted). It runs as ``make invoke`` does, in a
        process of its own against this stack: the API keeps serving while it cleans and loads."""
        event = json.loads((REPO / "events" / "preprocess_raw_batch.json").read_text())
        for record in event["Records"]:
            record["s3"]["bucket"].update(name=self.bucket, arn=f"arn:aws:s3:::{self.bucket}")
            record["s3"]["object"].update(key=key, size=size)
        event_file = self.state_dir / f"event-{uuid.uuid4().hex}.json"
        event_file.write_text(json.dumps(event))
        try:
            with open(self.logs / "preprocess.log", "ab") as log:
                done = subprocess.run(
                    [sys.executable, "-m", "gemcast_local.invoke", "preprocess", "--event", str(event_file),
                     "--state", str(self.state_dir), "--require-stack"],
                    stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, check=False,
                    env={**os.environ, "OMP_NUM_THREADS": "1"})
        finally:
            event_file.unlink(missing_ok=True)
        try:
            result = json.loads(done.stdout) if done.returncode == 0 else {}
        except ValueError:
            result = {}
        batch: dict[str, Any] = result["batches"][0] if result.get("batches") else {"status": "failed"}
        if batch.get("status") not in {"ingested", "unchanged", "unusable"}:
            raise StackError(f"ingesting {key} failed (exit {done.returncode}); see {self.logs / 'preprocess.log'}")
        self.say(
            f"    {key}: {batch.get('status')}, {batch.get('accepted')} stones accepted, "
            f"{batch.get('rejected')} rejected, {batch.get('loaded')} loaded into the inventory table"
        )
        return batch

    # -- the bucket's notifications ----------------------------------------------------------
    def _objects(self, prefix: str) -> dict[str, tuple[str, int]]:
        pages = self.client("s3").get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return {o["Key"]: (o["ETag"], o["Size"]) for page in pages for o in page.get("Contents", [])}

    def watch_bucket(self, *, wait: bool = False) -> None:
        """One pass of the template's two S3 notifications, which moto does not deliver:
        a new or changed ``raw/*.csv`` goes to the preprocess function (in the background:
        ``wait`` waits for it), and a new ``models/champion.json`` redeploys the model endpoint
        (deploy_model's job in AWS)."""
        raw = {k: v for k, v in self._objects("raw/").items() if k.lower().endswith(".csv")}
        for key, (etag, size) in sorted(raw.items()):
            if self._seen_raw.get(key) != etag:
                self._seen_raw[key] = etag
                self._ingest_jobs.append(self._ingest_pool.submit(self._play_preprocess, key, size))
        champion = self._objects("models/champion.json").get("models/champion.json")
        if champion and champion[0] != self._seen_champion:
            self._seen_champion = champion[0]
            self._redeploy()
        if wait:
            for job in self._ingest_jobs:
                job.result()
        self._ingest_jobs = [job for job in self._ingest_jobs if not job.done()]

    def _play_preprocess(self, key: str, size: int) -> dict[str, Any]:
        try:
            batch = self._preprocess(key, size)
        except StackError as exc:
            self.status["ingest"] = f"{key}: {exc}"
            self.say(f"    ingest of {key} failed: {exc}")
            return {"status": "failed"}
        self.status["ingest"] = f"{key}: {batch.get('status')}"
        return batch

    def _redeploy(self) -> bool:
        """The new champion is started and checked beside the one in service; only once it
        answers does it replace it. A champion that does not load never replaces a serving one."""
        old = self.serving
        try:
            new = self._new_model_server(free_port())
        except ServerStartError as exc:
            self.status["serve"] = f"redeploy refused, still serving the previous model: {_first_line(exc)}"
            self.say(f"    {self.status['serve']}")
            return False
        self.serving = new
        if self.runtime is not None:
            self.runtime.point_at(new.url)
        self._retire_functions()
        if old is not None:
            old.stop()
        self.status["serve"] = f"serving at {new.url}"
        self.say(f"    model endpoint {new.url} now serves the new champion")
        self._write_state()
        return True

    def check_serving(self) -> None:
        """A model server that died is restarted by itself (clients get 503 meanwhile); while
        the champion cannot be loaded, it is tried again with a growing pause."""
        if self.serving is not None and self.serving.running and self.serving.alive:
            return
        if time.monotonic() < self._next_serving_attempt:
            return
        if self.serving is not None:
            self.serving.stop()
            self.say(f"    the model server exited; restarting it. Last output:\n{self.serving.last_output()[-800:]}")
        if not self._redeploy():
            self._next_serving_attempt = time.monotonic() + 5.0

    def tick(self) -> None:
        """One pass of the running stack's loop: play the bucket's notifications, restart what
        died. A stand-in that does not answer (moto paused) is waited out, never fatal."""
        from botocore.exceptions import BotoCoreError, ClientError

        assert self.moto is not None
        if not self.moto.alive:
            raise StackError(f"moto exited; last output:\n{self.moto.last_output()[-2000:]}")
        try:
            self.watch_bucket()
            self.status.pop("stand-ins", None)
        except (BotoCoreError, ClientError) as exc:
            self.status["stand-ins"] = f"moto is not answering ({type(exc).__name__}); waiting for it"
        self.check_serving()
        if self.webapp is not None and not self.webapp.alive:
            self.say(f"    the web app exited; restarting it. Last output:\n{self.webapp.last_output()[-800:]}")
            self.webapp.stop()
            self._start_webapp()

    def _remember_bucket(self) -> None:
        self._seen_raw = {k: etag for k, (etag, _size) in self._objects("raw/").items()}
        champion = self._objects("models/champion.json").get("models/champion.json")
        self._seen_champion = champion[0] if champion else ""

    def _train(self) -> None:
        cfg = self.config
        argv = [
            sys.executable,
            "-m",
            "gemcast.container",
            "train",
            "--data",
            f"s3://{self.bucket}/curated/",
            "--registry",
            self.registry_uri,
            "--kind",
            cfg.kind,
            "--budget",
            str(cfg.budget_s),
            "--trials",
            str(cfg.trials),
        ]
        env = {**os.environ, **self.aws_env, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        log_path = self.logs / "train.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
            )
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    log.write(line)
                    text = line.decode(errors="replace").rstrip()
                    if text.startswith("[") or text.startswith("    "):
                        self.say(f"    train {text.strip()}")
                code = proc.wait()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        if code != 0:
            raise StackError(f"training failed (exit {code}); see {log_path}")

    def _new_model_server(self, port: int) -> ModelServer:
        server = ModelServer(
            self.registry_uri,
            workers=self.config.serve_workers,
            port=port,
            log_path=self.logs / "serve.log",
            extra_env={**self.aws_env, "OMP_NUM_THREADS": "1"},
        )
        return server.start()

    def _start_serving(self) -> None:
        self.serving = self._new_model_server(self.config.serve_port or free_port())
        self.status["serve"] = f"serving at {self.serving.url}"
        endpoint = f"gemcast-{self.values.get('Stage', 'dev')}"  # the template's ENDPOINT_NAME
        self.runtime = LocalRuntime(self.serving.url, endpoints={endpoint}, host=HOST).start()
        self.say(
            f"    model endpoint {self.serving.url} (/ping, /invocations); SageMaker runtime {self.runtime.url}"
            f" (/endpoints/{endpoint}/invocations, failing answers as ModelError)"
        )

    def _start_gateway(self) -> None:
        assert self.moto is not None
        routes = table_routes(self.template)
        issuer = f"https://cognito-idp.{self.config.region}.amazonaws.com/{self.user_pool_id}"
        authorizer = CognitoAuthorizer(self.moto.jwks_url(self.user_pool_id), issuer, {self.client_id})
        stage = self.values.get("Stage", "dev")
        self.gateway = LocalGateway(routes, self.function, authorizer, template=self.template, host=HOST,
                                    port=self.config.api_port, stage=stage).start()

    def _create_demo_user(self) -> None:
        cognito = self.client("cognito-idp")
        cfg = self.config
        cognito.admin_create_user(
            UserPoolId=self.user_pool_id,
            Username=cfg.demo_email,
            MessageAction="SUPPRESS",
            UserAttributes=[
                {"Name": "email", "Value": cfg.demo_email},
                {"Name": "email_verified", "Value": "true"},
            ],
        )
        cognito.admin_set_user_password(
            UserPoolId=self.user_pool_id, Username=cfg.demo_email, Password=cfg.demo_password, Permanent=True
        )
        user = cognito.admin_get_user(UserPoolId=self.user_pool_id, Username=cfg.demo_email)
        self.demo_sub = next(a["Value"] for a in user["UserAttributes"] if a["Name"] == "sub")

    def _start_webapp(self) -> None:
        assert self.gateway is not None
        self.webapp = start_webapp(
            self.gateway.url, self.user_pool_id, self.client_id, self.aws_env,
            port=self.config.web_port, log_path=str(self.logs / "webapp.log"),
        )

    def id_token(self, email: str | None = None, password: str | None = None) -> str:
        return sign_in(
            self.client("cognito-idp"),
            self.client_id,
            email or self.config.demo_email,
            password or self.config.demo_password,
        )

    # -- state -------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What ``make invoke``, ``gemcast-local token`` and the preprocess process read."""
        assert self.moto is not None
        return {
            "pid": os.getpid(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "env": self.base_env(),  # the stand-ins, as every function sees them
            "values": self.values,  # Ref / GetAtt of the local resources (runtime.function_environment)
            "resources": {
                k: v
                for k, v in self.values.items()
                if "." not in k and not k.startswith("AWS::") and k not in parameter_defaults(self.template)
            },
            "status": self.status,
            "api_url": self.gateway.url if self.gateway is not None else None,
            "webapp_url": self.webapp.url if self.webapp is not None else None,
            "serving_url": self.serving.url if self.serving is not None else None,
            "sagemaker_runtime_url": self.runtime.url if self.runtime is not None else None,
            "moto_url": self.moto.url,
            "user_pool_id": self.user_pool_id,
            "client_id": self.client_id,
            "jwks_url": self.moto.jwks_url(self.user_pool_id),
            "demo_user": {
                "email": self.config.demo_email,
                "password": self.config.demo_password,
                "sub": self.demo_sub,
            },
            "logs": str(self.logs),
        }

    def _write_state(self) -> None:
        path = self.state_dir / "stack.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state(), indent=2) + "\n")
        os.replace(tmp, path)

    # -- stopping ----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every process this stack started, last started first. Safe to call twice."""
        self._ingest_pool.shutdown(wait=True, cancel_futures=True)
        if self.webapp is not None:
            self.webapp.stop()
            self.webapp = None
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
        if self.runtime is not None:
            self.runtime.stop()
            self.runtime = None
        for attr in ("serving", "moto"):
            server = getattr(self, attr)
            if server is not None:
                server.stop()
                setattr(self, attr, None)
        state_file = self.state_dir / "stack.json"
        with contextlib.suppress(OSError, ValueError):
            if int(json.loads(state_file.read_text()).get("pid", 0)) == os.getpid():
                state_file.unlink()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the user reads -----------------------------------------------------------------
    def banner(self) -> str:
        assert self.gateway is not None and self.serving is not None and self.moto is not None
        api = self.gateway.url
        gemcast = _gemcast_command()
        state = _display_path(self.state_dir)
        token_cmd = f"{gemcast} token" + ("" if state == ".gemcast" else f" --state {shlex.quote(state)}")
        stone = json.dumps(SAMPLE_STONE, separators=(",", ":"))
        lines = [
            "",
            "gemcast is up (AWS stand-ins on this machine). Ctrl-C stops everything.",
            "",
            f"  web page         {self.webapp.url if self.webapp else '(not started)'}   "
            f"sign in as {self.config.demo_email} / {self.config.demo_password}",
            f"  API              {api}/v1   (OpenAPI: {api}/v1/openapi.json)",
            f"  model endpoint   {self.serving.url}/ping",
            f"  moto (AWS APIs)  {self.moto.url}   user pool {self.user_pool_id}, client {self.client_id}",
            f"  demo user        {self.config.demo_email} / {self.config.demo_password}",
            f"  state and logs   {state}/",
            "",
            "Get a token (Cognito USER_PASSWORD_AUTH against the local pool):",
            f"  TOKEN=$({token_cmd})",
            "",
            "Price a stone:",
            f'  curl -s -X POST {api}/v1/predictions -H "Authorization: $TOKEN" '
            f"-H 'Content-Type: application/json' -d '{stone}'",
            "",
            "Comparable stones:",
            f'  curl -s -H "Authorization: $TOKEN" '
            f"'{api}/v1/diamonds/similar?carat=0.7&cut=Ideal&color=E&clarity=VS1&n=5'",
            "",
            "Your own requests, from the prediction log:",
            f'  curl -s -H "Authorization: $TOKEN" {api}/v1/predictions/mine',
            "",
            "New data: a CSV put under raw/ is cleaned and loaded by the preprocess function in the",
            "background while the API keeps answering (diamonds_large.csv, 48,940 rows: about 25 s on",
            "2 cores; `python -m bench.run ingest` measures it); then the schedule's trigger",
            "trains on it, and a better model replaces the endpoint's once it is checked to serve:",
            f"  AWS_ENDPOINT_URL={self.moto.url} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "
            f"AWS_DEFAULT_REGION={self.config.region} {_python_command()} -c "
            f"\"import boto3; boto3.client('s3').upload_file('data/diamonds_large.csv', '{self.bucket}', "
            f"'raw/large.csv')\"",
            f"  {gemcast} trigger" + ("" if state == ".gemcast" else f" --state {shlex.quote(state)}"),
            "",
        ]
        return "\n".join(lines)


def sign_in(cognito: Any, client_id: str, email: str, password: str) -> str:
    """The ID token of a user (USER_PASSWORD_AUTH), which the API's authorizer takes."""
    answer = cognito.initiate_auth(
        ClientId=client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": email, "PASSWORD": password},
    )
    return str(answer["AuthenticationResult"]["IdToken"])


def _gemcast_command() -> str:
    exe = Path(sys.executable).parent / "gemcast-local"
    if exe.is_file():
        return _display_path(exe)
    return f"{_display_path(Path(sys.executable))} -m gemcast_local.cli"


def _python_command() -> str:
    """This interpreter as the user typed it (the venv's python, not the file it links to)."""
    here = Path(os.path.abspath(sys.executable))
    try:
        return str(here.relative_to(Path.cwd()))
    except ValueError:
        return str(here)


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path.resolve())


# ----------------------------------------------------------------------------- commands


def up(config: StackConfig) -> int:
    """``gemcast-local up``: start everything, print how to use it, run until Ctrl-C or SIGTERM."""
    stop_on_interrupt()
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stack = LocalStack(config)
    stopping = threading.Event()
    try:
        stack.start()
        # The API's access log (one line a request, in the template's format) goes to its own
        # file, as API Gateway's goes to its log group, not between the banner's lines.
        access = logging.getLogger("gemcast.gateway.access")
        access.addHandler(logging.FileHandler(stack.logs / "api-access.log"))
        access.propagate = False
        print(stack.banner(), flush=True)
        while not stopping.wait(1.0):
            stack.tick()
    except KeyboardInterrupt:
        print("\nstopping ...", file=sys.stderr, flush=True)
    finally:
        stack.stop()
        print("stopped: every process of the local stack has ended.", file=sys.stderr, flush=True)
    return 0


def read_state(state_dir: Path) -> dict[str, Any]:
    """The running local stack's state file (see :meth:`LocalStack.state`); a StackError when
    there is none or its process is gone."""
    path = state_dir / "stack.json"
    try:
        state = dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise StackError(f"no running local stack ({path} missing): start one with `make demo`") from exc
    if not _pid_alive(int(state.get("pid", 0))):
        raise StackError(f"the local stack of {path} is no longer running: start one with `make demo`")
    return state


def token(state_dir: Path, email: str | None = None, password: str | None = None) -> str:
    """``gemcast-local token``: an ID token of the demo user (or ``email``) from the running stack."""
    state = read_state(state_dir)
    cognito = boto3_factory(state["env"])("cognito-idp")
    demo = state["demo_user"]
    return sign_in(cognito, state["client_id"], email or demo["email"], password or demo["password"])


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
