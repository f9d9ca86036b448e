"""The cluster profiles, defined once: which exist, the default, which run etcd and the agent."""

from __future__ import annotations

PROFILES = {
    "ha": "etcd + clusterctl-agent: the group web (VIP + nginx) runs on exactly one node",
    "lb": "etcd + clusterctl-agent: the group web (VIP + load balancer) over nginx on every node",
    "web": "nginx on every node, no failover (the walking skeleton)",
}
DEFAULT_PROFILE = "lb"
AGENT_PROFILES = ("ha", "lb")  # profiles with etcd and the failover agent
PROFILE_GROUPS = ("web",)  # the groups the profiles define (the agent role's defaults)
# A cluster record written before profiles were recorded ran the agent's first profile.
LEGACY_PROFILE = "ha"
