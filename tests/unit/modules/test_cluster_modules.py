"""cluster_failover and cluster_info against the real agent API over a simulated cluster
(sim_agent.py): the handlers the nodes run, agents that really move the group."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.unit.modules.conftest import REPO, api_args
from tests.unit.modules.sim_agent import TOKEN


def test_info_returns_whole_status_and_never_changes(agent, run_module):
    for check in (False, True):
        result, _ = run_module("cluster_info", api_args(agent), check=check)
        assert result["changed"] is False
        assert result["cluster"]["cluster"] == agent.status()["cluster"]
        assert [g["node"] for g in result["cluster"]["groups"]] == ["node1"]
    assert agent.writes() == []


def test_moved_already_on_target_is_not_changed(agent, run_module):
    result, _ = run_module("cluster_failover", api_args(agent, group="web", node="node1"))
    assert result["changed"] is False
    assert (result["holder_before"], result["holder"]) == ("node1", "node1")
    assert agent.writes() == []


def test_move_changes_and_polls_until_started(agent, run_module):
    result, _ = run_module("cluster_failover", api_args(agent, group="web", node="node2"))
    assert result["changed"] is True, result
    assert (result["holder_before"], result["holder"]) == ("node1", "node2")
    assert result["group_state"] == "started"
    assert agent.writes() == [("POST", "/v1/groups/web/move", {"to": "node2"})]
    # The agents take a few steps to move it: the module had to read the status repeatedly.
    assert agent.status_reads() >= 2
    # Running it again is a no-op.
    again, _ = run_module("cluster_failover", api_args(agent, group="web", node="node2"))
    assert again["changed"] is False
    assert len(agent.writes()) == 1


def test_check_mode_reports_change_without_writing(agent, run_module):
    result, _ = run_module(
        "cluster_failover", api_args(agent, group="web", node="node2"), check=True, diff=True
    )
    assert result["changed"] is True
    assert result["holder"] == "node2"
    assert result["diff"]["after"]["holder"] == "node2"
    assert agent.writes() == []
    assert agent.group()["node"] == "node1"


def test_diff_shows_holder_before_and_after(agent, run_module):
    result, _ = run_module(
        "cluster_failover", api_args(agent, group="web", node="node3"), diff=True
    )
    assert result["changed"] is True
    assert result["diff"]["before"]["holder"] == "node1"
    assert result["diff"]["after"]["holder"] == "node3"
    assert result["diff"]["after"]["move"] is None


def test_ban_and_unban_are_idempotent(agent, run_module):
    ban = api_args(agent, group="web", state="banned", node="node3")
    unban = dict(ban, state="unbanned")
    first, _ = run_module("cluster_failover", ban)
    second, _ = run_module("cluster_failover", ban)
    assert (first["changed"], second["changed"]) == (True, False)
    assert second["bans"] == ["node3"]
    third, _ = run_module("cluster_failover", unban)
    fourth, _ = run_module("cluster_failover", unban)
    assert (third["changed"], fourth["changed"]) == (True, False)
    assert fourth["bans"] == []
    assert [w[1] for w in agent.writes()] == ["/v1/groups/web/ban", "/v1/groups/web/unban"]


def test_cleared_and_cleaned_only_when_needed(agent, run_module):
    agent.call("POST", "/v1/groups/web/ban", {"node": "node2"})
    agent.set_failcount("node1", 2)
    agent.wait(lambda: agent.group()["failcounts"].get("node1") == 2)
    cleared, _ = run_module("cluster_failover", api_args(agent, group="web", state="cleared"))
    cleaned, _ = run_module("cluster_failover", api_args(agent, group="web", state="cleaned"))
    assert (cleared["changed"], cleaned["changed"]) == (True, True)
    again = [
        run_module("cluster_failover", api_args(agent, group="web", state=s))[0]["changed"]
        for s in ("cleared", "cleaned")
    ]
    assert again == [False, False]
    assert agent.group()["bans"] == [] and not any(agent.group()["failcounts"].values())


def test_moved_without_node_moves_away_from_holder(agent, run_module):
    result, _ = run_module("cluster_failover", api_args(agent, group="web"))
    assert result["changed"] is True
    assert result["holder_before"] == "node1"
    assert result["holder"] not in (None, "node1")
    assert agent.writes() == [("POST", "/v1/groups/web/move", {"to": None})]


def test_move_to_banned_node_fails_with_api_error(agent, run_module):
    agent.call("POST", "/v1/groups/web/ban", {"node": "node2"})
    result, _ = run_module("cluster_failover", api_args(agent, group="web", node="node2"))
    assert result["failed"] is True
    assert "banned" in result["msg"] and result["status"] == 409
    checked, _ = run_module(
        "cluster_failover", api_args(agent, group="web", node="node2"), check=True
    )
    assert checked["failed"] is True and "banned" in checked["msg"]


def test_unknown_group_and_node_fail_clearly(agent, run_module):
    result, _ = run_module("cluster_failover", api_args(agent, group="db", node="node2"))
    assert result["failed"] is True and "group 'db' not found" in result["msg"]
    result, _ = run_module("cluster_failover", api_args(agent, group="web", node="node9"))
    assert result["failed"] is True and "node 'node9' is not a member" in result["msg"]
    assert agent.writes() == []


def test_move_that_never_completes_times_out(agent, run_module):
    agent.paused.set()  # the agents stop: the move is asked for and never carried out
    args = api_args(agent, group="web", node="node2", timeout=0.6)
    result, _ = run_module("cluster_failover", args)
    assert result["failed"] is True
    assert "not started on node2 within 0.6 s" in result["msg"]
    assert "state=moving" in result["msg"]


def test_wrong_token_fails_with_clear_message(agent, run_module):
    args = dict(api_args(agent, group="web", node="node2"), api_token="wrong")
    result, _ = run_module("cluster_failover", args)
    assert result["failed"] is True
    assert "missing or invalid bearer token" in result["msg"]
    assert "api_token" in result["msg"] and result["status"] == 401
    info, _ = run_module("cluster_info", dict(api_args(agent), api_token="wrong"))
    assert info["failed"] is True and "invalid bearer token" in info["msg"]
    assert agent.requests == []  # the proxy records authorised requests only


def test_unreachable_first_endpoint_falls_through(agent, run_module, closed_port_url):
    args = dict(api_args(agent, group="web", node="node2"), api_url=[closed_port_url, agent.url])
    result, _ = run_module("cluster_failover", args)
    assert result["changed"] is True and result["holder"] == "node2"
    info, _ = run_module(
        "cluster_info", dict(api_args(agent), api_url=[closed_port_url, agent.url])
    )
    assert info["cluster"]["groups"][0]["node"] == "node2"


def test_no_endpoint_answers(run_module, closed_port_url):
    result, _ = run_module("cluster_info", {"api_url": [closed_port_url], "api_token": "x"})
    assert result["failed"] is True
    assert "no agent API endpoint answered" in result["msg"]
    assert "refused" in result["msg"].lower()


def test_token_file_is_read_and_not_echoed(agent, run_module, tmp_path):
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN + "\n")
    args = {"api_url": [agent.url], "api_token_file": str(token_file)}
    result, stdout = run_module("cluster_info", args)
    assert result["changed"] is False
    assert TOKEN not in stdout
    missing, _ = run_module("cluster_info", dict(args, api_token_file=str(tmp_path / "nope")))
    assert missing["failed"] is True and "cannot read api_token_file" in missing["msg"]


def test_through_ansible_cli_check_and_diff(agent, ansible_env):
    """The FQCN resolves through ansible.cfg's collections_path; --check writes nothing."""
    module_args = json.dumps(
        {"api_url": [agent.url], "api_token": TOKEN, "group": "web", "node": "node2"}
    )
    proc = subprocess.run(
        ["ansible", "localhost", "-i", "localhost,", "-c", "local", "--check", "--diff", "-o",
         "-e", f"ansible_python_interpreter={sys.executable}",
         "-m", "clusterctl.cluster.cluster_failover", "-a", module_args],
        capture_output=True, text=True, env=ansible_env, cwd=REPO, timeout=40,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("localhost | "))
    assert line.startswith("localhost | CHANGED => "), line
    result = json.loads(line.split(" => ", 1)[1])
    assert (result["holder_before"], result["holder"]) == ("node1", "node2")
    assert "node2" in proc.stdout  # the diff
    assert agent.writes() == []


def test_failover_playbook(agent, ansible_env, tmp_path):
    """playbooks/failover.yml moves web to node3 and asserts it ends there."""
    inventory = tmp_path / "inventory.yml"
    hosts = {f"node{i}": {"ansible_host": "127.0.0.1"} for i in (1, 2, 3)}
    port = int(agent.url.rsplit(":", 1)[1])
    inventory.write_text(
        json.dumps(
            {"all": {"children": {"cluster": {"hosts": hosts}},
                     "vars": {"clusterctl_api_port": port,
                              "ansible_python_interpreter": "/usr/bin/python3"}}}
        )
    )  # fmt: skip
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN)
    base = ["ansible-playbook", "-i", str(inventory), "playbooks/failover.yml", "-e", "group=web"]

    def play(*extra):
        return subprocess.run(
            [*base, *extra], capture_output=True, text=True, env=ansible_env, cwd=REPO, timeout=60
        )

    proc = play("-e", "to=node3", "-e", f"clusterctl_api_token_file={token_file}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "web runs on node3 (before: node1)" in proc.stdout
    assert agent.group()["node"] == "node3"
    proc = play("-e", "to=node3")
    assert proc.returncode != 0
    assert "clusterctl_api_token_file=<state dir>/api-token" in proc.stdout + proc.stderr
