"""schedule_trigger: the daily schedule against S3, DynamoDB (idempotency) and AWS Batch on moto.

moto's Batch runs jobs in Docker unless its ``use_docker`` setting is off; with it off (set
through moto's /moto-api/config) a submitted job is recorded, listed and marked succeeded
without running anything, which is what these tests need: how many jobs were submitted.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest

from gemcast.errors import GemcastError
from gemcast.ingest import ingest_object
from gemcast.storage import S3Storage
from gemcast_local.cli import main as local_main
from gemcast_local.invoke import load_event
from gemcast_local.runtime import import_handler
from gemcast_local.servers import MotoServer
from gemcast_local.trigger import run_trigger

REPO = Path(__file__).resolve().parents[2]
BUCKET = "gemcast-test-data"
ROW = "0.7,Ideal,E,VS1,61.8,56,2757,5.7,5.73,3.53\n"
HEADER = "carat,cut,color,clarity,depth,table,price,x,y,z\n"


def moto_config(server: MotoServer, config: dict[str, Any]) -> None:
    request = urllib.request.Request(f"{server.url}/moto-api/config", data=json.dumps(config).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def batch_queue(server: MotoServer) -> tuple[str, str]:
    """A Fargate compute environment, job queue and job definition like the template's."""
    moto_config(server, {"batch": {"use_docker": False}})
    iam, ec2, batch = boto3.client("iam"), boto3.client("ec2"), boto3.client("batch")
    role = iam.create_role(RoleName="gemcast-test-batch", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "batch.amazonaws.com"},
                       "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="gemcast-test-training", Description="training",
                                      VpcId=vpc)["GroupId"]
    env = batch.create_compute_environment(
        computeEnvironmentName="gemcast-test-training", type="MANAGED", state="ENABLED", serviceRole=role,
        computeResources={"type": "FARGATE", "maxvCpus": 4, "subnets": [subnet], "securityGroupIds": [group]},
    )["computeEnvironmentArn"]
    queue = batch.create_job_queue(
        jobQueueName="gemcast-test-training", state="ENABLED", priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env}],
    )["jobQueueArn"]
    definition = batch.register_job_definition(
        jobDefinitionName="gemcast-test-training", type="container", platformCapabilities=["FARGATE"],
        containerProperties={
            "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/gemcast-training:latest",
            "command": ["train", "--data", "Ref::data", "--registry", "Ref::registry"],
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "2048"}],
            "executionRoleArn": role,
        },
    )["jobDefinitionArn"]
    return queue, definition


@pytest.fixture
def stack(
    provisioned: dict[str, str], moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    table = boto3.resource("dynamodb").Table(provisioned["IdempotencyTable"])
    queue, definition = batch_queue(moto_server)
    for name, value in {"DATA_BUCKET": BUCKET, "REGISTRY_URI": f"s3://{BUCKET}/models",
                        "BATCH_JOB_QUEUE": queue, "BATCH_JOB_DEFINITION": definition,
                        "IDEMPOTENCY_TABLE": table.name, "AWS_LAMBDA_FUNCTION_NAME": "gemcast-test-schedule",
                        "POWERTOOLS_SERVICE_NAME": "schedule_trigger", "POWERTOOLS_TRACE_DISABLED": "true",
                        "POWERTOOLS_METRICS_NAMESPACE": "gemcast"}.items():
        monkeypatch.setenv(name, value)
    return {"s3": s3, "queue": queue, "app": import_handler("schedule_trigger", {})}


def curate(s3: Any, snapshot_id: str, accepted: int = 1) -> None:
    """What preprocess leaves behind: a curated batch and the snapshot record."""
    s3.put_object(Bucket=BUCKET, Key="curated/batch.csv", Body=(HEADER + ROW).encode())
    record = {"snapshot_id": snapshot_id, "accepted": accepted, "rows": accepted}
    s3.put_object(Bucket=BUCKET, Key="curated/_snapshot.json", Body=json.dumps(record).encode())


def crown(s3: Any, snapshot_id: str) -> None:
    """A champion trained on ``snapshot_id`` (the pointer's fields the trigger reads)."""
    pointer = {"version": "20240501T000000Z-abc123", "snapshot_id": snapshot_id}
    s3.put_object(Bucket=BUCKET, Key="models/champion.json", Body=json.dumps(pointer).encode())


def jobs(queue: str) -> list[dict[str, Any]]:
    batch = boto3.client("batch")
    found = []
    for status in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED"):
        found += batch.list_jobs(jobQueue=queue, jobStatus=status)["jobSummaryList"]
    return list({j["jobId"]: j for j in found}.values())


def run(stack: dict[str, Any], context: Any) -> dict[str, Any]:
    result: dict[str, Any] = stack["app"].lambda_handler(load_event("schedule_trigger_daily.json"), context)
    return result


def test_no_data_no_job(stack: dict[str, Any], lambda_context: Any) -> None:
    result = run(stack, lambda_context)

    assert result["submitted"] is False and "no curated data" in result["plan"]["reason"]
    assert jobs(stack["queue"]) == []


def test_data_unchanged_since_the_champion_no_job(stack: dict[str, Any], lambda_context: Any) -> None:
    curate(stack["s3"], "snap-1111")
    crown(stack["s3"], "snap-1111")

    result = run(stack, lambda_context)

    assert result["submitted"] is False and "unchanged" in result["plan"]["reason"]
    assert jobs(stack["queue"]) == []


def test_changed_data_gives_exactly_one_job_per_snapshot(stack: dict[str, Any], lambda_context: Any) -> None:
    curate(stack["s3"], "snap-2222")
    crown(stack["s3"], "snap-1111")

    first = run(stack, lambda_context)
    second = run(stack, lambda_context)  # the next day, or a retried schedule: same data

    assert first["submitted"] is True and second["submitted"] is False
    assert second["job"]["job_id"] == first["job"]["job_id"] and second["job"]["already_submitted"] is True
    (job,) = jobs(stack["queue"])
    assert job["jobId"] == first["job"]["job_id"] and job["jobName"] == "gemcast-train-snap-2222"
    (described,) = boto3.client("batch").describe_jobs(jobs=[job["jobId"]])["jobs"]
    assert described["parameters"] == {"data": f"s3://{BUCKET}/curated/", "registry": f"s3://{BUCKET}/models"}


def test_new_data_after_a_job_gives_a_second_job(stack: dict[str, Any], lambda_context: Any) -> None:
    curate(stack["s3"], "snap-2222")
    run(stack, lambda_context)
    curate(stack["s3"], "snap-3333")  # another batch arrived before training promoted anything

    result = run(stack, lambda_context)

    assert result["submitted"] is True
    names = sorted(j["jobName"] for j in jobs(stack["queue"]))
    assert names == ["gemcast-train-snap-2222", "gemcast-train-snap-3333"]


# ----------------------------------------------------------------------------- gemcast trigger


def test_gemcast_trigger_trains_locally_once_per_snapshot(
    aws_env: dict[str, str], provisioned: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The local stack's `gemcast-local trigger`: the same handler; the job is the train entrypoint."""
    s3 = boto3.client("s3")
    BUCKET = provisioned["DataBucket"]  # noqa: N806 - the module's name for the bucket, here the template's
    # What `gemcast-local up` leaves in its state folder (only what the trigger reads).
    state = {"pid": os.getpid(), "env": aws_env, "values": provisioned}
    (tmp_path / "stack.json").write_text(json.dumps(state))
    first_800 = b"".join((REPO / "data" / "diamonds.csv").read_bytes().splitlines(keepends=True)[:801])
    s3.put_object(Bucket=BUCKET, Key="raw/batch.csv", Body=first_800)
    snapshot = ingest_object(S3Storage(BUCKET, client=s3), "raw/batch.csv", NoInventory())
    assert snapshot.status == "ingested"

    assert local_main(["trigger", "--state", str(tmp_path), "--kind", "linear", "--budget", "1"]) == 0
    first = json.loads(capsys.readouterr().out)
    again = run_trigger(state_dir=tmp_path, train_args=["--kind=linear", "--budget=1"])

    assert first["submitted"] is True and first["job"]["exit_code"] == 0
    pointer = json.loads(s3.get_object(Bucket=BUCKET, Key="models/champion.json")["Body"].read())
    assert pointer["snapshot_id"] == snapshot.snapshot_id  # the job trained on the curated data
    assert again["submitted"] is False and "unchanged" in again["plan"]["reason"]


def test_gemcast_trigger_without_a_running_stack_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(GemcastError, match="gemcast-local up"):
        run_trigger(state_dir=tmp_path)


class NoInventory:
    def put_stones(self, stones: Any) -> int:
        return len(list(stones))

    def similar(self, *args: Any) -> list[dict[str, Any]]:
        return []
