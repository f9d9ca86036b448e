"""Agents on a real etcd (fake resources): election and takeover through the JSON gateway."""

from __future__ import annotations

import time
import uuid

from clusterctl.agent.config import AgentConfig, GroupSpec, ResourceSpec
from clusterctl.agent.ha import Agent
from clusterctl.agent.resources.runner import CommandResult
from clusterctl.agent.store.etcd import EtcdStore


class Units:
    """A fake node that only knows ``systemctl`` for one unit."""

    def __init__(self) -> None:
        self.active = False

    def run(self, argv, timeout: float) -> CommandResult:
        verb = argv[1]
        if verb == "start":
            self.active = True
        elif verb == "stop":
            self.active = False
        elif verb == "is-active":
            return CommandResult(0 if self.active else 3)
        return CommandResult(0)


def test_election_and_takeover_on_real_etcd(etcd_url: str) -> None:
    cluster = f"t{uuid.uuid4().hex[:8]}"  # fresh keys for this test
    group = GroupSpec("web", (ResourceSpec("svc", "systemd", {"unit": "svc.service"}),))
    agents, units = {}, {}
    for node in ("node1", "node2"):
        config = AgentConfig(
            node=node, cluster=cluster, etcd_endpoints=(etcd_url,), groups=(group,)
        ).validate()
        units[node] = Units()
        agents[node] = Agent(config, EtcdStore([etcd_url], 0.5), runner=units[node])

    def step(nodes, seconds: float, until=None) -> float:
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            for node in nodes:
                agents[node].step()
            assert sum(u.active for u in units.values()) <= 1
            if until and until():
                break
            time.sleep(0.05)
        return time.monotonic() - start

    step(["node1", "node2"], 1.0)
    holders = [n for n, u in units.items() if u.active]
    assert len(holders) == 1
    (old,) = holders
    (new,) = [n for n in agents if n != old]
    assert agents[old].snapshot.sentence == "renewed lease, holding web"
    assert agents[new].snapshot.sentence == f"web is held by {old}, standing by"
    units[old].active = False  # the old holder "crashes": it is never stepped again
    took = step([new], 4.0, until=lambda: units[new].active)
    assert units[new].active
    # Lease remainder (<= 1 s) + etcd's ~0.5 s expiry check + a loop tick.
    assert took < 2.0
    assert agents[new].snapshot.sentence == f"acquired web on {new}"
    assert agents[new].shutdown() == "shutting down: stopped web, released it, revoked lease"
