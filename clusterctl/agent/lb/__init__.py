"""Load balancing: a frontend on the group's VIP spreading
connections over the registered backends (``backends/<node>`` in etcd).

``model``: Backend, BackendHealth, LbSpec and their validation. ``health``: the rise/fall
tracker, the HTTP check, the live set. ``nft``: the kernel engine (default). ``haproxy``: the
L7 engine. ``engine``: their one interface. ``command``: ``LbError``.
"""

from __future__ import annotations

from clusterctl.agent.lb.command import LbError
from clusterctl.agent.lb.haproxy import HaproxyEngine, HaproxyRuntime, render_config
from clusterctl.agent.lb.health import HealthTracker, check_backends, http_check, live_backends
from clusterctl.agent.lb.model import Backend, BackendHealth, LbConfigError, LbSpec
from clusterctl.agent.lb.nft import NftEngine, render

__all__ = [
    "Backend",
    "BackendHealth",
    "HaproxyEngine",
    "HaproxyRuntime",
    "HealthTracker",
    "LbConfigError",
    "LbError",
    "LbSpec",
    "NftEngine",
    "check_backends",
    "http_check",
    "live_backends",
    "render",
    "render_config",
]
