"""The sandbox fence device (clusterctl/fenced.py): fence_docker's calls, the cluster's own
containers only, clients of the cluster's CA only."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from clusterctl.agent.tls import TlsFiles
from clusterctl.fenced import FenceService, container_processes, make_server
from clusterctl.pki import ClusterCA


class FakeContainers:
    def __init__(self) -> None:
        self.states = {"demo-node1": "running", "demo-node2": "paused", "other": "running"}
        self.calls: list[tuple[str, str]] = []

    def state(self, name: str) -> str:
        if name not in self.states:
            raise LookupError(name)
        return self.states[name]

    def off(self, name: str, timeout: float) -> None:
        self.calls.append(("off", name))
        self.states[name] = "exited"

    def on(self, name: str, timeout: float) -> None:
        self.calls.append(("on", name))
        self.states[name] = "running"


@pytest.fixture
def service(tmp_path) -> FenceService:
    nodes = {"node1": "demo-node1", "node2": "demo-node2"}
    return FenceService(nodes, FakeContainers(), tmp_path / "fence-log")


def test_status_list_and_power_of_the_clusters_nodes(service) -> None:
    assert service.handle("GET", "/v1.11/containers/node2/json", "node1") == (
        200,
        {"Id": "node2", "Name": "/node2", "State": {"Running": True, "Status": "paused"}},
    )
    assert service.handle("POST", "/v1.11/containers/node2/kill", "node1") == (204, None)
    assert service.handle("GET", "/v1.11/containers/node2/json", "node1")[1]["State"] == {
        "Running": False,
        "Status": "exited",
    }
    assert service.handle("POST", "/containers/node2/restart", "node3") == (204, None)
    assert service.containers.calls == [("off", "demo-node2"), ("off", "demo-node2"),
                                        ("on", "demo-node2")]  # fmt: skip
    listed = service.handle("GET", "/v1.11/containers/json?all=1", "node1")[1]
    assert [c["Names"] for c in listed] == [["/node1"], ["/node2"]]
    log = [json.loads(line) for line in service.log_path.read_text().splitlines()]
    assert [(e["client"], e["action"], e["node"], e["result"]) for e in log] == [
        ("node1", "kill", "node2", "ok"),
        ("node3", "restart", "node2", "ok"),
    ]
    assert service.log_path.stat().st_mode & 0o777 == 0o600


def test_nothing_but_the_clusters_nodes_and_fence_docker_calls(service) -> None:
    for method, path in (
        ("POST", "/v1.11/containers/other/kill"),  # a container of the host, not a node
        ("POST", "/v1.11/containers/demo-node1/kill"),  # by container name: no
        ("POST", "/v1.11/containers/create"),
        ("DELETE", "/v1.11/containers/node1"),
        ("POST", "/v1.11/containers/node1/exec"),
        ("GET", "/v1.11/images/json"),
    ):
        assert service.handle(method, path, "node1")[0] == 404, (method, path)
    assert service.containers.calls == []


def test_the_server_requires_a_certificate_of_the_clusters_ca(service, tmp_path) -> None:
    ca = ClusterCA(tmp_path / "pki", "demo")
    device = ca.ensure_fence_device("127.0.0.1")
    node = ca.ensure_node("node1", ["127.0.0.1"])
    stranger = ClusterCA(tmp_path / "other", "demo").ensure_node("node1", ["127.0.0.1"])
    server_tls = TlsFiles(str(ca.ca_cert), str(device.cert), str(device.key))
    server = make_server(service, "127.0.0.1", 0, server_tls.server_context())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/v1.11/containers/node1/kill"
    try:

        def post(cert, key) -> int:
            context = ssl.create_default_context(cafile=str(ca.ca_cert))
            if cert:
                context.load_cert_chain(str(cert), str(key))
            request = urllib.request.Request(url, data=b"", method="POST")
            try:
                with urllib.request.urlopen(request, context=context, timeout=5) as resp:
                    return resp.status
            except urllib.error.HTTPError as exc:
                return exc.code

        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            post(None, None)
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            post(stranger.cert, stranger.key)
        assert service.containers.calls == []
        assert post(node.cert, node.key) == 204
        assert service.containers.calls == [("off", "demo-node1")]
        entry = json.loads(service.log_path.read_text().splitlines()[-1])
        assert entry["client"] == "node1"
    finally:
        server.shutdown()
        server.server_close()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(p) for p in handle.read().split()]


def test_a_containers_processes_are_its_namespace_and_inits_descendants() -> None:
    # a real PID namespace: unshare -> sh (its init) -> sleep; and an unrelated sleep
    tree = subprocess.Popen(["unshare", "--pid", "--fork", "sh", "-c", "sleep 30 & wait"])
    other = subprocess.Popen(["sleep", "30"])
    try:
        deadline = time.monotonic() + 5
        found: set[int] = set()
        while len(found) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            inits = _children(tree.pid)
            found = container_processes(inits[0]) if inits else set()
        assert len(found) == 2, found  # sh and its sleep
        assert tree.pid not in found and other.pid not in found
        assert container_processes(999_999_999) == set()
    finally:
        for proc in (tree, other):
            proc.kill()
            proc.wait()
