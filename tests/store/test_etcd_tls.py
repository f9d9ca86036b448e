"""etcd as the roles run it: mutual TLS with the cluster's CA, RBAC set up by the etcd_auth
module, and the agent's store authenticating as the user limited to its cluster's keys.
A real etcd on loopback, restarted once to prove that a forgotten token is replaced."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clusterctl.agent.store.base import StoreError, StoreUnavailable
from clusterctl.agent.store.etcd import EtcdCredentials, EtcdStore
from clusterctl.agent.tls import TlsFiles
from clusterctl.pki import ClusterCA
from tests.store.conftest import ETCD_PACKAGE, REPO, _free_port
from tests.tools import require_tool

PREFIX = "/clusterctl/tls/"


@dataclass
class TlsEtcd:
    url: str
    peer: int
    data_dir: Path
    ca: ClusterCA
    node_tls: TlsFiles
    controller_tls: TlsFiles
    root_password: Path
    agent_password: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        etcd = require_tool(*ETCD_PACKAGE)
        cert, key = self.node_tls.cert, self.node_tls.key
        peer = f"https://127.0.0.1:{self.peer}"
        log = open(self.data_dir / "etcd.log", "ab")  # noqa: SIM115 - the process keeps it
        self.proc = subprocess.Popen(
            [
                etcd,
                "--name=tls",
                f"--data-dir={self.data_dir}/data",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=tls={peer}",
                f"--cert-file={cert}",
                f"--key-file={key}",
                f"--trusted-ca-file={self.ca.ca_cert}",
                "--client-cert-auth",
                f"--peer-cert-file={cert}",
                f"--peer-key-file={key}",
                f"--peer-trusted-ca-file={self.ca.ca_cert}",
                "--peer-client-cert-auth",
                "--bcrypt-cost=4",
                "--heartbeat-interval=50",
                "--election-timeout=500",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        context = self.controller_tls.client_context()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                import urllib.request

                opener = urllib.request.build_opener(
                    urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
                )
                with opener.open(self.url + "/health", timeout=0.5) as resp:
                    if b'"health":"true"' in resp.read():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        tail = (self.data_dir / "etcd.log").read_text(errors="replace")[-2000:]
        pytest.fail(f"TLS etcd did not become ready:\n{tail}")

    def stop(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)  # exactly the process we started
            self.proc.wait(timeout=5)
            self.proc = None

    def store(self, user: str = "clusterctl-agent", password: Path | None = None) -> EtcdStore:
        credentials = EtcdCredentials(user, str(password or self.agent_password))
        return EtcdStore(
            [self.url], 0.5, tls=self.node_tls, credentials=credentials,
            quorum_key=PREFIX + "members/node1",  # its renewals are confirmed within its grant
        )  # fmt: skip


def run_etcd_auth(etcd: TlsEtcd, tmp: Path, check: bool = False) -> dict:
    """The etcd_auth module as the etcd role runs it (from the controller), via ansible."""
    pki = etcd.ca.dir
    task = {
        "clusterctl.cluster.etcd_auth": {
            "endpoints": [etcd.url],
            "ca_path": str(pki / "ca.crt"),
            "client_cert": str(pki / "controller.crt"),
            "client_key": str(pki / "controller.key"),
            "root_password_file": str(etcd.root_password),
            "roles": [{"name": "clusterctl-tls", "prefix": PREFIX}],
            "users": [
                {
                    "name": "clusterctl-agent",
                    "password_file": str(etcd.agent_password),
                    "roles": ["clusterctl-tls"],
                }
            ],
        },
        "register": "result",
    }
    play = [
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": sys.executable},
            "tasks": [
                task,
                {
                    "ansible.builtin.copy": {
                        "content": "{{ result | to_json }}",
                        "dest": str(tmp / "result.json"),
                    },
                    "check_mode": False,
                },
            ],
        }
    ]
    playbook = tmp / "etcd_auth.yml"
    playbook.write_text(json.dumps(play))
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"),
    )
    args = [str(Path(sys.executable).parent / "ansible-playbook"), str(playbook)]
    if check:
        args.append("--check")
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return json.loads((tmp / "result.json").read_text())


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory) -> Iterator[TlsEtcd]:
    tmp = tmp_path_factory.mktemp("tls-etcd")
    ca = ClusterCA(tmp / "pki", "tls")
    node = ca.ensure_node("tls", ["127.0.0.1"])
    controller = ca.ensure_controller()
    for name in ("root", "agent"):
        (tmp / f"{name}-password").write_text(f"{name}-{os.urandom(8).hex()}\n")
        (tmp / f"{name}-password").chmod(0o600)
    etcd = TlsEtcd(
        url=f"https://127.0.0.1:{_free_port()}",
        peer=_free_port(),
        data_dir=tmp,
        ca=ca,
        node_tls=TlsFiles(str(ca.ca_cert), str(node.cert), str(node.key)),
        controller_tls=TlsFiles(str(ca.ca_cert), str(controller.cert), str(controller.key)),
        root_password=tmp / "root-password",
        agent_password=tmp / "agent-password",
    )
    etcd.start()
    try:
        yield etcd
    finally:
        etcd.stop()


@pytest.fixture(scope="module")
def rbac(tls_etcd: TlsEtcd, tmp_path_factory) -> list[dict]:
    """etcd_auth run three times: check mode, for real, again. Returns the three results."""
    tmp = tmp_path_factory.mktemp("etcd-auth")
    return [
        run_etcd_auth(tls_etcd, tmp, check=True),
        run_etcd_auth(tls_etcd, tmp),
        run_etcd_auth(tls_etcd, tmp),
    ]


def test_a_running_agent_keeps_working_when_auth_is_turned_on(tls_etcd, request) -> None:
    """As on a new cluster or an upgraded one: the agents run before the last play turns
    auth on. Their store sends no token while auth is off; once it is on, etcd refuses the
    token-less request and the store authenticates, within the same call."""
    store = tls_etcd.store()
    store.put(PREFIX + "early", "1")
    assert store._token == ""
    request.getfixturevalue("rbac")  # etcd_auth turns authentication on
    assert store.get(PREFIX + "early") == "1"
    assert store._token


def test_etcd_auth_module_is_idempotent_and_honours_check_mode(rbac) -> None:
    check, first, again = rbac
    assert check["changed"] and "enable authentication" in check["actions"]
    assert check["auth_enabled"] is False  # check mode changed nothing
    assert first["changed"] and first["actions"] == check["actions"]
    assert first["auth_enabled"] is True
    assert again["changed"] is False and again["actions"] == []


def test_agent_user_reads_and_writes_only_its_cluster(tls_etcd, rbac) -> None:
    store = tls_etcd.store()
    store.put(PREFIX + "k", "v")
    assert store.get(PREFIX + "k") == "v"
    lease = store.grant_lease(2)
    store.put(PREFIX + "leased", "x", lease=lease)
    assert store.keepalive(lease) > 0
    store.revoke(lease)
    assert store.get(PREFIX + "leased") is None
    assert store.member_ready(tls_etcd.url, PREFIX) is True
    with pytest.raises(StoreError, match="permission denied"):
        store.get("/clusterctl/other/k")
    with pytest.raises(StoreError, match="permission denied"):
        store.put("/elsewhere", "v")


def test_no_certificate_or_another_ca_gets_nothing(tls_etcd, rbac, tmp_path) -> None:
    # https without a client certificate: the handshake is refused
    context = ssl.create_default_context(cafile=str(tls_etcd.ca.ca_cert))
    import urllib.request

    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    request = urllib.request.Request(tls_etcd.url + "/v3/kv/range", data=b'{"key":"Lw=="}')
    with pytest.raises(OSError):
        opener.open(request, timeout=2).read()
    # plain http on the TLS port
    with pytest.raises(StoreUnavailable):
        EtcdStore([tls_etcd.url.replace("https:", "http:")], 0.5).get(PREFIX + "k")
    # a certificate of another cluster's CA, even with the right password
    other = ClusterCA(tmp_path / "other", "other")
    issued = other.ensure_node("tls", ["127.0.0.1"])
    foreign = TlsFiles(str(tls_etcd.ca.ca_cert), str(issued.cert), str(issued.key))
    credentials = EtcdCredentials("clusterctl-agent", str(tls_etcd.agent_password))
    with pytest.raises(StoreUnavailable):
        EtcdStore([tls_etcd.url], 0.5, tls=foreign, credentials=credentials).get(PREFIX + "k")
    # a server certificate of another CA is not trusted by the client either
    spoof = TlsFiles(str(other.ca_cert), tls_etcd.node_tls.cert, tls_etcd.node_tls.key)
    with pytest.raises(StoreUnavailable):
        EtcdStore([tls_etcd.url], 0.5, tls=spoof, credentials=credentials).get(PREFIX + "k")


def test_wrong_password_is_refused_in_one_line(tls_etcd, rbac, tmp_path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    with pytest.raises(StoreError, match="refused user 'clusterctl-agent'"):
        tls_etcd.store(password=wrong).get(PREFIX + "k")


def test_a_restarted_member_is_reached_again_on_the_same_client(tls_etcd, rbac) -> None:
    """The kept-alive TLS connection dies with the member (an EOF where the answer should
    be): the request is sent again on a new connection, within the same call."""
    store = tls_etcd.store()
    store.put(PREFIX + "before", "1")
    tls_etcd.stop()
    tls_etcd.start()
    assert store.get(PREFIX + "before", timeout=5) == "1"


def test_a_token_the_member_does_not_know_is_replaced_within_one_call(tls_etcd, rbac) -> None:
    """etcd keeps tokens in memory (a member restored from a snapshot, or one that expired
    the token, does not know it): the store authenticates again and retries once."""
    store = tls_etcd.store()
    store.put(PREFIX + "k", "v")
    store._token = "forgotten.1"
    assert store.get(PREFIX + "k") == "v"
    assert store._token not in ("", "forgotten.1")


def test_an_auth_change_racing_a_request_makes_the_store_authenticate_again() -> None:
    """etcd answers "revision of auth store is old" to a request received before a change of
    users or roles and applied after it (the etcd role makes such changes while agents run;
    seen on real nodes as a failed loop iteration): authenticate again and retry."""
    from clusterctl.agent.store.etcd import _needs_token

    assert _needs_token(3, "etcdserver: revision of auth store is old", "a-token")
    assert not _needs_token(7, "etcdserver: permission denied", "a-token")


def test_a_watch_refused_for_a_forgotten_token_is_reopened_with_a_new_one(tls_etcd, rbac) -> None:
    """A stream cannot authenticate again the way a call does: etcd cancels it
    ("invalid auth token"), and the copy's next stream is opened with a new token."""
    from clusterctl.agent.store.watch import KeyspaceMirror

    writer, source = tls_etcd.store(), tls_etcd.store()
    writer.put(PREFIX + "w/before", "1")
    mirror = KeyspaceMirror(source, PREFIX + "w/", PREFIX + "w0")
    mirror.start()
    try:
        deadline = time.monotonic() + 10
        while mirror._stream is None or mirror.state is None:
            assert time.monotonic() < deadline, "no stream opened"
            time.sleep(0.02)
        source._token = "forgotten.1"  # as after the member restarted
        mirror._stream.close()
        writer.put(PREFIX + "w/after", "2")
        while dict(mirror.state.kv) != {PREFIX + "w/before": "1", PREFIX + "w/after": "2"}:
            assert time.monotonic() < deadline + 10, dict(mirror.state.kv)
            time.sleep(0.05)
        assert source._token not in ("forgotten.1", None, "")
        assert mirror.reopens >= 2  # the stream closed, then the one refused
    finally:
        mirror.stop()
