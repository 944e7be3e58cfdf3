"""The test environment itself behaves like the real thing our users run against.

- kube-apiserver: CRD with a structural schema, watch, status subresource, schema rejection.
- kube-controller-manager: Deployment -> ReplicaSet -> Pod, garbage collection by ownerReferences.
- vcsim through pyVmomi: login (the known credentials, and only them), power on a VM, read its
  VmPoweredOnEvent from an EventHistoryCollector.
- hack/testenv: a leased environment is stopped, processes and temp data, when its holder dies.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from kubernetes import client, watch
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from tests.integration.conftest import TESTENV, TestEnv

pytestmark = pytest.mark.integration

T = TypeVar("T")


def eventually(fn: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


# ------------------------------------------------------------------ CRD on the real API server


@pytest.fixture
def widget_crd(k8s_client: client.ApiClient) -> Iterator[tuple[str, str]]:
    """A namespaced CRD in a group unique to this test (CRDs are cluster-wide, runs share it)."""
    ext = client.ApiextensionsV1Api(k8s_client)
    group = f"t{secrets.token_hex(4)}.foundation.event-router.test"
    plural = "widgets"
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["size"],
                "properties": {
                    "size": {"type": "integer", "minimum": 1, "maximum": 10},
                    "color": {"type": "string", "enum": ["red", "blue"]},
                },
            },
            "status": {
                "type": "object",
                "properties": {
                    "phase": {"type": "string"},
                    "observedGeneration": {"type": "integer"},
                },
            },
        },
    }
    body: Any = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                }
            ],
        },
    }
    ext.create_custom_resource_definition(body)

    def established() -> bool:
        crd = ext.read_custom_resource_definition(f"{plural}.{group}")
        conds = (crd.status and crd.status.conditions) or []
        return any(c.type == "Established" and c.status == "True" for c in conds)

    eventually(established, 30, "the CRD to be Established")
    try:
        yield group, plural
    finally:
        ext.delete_custom_resource_definition(f"{plural}.{group}")


def test_crd_object_watch_status_subresource_and_schema(
    k8s_client: client.ApiClient, namespace: str, widget_crd: tuple[str, str]
) -> None:
    group, plural = widget_crd
    api = client.CustomObjectsApi(k8s_client)

    # Watch the namespace's widgets in a thread while we create and update one. The watch
    # starts at the list's resourceVersion, so it sees every change after that point however
    # late its request reaches the server (no sleep, no race with the create below).
    listed: Any = api.list_namespaced_custom_object(group, "v1", namespace, plural)
    assert listed["items"] == []
    since = listed["metadata"]["resourceVersion"]
    seen: list[tuple[str, dict[str, Any]]] = []
    watcher = watch.Watch()

    def watch_widgets() -> None:
        ev: Any
        for ev in watcher.stream(
            api.list_namespaced_custom_object,
            group,
            "v1",
            namespace,
            plural,
            resource_version=since,
            timeout_seconds=30,
        ):
            seen.append((ev["type"], ev["object"]))
            obj = ev["object"]
            if ev["type"] == "MODIFIED" and obj.get("status", {}).get("phase") == "Ready":
                watcher.stop()

    thread = threading.Thread(target=watch_widgets, daemon=True)
    thread.start()

    created: Any = api.create_namespaced_custom_object(
        group, "v1", namespace, plural,
        {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w1"},
         "spec": {"size": 3, "color": "red"}},
    )  # fmt: skip
    assert created["metadata"]["generation"] == 1

    # Status through the status subresource: status changes, spec and generation do not.
    patched: Any = api.patch_namespaced_custom_object_status(
        group, "v1", namespace, plural, "w1",
        {"status": {"phase": "Ready", "observedGeneration": 1}},
    )  # fmt: skip
    assert patched["status"] == {"phase": "Ready", "observedGeneration": 1}
    assert patched["spec"] == {"size": 3, "color": "red"}
    assert patched["metadata"]["generation"] == 1

    thread.join(30)
    assert not thread.is_alive(), "the watch never delivered the status update"
    types = [t for t, _ in seen]
    assert types[0] == "ADDED" and seen[0][1]["metadata"]["name"] == "w1"
    assert "MODIFIED" in types

    # With the status subresource, the main endpoint ignores status and bumps generation.
    updated: Any = api.patch_namespaced_custom_object(
        group, "v1", namespace, plural, "w1", {"spec": {"size": 4}, "status": {"phase": "Hacked"}}
    )
    assert updated["metadata"]["generation"] == 2
    assert updated["status"]["phase"] == "Ready"

    # Schema violations are rejected by the API server with its own message.
    with pytest.raises(client.ApiException) as err:
        api.create_namespaced_custom_object(
            group, "v1", namespace, plural,
            {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "bad"},
             "spec": {"size": 99, "color": "green"}},
        )  # fmt: skip
    assert err.value.status == 422
    message = json.loads(err.value.body or "{}")["message"]
    assert "spec.size: Invalid value: 99" in message
    assert "spec.size in body should be less than or equal to 10" in message
    assert 'spec.color: Unsupported value: "green"' in message
    assert '"red", "blue"' in message

    with pytest.raises(client.ApiException) as err:
        api.create_namespaced_custom_object(
            group, "v1", namespace, plural,
            {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "bad2"},
             "spec": {"color": "blue"}},
        )  # fmt: skip
    assert err.value.status == 422
    assert "spec.size: Required value" in json.loads(err.value.body or "{}")["message"]


def test_api_server_reports_its_real_version(k8s_client: client.ApiClient) -> None:
    info = client.VersionApi(k8s_client).get_code()
    assert info.git_version.startswith("v1.34."), info.git_version
    assert (info.major, info.minor) == ("1", "34")


# ------------------------------------------------------------------ kube-controller-manager


def test_deployment_gets_replicaset_and_pod_then_garbage_collected(
    k8s_client: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(k8s_client)
    core = client.CoreV1Api(k8s_client)
    labels = {"app": "foundation"}
    dep: Any = apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1DeploymentSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[client.V1Container(name="c", image="registry.invalid/none:1")]
                    ),
                ),
            ),
        ),
    )

    def owned_by(obj: Any, uid: str) -> bool:
        return any(ref.uid == uid for ref in obj.metadata.owner_references or [])

    def replicaset() -> Any:
        items = apps.list_namespaced_replica_set(namespace).items
        return next((rs for rs in items if owned_by(rs, dep.metadata.uid)), None)

    rs = eventually(replicaset, 60, "kube-controller-manager to create the ReplicaSet")

    def pod() -> Any:
        items = core.list_namespaced_pod(namespace).items
        return next((p for p in items if owned_by(p, rs.metadata.uid)), None)

    p = eventually(pod, 60, "kube-controller-manager to create the Pod")
    assert p.metadata.labels["app"] == "foundation"
    assert p.spec.service_account_name == "default"  # the ServiceAccount admission ran

    apps.delete_namespaced_deployment("web", namespace, propagation_policy="Background")

    def collected() -> bool:
        return not apps.list_namespaced_replica_set(namespace).items and not [
            x for x in core.list_namespaced_pod(namespace).items if owned_by(x, rs.metadata.uid)
        ]

    eventually(collected, 60, "garbage collection of the ReplicaSet and Pod")


# ------------------------------------------------------------------ vcsim through pyVmomi


def _wait_task(task: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while task.info.state not in (vim.TaskInfo.State.success, vim.TaskInfo.State.error):
        if time.monotonic() > deadline:
            raise AssertionError(f"vCenter task {task.info.descriptionId} still running")
        time.sleep(0.1)
    if task.info.state == vim.TaskInfo.State.error:
        raise AssertionError(f"vCenter task failed: {task.info.error.msg}")
    return task.info.result


def test_vcsim_login_power_on_and_read_event(testenv: TestEnv) -> None:
    url = urlsplit(testenv.vcsim_url)
    host, port = url.hostname or "", url.port or 443

    with pytest.raises(vim.fault.InvalidLogin):
        SmartConnect(host=host, port=port, user=testenv.vcsim_username, pwd="wrong",
                     disableSslCertValidation=True)  # fmt: skip

    si = SmartConnect(host=host, port=port, user=testenv.vcsim_username,
                      pwd=testenv.vcsim_password, disableSslCertValidation=True)  # fmt: skip
    vm = None
    try:
        content = si.RetrieveContent()
        assert content.about.apiType == "VirtualCenter"
        dc = content.rootFolder.childEntity[0]
        cluster = next(
            e for e in dc.hostFolder.childEntity if isinstance(e, vim.ClusterComputeResource)
        )
        datastore = dc.datastore[0].name
        # A VM of our own: the shared vcsim's inventory stays as other tests expect it.
        name = f"foundation-{secrets.token_hex(3)}"
        spec = vim.vm.ConfigSpec(
            name=name, guestId="otherGuest64", numCPUs=1, memoryMB=64,
            files=vim.vm.FileInfo(vmPathName=f"[{datastore}]"),
        )  # fmt: skip
        vm = _wait_task(dc.vmFolder.CreateVM_Task(config=spec, pool=cluster.resourcePool))
        assert vm.runtime.powerState == "poweredOff"

        before = si.CurrentTime()
        _wait_task(vm.PowerOnVM_Task())
        assert vm.runtime.powerState == "poweredOn"

        spec_filter = vim.event.EventFilterSpec(
            eventTypeId=["VmPoweredOnEvent"],
            entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self"),
        )
        collector = content.eventManager.CreateCollectorForEvents(filter=spec_filter)
        try:
            events: list[Any] = []
            while page := collector.ReadNextEvents(100):  # how the vCenter provider reads
                events.extend(page)
        finally:
            collector.DestroyCollector()
        powered_on = [e for e in events if isinstance(e, vim.event.VmPoweredOnEvent)]
        assert powered_on, f"no VmPoweredOnEvent among {[type(e).__name__ for e in events]}"
        assert len(powered_on) == 1, "one power-on of a fresh VM, one event"
        event: Any = powered_on[0]
        assert event.vm.name == name and event.vm.vm == vm
        assert event.userName == testenv.vcsim_username
        assert event.createdTime >= before
        assert event.fullFormattedMessage
    finally:
        if vm is not None:
            if vm.runtime.powerState == "poweredOn":
                _wait_task(vm.PowerOffVM_Task())
            _wait_task(vm.Destroy_Task())
        Disconnect(si)


# ------------------------------------------------------------------ hack/testenv's own promise


def _pid_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


@pytest.mark.slow
def test_leased_env_is_stopped_when_its_holder_dies(tmp_path: Path, testenv: TestEnv) -> None:
    """A second, private env leased to a process we then kill: the supervisor stops it all."""
    env = {**os.environ, "ER_TESTENV_DIR": str(tmp_path / "env")}
    holder = subprocess.Popen(["sleep", "300"])
    try:
        up = subprocess.run(
            [sys.executable, str(TESTENV), "up", "--no-build", "--lease", str(holder.pid)],
            env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        state = json.loads((tmp_path / "env" / "state.json").read_text())
        pids = [c["pid"] for c in state["components"].values()] + [state["supervisor"]["pid"]]
        assert all(_pid_running(p) for p in pids)
        assert Path(state["tmp"]).is_dir()
        status = subprocess.run(
            [sys.executable, str(TESTENV), "status", "--json"],
            env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert status.returncode == 0
        assert json.loads(status.stdout)["leases"] == [holder.pid]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    eventually(lambda: not any(_pid_running(p) for p in pids), 60, "the supervisor's teardown")
    assert not Path(state["tmp"]).exists()
    assert not (tmp_path / "env" / "kubeconfig").exists()
    status = subprocess.run(
        [sys.executable, str(TESTENV), "status"], env=env, capture_output=True, text=True
    )
    assert status.returncode == 1


def test_a_lease_for_a_dead_process_is_refused_before_anything_starts(tmp_path: Path) -> None:
    env = {**os.environ, "ER_TESTENV_DIR": str(tmp_path / "env")}
    gone = subprocess.Popen(["true"])
    gone.wait()
    up = subprocess.run(
        [sys.executable, str(TESTENV), "up", "--no-build", "--lease", str(gone.pid)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert up.returncode == 2, up.stderr
    assert f"--lease {gone.pid}: no such running process" in up.stderr
    assert not (tmp_path / "env" / "state.json").exists()  # nothing was started
