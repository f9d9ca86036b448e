"""The cluster profiles, defined once: which exist, the default, which run etcd and the agent."""

from __future__ import annotations

PROFILES = {
    "ha": "etcd + clusterctl-agent: the group web (VIP + nginx) runs on exactly one node",
    "lb": "etcd + clusterctl-agent: the group web (VIP + load balancer) over nginx on every node",
    "web": "nginx on every node, no failover (the walking skeleton)",
    "hpc": "etcd + clusterctl-agent + Slurm: slurmd on every node, the group slurm "
    "(VIP + slurmctld) on exactly one node",
}
DEFAULT_PROFILE = "lb"
AGENT_PROFILES = ("ha", "lb", "hpc")  # profiles with etcd and the failover agent
PROFILE_GROUPS = ("web", "slurm")  # the groups the profiles define (the agent role's defaults)
# Profiles whose group keeps its state on shared storage: a frozen holder must be fenced
# before another node starts it, so the sandbox runs its fence device for them.
FENCED_PROFILES = ("hpc",)
# A cluster record written before profiles were recorded ran the agent's first profile.
LEGACY_PROFILE = "ha"
