"""scheduler.lambda_handler:handler, as EventBridge invokes it: ECS (moto) + real Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import redis
from moto import mock_aws
from moto.ec2.utils import generate_instance_identity_document
from moto.moto_api import state_manager

from castway.settings import Settings
from scheduler.coordination import LOCK_KEY
from scheduler.lambda_handler import handler

REGION = "us-east-1"
EVENT = {"ecs": {"cluster": "castway", "task_definition": "castway-ingest",
                 "launch_type": "EC2", "region": REGION},
         "desired_version": "v5"}


@pytest.fixture
def ecs_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_DEFAULT_REGION", REGION)):
        monkeypatch.setenv(key, value)
    state_manager.set_transition(model_name="ecs::task",
                                 transition={"progression": "manual", "times": 10**9})
    with mock_aws():
        ecs = boto3.client("ecs", region_name=REGION)
        ecs.create_cluster(clusterName="castway")
        instance = boto3.resource("ec2", region_name=REGION).create_instances(
            ImageId="ami-12c6146b", MinCount=1, MaxCount=1)[0]
        ecs.register_container_instance(
            cluster="castway",
            instanceIdentityDocument=json.dumps(generate_instance_identity_document(instance)))
        ecs.register_task_definition(family="castway-ingest", containerDefinitions=[
            {"name": "ingest", "image": "castway:v5", "memory": 512}])
        yield
    state_manager.unset_transition(model_name="ecs::task")


def running_tasks() -> int:
    ecs = boto3.client("ecs", region_name=REGION)
    return len(ecs.list_tasks(cluster="castway", desiredStatus="RUNNING")["taskArns"])


def test_each_invocation_is_one_idempotent_tick(ecs_cluster: None, redis_url: str,
                                                tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=redis_url, scheduler_backend="ecs")
    first = handler(EVENT, None, settings=settings)
    assert first["ran"] is True and first["actions"] == ["start 1 on v5"]
    second = handler(EVENT, None, settings=settings)  # the task is still starting
    assert second["actions"] == [] and running_tasks() == 1


def test_an_invocation_while_another_ticks_does_nothing(ecs_cluster: None, redis_url: str,
                                                        tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=redis_url, scheduler_backend="ecs")
    client = redis.Redis.from_url(redis_url)
    client.set(LOCK_KEY, b"someone-else", px=60_000)
    client.close()
    assert handler(EVENT, None, settings=settings) == {"ran": False}
    assert running_tasks() == 0


def test_the_lambda_needs_redis(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="CASTWAY_REDIS_URL"):
        handler(EVENT, None, settings=Settings(data_dir=tmp_path, redis_url=None))
