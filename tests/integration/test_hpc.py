"""HPC clusters on real sandbox nodes: Slurm from Debian, its controller the agent's group
``slurm`` (VIP + slurmctld, state on the storage every node mounts, fenced).

One 4-node cluster for the module: a 3-node job can run while the controller's node is
killed. Jobs are Slurm's own (sbatch/srun on a node) or `clusterctl hpc run`."""

from __future__ import annotations

import functools
import re
import threading
import time

import pytest

from clusterctl.providers.podman import SHARED_DIR
from clusterctl.slurm import EXAMPLES_DIR

from .conftest import cli, podman
from .hahelpers import (
    HolderSampler,
    bring_back,
    container,
    container_state,
    node_exec,
    node_names,
    started_on,
    wait_for,
)
from .rejoinhelpers import online

GENEROUS = 60.0  # seconds: a bound for "it happened", not a performance target
SAVE_WINDOW = 5.0  # slurmctld writes its state at most this often (SAVE_MAX_WAIT)


class SlurmctldSampler(HolderSampler):
    """Whether slurmctld runs on each node, sampled every 50 ms from inside the node."""

    LOOP = (
        'end=$(( $(date +%s) + {limit} )); while [ "$(date +%s)" -lt "$end" ]; do '
        'echo "$(date +%s.%N) $(pgrep -x slurmctld >/dev/null && echo RUNNING)"; '
        "sleep {interval}; done"
    )

    def holds(self, sample: str) -> bool:
        return "RUNNING" in sample


def sh(sandbox, node: str, script: str, timeout: float = 60) -> tuple[int, str]:
    proc = podman("exec", container(sandbox, node), "sh", "-c", script, check=False)
    return proc.returncode, proc.stdout + proc.stderr


controller = functools.partial(started_on, name="slurm")  # the node slurmctld runs on


def other_than(sandbox, *nodes: str) -> str:
    return next(n for n in node_names(sandbox) if n not in nodes)


def sbatch(sandbox, node: str, *args: str) -> int:
    rc, out = sh(sandbox, node, "cd /tmp && sbatch --parsable " + " ".join(args))
    assert rc == 0, out
    return int(out.strip().split(";")[0])


def job_state(sandbox, node: str, job: int) -> dict[str, str]:
    """JobState, ExitCode, Restarts, ... of a job as `scontrol show job` says ({} unknown)."""
    rc, out = sh(sandbox, node, f"scontrol show job {job}")
    if rc != 0:
        return {}
    return dict(re.findall(r"(\w+)=(\S*)", out))


def slurm_nodes(sandbox, node: str) -> dict[str, str]:
    rc, out = sh(sandbox, node, "sinfo -N -h -o '%N %T'")
    if rc != 0:
        return {}
    return dict(line.split() for line in out.splitlines() if len(line.split()) == 2)


def duplicate_drains(sandbox, node: str) -> list[str]:
    """Nodes Slurm drained because a job ID came twice (see the crash test)."""
    rc, out = sh(sandbox, node, "sinfo -N -h -o '%N|%E'")
    rows = [line.split("|", 1) for line in out.splitlines() if "|" in line]
    return sorted({name for name, reason in rows if "Duplicate jobid" in reason})


def completed(sandbox, node: str, job: int) -> bool:
    return job_state(sandbox, node, job).get("JobState") == "COMPLETED"


@pytest.fixture
def hpc(hpc_sandbox):
    """The hpc cluster, healed: every node running and idle in Slurm, no job queued."""
    _heal(hpc_sandbox)
    yield hpc_sandbox
    _heal(hpc_sandbox)


def _heal(sandbox) -> None:
    names = node_names(sandbox)
    bring_back(sandbox, names, check=False)
    try:
        wait_for(lambda: online(sandbox) == set(names), 180, 0.5, "every node online")
    except AssertionError as exc:
        status = cli("status", "--cluster", sandbox.cluster)
        raise AssertionError(f"{exc}\n{status.stdout}{status.stderr[-1000:]}") from None
    asker = wait_for(lambda: controller(sandbox), GENEROUS, 0.5, "the controller started")
    sh(sandbox, asker, "scancel --state=PENDING; scancel --state=RUNNING")
    # a job lost in the state-save window of a crash can leave a node drained for a
    # "Duplicate jobid" (Slurm's own doing): resume whatever is not idle
    for node, state in slurm_nodes(sandbox, asker).items():
        if state not in ("idle",):
            sh(sandbox, asker, f"scontrol update NodeName={node} State=RESUME")
    wait_for(
        lambda: set(slurm_nodes(sandbox, asker).values()) == {"idle"}
        and len(slurm_nodes(sandbox, asker)) == len(names),
        GENEROUS, 1.0, "every Slurm node idle",
    )  # fmt: skip


def test_a_job_spans_every_node_and_returns_the_exact_count(hpc):
    run = cli(
        "hpc", "run", "--cluster", hpc.cluster, "--",
        "python3", f"{EXAMPLES_DIR}/primes.py", "100000000", timeout=300,
    )  # fmt: skip
    assert run.rc == 0, run.stderr[-2000:]
    assert "primes below 100000000: 5761455 (4 ranks on 4 nodes" in run.stdout, run.stdout
    ranks = re.findall(r"rank (\d+) on (\S+): (\d+) primes", run.stdout)
    assert sorted(host for _, host, _ in ranks) == sorted(node_names(hpc)), run.stdout
    assert all(int(count) > 0 for _, _, count in ranks)  # every node did its share
    assert sum(int(count) for _, _, count in ranks) == 5_761_455
    print(f"\n{run.stdout.strip()}")


def test_bad_input_and_a_failing_job_are_one_line_errors(hpc, tmp_path):
    failing = cli("hpc", "run", "--cluster", hpc.cluster, "-N", "2", "--", "false")
    assert failing.rc != 0
    assert "error: the job failed (srun exit status 1)" in failing.stderr
    too_many = cli("hpc", "run", "--cluster", hpc.cluster, "-N", "9", "--", "true")
    assert too_many.rc != 0 and "error: -N 9: the cluster has 4 nodes" in too_many.stderr
    small = cli("up", "--cluster", "it-hpc-small", "--profile", "hpc", "--nodes", "2")
    assert small.rc != 0 and "error:" in small.stderr and "3" in small.stderr
    lb_like = cli("hpc", "run", "--cluster", "it-no-such", "--", "true")
    assert lb_like.rc != 0 and "does not exist" in lb_like.stderr
    for result in (failing, too_many, small, lb_like):
        assert "Traceback" not in result.stderr
        assert len([x for x in result.stderr.splitlines() if x.startswith("error:")]) == 1


def test_drain_lets_running_jobs_finish_and_takes_no_new_ones(hpc):
    asker = node_names(hpc)[0]
    target = node_names(hpc)[-1]
    running = sbatch(hpc, asker, "-N", "4", "--wrap", "'srun sleep 6'")
    wait_for(lambda: job_state(hpc, asker, running).get("JobState") == "RUNNING", 30, 0.5,
             "the 4-node job running")  # fmt: skip
    drained = cli("drain", target, "--cluster", hpc.cluster, "--json")
    assert drained.rc == 0, drained.stderr
    assert drained.json()["state"] in ("draining", "drained")
    waiting = sbatch(hpc, asker, "-N", "4", "--wrap", "true")
    wait_for(lambda: completed(hpc, asker, running), 60, 0.5, "the running job completed")
    assert job_state(hpc, asker, running)["Restarts"] == "0"
    time.sleep(3)  # the scheduler ran: the 4-node job cannot start on a drained node
    assert job_state(hpc, asker, waiting)["JobState"] == "PENDING"
    assert slurm_nodes(hpc, asker)[target] == "drained"
    status = cli("status", "--cluster", hpc.cluster, "--json").json()["slurm"]
    assert {n["name"]: n["state"] for n in status["nodes"]}[target] == "drained"
    assert status["pending"] == 1
    assert cli("undrain", target, "--cluster", hpc.cluster).rc == 0
    wait_for(lambda: completed(hpc, asker, waiting), 60, 0.5, "the waiting job ran")


def test_a_crashed_controller_serves_again_and_a_running_job_completes(hpc):
    """podman kill of the controller's node while a 3-node job runs on the others and a
    client submits a job every 0.5 s, each under its own name (a lost job is told apart from
    any later job, whatever its ID). The client's jobs leave out the killed node: Slurm itself
    would schedule onto it until SlurmdTimeout marks it down."""
    old = wait_for(lambda: controller(hpc), GENEROUS, 0.5, "the controller")
    client = other_than(hpc, old)
    long_job = sbatch(hpc, client, "-N", "3", "-x", old, "--wrap", "'srun sleep 20'")
    wait_for(lambda: job_state(hpc, client, long_job).get("JobState") == "RUNNING", 30, 0.5,
             "the 3-node job running")  # fmt: skip
    # (submitted, acknowledged, job ID, job name)
    acknowledged: list[tuple[float, float, int, str]] = []
    refused: list[float] = []
    stop = threading.Event()

    def submit() -> None:
        sequence = 0
        while not stop.is_set():
            at, name = time.time(), f"ack-{sequence}"
            sequence += 1
            proc = podman("exec", container(hpc, client), "sh", "-c",
                          f"cd /tmp && timeout 10 sbatch --parsable -J {name} -x {old} "
                          "-o /dev/null --wrap true", check=False)  # fmt: skip
            if proc.returncode == 0 and proc.stdout.strip().isdigit():
                acknowledged.append((at, time.time(), int(proc.stdout.strip()), name))
            else:
                refused.append(at)
            stop.wait(max(0.0, 0.5 - (time.time() - at)))

    with SlurmctldSampler(hpc, limit=120) as sampler:
        submitter = threading.Thread(target=submit, daemon=True)
        submitter.start()
        time.sleep(SAVE_WINDOW + 3)  # the running job and the first submissions are saved
        killed_at = time.time()
        podman("kill", container(hpc, old))
        dead_at = time.time()  # a job sent before this may still be the old controller's
        new = wait_for(lambda: (c := controller(hpc)) and c != old and c, GENEROUS, 0.2,
                       "a new controller")  # fmt: skip
        wait_for(lambda: any(at >= dead_at for at, *_ in acknowledged), GENEROUS, 0.2,
                 "a job acknowledged after the crash")  # fmt: skip
        time.sleep(5)
        stop.set()
        submitter.join(timeout=30)
        doubles = sampler.doubles()
    assert not doubles, f"two slurmctld at once: {doubles[:5]}"
    # kill -> the first sbatch (sent after the kill) that the new controller acknowledged
    back = min(acked for at, acked, *_ in acknowledged if at >= dead_at) - killed_at
    wait_for(lambda: completed(hpc, client, long_job), GENEROUS, 1.0, "the 3-node job completed")
    assert job_state(hpc, client, long_job)["Restarts"] == "0"

    def done(job: int, name: str) -> bool:
        state = job_state(hpc, client, job)
        return state.get("JobName") == name and state.get("JobState") == "COMPLETED"

    # (acknowledged, job, name): slurmctld took each job at the latest when its sbatch
    # returned, so `acked` bounds the job's age at the kill from below (`at` would add the
    # podman exec's own start-up, up to a second here, to it)
    before = [(acked, job, name) for at, acked, job, name in acknowledged if at < dead_at]
    after = [(job, name) for at, _, job, name in acknowledged if at >= dead_at]
    # A job that started inside the window was saved as pending: the new controller starts
    # it again, the node that ran it reports a duplicate job ID, and Slurm drains that node.
    # An operator resumes it (counted and reported: Slurm's window, not a takeover's doing).
    drained: set[str] = set()

    def after_done() -> bool:
        for node in duplicate_drains(hpc, client):
            drained.add(node)
            sh(hpc, client, f"scontrol update NodeName={node} State=RESUME")
        return all(done(j, n) for j, n in after)

    try:
        wait_for(after_done, GENEROUS, 1.0, "every job acknowledged after the crash completed")
    except AssertionError:
        states = {j: job_state(hpc, client, j) for j, n in after if not done(j, n)}
        brief = {j: {k: st.get(k) for k in ("JobName", "JobState", "Reason", "NodeList")}
                 for j, st in states.items()}  # fmt: skip
        raise AssertionError(f"jobs acknowledged after the crash did not end: {brief}") from None
    kept = [job for _, job, name in before if done(job, name)]
    lost = [(killed_at - acked, job) for acked, job, name in before if not done(job, name)]
    assert kept, "no job acknowledged before the crash survived it: is the state shared?"
    for age, job in lost:  # only Slurm's own window before a hard crash may lose a job
        assert age <= SAVE_WINDOW + 1.0, f"job {job}, acknowledged {age:.1f} s before the kill"
    ids_after = [job for job, _ in after]
    assert kept == sorted(kept) and ids_after == sorted(ids_after)
    assert len(set(ids_after)) == len(ids_after)
    # IDs keep increasing: none comes again, not even a lost job's (slurmctld_job_ids.py)
    assert ids_after[0] > max(job for _, job, _ in before), (before[-3:], ids_after[:3])
    print(
        f"\ncontroller {old} killed: {new} took over; first sbatch acknowledged {back:.2f} s "
        f"after the kill; {len(before)} jobs acknowledged before it: {len(kept)} completed, "
        f"{len(lost)} lost in Slurm's state-save window; IDs went on from {ids_after[0]}; "
        f"{len(after)} after, all completed; {len(refused)} submissions refused meanwhile; "
        f"nodes Slurm drained for a duplicate job ID (resumed): {sorted(drained) or 'none'}"
    )


def test_a_frozen_controller_is_fenced_before_another_starts(hpc):
    old = wait_for(lambda: controller(hpc), GENEROUS, 0.5, "the controller")
    client = other_than(hpc, old)
    with SlurmctldSampler(hpc, limit=120) as sampler:
        podman("pause", container(hpc, old))
        new = wait_for(lambda: (c := controller(hpc)) and c != old and c, GENEROUS, 0.2,
                       "a new controller")  # fmt: skip
        # the fence device powered the frozen node off before slurmctld started elsewhere
        wait_for(lambda: container_state(hpc, old) not in ("running", "paused"), GENEROUS, 0.5,
                 f"{old} powered off")  # fmt: skip
        podman("unpause", container(hpc, old), check=False)  # too late: it is off
        # not on the fenced node: Slurm schedules onto it until SlurmdTimeout marks it down
        # (seen in CI: the job waited there, "completing", past the test's minute)
        job = sbatch(hpc, client, "-x", old, "--wrap", "true")
        wait_for(lambda: completed(hpc, client, job), GENEROUS, 0.5, "a job after the takeover")
        doubles = sampler.doubles()
    assert not doubles, f"two slurmctld at once: {doubles[:5]}"
    entries = cli("history", "--cluster", hpc.cluster, "--json").json()
    fenced = [e for e in entries if e["event"] == "fence-done" and old in e["reason"]]
    acquired = [e for e in entries if e["event"] == "acquired" and e["node"] == new]
    assert fenced and acquired and fenced[-1]["at"] <= acquired[-1]["at"], entries[-10:]
    print(f"\nfrozen {old}: fenced ({fenced[-1]['reason']}), then {new} started slurmctld")


def test_a_planned_move_loses_no_job(hpc):
    old = wait_for(lambda: controller(hpc), GENEROUS, 0.5, "the controller")
    client = other_than(hpc, old)
    target = other_than(hpc, old, client)
    jobs = [sbatch(hpc, client, "-o", "/dev/null", "--wrap", "'sleep 1'") for _ in range(10)]
    moved = cli("failover", "slurm", "--to", target, "--cluster", hpc.cluster, timeout=120)
    assert moved.rc == 0, moved.stderr
    assert wait_for(lambda: controller(hpc), GENEROUS, 0.2, "the controller") == target
    later = sbatch(hpc, client, "--wrap", "true")
    assert later > max(jobs) and jobs == sorted(jobs)
    for job in [*jobs, later]:
        wait_for(lambda j=job: completed(hpc, client, j), GENEROUS, 0.5, f"job {job}")


def agent_started_at(sandbox, node: str) -> str:
    rc, out = sh(sandbox, node, "systemctl show -P ActiveEnterTimestampMonotonic clusterctl-agent")
    return out.strip()


def test_scale_out_and_in_during_a_running_job(hpc):
    """A job on every node keeps running while a node is added, the controller fails over
    from the new node (the others can fence it), and the node is drained and removed."""
    names = node_names(hpc)
    asker = names[0]
    agents_before = {node: agent_started_at(hpc, node) for node in names}
    job = sbatch(hpc, asker, "-N", str(len(names)), "--wrap", "'srun sleep 100'")
    wait_for(lambda: job_state(hpc, asker, job).get("JobState") == "RUNNING", 30, 0.5,
             "the job on every node running")  # fmt: skip
    started = time.monotonic()
    added = cli("scale", "--add", "1", "--cluster", hpc.cluster, "--json", timeout=900)
    assert added.rc == 0, added.stderr[-2000:]
    (new,) = added.json()["added"]
    rc, out = sh(hpc, asker, f"cd /tmp && timeout 60 srun -w {new} hostname")
    assert rc == 0 and out.strip() == new, out
    print(f"\nscale --add 1: {new} ran its first job {time.monotonic() - started:.1f} s after")
    assert job_state(hpc, asker, job)["JobState"] == "RUNNING"
    # the others' agents took the new node's fence device by a reload, not a restart ...
    for node in names:
        assert agent_started_at(hpc, node) == agents_before[node], f"{node}'s agent restarted"
    # ... so the controller fails over from the new node too (fencing: required)
    assert cli("failover", "slurm", "--to", new, "--cluster", hpc.cluster).rc == 0
    podman("kill", container(hpc, new), check=False)
    other = wait_for(lambda: (c := controller(hpc)) != new and c, GENEROUS, 0.5,
                     f"the controller away from the crashed {new}")  # fmt: skip
    print(f"{new} crashed holding slurm: fenced, the controller now on {other}")
    podman("start", container(hpc, new))
    wait_for(lambda: slurm_nodes(hpc, asker).get(new) == "idle", GENEROUS, 1.0,
             f"{new} back in Slurm")  # fmt: skip
    assert job_state(hpc, asker, job)["JobState"] == "RUNNING"
    # a job on the new node: removing it waits until that job ended
    short = sbatch(hpc, asker, "-w", new, "--wrap", "'sleep 8'")
    wait_for(lambda: job_state(hpc, asker, short).get("JobState") == "RUNNING", 30, 0.5,
             f"a job on {new}")  # fmt: skip
    removed = cli("scale", "--remove", new, "--cluster", hpc.cluster, "--drain-timeout", "120",
                  timeout=600)  # fmt: skip
    assert removed.rc == 0, removed.stderr[-2000:]
    assert completed(hpc, asker, short) and job_state(hpc, asker, short)["Restarts"] == "0"
    assert new not in slurm_nodes(hpc, asker)
    wait_for(lambda: completed(hpc, asker, job), 120, 1.0, "the job on every node completed")
    assert job_state(hpc, asker, job)["Restarts"] == "0"


def test_the_state_directory_is_on_the_shared_storage(hpc):
    """Every node sees the controller's state files (job IDs survive a move)."""
    for node in node_names(hpc):
        rc, out = node_exec(hpc, node, "ls", f"{SHARED_DIR}/slurmctld")
        assert rc == 0 and "job_state" in out, (node, out)
