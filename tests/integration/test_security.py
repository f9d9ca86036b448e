"""Only the cluster's own members touch etcd and the agents (issue: security), tried as an
attacker would on a running lb cluster: from the controller host without the cluster's
certificates, from a container on another podman network, and as the agents' own etcd user
reaching beyond its cluster's keys."""

from __future__ import annotations

import ipaddress
import json
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from clusterctl.agent.store.base import StoreError
from clusterctl.agent.store.etcd import EtcdCredentials, EtcdStore

from .conftest import cli, podman
from .hahelpers import (
    api_get,
    api_status,
    api_token,
    controller_tls,
    etcd_post,
    node_address,
    node_names,
    tls_opener,
    vip,
    web_group,
)
from .lbhelpers import LoadClient
from .test_lb import lb  # noqa: F401 - the healthy 3-node lb cluster's holder

ATTACKER = "it-attacker"  # a container and a network of that exact name, removed after
PLAIN = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _members(sandbox) -> list[str]:
    return [n["address"] for n in sandbox.nodes[:3]]


def _fails(url: str, opener: urllib.request.OpenerDirector, data: bytes | None = b"{}") -> str:
    """How a request fails (it must): the exception's class name."""
    try:
        with opener.open(urllib.request.Request(url, data=data), timeout=3) as resp:
            return f"answered {resp.status}: {resp.read()[:100]!r}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return type(getattr(exc, "reason", exc)).__name__


def test_etcd_and_the_api_refuse_the_controller_host_without_certificates(lb_sandbox, lb):  # noqa: F811
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    no_cert = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=unverified)
    )
    for address in _members(lb_sandbox):
        for port in (2379, 2380):
            plain = _fails(f"http://{address}:{port}/v3/kv/range", PLAIN)
            tls = _fails(f"https://{address}:{port}/v3/kv/range", no_cert)
            assert not plain.startswith("answered") and not tls.startswith("answered"), (
                address, port, plain, tls,
            )  # fmt: skip
        # the controller's certificate gets a TLS session, but no token: no keys
        with pytest.raises(urllib.error.HTTPError) as refused:
            etcd_post(lb_sandbox, address, "/v3/kv/range", {"key": "Lw=="})
        reason = refused.value.read()
        assert b"user name is empty" in reason or b"permission denied" in reason, reason
    for node in node_names(lb_sandbox):
        address = node_address(lb_sandbox, node)
        assert not _fails(f"http://{address}:7480/v1/status", PLAIN, None).startswith("answered")
        assert not _fails(f"https://{address}:7480/v1/status", no_cert, None).startswith("answered")
        assert api_get(lb_sandbox, node, "/v1/status", token="wrong")[0] == 401
        assert api_get(lb_sandbox, node, "/v1/status")[0] == 200


def test_the_agents_etcd_user_cannot_reach_beyond_its_cluster(lb_sandbox, lb):  # noqa: F811
    """The agents' user (its password is on every node) reads and writes its cluster's keys
    only: not another cluster's, not etcd's membership, not its auth settings."""
    credentials = EtcdCredentials(
        "clusterctl-agent", str(lb_sandbox.state_dir / "etcd-agent-password")
    )
    store = EtcdStore(
        [f"https://{a}:2379" for a in _members(lb_sandbox)],
        tls=controller_tls(lb_sandbox),
        credentials=credentials,
    )
    assert store.get_prefix(f"/clusterctl/{lb_sandbox.cluster}/members/")
    with pytest.raises(StoreError, match="permission denied"):
        store.put("/clusterctl/another-cluster/groups/web/leader", "x")
    with pytest.raises(StoreError, match="permission denied"):
        store.get_prefix("/")
    for path, body in (
        ("/v3/auth/disable", {}),
        ("/v3/auth/user/add", {"name": "intruder", "password": "x"}),
    ):
        with pytest.raises(StoreError, match="permission denied"):
            store._call(path, body, timeout=3)
    members = etcd_post(lb_sandbox, _members(lb_sandbox)[0], "/v3/cluster/member/list", {})
    victim = members["members"][0]["ID"]
    with pytest.raises(StoreError, match="permission denied"):
        store._call("/v3/cluster/member/remove", {"ID": victim}, timeout=3)


def _stranger(node_image: str, network: str, *extra: str) -> None:
    podman(
        "run", "-d", "--rm", "--name", ATTACKER, "--network", network, *extra,
        "--entrypoint", "sleep", node_image, "600",
    )  # fmt: skip


@pytest.fixture
def other_network(lb_sandbox, node_image) -> Iterator[str]:
    """A container on another podman network. Podman masquerades what leaves that network,
    so the nodes see it coming from the host, which the guard trusts (it is the
    controller): TLS alone must refuse it."""
    podman("rm", "-f", ATTACKER, check=False)
    podman("network", "rm", "-f", ATTACKER, check=False)
    podman("network", "create", ATTACKER)
    try:
        _stranger(node_image, ATTACKER)
        yield ATTACKER
    finally:
        podman("rm", "-f", "-t", "0", ATTACKER, check=False)
        podman("network", "rm", "-f", ATTACKER, check=False)


@pytest.fixture
def intruder(lb_sandbox, node_image) -> Iterator[str]:
    """A machine on the cluster's own network (the same LAN) that is not one of its nodes:
    a container with an address of the cluster's subnet no node has."""
    record = json.loads((lb_sandbox.state_dir / "cluster.json").read_text())
    address = str(ipaddress.ip_network(record["subnet"]).network_address + 250)
    podman("rm", "-f", ATTACKER, check=False)
    try:
        _stranger(node_image, record["network"], "--ip", address)
        yield ATTACKER
    finally:
        podman("rm", "-f", "-t", "0", ATTACKER, check=False)


def _curl_from(container: str, url: str) -> int:
    """curl's exit code from inside ``container`` (0: answered, 7: refused, 28: timeout,
    35/55/56: TLS refused)."""
    proc = podman("exec", container, "curl", "-sk", "-m", "2", "-o", "/dev/null", url, check=False)
    return proc.returncode


def test_another_network_gets_no_tls_session(lb_sandbox, lb, other_network):  # noqa: F811
    for node in node_names(lb_sandbox):
        address = node_address(lb_sandbox, node)
        assert _curl_from(other_network, f"http://{address}/") == 0  # the path exists
        for port in (2379, 2380, 7480):
            code = _curl_from(other_network, f"https://{address}:{port}/")
            assert code in (35, 55, 56), f"{node}:{port} from another network: curl exit {code}"


def test_a_stranger_on_the_lan_reaches_the_web_but_not_etcd_or_the_agents(
    lb_sandbox,
    lb,  # noqa: F811
    intruder,
):
    counters_before = {n: _guard_drops(lb_sandbox, n) for n in node_names(lb_sandbox)}
    for node in node_names(lb_sandbox):
        address = node_address(lb_sandbox, node)
        assert _curl_from(intruder, f"http://{address}/") == 0
        for port in (2379, 2380, 7480):
            code = _curl_from(intruder, f"https://{address}:{port}/")
            assert code == 28, f"{node}:{port} from the LAN: curl exit {code} (not dropped)"
    for node, before in counters_before.items():
        assert _guard_drops(lb_sandbox, node) > before, f"the guard on {node} dropped nothing"


def _guard_drops(sandbox, node: str) -> int:
    proc = podman(
        "exec", f"{sandbox.cluster}-{node}", "nft", "-j", "list", "table", "inet",
        "clusterctl_guard",
    )  # fmt: skip
    for item in json.loads(proc.stdout)["nftables"]:
        for expr in (item.get("rule") or {}).get("expr", []):
            if "counter" in expr:
                return int(expr["counter"]["packets"])
    raise AssertionError(f"no counter in {node}'s guard")


def test_the_cli_speaks_tls_and_verifies_the_agents(lb_sandbox, lb):  # noqa: F811
    """`clusterctl status` reached the agents over TLS (the cluster's CA); a client that
    trusts another CA is refused by the same agents."""
    opener = tls_opener(lb_sandbox)
    address = node_address(lb_sandbox, "node1")
    req = urllib.request.Request(f"https://{address}:7480/v1/health")
    req.add_header("Authorization", "Bearer " + api_token(lb_sandbox))
    with opener.open(req, timeout=3) as resp:
        assert resp.status == 200
    system_trust = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPSHandler(context=ssl.create_default_context()),
    )
    assert "SSLCertVerificationError" in _fails(f"https://{address}:7480/v1/health", system_trust)


def test_node_sshd_takes_keys_only_and_forwards_nothing(lb_sandbox, lb):  # noqa: F811
    """A node is no tunnel into the cluster's network: the controller's own key gets a
    shell, but a forwarding request is refused (here to the node's own etcd)."""
    for node in node_names(lb_sandbox):
        effective = podman("exec", f"{lb_sandbox.cluster}-{node}", "sshd", "-T").stdout
        for setting in ("passwordauthentication no", "kbdinteractiveauthentication no",
                        "allowtcpforwarding no", "allowagentforwarding no",
                        "x11forwarding no", "permittunnel no"):  # fmt: skip
            assert setting in effective, f"{node}: {setting} not in effect"
    state = lb_sandbox.state_dir
    address = node_address(lb_sandbox, "node1")
    base = [
        "ssh", "-i", str(state / "id_ed25519"), "-o", f"UserKnownHostsFile={state / 'known_hosts'}",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
        f"root@{address}",
    ]  # fmt: skip
    shell = subprocess.run([*base, "true"], capture_output=True, text=True, timeout=30)
    assert shell.returncode == 0, shell.stderr
    tunnel = subprocess.run(
        [*base[:-1], "-W", "127.0.0.1:2379", base[-1]],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert tunnel.returncode != 0 and "prohibited" in tunnel.stderr, tunnel.stderr
    password = subprocess.run(
        [*base[:-1], "-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no",
         base[-1], "true"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert password.returncode != 0 and "Permission denied (publickey)" in password.stderr, (
        password.stderr
    )


def _agent_pids(sandbox) -> dict[str, str]:
    return {
        node: podman(
            "exec", f"{sandbox.cluster}-{node}", "systemctl", "show", "-p", "MainPID",
            "--value", "clusterctl-agent",
        ).stdout.strip()
        for node in node_names(sandbox)
    }  # fmt: skip


def test_token_rotate_replaces_the_token_without_an_outage(lb_sandbox, lb):  # noqa: F811
    """While an API client sends whatever token the state directory holds (as the CLI
    does) and web traffic runs, `clusterctl token rotate` replaces the token: no call is
    refused, no agent restarts, the holder stays; the old token is refused afterwards."""
    old = api_token(lb_sandbox)
    pids = _agent_pids(lb_sandbox)
    refused: list[int] = []
    calls = 0
    stop = threading.Event()

    def caller() -> None:
        nonlocal calls
        while not stop.is_set():
            code, _ = api_get(lb_sandbox, "node2", "/v1/health", token=api_token(lb_sandbox))
            calls += 1
            if code == 401:
                refused.append(code)
            time.sleep(0.05)

    thread = threading.Thread(target=caller, daemon=True)
    with LoadClient(vip(lb_sandbox)) as load:
        thread.start()
        try:
            result = cli("token", "rotate", "--cluster", lb_sandbox.cluster, "--json", timeout=300)
        finally:
            stop.set()
            thread.join(timeout=10)
    assert result.rc == 0, result.stderr[-2000:]
    new = api_token(lb_sandbox)
    failed = [p for p in load.probes if p.node is None]
    print(f"\ntoken rotate: {calls} API calls, {len(refused)} refused; {len(load.probes)} web "
          f"requests, {len(failed)} failed")  # fmt: skip
    assert new != old and refused == [] and calls > 20
    assert failed == []
    assert _agent_pids(lb_sandbox) == pids  # reloaded, not restarted
    assert web_group(api_status(lb_sandbox))["node"] == lb
    for node in node_names(lb_sandbox):
        assert api_get(lb_sandbox, node, "/v1/health", token=old)[0] == 401
        assert api_get(lb_sandbox, node, "/v1/health", token=new)[0] == 200


def test_fuzzed_and_slow_clients_leave_the_agent_serving(lb_sandbox, lb):  # noqa: F811
    """On a real node: 1,000 random requests over TLS (with the controller's certificate, so
    they reach the HTTP layer), and a client trickling one byte a second, which is cut off at
    the connection deadline (15 s); the agent keeps its PID and answers normally."""
    import random
    import socket

    address = node_address(lb_sandbox, "node1")
    pid_before = _agent_pids(lb_sandbox)["node1"]
    context = controller_tls(lb_sandbox).client_context()
    token = api_token(lb_sandbox).encode()
    rng = random.Random(20261201)
    pieces = [b"GET", b"POST", b"DELETE", b"BREW", b"/v1/", b"groups/web/", b"move", b"%00",
              b"\r\n", b"Content-Length: ", b"-1", b"99999999", b"{", b"[" * 50, b'"', b"\xff",
              b"Authorization: Bearer ", token, b" HTTP/1.1", b"Host: x", b"\r\n\r\n",
              b"/..", b"?local=1", b'{"to": "node9"}', b'{"weight": 1e999}']  # fmt: skip
    answered = 0
    for _ in range(1000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 25)))
        raw = socket.create_connection((address, 7480), timeout=5)
        try:
            sock = context.wrap_socket(raw, server_hostname=address)
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            if sock.recv(65536):
                answered += 1
        except OSError:
            pass
        finally:
            raw.close()
    # the trickler
    started = time.monotonic()
    cut_after = None
    raw = socket.create_connection((address, 7480), timeout=40)
    try:
        sock = context.wrap_socket(raw, server_hostname=address)
        sock.sendall(b"GET /v1/health HTTP/1.1\r\n")
        for _ in range(40):
            sock.sendall(b"X")
            time.sleep(1.0)
    except OSError:
        cut_after = time.monotonic() - started
    finally:
        raw.close()
    print(f"\nfuzz: {answered} of 1000 answered; the trickler was cut after {cut_after} s")
    assert cut_after is not None and cut_after < 25
    assert answered > 100
    assert _agent_pids(lb_sandbox)["node1"] == pid_before
    assert api_get(lb_sandbox, "node1", "/v1/health")[0] == 200
