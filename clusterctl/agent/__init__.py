"""clusterctl-agent: keeps HA resource groups on exactly one node, using etcd for consensus.

Only the Python standard library may be imported anywhere under this package: a node has
nothing but ``python3``.
"""
