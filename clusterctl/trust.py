"""What makes a cluster trust only its own members: the CA and certificates
(clusterctl/pki.py), the agents' API token and the etcd users' passwords. Made once per
cluster in its state directory (0600) and kept; certificates follow the nodes' addresses.
"""

from __future__ import annotations

from clusterctl.pki import ClusterCA
from clusterctl.state import ClusterRecord, StateDir, ensure_key_file, ensure_token

MUNGE_KEY_BYTES = 1024  # munged takes 32 bytes at least; its own tool makes 1024


def cluster_ca(state: StateDir) -> ClusterCA:
    return ClusterCA(state.pki_dir, state.cluster)


def ensure_trust(state: StateDir, record: ClusterRecord) -> list[str]:
    """Create what is missing (or no longer matches a node's address); return the names of
    the nodes whose certificate was (re)issued."""
    state.create()
    ensure_token(state.api_token)
    ensure_token(state.etcd_root_password)
    ensure_token(state.etcd_agent_password)
    if record.profile == "hpc":
        ensure_key_file(state.munge_key, MUNGE_KEY_BYTES)
    ca = cluster_ca(state)
    ca.ensure_ca()
    ca.ensure_controller()
    return [n.name for n in record.nodes if ca.ensure_node(n.name, [n.address]).changed]
