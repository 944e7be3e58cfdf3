"""moto in server mode (127.0.0.1, an ephemeral port) and the test side of EventBridge on it:
a bus of its own, rules whose target is an SQS queue, and reading that queue back (so what a
processor sent went through moto's own PutEvents and rule matching)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

REGION = "us-west-1"
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server for the duration; yields its URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


class AWS:
    """Test-side setup through moto's HTTP API: bus, rule, SQS target."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events = boto3.client("events", region_name=REGION, endpoint_url=url, **KEYS)
        self.sqs = boto3.client("sqs", region_name=REGION, endpoint_url=url, **KEYS)
        self.bus = f"bus-{uuid.uuid4().hex[:8]}"
        self.events.create_event_bus(Name=self.bus)
        self.queue_url = self.sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        self.queue_arn = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]

    def put_rule(self, name: str, pattern: dict[str, Any] | None) -> str:
        """A rule on the bus (a schedule rule when ``pattern`` is None) targeting the queue;
        its ARN."""
        kwargs: dict[str, Any] = {"Name": name, "EventBusName": self.bus}
        if pattern is None:
            kwargs["ScheduleExpression"] = "rate(5 minutes)"
        else:
            kwargs["EventPattern"] = json.dumps(pattern)
        arn: str = self.events.put_rule(**kwargs)["RuleArn"]
        self.events.put_targets(
            Rule=name, EventBusName=self.bus, Targets=[{"Id": "q", "Arn": self.queue_arn}]
        )
        return arn

    def _read_batch(self) -> list[dict[str, Any]]:
        """Read (and delete) up to 10 messages waiting in the queue; their bodies."""
        resp = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
        bodies = []
        for msg in resp.get("Messages", []):
            bodies.append(json.loads(msg["Body"]))
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=msg["ReceiptHandle"])
        return bodies

    async def received(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:  # noqa: ASYNC109
        """Read until ``count`` messages arrived (or ``timeout``); return their bodies."""
        got: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            got += await asyncio.to_thread(self._read_batch)
            if len(got) >= count:
                break
            await asyncio.sleep(0.05)
        return got

    async def waiting(self) -> list[dict[str, Any]]:
        """Read (and delete) every message in the queue now, without waiting for more."""
        got: list[dict[str, Any]] = []
        while batch := await asyncio.to_thread(self._read_batch):
            got += batch
        return got
