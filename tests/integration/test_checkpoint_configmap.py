"""ConfigMapStore on a real kube-apiserver (hack/testenv), and the vcenter provider using it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from kubernetes import client

from event_router.checkpoints import ConfigMapStore, VCenterCheckpoint
from event_router.config.models import RouterConfig
from event_router.core import RouterContext
from event_router.providers.vcenter import VCenterProvider
from tests.support.vcsim import VCSim, post_general_events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_load_save_roundtrip_creates_the_configmap(
    k8s_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(k8s_client)
    store = ConfigMapStore(namespace, "router-checkpoints", "vc.example.com", api=core)
    assert await store.load() is None  # no ConfigMap yet
    await store.save({"lastEventKey": 1})
    await store.save({"lastEventKey": 2})
    assert await store.load() == {"lastEventKey": 2}
    cm = core.read_namespaced_config_map("router-checkpoints", namespace)
    assert json.loads((cm.data or {})["vc.example.com"]) == {"lastEventKey": 2}
    assert "configmap" in store.describe() and namespace in store.describe()


async def test_kubeconfig_from_environment(testenv: Any, namespace: str) -> None:
    """api=None: in-cluster config is absent here, so KUBECONFIG is used."""
    store = ConfigMapStore(namespace, "cp", "k")
    await store.save({"x": 1})
    assert await store.load() == {"x": 1}


async def test_concurrent_writers_of_other_keys_lose_nothing(
    k8s_client: client.ApiClient, namespace: str
) -> None:
    """Optimistic concurrency: writers of different keys race on one ConfigMap (409s are
    re-read and retried); every key keeps its own last value."""
    core = client.CoreV1Api(k8s_client)
    stores = [ConfigMapStore(namespace, "shared", f"key-{i}", api=core) for i in range(4)]

    async def writer(store: ConfigMapStore) -> None:
        for n in range(15):
            await store.save({"n": n})

    await asyncio.gather(*(writer(s) for s in stores))
    cm = core.read_namespaced_config_map("shared", namespace)
    assert {k: json.loads(v) for k, v in (cm.data or {}).items()} == {
        f"key-{i}": {"n": 14} for i in range(4)
    }


async def test_keys_other_than_ours_are_untouched(
    k8s_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(k8s_client)
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cp"), data={"other": "keep"}),
    )
    store = ConfigMapStore(namespace, "cp", "mine", api=core)
    assert await store.load() is None  # ConfigMap exists, key does not
    await store.save({"a": 1})
    data = core.read_namespaced_config_map("cp", namespace).data or {}
    assert data["other"] == "keep"
    assert json.loads(data["mine"]) == {"a": 1}


class Pub:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def publish(self, event: Any) -> asyncio.Future[bool]:
        if event["subject"] == "GeneralUserEvent":
            self.messages.append(event.data["Message"])
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(True)
        return fut


async def test_vcenter_provider_checkpoints_to_configmap(
    k8s_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(k8s_client)
    with VCSim() as sim:
        cfg = RouterConfig.model_validate(
            {
                "apiVersion": "event-router.vmware.com/v1alpha1",
                "kind": "RouterConfig",
                "metadata": {"name": "cm"},
                "eventProvider": {
                    "type": "vcenter",
                    "name": "vc",
                    "vcenter": sim.vcenter_spec(
                        checkpoint=True, checkpointDir="/nonexistent/never-used"
                    ),
                },
                "eventProcessor": {
                    "type": "knative",
                    "name": "k",
                    "knative": {"destination": {"uri": "http://127.0.0.1:9/"}},
                },
                "checkpoint": {"periodSeconds": 0.2},
            }
        )
        context = RouterContext(
            cfg,
            checkpoint_store_factory=lambda key: ConfigMapStore(namespace, "router-cp", key, core),
        )

        async def run_until(pub: Pub, prefix: str, count: int) -> None:
            provider = VCenterProvider(context)
            task = asyncio.create_task(provider.run(pub))
            while not provider.ready:
                assert not task.done(), task
                await asyncio.sleep(0.02)
            si = await asyncio.to_thread(sim.connect)
            await asyncio.to_thread(post_general_events, si, count, prefix)
            for _ in range(1000):
                if len([m for m in pub.messages if m.startswith(prefix)]) >= count:
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError(f"events {prefix}-* did not arrive: {pub.messages}")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await provider.close()

        first = Pub()
        await run_until(first, "one", 5)
        raw = (core.read_namespaced_config_map("router-cp", namespace).data or {})["127.0.0.1"]
        cp = VCenterCheckpoint.from_json(json.loads(raw))
        assert cp.vcenter == sim.url and cp.last_event_type  # the original's fields
        second = Pub()
        await run_until(second, "two", 3)
        assert [m for m in second.messages if m.startswith("one")] == []  # resumed


async def test_conflict_is_re_read_and_retried(
    k8s_client: client.ApiClient, namespace: str
) -> None:
    """Another writer changes the ConfigMap between our read and our replace: the API
    server answers 409 on the stale resourceVersion, we re-read and keep both changes."""
    core = client.CoreV1Api(k8s_client)
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cp"), data={})
    )

    class RacingApi(client.CoreV1Api):
        """The real API, plus one write by 'someone else' right after our first read."""

        reads = 0

        def read_namespaced_config_map(  # type: ignore[override]
            self, name: str, namespace: str, **kw: Any
        ) -> Any:
            cm = super().read_namespaced_config_map(name, namespace, **kw)
            self.reads += 1
            if self.reads == 1:
                core.patch_namespaced_config_map(name, namespace, {"data": {"other": "x"}})
            return cm

    api = RacingApi(k8s_client)
    await ConfigMapStore(namespace, "cp", "mine", api=api).save({"k": 1})
    assert api.reads == 2  # one conflict, one retry
    data = core.read_namespaced_config_map("cp", namespace).data or {}
    assert data == {"other": "x", "mine": json.dumps({"k": 1}, indent=2)}


async def test_horizon_provider_checkpoints_to_configmap_and_resumes(
    k8s_client: client.ApiClient, namespace: str
) -> None:
    """The horizon provider as the operator runs it: its checkpoint (last event time and the
    ids seen at that time) in a ConfigMap on the real API server; a new provider resumes
    from it with nothing lost and nothing repeated."""
    from event_router.providers.horizon import HorizonProvider
    from tests.support.horizon_server import HorizonServer, horizon_auth
    from tests.support.publisher import CollectingPublisher

    core = client.CoreV1Api(k8s_client)
    async with HorizonServer(password="pw-horizon") as server:
        cfg = RouterConfig.model_validate(
            {
                "apiVersion": "event-router.vmware.com/v1alpha1",
                "kind": "RouterConfig",
                "metadata": {"name": "hz"},
                "eventProvider": {
                    "type": "horizon",
                    "name": "hz",
                    "horizon": {
                        "address": server.url,
                        "pollIntervalSeconds": 0.05,
                        "checkpoint": True,
                        "checkpointDir": "/nonexistent/never-used",
                        "auth": horizon_auth("pw-horizon"),
                    },
                },
                "eventProcessor": {
                    "type": "knative",
                    "name": "k",
                    "knative": {"destination": {"uri": "http://127.0.0.1:9/"}},
                },
                "checkpoint": {"periodSeconds": 0.1},
            }
        )
        keys: list[str] = []

        def factory(key: str) -> ConfigMapStore:
            keys.append(key)
            return ConfigMapStore(namespace, "router-cp", key, core)

        context = RouterContext(cfg, checkpoint_store_factory=factory)

        async def run_until(pub: CollectingPublisher, want: set[str]) -> None:
            provider = HorizonProvider(context)
            provider.idle_max_delay = 0.2
            task = asyncio.create_task(provider.run(pub))
            try:
                for _ in range(500):
                    if provider.ready and want <= {e["id"] for e in pub.events}:
                        break
                    assert not task.done(), task
                    await asyncio.sleep(0.02)
                else:
                    raise AssertionError(f"wanted {want}, got {[e['id'] for e in pub.events]}")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await provider.close()

        # a first start writes its checkpoint at once: events posted after it stopped are
        # delivered by the next start
        await run_until(CollectingPublisher(), set())
        assert keys and (core.read_namespaced_config_map("router-cp", namespace).data or {})
        one = [str(server.add_event()["id"]) for _ in range(3)]
        first = CollectingPublisher()
        await run_until(first, set(one))
        assert [e["id"] for e in first.events] == one
        (key,) = set(keys)
        raw = (core.read_namespaced_config_map("router-cp", namespace).data or {})[key]
        saved = json.loads(raw)
        assert str(saved["idsAtLastTime"][-1]) == one[-1]

        # while no router runs: two more events, one sharing the last event's millisecond
        last_time = saved["lastEventTime"]
        two = [
            str(server.add_event(time_ms=last_time)["id"]),
            str(server.add_event(time_ms=last_time + 5)["id"]),
        ]
        second = CollectingPublisher()
        await run_until(second, set(two))
        got = [e["id"] for e in second.events]
        assert got == two, got  # resumed after the checkpoint: no repeat of `one`, no gap


async def test_an_ipv6_host_is_a_valid_configmap_key(
    k8s_client: client.ApiClient, namespace: str
) -> None:
    """vCenter at https://[fd00::10]/sdk: the checkpoint key is the host, and ':' is not
    allowed in a ConfigMap key; the store writes it as fd00__10."""
    core = client.CoreV1Api(k8s_client)
    store = ConfigMapStore(namespace, "router-cp", "fd00::10", api=core)
    await store.save({"lastEventKey": 7})
    assert await store.load() == {"lastEventKey": 7}
    data = core.read_namespaced_config_map("router-cp", namespace).data or {}
    assert json.loads(data["fd00__10"]) == {"lastEventKey": 7}
