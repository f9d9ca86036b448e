"""First contact and later contacts: a recorded host key is checked whatever its type."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from clusterctl import sshcheck
from clusterctl.errors import ClusterctlError
from clusterctl.inventory import InventoryNode

NODE = InventoryNode("node1", "10.0.0.11")


def _trust(monkeypatch, known: Path, key: paramiko.PKey) -> None:
    probe = sshcheck.SshProbe("node1", True, True, key)
    monkeypatch.setattr(sshcheck, "probe_all", lambda nodes, key_for, timeout: {"node1": probe})
    sshcheck.wait_and_trust([NODE], lambda n: Path("/unused"), known, 1.0)


def test_first_contact_records_then_the_same_key_passes(monkeypatch, tmp_path) -> None:
    known = tmp_path / "known_hosts"
    key = paramiko.ECDSAKey.generate()
    _trust(monkeypatch, known, key)
    assert known.read_text().startswith("10.0.0.11 ")
    _trust(monkeypatch, known, key)  # unchanged: accepted again


def test_a_key_of_another_type_is_refused(monkeypatch, tmp_path) -> None:
    known = tmp_path / "known_hosts"
    _trust(monkeypatch, known, paramiko.ECDSAKey.generate())
    before = known.read_text()
    with pytest.raises(ClusterctlError, match="SSH host key of node1 .* changed"):
        _trust(monkeypatch, known, paramiko.RSAKey.generate(2048))
    assert known.read_text() == before  # nothing added


def test_a_changed_key_of_the_same_type_is_refused(monkeypatch, tmp_path) -> None:
    known = tmp_path / "known_hosts"
    _trust(monkeypatch, known, paramiko.ECDSAKey.generate())
    with pytest.raises(ClusterctlError, match="changed since it was recorded"):
        _trust(monkeypatch, known, paramiko.ECDSAKey.generate())
