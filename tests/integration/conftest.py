"""Fixtures on the real test environment (hack/testenv): kube-apiserver + etcd +
kube-controller-manager + vcsim, all on 127.0.0.1.

``testenv`` (session) brings the environment up once per pytest run, or reuses one that is
already up (``make testenv-up``, or another pytest run sharing the work tree). It holds a
*lease* on it for this pytest process: at session end the lease is released and, if no other
run holds one and nobody pinned it with ``make testenv-up``, the environment is stopped. If
this process is killed, hack/testenv's supervisor notices the dead lease and stops it too.

Binaries must be built (``make tools`` / ``hack/build-tools.sh``; ``make test`` does it):
the fixture does not start a build of tens of minutes inside a test's timeout, it fails with
the command to run. Set ``ER_TESTENV_BUILD=1`` to let it build anyway.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config

REPO = Path(__file__).resolve().parents[2]
TESTENV = REPO / "hack" / "testenv"
STATE_DIR = Path(os.environ.get("ER_TESTENV_DIR") or REPO / ".testenv").resolve()
UP_TIMEOUT = 600.0


@dataclass(frozen=True)
class TestEnv:
    """Where the running test environment is (values of .testenv/env)."""

    __test__ = False  # not a test class, despite the name

    kubeconfig: str
    vcsim_url: str  # https://127.0.0.1:<port>/sdk (self-signed TLS)
    vcsim_username: str
    vcsim_password: str
    bin_dir: Path  # etcd, kube-apiserver, kube-controller-manager, vcsim
    host_ip: str = "127.0.0.1"  # TESTENV_HOST_IP: where pods reach servers that tests start
    node: str = ""  # the node's name when the env has one (ER_TESTENV_NODE=1)

    @property
    def vcsim_host(self) -> str:
        """host:port of vcsim, as a vCenter provider's ``address`` wants it."""
        return self.vcsim_url.split("://", 1)[1].split("/", 1)[0]


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, raw = line[len("export ") :].partition("=")
            values[key] = shlex.split(raw)[0] if raw else ""
    return values


def _hack_testenv(*args: str, timeout: float = UP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TESTENV), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "ER_TESTENV_DIR": str(STATE_DIR)},
    )


@pytest.fixture(scope="session")
def testenv() -> Iterator[TestEnv]:
    lease = str(os.getpid())
    args = ["up", "--lease", lease]
    if os.environ.get("ER_TESTENV_BUILD") != "1":
        args.append("--no-build")
    if os.environ.get("ER_TESTENV_NODE") == "1":
        args.append("--node")
    result = _hack_testenv(*args)
    if result.returncode != 0:
        output = result.stderr[-4000:] + result.stdout[-1000:]
        pytest.fail(f"hack/testenv up failed (exit {result.returncode}):\n{output}", pytrace=False)
    values = _read_env_file(STATE_DIR / "env")
    env = TestEnv(
        kubeconfig=values["KUBECONFIG"],
        vcsim_url=values["VCSIM_URL"],
        vcsim_username=values["VCSIM_USERNAME"],
        vcsim_password=values["VCSIM_PASSWORD"],
        bin_dir=Path(values["ER_TESTENV_BIN_DIR"]),
        host_ip=values.get("TESTENV_HOST_IP", "127.0.0.1"),
        node=values.get("TESTENV_NODE", ""),
    )
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield env
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        released = _hack_testenv("release", lease, timeout=60)
        if released.returncode != 0:
            sys.stderr.write(f"hack/testenv release {lease} failed:\n{released.stderr}\n")


@pytest.fixture(scope="session")
def node_env(testenv: TestEnv) -> TestEnv:
    """The test environment with a node that runs real pods (``make test`` sets
    ER_TESTENV_NODE=1). Without one, the tests that need pods fail, saying how to get it."""
    if not testenv.node:
        pytest.fail(
            "these tests run real pods: they need the test node (ER_TESTENV_NODE=1, as "
            "`make test` sets; root; `hack/testenv up --node`)",
            pytrace=False,
        )
    return testenv


@pytest.fixture(scope="session")
def k8s_client(testenv: TestEnv) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=testenv.kubeconfig)
    try:
        yield api
    finally:
        api.close()


PENDING_TAINT = client.V1Taint(key="event-router.test/pods-stay-pending", effect="NoSchedule")


@pytest.fixture(scope="module")
def pods_stay_pending(testenv: TestEnv, k8s_client: client.ApiClient) -> Iterator[None]:
    """For tests that play the kubelet (they write pod status themselves, to see how the
    operator reads a Deployment's state): on the test node, a NoSchedule taint for the
    module keeps their router pods unscheduled, so no kubelet runs them (nor overwrites the
    status the test wrote, nor lets them reach the made-up addresses of their configs)."""
    if not testenv.node:
        yield
        return
    core = client.CoreV1Api(k8s_client)

    def set_taint(on: bool) -> None:
        node = core.read_node(testenv.node)
        taints = [t for t in node.spec.taints or [] if t.key != PENDING_TAINT.key]
        if on:
            taints.append(PENDING_TAINT)
        core.patch_node(
            testenv.node,
            {"spec": {"taints": [k8s_client.sanitize_for_serialization(t) for t in taints]}},
        )

    set_taint(True)
    try:
        yield
    finally:
        set_taint(False)


def _namespace_name(nodeid: str) -> str:
    test = re.sub(r"[^a-z0-9]+", "-", nodeid.rsplit("::", 1)[-1].lower()).strip("-")
    return f"t-{test[:40].strip('-')}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(k8s_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test (name derived from the test), deleted afterwards."""
    core = client.CoreV1Api(k8s_client)
    name = _namespace_name(request.node.nodeid)
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"event-router.test/ephemeral": "true"})
        )
    )
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except client.ApiException as e:
            if e.status != 404:
                raise


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A moto server (127.0.0.1, ephemeral port) shared by one test module."""
    from tests.support.moto import moto_server  # moto is heavy: only for modules that use it

    with moto_server() as url:
        yield url
