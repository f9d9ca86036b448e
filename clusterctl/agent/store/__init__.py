"""Consensus-store clients: an abstract ``Store`` and its etcd and in-memory implementations."""

from clusterctl.agent.store.base import (
    Compare,
    LeaseExpired,
    Store,
    StoreError,
    StoreUnavailable,
    Write,
)

__all__ = ["Compare", "LeaseExpired", "Store", "StoreError", "StoreUnavailable", "Write"]
