"""The cluster profiles, defined once: which exist, the default, which run etcd and the agent."""

from __future__ import annotations

PROFILES = {
    "ha": "etcd + clusterctl-agent: the group web (VIP + nginx) runs on exactly one node",
    "lb": "etcd + clusterctl-agent: the group web (VIP + load balancer) over nginx on every node",
    "web": "nginx on every node, no failover (the walking skeleton)",
    "hpc": "etcd + clusterctl-agent + Slurm: slurmd on every node, the group slurm "
    "(VIP + slurmctld) on exactly one node",
    "vm": "etcd + clusterctl-agent + qemu: the group vm (VIP + a virtual machine whose disk is "
    "on shared storage) on exactly one node",
}
DEFAULT_PROFILE = "lb"
AGENT_PROFILES = ("ha", "lb", "hpc", "vm")  # profiles with etcd and the failover agent
# the groups the profiles define (the agent role's defaults)
PROFILE_GROUPS = ("web", "slurm", "vm")
# Profiles whose group keeps its state on shared storage: a frozen holder must be fenced
# before another node starts it, so the sandbox runs its fence device for them.
FENCED_PROFILES = ("hpc", "vm")
# A cluster record written before profiles were recorded ran the agent's first profile.
LEGACY_PROFILE = "ha"

# profile vm: the guest's service is this port on the VIP (roles/vm: vm_port, from the
# inventory's clusterctl_vm_port), and what answers there
VM_PORT = 8080
VM_STATUS_PATH = "/cgi-bin/status"
