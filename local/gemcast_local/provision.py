"""The one provisioning of template.yaml's resources on the stand-ins (moto).

:func:`provision` creates the data bucket (named as the template names it), every DynamoDB
table with its keys, indexes and TTL, every SQS queue, the Cognito user pool and its client,
and returns the values a deployed stack would give ``Ref`` and ``Fn::GetAtt`` (for
:class:`gemcast_local.runtime.Resolver`). The local stack, ``make invoke``'s scratch stack and
the functional tests' fixtures all call it; nothing is restated by hand.

Resources moto cannot run are played by the local seams (gemcast_local.runtime): their names
are in :data:`PLAYED`, with what plays them, so that a function's environment still resolves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gemcast_local.runtime import ACCOUNT_ID, REGION
from gemcast_local.template import (
    TemplateError,
    cognito_user_pool,
    cognito_user_pool_client,
    dynamodb_tables,
    dynamodb_ttl_attributes,
    resources_of_type,
    sqs_queues,
)

LOCAL_PREFIX = "gemcast-local"

# Resources the functions name that moto does not run, and what plays each locally.
PLAYED = {
    "TrainingJobQueue": "a training job is the image's train entrypoint as a subprocess (trigger.py)",
    "TrainingJobDefinition": "the same subprocess",
    "SageMakerExecutionRole": "moto's SageMaker, with UpdateEndpoint by runtime.MotoSageMaker",
    "EndpointErrorsAlarm": "no alarms locally: a rollback alarm never fires",
    "EndpointLatencyAlarm": "no alarms locally: a rollback alarm never fires",
}


def local_name(logical_id: str) -> str:
    return f"{LOCAL_PREFIX}-{logical_id}"


def parameter_defaults(template: Mapping[str, Any]) -> dict[str, str]:
    return {name: str(spec.get("Default", "")) for name, spec in (template.get("Parameters") or {}).items()}


def provision(template: Mapping[str, Any], client: Callable[[str], Any], region: str = REGION,
              parameters: Mapping[str, str] | None = None) -> dict[str, str]:
    """Create the template's bucket, tables, queues, user pool and client on moto.

    ``client(service)`` gives a boto3 client pointed at moto. Returns the Ref / GetAtt values
    of the local resources, the parameters (defaults, then ``parameters``) and the pseudo
    parameters. ``UserPool`` and ``UserPoolClient`` always name the pool and its client.
    """
    from gemcast_local.runtime import Resolver

    arn = f"arn:aws:{{}}:{region}:{ACCOUNT_ID}:{{}}"
    values: dict[str, str] = {
        **parameter_defaults(template),
        **(parameters or {}),
        "AWS::AccountId": ACCOUNT_ID,
        "AWS::Region": region,
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
        "AWS::StackName": LOCAL_PREFIX,
    }
    for logical_id in PLAYED:
        values.update({logical_id: local_name(logical_id),
                       f"{logical_id}.Arn": arn.format("local", local_name(logical_id))})
    bucket_props = dict(resources_of_type(template, "AWS::S3::Bucket")).get("DataBucket")
    if bucket_props is None:
        raise TemplateError("template.yaml has no DataBucket")
    bucket = Resolver(values).resolve(bucket_props.get("BucketName") or local_name("data").lower(),
                                      "DataBucket.BucketName")
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
                TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl[logical_id]})
        values.update({logical_id: name, f"{logical_id}.Arn": arn.format("dynamodb", f"table/{name}")})

    sqs = client("sqs")
    for kwargs in sqs_queues(template, name=local_name):
        logical_id = kwargs["QueueName"].removeprefix(f"{LOCAL_PREFIX}-").removesuffix(".fifo")
        url = sqs.create_queue(**kwargs)["QueueUrl"]
        values.update({logical_id: url, f"{logical_id}.QueueName": kwargs["QueueName"],
                       f"{logical_id}.Arn": arn.format("sqs", kwargs["QueueName"])})

    cognito = client("cognito-idp")
    pool_id = cognito.create_user_pool(**cognito_user_pool(template, name=local_name))["UserPool"]["Id"]
    app_client = cognito.create_user_pool_client(
        **cognito_user_pool_client(template, pool_id, name=local_name))["UserPoolClient"]["ClientId"]
    pool_logical = next(lid for lid, _ in resources_of_type(template, "AWS::Cognito::UserPool"))
    client_logical = next(lid for lid, _ in resources_of_type(template, "AWS::Cognito::UserPoolClient"))
    values.update({
        pool_logical: pool_id,
        f"{pool_logical}.Arn": arn.format("cognito-idp", f"userpool/{pool_id}"),
        client_logical: app_client,
        "UserPool": pool_id,
        "UserPoolClient": app_client,
    })
    return values


def boto3_factory(env: Mapping[str, str]) -> Callable[[str], Any]:
    """``client(service)`` for the stand-in whose environment is ``env`` (AWS_ENDPOINT_URL, keys)."""
    import boto3
    from botocore.config import Config

    # Short timeouts: a paused stand-in must give an answer, not hold the caller for minutes.
    config = Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})
    session = boto3.session.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                    aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                                    region_name=env.get("AWS_DEFAULT_REGION", REGION))

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=env["AWS_ENDPOINT_URL"], config=config)

    return client
