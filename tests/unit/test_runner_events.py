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
    assert lines[1].endswith("task 1: Install nginx")  # at its start: no "0/3 hosts done"
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


def test_the_task_count_is_out_of_the_last_complete_runs_total():
    reporter = ListReporter()
    tracker = _ProgressTracker(reporter, host_count=2, expected_tasks=2)
    tracker(event("playbook_on_play_start", play="Converge"))
    for task in ("One", "Two", "Three"):  # one more than last time (an include)
        tracker(event("playbook_on_task_start", task=task))
        tracker(event("runner_on_ok", host="node1", task=task, res={}))
    lines = [m for k, m in reporter.messages if k == "progress"]
    assert lines[1] == "Converge > task 1/2: One"
    assert lines[2] == "Converge > task 1/2: One (1/2 hosts done)"
    assert lines[5] == "Converge > task 3: Three"  # past the known total: no wrong fraction


def test_the_count_is_kept_per_playbook_after_a_complete_run(tmp_path):
    from clusterctl.runner import _read_counts, _write_count

    path = tmp_path / "task-counts.json"
    assert _read_counts(path) == {}
    _write_count(path, "site.yml", 95)
    _write_count(path, "site.yml --check", 90)
    assert _read_counts(path) == {"site.yml": 95, "site.yml --check": 90}
    path.write_text("not json")
    assert _read_counts(path) == {}


def test_a_converge_names_the_files_and_running_units_it_manages():
    tracker = _ProgressTracker(ListReporter(), host_count=1)
    copy, template = "ansible.builtin.copy", "ansible.builtin.template"
    for action, res in [
        (template, {"dest": "/etc/default/etcd", "path": "/etc/default/etcd"}),
        ("ansible.builtin.file", {"path": "/etc/etcd/pki", "state": "directory"}),
        (copy, {"results": [{"dest": "/etc/etcd/pki/ca.crt"}, {"dest": "/etc/etcd/pki/n.crt"}]}),
        (copy, {"censored": "the output has been hidden (no_log)"}),  # a key: no name
        ("ansible.builtin.systemd_service", {"name": "etcd", "state": "started"}),
        ("ansible.builtin.systemd_service", {"name": "haproxy", "state": "stopped"}),
        ("ansible.builtin.command", {"stdout": "/etc/shadow"}),
    ]:
        tracker(event("runner_on_ok", host="node1", task="t", task_action=action, res=res))
    digest = {"digest": "ab12", "items": {"boot links": "cd34"}}
    tracker(event("runner_on_ok", host="node2", task="d",
                  task_action="clusterctl.cluster.node_digest", res=digest))  # fmt: skip
    assert tracker.managed["node1"].to_dict() == {
        "paths": ["/etc/default/etcd", "/etc/etcd/pki", "/etc/etcd/pki/ca.crt",
                  "/etc/etcd/pki/n.crt"],
        "units": ["etcd"],
    }  # fmt: skip
    assert tracker.digests == {"node2": {"boot links": "cd34"}}
