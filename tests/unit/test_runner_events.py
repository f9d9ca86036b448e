from clusterctl.reporter import ListReporter
from clusterctl.runner import _ProgressTracker, _recap


def event(kind, **data):
    return {"event": kind, "event_data": data}


def test_progress_failures_and_recap():
    reporter = ListReporter()
    tracker = _ProgressTracker(reporter, host_count=3)
    tracker(event("playbook_on_play_start", play="Converge cluster nodes"))
    tracker(event("playbook_on_task_start", task="Install nginx"))
    tracker(event("runner_on_ok", host="node1", task="Install nginx", res={}))
    tracker(event("runner_on_failed", host="node2", task="Install nginx", res={"msg": "no space"}))
    tracker(event("runner_on_failed", host="node3", task="x", ignore_errors=True, res={}))
    tracker(event("runner_on_unreachable", host="node3", task="Install nginx", res={"msg": "down"}))
    tracker(
        event(
            "playbook_on_stats",
            ok={"node1": 5, "node2": 2},
            changed={"node1": 1},
            failures={"node2": 1},
            dark={"node3": 1},
        )
    )
    lines = [m for k, m in reporter.messages if k == "progress"]
    assert lines[0] == "play: Converge cluster nodes"
    assert "task 1: Install nginx (0/3 hosts done)" in lines[1]
    assert "(3/3 hosts done)" in lines[-1]
    assert [f.sentence() for f in tracker.failures] == [
        "node2 failed at task 'Install nginx': no space",
        "node3 unreachable at task 'Install nginx': down",
    ]
    recap = _recap(tracker.stats)
    assert recap["node1"].changed == 1 and recap["node1"].ok == 5
    assert recap["node2"].failed == 1
    assert recap["node3"].unreachable == 1


def test_changes_carry_a_unified_diff():
    tracker = _ProgressTracker(ListReporter(), host_count=1)
    diff = {"before": "a\nb\n", "after": "a\nc\n", "before_header": "/etc/x", "after_header": "t"}
    res = {"changed": True, "diff": [diff]}
    tracker(event("runner_on_ok", host="node1", task="Configure x", res=res))
    tracker(event("runner_on_ok", host="node2", task="Configure x", res={"changed": False}))
    [change] = tracker.changes
    assert (change.host, change.task) == ("node1", "Configure x")
    assert change.diff.splitlines() == ["--- /etc/x", "+++ t", "@@ -1,2 +1,2 @@", " a", "-b", "+c"]


def test_a_changed_host_key_is_said_in_one_line():
    banner = "@" * 60 + " WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! " + "@" * 60
    res = {"msg": f"Data could not be sent to remote host. {banner} ... " * 3}
    tracker = _ProgressTracker(ListReporter(), host_count=1)
    tracker(event("runner_on_unreachable", host="node1", task="Gathering Facts", res=res))
    [failure] = tracker.failures
    assert failure.unreachable
    assert failure.message.startswith("Host key verification failed")
