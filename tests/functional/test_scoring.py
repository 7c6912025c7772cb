"""``gemcast score``: a whole file priced in order, locally (file, s3 on moto, gs on the GCS
emulator, Parquet), and the two platforms' batch jobs submitted on their stand-ins; the serving
process driven as Batch Transform drives it."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from gemcast.cli import main as cli_main
from gemcast.gcp import job_client, submit_batch_prediction
from gemcast.pipeline import run_training
from gemcast.predict import Predictor
from gemcast.registry import Registry
from gemcast.schema import EXAMPLE_STONE, FEATURES
from gemcast.scoring import score_file, submit_sagemaker
from gemcast_local.stack import ModelServer

REPO = Path(__file__).resolve().parents[2]
GOOD = ",".join(str(EXAMPLE_STONE[f]) for f in FEATURES)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("registry") / "models"
    run_training(str(REPO / "data" / "diamonds.csv"), root.as_uri(), kind="linear", progress=None)
    return root.as_uri()


@pytest.fixture(scope="module")
def predictor(registry: str) -> Predictor:
    loaded = Registry(registry).load_champion()
    return Predictor(loaded.model, loaded.version)


def inventory(n: int) -> str:
    lines = [",".join(FEATURES)]
    for i in range(n):
        lines.append({7: GOOD.replace("Ideal", "Superb"), 8: '"0.7,Ideal', 9: "0.7,Ideal\x00,E"}.get(i % 10, GOOD))
    return "\n".join(lines) + "\n"


def test_every_row_is_answered_in_order_and_rejects_are_counted_by_reason(
    predictor: Predictor, tmp_path: Path
) -> None:
    source = tmp_path / "inventory.csv"
    source.write_text(inventory(45))
    summary = score_file(str(source), str(tmp_path / "out.csv"), predictor, block_rows=7).as_dict()
    assert summary["rows"] == 45 and summary["priced"] == 33 and summary["rejected"] == 12
    assert summary["rejected_by_reason"] == {"cut: unknown category": 4, "row: NUL byte": 4,
                                             "row: unreadable CSV": 4}
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert len(rows) == 45
    assert [bool(r["predicted_price"]) for r in rows] == [i % 10 < 7 for i in range(45)]
    assert "Superb" in rows[7]["error"] and "quote" in rows[8]["error"] and "NUL" in rows[9]["error"]
    price = predictor.price([EXAMPLE_STONE], reasons=False)[0]["price"]
    assert float(rows[0]["predicted_price"]) == price


def test_parquet_in_and_out(predictor: Predictor, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    source = tmp_path / "inventory.csv"
    source.write_text(inventory(20))
    score_file(str(source), str(tmp_path / "out.parquet"), predictor)
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert len(table) == 20 and table[0]["predicted_price"] > 0 and table[7]["error"]
    again = score_file(str(tmp_path / "out.parquet"), str(tmp_path / "again.csv"), predictor).as_dict()
    assert again["rows"] == 20 and again["priced"] == 14  # the damaged lines stay damaged


def test_the_cli_prices_a_file_in_s3_into_s3(registry: str, aws_env: dict[str, str], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="inventory")
    s3.put_object(Bucket="inventory", Key="in/stones.csv", Body=inventory(30).encode())
    code = cli_main(["score", "--input", "s3://inventory/in/stones.csv", "--output", "s3://inventory/out/priced.csv",
                     "--registry", registry, "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 30 and summary["priced"] == 21
    body = s3.get_object(Bucket="inventory", Key="out/priced.csv")["Body"].read().decode()
    assert len(body.splitlines()) == 31


def test_the_cli_prices_a_file_in_gcs_into_gcs(registry: str, gcs_env: dict[str, str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from google.cloud import storage  # type: ignore[attr-defined]

    bucket = storage.Client().create_bucket("inventory")
    bucket.blob("in/stones.csv").upload_from_string(inventory(30))
    code = cli_main(["score", "--input", "gs://inventory/in/stones.csv", "--output", "gs://inventory/out/priced.csv",
                     "--registry", registry, "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 30 and summary["priced"] == 21 and summary["rejected"] == 9
    rows = list(csv.DictReader(io.StringIO(bucket.blob("out/priced.csv").download_as_text())))
    assert len(rows) == 30
    assert [bool(r["predicted_price"]) for r in rows] == [i % 10 < 7 for i in range(30)]


def test_a_missing_gcs_input_is_a_storage_error_naming_it(registry: str, gcs_env: dict[str, str],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from google.cloud import storage  # type: ignore[attr-defined]

    storage.Client().create_bucket("inventory")
    code = cli_main(["score", "--input", "gs://inventory/in/none.csv", "--output", "gs://inventory/out/priced.csv",
                     "--registry", registry])
    assert code != 0
    assert "gs://inventory/in/none.csv" in capsys.readouterr().err


def test_on_sagemaker_submits_a_batch_transform_job_split_by_line(aws_env: dict[str, str]) -> None:
    sm = boto3.client("sagemaker")
    sm.create_model(ModelName="gemcast-dev", ExecutionRoleArn="arn:aws:iam::123456789012:role/sm",
                    PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/gemcast:1"})
    job = submit_sagemaker(sm, "s3://data/inventory/stones.csv", "s3://data/scored/", model_name="gemcast-dev")
    described = sm.describe_transform_job(TransformJobName=job["job_name"])
    assert described["ModelName"] == "gemcast-dev"
    assert described["TransformInput"]["SplitType"] == "Line" and described["BatchStrategy"] == "MultiRecord"
    assert described["TransformInput"]["ContentType"] == "text/csv" and described["MaxPayloadInMB"] == 6
    assert described["TransformOutput"]["S3OutputPath"] == "s3://data/scored/"


class _JobService(BaseHTTPRequestHandler):
    """Vertex AI JobService's REST create, recording what the client asked for."""

    requests: list[tuple[str, dict[str, Any]]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append((self.path, body))
        answer = json.dumps({**body, "name": self.path.split("?")[0].removeprefix("/v1/") + "/42",
                             "state": "JOB_STATE_PENDING"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def job_service() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JobService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_on_vertex_submits_a_batch_prediction_job_on_the_serving_model(job_service: str) -> None:
    _JobService.requests.clear()
    job = submit_batch_prediction(job_client(job_service), project="p", region="us-central1",
                                  model="projects/p/locations/us-central1/models/7", display_name="score-1",
                                  input_uri="gs://data/inventory/stones.csv", output_uri="gs://data/scored/")
    assert job["job_name"].endswith("/batchPredictionJobs/42") and job["state"] == "JOB_STATE_PENDING"
    ((path, body),) = _JobService.requests
    assert path.startswith("/v1/projects/p/locations/us-central1/batchPredictionJobs")
    assert body["model"] == "projects/p/locations/us-central1/models/7"
    assert body["inputConfig"] == {"instancesFormat": "csv", "gcsSource": {"uris": ["gs://data/inventory/stones.csv"]}}
    assert body["outputConfig"]["gcsDestination"]["outputUriPrefix"] == "gs://data/scored"


def test_the_serving_process_answers_a_batch_transform_replay(registry: str, tmp_path: Path) -> None:
    """As Batch Transform drives a container: ask /execution-parameters, split the file by line
    into MultiRecord batches up to MaxPayloadInMB, POST each as text/csv, join the answers to the
    input lines. Every line comes back, in order, with a price or its error."""
    lines = inventory(3000).splitlines()[1:]
    with ModelServer(registry, workers=1) as server:
        params = requests.get(f"{server.url}/execution-parameters", timeout=5).json()
        assert params["BatchStrategy"] == "MULTI_RECORD"
        limit = min(params["MaxPayloadInMB"] * 1024 * 1024, 20_000)  # small batches: several requests
        batches: list[list[str]] = [[]]
        for line in lines:
            if sum(len(x) + 1 for x in batches[-1]) + len(line) + 1 > limit:
                batches.append([])
            batches[-1].append(line)
        joined: list[list[str]] = []
        for batch in batches:
            answer = requests.post(f"{server.url}/invocations", data="\n".join(batch) + "\n", timeout=30,
                                   headers={"Content-Type": "text/csv", "Accept": "text/csv"})
            assert answer.status_code == 200
            out = list(csv.reader(io.StringIO(answer.text)))
            assert len(out) == len(batch)
            joined += [[line, *row] for line, row in zip(batch, out, strict=True)]
    assert len(batches) > 3 and len(joined) == 3000
    assert all(bool(row[1]) == (i % 10 < 7) for i, row in enumerate(joined))
