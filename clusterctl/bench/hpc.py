"""`clusterctl bench hpc`: the hpc profile's figures, on a sandbox of its own.

- **Controller failover**: `podman kill` of the node running slurmctld, to the first job a
  client gets acknowledged. A client node starts an ``sbatch`` every 0.25 s (each may retry
  for up to Slurm's MessageTimeout, 10 s, as sbatch does); the first acknowledged among those
  started after the kill counts. Measured for clusterctl's group ``slurm`` and, in the same
  run on the same nodes, for Slurm's own backup controller (two SlurmctldHost lines, the same
  state directory, our agents stopped) at each SlurmctldTimeout asked for. slurmctld
  processes on every node are sampled every 50 ms from the host: two at once is a
  two-controller sample (for ours; the backup controller runs a standby slurmctld by design).
- **Job launch**: `srun -N <all> hostname`, timed inside a node (no podman exec in it).
- **One task across nodes**: primes below 10^8 on 1, 2 and all nodes (wall time inside the
  node, the count checked against the known value, every node's share).
- **Scale out**: `clusterctl scale --add 1` until the new node ran its first job.

The backup-controller runs rewrite slurm.conf and stop the agents, so they come last and the
sandbox is removed afterwards.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from clusterctl import cluster as api
from clusterctl import scale
from clusterctl.bench.sandbox import ProcessSampler, SandboxBench, node_pids, wait_until
from clusterctl.errors import ClusterctlError
from clusterctl.faults import Injected
from clusterctl.providers.podman import SHARED_DIR
from clusterctl.reporter import ListReporter, Reporter
from clusterctl.slurm import EXAMPLES_DIR
from clusterctl.state import ClusterRecord

OURS = "clusterctl"
PRIMES_N = 10**8
PRIMES_KNOWN = 5_761_455
CLIENT_PERIOD = 0.25  # seconds between the client's sbatch starts
CLIENT_LIMIT = 400  # seconds a client keeps trying (a 120 s SlurmctldTimeout fits)
KILL_TIME_FILE = "bench-kill-time"  # in the shared directory: the client counts from it
SLURM_CONF = "/etc/slurm/slurm.conf"

# Runs inside the client node (python3 is in every node). Each attempt is its own thread
# with its own sbatch; the first acknowledged one that started after the kill time (written
# by the bench to the shared directory) is printed as "<started> <acknowledged> <job id>".
CLIENT = """
import os, subprocess, sys, threading, time
kill_file, exclude, limit, period = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
done = threading.Event()
def kill_time():
    try:
        return float(open(kill_file).read())
    except (OSError, ValueError):
        return None
def attempt():
    started = time.time()
    try:
        proc = subprocess.run(
            ["sbatch", "--parsable", "--job-name=bench-client", "--chdir=/tmp",
             "--exclude=" + exclude, "--wrap=true"],
            capture_output=True, text=True, timeout=12)
    except subprocess.TimeoutExpired:
        return
    killed = kill_time()
    if proc.returncode == 0 and killed is not None and started >= killed and not done.is_set():
        done.set()
        print(started, time.time(), proc.stdout.strip().split(";")[0], flush=True)
        os._exit(0)
end = time.time() + limit
while time.time() < end and not done.is_set():
    threading.Thread(target=attempt, daemon=True).start()
    time.sleep(period)
os._exit(1)
"""


def backup_controller_conf(text: str, primary: tuple[str, str], backup: tuple[str, str],
                           timeout: int) -> str:  # fmt: skip
    """clusterctl's slurm.conf turned into Slurm's own failover: two SlurmctldHost lines
    (name(address)) instead of ``localhost`` + the VIP, and the given SlurmctldTimeout."""
    hosts = [f"SlurmctldHost={name}({address})" for name, address in (primary, backup)]
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("SlurmctldHost=") and not any(h in lines for h in hosts):
            lines += [*hosts, f"SlurmctldTimeout={timeout}"]
        elif not line.startswith(("SlurmctldHost=", "SlurmctldAddr=", "SlurmctldTimeout=")):
            lines.append(line)
    return "\n".join(lines) + "\n"


def parse_ping(text: str) -> dict[str, str]:
    """`scontrol ping`: role ("primary", "backup") -> "UP" / "DOWN"."""
    return dict(re.findall(r"Slurmctld\((\w+)\) at \S+ is (\w+)", text))


@dataclass(frozen=True)
class FailoverTrial:
    mode: str  # "clusterctl" or "slurm-backup-<SlurmctldTimeout>s"
    trial: int
    killed: str
    first_sbatch_s: float | None  # kill -> first acknowledged sbatch; None: none in time
    job_id: int
    two_controller_samples: int
    samples: int


class HpcBench(SandboxBench):
    kind = "hpc"
    wants = "a podman sandbox of profile hpc"

    def fits(self, record: ClusterRecord) -> bool:
        return record.provider == "podman" and record.profile == "hpc"

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.record.nodes]

    def container(self, node: str) -> str:
        return self.record.require_node(node).container

    def sh(self, node: str, script: str, timeout: float = 300) -> str:
        proc = self.podman.run(
            "exec", self.container(node), "sh", "-c", script, check=False, timeout=timeout
        )
        if proc.returncode != 0:
            raise ClusterctlError(
                f"on {node}: {script[:60]!r} failed: {(proc.stderr or proc.stdout).strip()[-300:]}",
                "see `clusterctl status`",
            )
        return proc.stdout

    def wait(self, done: Callable[[], bool], what: str, timeout: float = 240.0) -> None:
        wait_until(done, what, timeout)

    def slurm_idle(self, node: str) -> bool:
        """Slurm (asked on ``node``) has every node idle and no job."""
        out = self.sh(node, "sinfo -N -h -o '%N %T' && echo --- && squeue -h -o %i", timeout=30)
        nodes, _, jobs = out.partition("---\n")
        states = dict(line.split() for line in nodes.splitlines() if len(line.split()) == 2)
        return set(states) == set(self.names) and set(states.values()) == {"idle"} and not jobs
        # (a job left by a trial is cancelled before the next one waits)

    def controller(self) -> str | None:
        status = api.agent_client(self.state, self.record).status()
        return next(
            (g.get("node") for g in status.get("groups", [])
             if g["name"] == "slurm" and g.get("state") == "started"),
            None,
        )  # fmt: skip

    def ready(self) -> str:
        """Every node online, the group slurm started, Slurm idle everywhere; the holder."""
        self.wait(
            lambda: {n.name for n in api.status(self.cluster).nodes if n.online} == set(self.names),
            "every node online",
        )
        self.wait(lambda: self.controller() is not None, "the group slurm started")
        holder = self.controller() or ""
        asker = next(n for n in self.names if n != holder)
        self.cancel_all(asker)
        self.wait(lambda: self.slurm_idle(asker), "every Slurm node idle")
        return holder

    def cancel_all(self, node: str) -> None:
        """Cancel every job: the client's, and a job the new controller believes running
        because its end fell in Slurm's state-save window before the crash (its srun is gone,
        and Slurm keeps it until cancelled)."""
        self.sh(node, "scancel --state=PENDING; scancel --state=RUNNING; true")

    # -- job launch, the parallel job, scale out ---------------------------------------------

    def timed(self, node: str, command: str) -> tuple[float, str]:
        """Wall seconds of ``command`` on ``node``, timed there; and its output."""
        out = self.sh(node, f"s=$(date +%s.%N); out=$(cd /tmp && {command}); rc=$?; "
                            f'e=$(date +%s.%N); echo "$s $e"; echo "$out"; exit $rc')  # fmt: skip
        first, _, rest = out.partition("\n")
        started, ended = (float(x) for x in first.split())
        return round(ended - started, 3), rest

    def launch(self, trials: int) -> dict:
        count = len(self.names)
        seconds = []
        for _ in range(trials):
            took, out = self.timed(self.names[0], f"srun -N {count} hostname")
            if sorted(out.split()) != sorted(self.names):
                raise ClusterctlError(f"srun -N {count} hostname said {out.split()}", "")
            seconds.append(took)
        self.reporter.info(f"srun -N {count} hostname: median {statistics.median(seconds):.3f} s")
        return {"nodes": count, "runs_s": seconds, "median_s": round(statistics.median(seconds), 3)}

    def primes(self, trials: int) -> list[dict]:
        rows = []
        for count in sorted({1, 2, len(self.names)}):
            walls = []
            shares: list[tuple[str, int]] = []
            for _ in range(trials):
                took, out = self.timed(
                    self.names[0],
                    f"srun -N {count} --ntasks-per-node=1 python3 {EXAMPLES_DIR}/primes.py "
                    f"{PRIMES_N}",
                )
                total = re.search(rf"primes below {PRIMES_N}: (\d+)", out)
                if total is None or int(total.group(1)) != PRIMES_KNOWN:
                    raise ClusterctlError(f"primes on {count} nodes: {out.strip()[-200:]}", "")
                shares = [(h, int(c)) for _, h, c in re.findall(r"rank (\d+) on (\S+): (\d+)", out)]
                walls.append(took)
            rows.append({
                "nodes": count, "count": PRIMES_KNOWN, "runs_s": walls,
                "median_s": round(statistics.median(walls), 3),
                "shares": dict(sorted(shares)),
            })  # fmt: skip
            self.reporter.info(f"primes below 10^8 on {count} node(s): median "
                               f"{statistics.median(walls):.3f} s")  # fmt: skip
        return rows

    def scale_out(self) -> dict:
        started = time.monotonic()
        new = scale.add(self.cluster, 1, ListReporter())
        added = time.monotonic() - started
        self.reload()
        node = new[0]
        self.wait(
            lambda: (
                self.sh(self.names[0], f"srun -w {node} -N 1 hostname", timeout=30).strip() == node
            ),
            f"a job on {node}",
            timeout=120,
        )
        first_job = time.monotonic() - started
        self.reporter.info(f"scale --add 1: {added:.1f} s, first job on {node} at "
                           f"{first_job:.1f} s")  # fmt: skip
        return {"node": node, "scale_s": round(added, 1), "first_job_s": round(first_job, 1)}

    # -- controller failover -------------------------------------------------------------------

    def kill_and_measure(self, mode: str, number: int, victim: str, client: str,
                         sample: bool) -> FailoverTrial:  # fmt: skip
        """Kill ``victim``'s container while ``client`` submits (the caller starts it again)."""
        kill_file = self.state.path / "shared" / KILL_TIME_FILE
        kill_file.unlink(missing_ok=True)
        sampler = ProcessSampler(node_pids(self.podman, self.record), "slurmctld")
        if sample:
            sampler.start()
        submitter = self.podman.popen(
            "exec", "-i", self.container(client), "python3", "-", f"{SHARED_DIR}/{KILL_TIME_FILE}",
            victim, str(CLIENT_LIMIT), str(CLIENT_PERIOD), stdin=CLIENT.encode(),
        )  # fmt: skip
        time.sleep(1.0)  # the client is submitting (and being acknowledged)
        killed_at = time.time()
        self.faults.inject("crash", victim)
        kill_file.write_text(f"{killed_at}\n")
        try:
            submitter.wait(timeout=CLIENT_LIMIT + 30)  # it prints one line: no pipe fills
            out = submitter.stdout.read() if submitter.stdout else ""
            if sample:
                time.sleep(2.0)  # a second slurmctld could still start after the first answer
        finally:
            if sample:
                sampler.stop()
        parts = out.split()
        first = round(float(parts[1]) - killed_at, 3) if len(parts) == 3 else None
        trial = FailoverTrial(
            mode, number, victim, first, int(parts[2]) if len(parts) == 3 else 0,
            sampler.dual, len(sampler.samples),
        )  # fmt: skip
        self.reporter.info(
            f"{mode} #{number}: killed {victim}, first sbatch acknowledged after "
            f"{first if first is not None else 'none'} s"
            + (f", {sampler.dual} of {len(sampler.samples)} samples with two slurmctld"
               if sample else "")
        )  # fmt: skip
        return trial

    def ours(self, trials: int) -> list[FailoverTrial]:
        results = []
        for number in range(1, trials + 1):
            holder = self.ready()
            client = next(n for n in reversed(self.names) if n != holder)
            results.append(self.kill_and_measure(OURS, number, holder, client, sample=True))
            self.faults.heal_all()
        self.ready()
        return results

    def to_backup_controller(self, timeout: int) -> tuple[str, str, str]:
        """Stop our agents and slurmctld everywhere, then run Slurm's own pair: the first node
        primary, the second backup, ``timeout`` as SlurmctldTimeout; (primary, backup,
        client)."""
        primary, backup, client = self.names[0], self.names[1], self.names[-1]
        for node in self.names:
            self.sh(node, "systemctl disable --now clusterctl-agent && systemctl stop slurmctld")
        text = self.sh(primary, f"cat {SLURM_CONF}")
        conf = backup_controller_conf(
            text,
            (primary, self.record.require_node(primary).address),
            (backup, self.record.require_node(backup).address),
            timeout,
        )
        for node in self.names:
            self.podman.run("exec", "-i", self.container(node), "sh", "-c",
                            f"cat > {SLURM_CONF}", stdin=conf.encode())  # fmt: skip
        for node in (primary, backup):
            self.sh(node, "systemctl start slurmctld")
        for node in self.names:
            self.sh(node, "systemctl restart slurmd")
        return primary, backup, client

    def backup_ready(self, primary: str, backup: str, client: str) -> None:
        """The primary in control, the backup standing by, Slurm idle everywhere. A primary
        that starts takes control back from the backup, whose slurmctld then exits: it is
        started again once the primary answers."""
        self.wait(
            lambda: {n.name for n in api.status(self.cluster).nodes if n.ssh} == set(self.names),
            "every node reachable",
        )
        self.sh(primary, "systemctl start slurmctld slurmd")
        self.wait(lambda: self.ping(client).get("primary") == "UP", "the primary controller up")
        # restarted, not started: a backup that just handed control back may still be stopping
        for attempt in range(1, 4):
            self.sh(backup, "systemctl restart slurmctld")
            try:
                self.wait(lambda: self.ping(client) == {"primary": "UP", "backup": "UP"},
                          "the backup controller standing by", timeout=60)  # fmt: skip
                break
            except ClusterctlError:
                if attempt == 3:
                    raise ClusterctlError(
                        f"the backup controller on {backup} is not standing by: "
                        f"{self.ping(client)}, slurmctld "
                        f"{self.sh(backup, 'systemctl is-active slurmctld; true').strip()}",
                        f"see `journalctl -u slurmctld` on {backup}",
                    ) from None
        self.cancel_all(client)
        self.wait(lambda: self.slurm_idle(client), "every Slurm node idle")

    def ping(self, node: str) -> dict[str, str]:
        return parse_ping(self.sh(node, "scontrol ping; true", timeout=60))

    def slurm_backup(self, timeout: int, trials: int) -> list[FailoverTrial]:
        primary, backup, client = self.to_backup_controller(timeout)
        mode = f"slurm-backup-{timeout}s"
        results = []
        for number in range(1, trials + 1):
            self.backup_ready(primary, backup, client)
            results.append(self.kill_and_measure(mode, number, primary, client, sample=False))
            # only the node started again: heal_all would start our agents as well
            self.faults.heal(Injected("crash", primary))
        return results


def summarize(trials: list[FailoverTrial]) -> list[dict]:
    rows = []
    for mode in dict.fromkeys(t.mode for t in trials):
        of = [t for t in trials if t.mode == mode]
        times = [t.first_sbatch_s for t in of if t.first_sbatch_s is not None]
        rows.append({
            "mode": mode,
            "trials": len(of),
            "answered": len(times),
            "median_s": round(statistics.median(times), 3) if times else None,
            "max_s": round(max(times), 3) if times else None,
            "two_controller_samples": sum(t.two_controller_samples for t in of)
            if mode == OURS else None,
            "samples": sum(t.samples for t in of) if mode == OURS else None,
        })  # fmt: skip
    return rows


def _mode_label(mode: str) -> str:
    if mode == OURS:
        return "clusterctl (group slurm: VIP + slurmctld, fenced)"
    timeout = mode.removeprefix("slurm-backup-").removesuffix("s")
    return f"Slurm backup controller, SlurmctldTimeout={timeout}"


def table(result: dict) -> str:
    lines = [
        "Controller failover: `podman kill` of the controller's node -> first `sbatch` "
        "acknowledged",
        "",
        "| controller | trials | median | max | two-slurmctld samples |",
        "|---|---|---|---|---|",
    ]
    for r in result["failover"]["summary"]:
        seconds = (
            f"{r['median_s']:.2f} s | {r['max_s']:.2f} s" if r["median_s"] is not None else "- | -"
        )
        dual = (
            f"{r['two_controller_samples']} of {r['samples']}"
            if r["two_controller_samples"] is not None else "(standby by design)"
        )  # fmt: skip
        missing = f" ({r['trials'] - r['answered']} never)" if r["answered"] < r["trials"] else ""
        lines.append(f"| {_mode_label(r['mode'])} | {r['trials']}{missing} | {seconds} | {dual} |")
    launch = result["launch"]
    lines += [
        "",
        "| job | nodes | median wall time |",
        "|---|---|---|",
        f"| `srun -N {launch['nodes']} hostname` | {launch['nodes']} | "
        f"{launch['median_s']:.2f} s |",
    ]
    for row in result["primes"]:
        lines.append(
            f"| primes below 10^8 (= {row['count']:,}) | {row['nodes']} | {row['median_s']:.2f} s |"
        )
    scale_row = result["scale_out"]
    lines += [
        "",
        f"`clusterctl up --profile hpc --nodes {result.get('up_nodes', 3)}` (cached image "
        f"and layer): {result.get('up_s', '-')} s.",
        "",
        f"Scale out: `clusterctl scale --add 1` took {scale_row['scale_s']} s; the new node "
        f"({scale_row['node']}) ran its first job {scale_row['first_job_s']} s after the command "
        "started.",
    ]
    return "\n".join(lines)


def run(cluster: str, trials: int, timeouts: list[int], reporter: Reporter) -> dict:
    bench = HpcBench(cluster, reporter)
    bench.ready()
    scaled = bench.scale_out()  # first: "all nodes" below are the scaled cluster's
    bench.ready()
    launch = bench.launch(trials)
    primes = bench.primes(max(1, trials // 2))
    failovers = bench.ours(trials)
    for timeout in timeouts:
        failovers += bench.slurm_backup(timeout, trials)
    return {
        "benchmark": "hpc",
        "cluster": cluster,
        "nodes": len(bench.names),
        "client": f"an sbatch every {CLIENT_PERIOD} s from a surviving node, each retrying "
        "up to Slurm's MessageTimeout",
        "launch": launch,
        "primes": primes,
        "scale_out": scaled,
        "failover": {"summary": summarize(failovers), "trials": [asdict(t) for t in failovers]},
    }
