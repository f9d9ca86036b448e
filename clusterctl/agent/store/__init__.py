"""Consensus-store clients: an abstract ``Store`` and its etcd and in-memory implementations."""

from clusterctl.agent.store.base import LeaseExpired, Store, StoreError, StoreUnavailable

__all__ = ["LeaseExpired", "Store", "StoreError", "StoreUnavailable"]
