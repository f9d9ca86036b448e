"""Fixtures: the real agent API over a simulated cluster (``agent``; ``lb_agent`` with a load
balancer, sim_agent.py), and runners that execute the modules the way Ansible does (JSON args
file → stdout JSON), or through the real `ansible` CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.modules.sim_agent import SimAgentApi

REPO = Path(__file__).resolve().parents[3]
COLLECTIONS = REPO / ".collections"
MODULE_PKG = "ansible_collections.clusterctl.cluster.plugins.modules"
VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def lb_agent():
    with SimAgentApi(lb=True) as real:
        yield real


@pytest.fixture
def agent():
    with SimAgentApi() as real:
        yield real


@pytest.fixture
def closed_port_url():
    """A URL on which nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def run_module(tmp_path):
    """run_module(name, args, check=False, diff=False) -> (result dict, raw stdout)."""

    def run(name, args, check=False, diff=False, timeout=20):
        module_args = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
        args_file = tmp_path / f"{name}-args.json"
        args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": module_args}))
        env = dict(os.environ, PYTHONPATH=str(COLLECTIONS))
        proc = subprocess.run(
            [sys.executable, "-m", f"{MODULE_PKG}.{name}", str(args_file)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=timeout,
        )
        try:
            result = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"no JSON: {proc.stdout!r} {proc.stderr!r}") from None
        assert bool(result.get("failed")) == (proc.returncode != 0), proc.stdout
        return result, proc.stdout

    return run


@pytest.fixture
def ansible_env(tmp_path):
    """Environment for the real ansible CLIs, using the repo's ansible.cfg."""
    return dict(
        os.environ,
        PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
    )


def api_args(api, **extra):
    """Module arguments for ``api``  with its token."""
    return dict(api_url=[api.url], api_token=api.token, **extra)
