"""The AWS half on one laptop: ``gemcast up`` (``make demo``).

1. moto in server mode on 127.0.0.1 (S3, DynamoDB, SQS, Cognito, CloudWatch);
2. the data bucket, the DynamoDB tables, the SQS queues, the Cognito user pool and its client,
   created from template.yaml's own definitions (gemcast_local.template), never restated here;
3. data/diamonds.csv uploaded to raw/ and ingested by the preprocess function's handler, called
   with the S3 event of events/preprocess_raw_batch.json (curated/, rejected/, inventory table);
4. a model trained and promoted by the image's ``train`` entrypoint, as a subprocess;
5. ``gemcast serve`` as the model endpoint; the proxy's own boto3 ``sagemaker-runtime`` client
   reaches it through ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``;
6. the local API gateway (gemcast_local.gateway) on 127.0.0.1:3000, calling the functions'
   handlers in process, behind the Cognito authorizer;
7. a demo user in the pool.

State of a run lives in ``.gemcast/`` (git-ignored): ``stack.json`` (what gemcast_local.invoke
and ``gemcast token`` read) and ``logs/``. Ctrl-C (or SIGTERM) stops every process started,
and a second run starts cleanly: moto keeps nothing on disk, and a state file whose process
is gone is replaced.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemcast.errors import GemcastError
from gemcast.schema import EXAMPLE_STONE
from gemcast_local.gateway import (
    ACCOUNT_ID,
    CognitoAuthorizer,
    LocalContext,
    LocalGateway,
    Resolver,
    environment,
    function_environment,
    import_function,
    parameter_defaults,
    table_routes,
)
from gemcast_local.servers import HOST, MotoServer, StandInServer, free_port, stop_on_interrupt
from gemcast_local.template import (
    TemplateError,
    cognito_user_pool,
    cognito_user_pool_client,
    dynamodb_tables,
    dynamodb_ttl_attributes,
    load_template,
    resources_of_type,
    sqs_queues,
)
from gemcast_local.webapp_runner import WebAppServer, start_webapp

REPO = Path(__file__).resolve().parents[2]
LOCAL_PREFIX = "gemcast-local"
DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "Gemcast-Demo-2024"  # meets the template's password policy
SAMPLE_STONE = EXAMPLE_STONE


class StackError(GemcastError):
    """The local stack cannot start: another one runs, a port is taken, a step failed."""


def local_name(logical_id: str) -> str:
    return f"{LOCAL_PREFIX}-{logical_id}"


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


def create_resources(
    template: Mapping[str, Any],
    client: Callable[[str], Any],
    region: str,
    parameters: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Create the template's data bucket, tables, queues, user pool and client on moto.

    Returns the values of ``Ref`` and ``Fn::GetAtt`` for the local resources (and the
    parameters and pseudo parameters), ready for a :class:`Resolver` of the functions'
    environments. ``client(service)`` gives a boto3 client pointed at moto.
    """
    values: dict[str, str] = {
        **parameter_defaults(template),
        **(parameters or {}),
        "AWS::AccountId": ACCOUNT_ID,
        "AWS::Region": region,
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
        "AWS::StackName": LOCAL_PREFIX,
    }
    arn = f"arn:aws:{{}}:{region}:{ACCOUNT_ID}:{{}}"
    # The data bucket, named as the template names it (the sample S3 events use that name).
    bucket_props = dict(resources_of_type(template, "AWS::S3::Bucket")).get("DataBucket")
    if bucket_props is None:
        raise TemplateError("template.yaml has no DataBucket")
    bucket = Resolver(values).resolve(
        bucket_props.get("BucketName") or local_name("data").lower(), "DataBucket.BucketName"
    )
    client("s3").create_bucket(Bucket=bucket)
    values.update({"DataBucket": bucket, "DataBucket.Arn": f"arn:aws:s3:::{bucket}"})
    dynamodb = client("dynamodb")
    ttl = dynamodb_ttl_attributes(template)
    tables = dynamodb_tables(template, name=local_name)
    for kwargs in tables:
        dynamodb.create_table(**kwargs)
    for kwargs in tables:
        name = kwargs["TableName"]
        logical_id = name.removeprefix(f"{LOCAL_PREFIX}-")
        dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2})
        if logical_id in ttl:
            dynamodb.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl[logical_id]}
            )
        values.update({logical_id: name, f"{logical_id}.Arn": arn.format("dynamodb", f"table/{name}")})
    sqs = client("sqs")
    for kwargs in sqs_queues(template, name=local_name):
        logical_id = kwargs["QueueName"].removeprefix(f"{LOCAL_PREFIX}-").removesuffix(".fifo")
        url = sqs.create_queue(**kwargs)["QueueUrl"]
        values.update(
            {
                logical_id: url,
                f"{logical_id}.QueueName": kwargs["QueueName"],
                f"{logical_id}.Arn": arn.format("sqs", kwargs["QueueName"]),
            }
        )
    cognito = client("cognito-idp")
    pool_id = cognito.create_user_pool(**cognito_user_pool(template, name=local_name))["UserPool"]["Id"]
    app_client = cognito.create_user_pool_client(
        **cognito_user_pool_client(template, pool_id, name=local_name)
    )["UserPoolClient"]["ClientId"]
    pool_logical = next(lid for lid, _ in resources_of_type(template, "AWS::Cognito::UserPool"))
    client_logical = next(lid for lid, _ in resources_of_type(template, "AWS::Cognito::UserPoolClient"))
    values.update(
        {
            pool_logical: pool_id,
            f"{pool_logical}.Arn": arn.format("cognito-idp", f"userpool/{pool_id}"),
            client_logical: app_client,
            # Fixed names the local stack and gemcast token rely on, whatever the logical ids.
            "UserPool": pool_id,
            "UserPoolClient": app_client,
        }
    )
    return values


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
        self.gateway: LocalGateway | None = None
        self.webapp: WebAppServer | None = None
        self.values: dict[str, str] = {}  # Ref / GetAtt values of the local resources
        self.resolver = Resolver({})
        self.user_pool_id = ""
        self.client_id = ""
        self.demo_sub = ""
        self.timings: dict[str, float] = {}
        self._seen_raw: dict[str, str] = {}
        self._seen_champion = ""

    # -- pieces ------------------------------------------------------------------------------
    @property
    def aws_env(self) -> dict[str, str]:
        assert self.moto is not None
        return self.moto.env()

    def client(self, service: str) -> Any:
        import boto3

        env = self.aws_env
        return boto3.client(
            service,
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name=self.config.region,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    @property
    def bucket(self) -> str:
        return self.values["DataBucket"]

    @property
    def registry_uri(self) -> str:
        return f"s3://{self.bucket}/models"

    def resource_name(self, logical_id: str) -> str:
        return self.values[logical_id]

    def function_env(self, logical_id: str) -> dict[str, str]:
        """What a function's process would see in Lambda: the template's variables, and the
        standard AWS settings pointing at the stand-ins."""
        env = {**self.aws_env, "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_DEV": "false"}
        if self.serving is not None:
            env.update(self.serving.env())
        env.update(function_environment(self.template, logical_id, self.resolver))
        return env

    # -- the run -----------------------------------------------------------------------------
    def start(self) -> LocalStack:
        self._claim_state_dir()
        try:
            self._step("stand-ins", self._start_moto)
            self._step("resources", self._create_resources)
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
        # Fail now, not after a minute of training, when the API port is taken.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((HOST, self.config.api_port))
            except OSError as exc:
                raise StackError(f"port {self.config.api_port} on {HOST} is in use ({exc.strerror}); "
                                 "choose another: gemcast up --api-port N") from exc
        self.logs.mkdir(parents=True, exist_ok=True)
        for old in self.logs.glob("*.log"):
            old.unlink(missing_ok=True)

    def _start_moto(self) -> None:
        self.moto = MotoServer(
            region=self.config.region, port=self.config.moto_port, log_path=self.logs / "moto.log"
        ).start()
        self.say(f"    moto {self.moto.url} (S3, DynamoDB, SQS, Cognito, CloudWatch)")

    def _create_resources(self) -> None:
        self.values = create_resources(self.template, self.client, self.config.region, self.config.parameters)
        self.resolver = Resolver(self.values)
        self.user_pool_id = self.values["UserPool"]
        self.client_id = self.values["UserPoolClient"]
        tables = sum(1 for _ in resources_of_type(self.template, "AWS::DynamoDB::Table"))
        self.say(f"    bucket {self.bucket}; {tables} tables; user pool {self.user_pool_id}")

    def _function_logical_id(self, function: str) -> str:
        for logical_id, props in resources_of_type(self.template, "AWS::Serverless::Function"):
            if Path(str(props.get("CodeUri", "")).rstrip("/")).name == function:
                return logical_id
        raise TemplateError(f"template.yaml has no function with CodeUri functions/{function}/")

    def _ingest(self) -> None:
        key = "raw/diamonds.csv"
        self.client("s3").put_object(
            Bucket=self.bucket, Key=key, Body=self.config.data.read_bytes(), ContentType="text/csv"
        )
        self._preprocess(key, self.config.data.stat().st_size)

    def _preprocess(self, key: str, size: int) -> dict[str, Any]:
        """What S3's notification does in AWS: call the preprocess function with an event
        naming the object (the sample event, retargeted)."""
        event = json.loads((REPO / "events" / "preprocess_raw_batch.json").read_text())
        for record in event["Records"]:
            record["s3"]["bucket"].update(name=self.bucket, arn=f"arn:aws:s3:::{self.bucket}")
            record["s3"]["object"].update(key=key, size=size)
        env = self.function_env(self._function_logical_id("preprocess"))
        module = import_function("preprocess", env)
        with environment(env):  # as in Lambda, the handler runs in its function's environment
            result = module.lambda_handler(
                event,
                LocalContext(
                    function_name="PreprocessFunction",
                    aws_request_id=f"local-ingest-{int(time.time() * 1000)}",
                    deadline=time.monotonic() + 300,
                ),
            )
        batch: dict[str, Any] = result["batches"][0] if result.get("batches") else {"status": "skipped"}
        if batch.get("status") not in {"ingested", "unchanged", "unusable"}:
            raise StackError(f"ingesting {key} failed: {result}")
        self.say(
            f"    {key}: {batch.get('status')}, {batch.get('accepted')} stones accepted, "
            f"{batch.get('rejected')} rejected, {batch.get('loaded')} loaded into the inventory table"
        )
        return batch

    # -- the bucket's notifications ----------------------------------------------------------
    def _objects(self, prefix: str) -> dict[str, tuple[str, int]]:
        pages = self.client("s3").get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return {o["Key"]: (o["ETag"], o["Size"]) for page in pages for o in page.get("Contents", [])}

    def watch_bucket(self) -> None:
        """One pass of the template's two S3 notifications, which moto does not deliver:
        a new or changed ``raw/*.csv`` goes to the preprocess function, and a new
        ``models/champion.json`` redeploys the model endpoint (deploy_model's job in AWS: the
        serving process is restarted on the same port with the new champion)."""
        raw = {k: v for k, v in self._objects("raw/").items() if k.lower().endswith(".csv")}
        for key, (etag, size) in sorted(raw.items()):
            if self._seen_raw.get(key) != etag:
                self._seen_raw[key] = etag
                self._preprocess(key, size)
        champion = self._objects("models/champion.json").get("models/champion.json")
        if champion and champion[0] != self._seen_champion:
            self._seen_champion = champion[0]
            self._redeploy()

    def _redeploy(self) -> None:
        assert self.serving is not None
        port = self.serving.port
        self.serving.stop()
        self.serving = None
        self.config = dataclasses.replace(self.config, serve_port=port)
        self._start_serving()
        self._write_state()

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

    def _start_serving(self) -> None:
        port = self.config.serve_port or free_port()
        self.serving = ModelServer(
            self.registry_uri,
            workers=self.config.serve_workers,
            port=port,
            log_path=self.logs / "serve.log",
            extra_env={**self.aws_env, "OMP_NUM_THREADS": "1"},
        )
        self.serving.start()
        self.say(
            f"    model endpoint {self.serving.url} (/ping, /invocations, /endpoints/<name>/invocations)"
        )

    def _start_gateway(self) -> None:
        assert self.moto is not None
        routes = table_routes(self.template)
        issuer = f"https://cognito-idp.{self.config.region}.amazonaws.com/{self.user_pool_id}"
        authorizer = CognitoAuthorizer(self.moto.jwks_url(self.user_pool_id), issuer, {self.client_id})
        stage = self.resolver.values.get("Stage", "dev")
        self.gateway = LocalGateway(
            routes, self.function_env, authorizer, host=HOST, port=self.config.api_port, stage=stage
        ).start()

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
        assert self.moto is not None and self.gateway is not None and self.serving is not None
        functions: dict[str, dict[str, str]] = {}
        for logical_id, props in resources_of_type(self.template, "AWS::Serverless::Function"):
            # Functions whose environment names something only AWS has (an alarm, a Batch
            # queue) are left to gemcast_local.invoke's own local defaults.
            with contextlib.suppress(TemplateError):
                functions[Path(str(props.get("CodeUri", "")).rstrip("/")).name] = self.function_env(
                    logical_id
                )
        return {
            "pid": os.getpid(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "env": {
                **self.aws_env,
                **self.serving.env(),
                "DATA_BUCKET": self.bucket,
                "REGISTRY_URI": self.registry_uri,
            },
            "resources": {
                k: v
                for k, v in self.values.items()
                if "." not in k and not k.startswith("AWS::") and k not in parameter_defaults(self.template)
            },
            "functions": functions,
            "api_url": self.gateway.url,
            "webapp_url": self.webapp.url if self.webapp is not None else None,
            "serving_url": self.serving.url,
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
        if self.webapp is not None:
            self.webapp.stop()
            self.webapp = None
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
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
            "New data: a CSV put under raw/ is cleaned by the preprocess function within seconds;",
            "then the schedule's trigger trains on it, and a better model replaces the endpoint's:",
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
    exe = Path(sys.executable).parent / "gemcast"
    if exe.is_file():
        return _display_path(exe)
    return f"{_display_path(Path(sys.executable))} -m gemcast.cli"


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
    """``gemcast up``: start everything, print how to use it, run until Ctrl-C or SIGTERM."""
    stop_on_interrupt()
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stack = LocalStack(config)
    stopping = threading.Event()
    try:
        stack.start()
        print(stack.banner(), flush=True)
        while not stopping.wait(1.0):
            stack.watch_bucket()
            for server in (stack.moto, stack.serving, stack.webapp):
                if server is not None and not server.running:
                    raise StackError(f"{server.name} is not running")
                if server is not None and server._proc is not None and server._proc.poll() is not None:
                    raise StackError(
                        f"{server.name} exited unexpectedly; last output:\n{server.last_output()[-2000:]}"
                    )
    except KeyboardInterrupt:
        print("\nstopping ...", file=sys.stderr, flush=True)
    finally:
        stack.stop()
        print("stopped: every process of the local stack has ended.", file=sys.stderr, flush=True)
    return 0


def read_state(state_dir: Path) -> dict[str, Any]:
    path = state_dir / "stack.json"
    try:
        state = dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise StackError(f"no running local stack ({path} missing): start one with `make demo`") from exc
    if not _pid_alive(int(state.get("pid", 0))):
        raise StackError(f"the local stack of {path} is no longer running: start one with `make demo`")
    return state


def token(state_dir: Path, email: str | None = None, password: str | None = None) -> str:
    """``gemcast token``: an ID token of the demo user (or ``email``) from the running stack."""
    import boto3

    state = read_state(state_dir)
    env: Mapping[str, str] = state["env"]
    cognito = boto3.client(
        "cognito-idp",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    demo = state["demo_user"]
    return sign_in(cognito, state["client_id"], email or demo["email"], password or demo["password"])
