"""The VIP sampler reads a node's own addresses from its routing trie (no process per sample)."""

from __future__ import annotations

from clusterctl.bench.sandbox import local_addresses

# /proc/net/fib_trie of a sandbox node holding the VIP 10.213.48.100 on eth0 (trimmed)
FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.213.48.0/24 2 0 2
        |-- 10.213.48.0
           /24 link UNICAST
        |-- 10.213.48.12
           /32 host LOCAL
        |-- 10.213.48.100
           /32 host LOCAL
        |-- 10.213.48.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 127.0.0.1
        /32 host LOCAL
     |-- 10.213.48.100
        /32 host LOCAL
"""


def test_local_addresses_are_the_host_local_entries() -> None:
    assert local_addresses(FIB_TRIE) == {"10.213.48.12", "10.213.48.100", "127.0.0.1"}
    assert "10.213.48.255" not in local_addresses(FIB_TRIE)  # a broadcast entry


def test_a_node_without_the_vip() -> None:
    without = FIB_TRIE.replace("10.213.48.100", "10.213.48.99")
    assert "10.213.48.100" not in local_addresses(without)


def test_refreshing_while_the_sampler_runs_never_breaks_it() -> None:
    """``refresh`` closes the namespace descriptors it replaces; a round that used one after
    it was closed killed the sampler thread of a chaos run (EBADF). This process's own
    namespace stands for a node's, its loopback address for the VIP."""
    import os
    import time

    from clusterctl.bench.sandbox import HolderSampler

    pids = {"a": os.getpid(), "b": os.getpid()}
    sampler = HolderSampler(dict(pids), "127.0.0.1", period=0.0).start()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        sampler.refresh(dict(pids))
    samples = sampler.stop()
    assert sampler.error == ""
    assert len(samples) > 10 and all(holders == ("a", "b") for _, holders in samples)


def test_the_process_sampler_finds_a_process_by_name_in_its_nodes_namespace() -> None:
    """This test's own process stands for a node's init: same PID namespace, so a process
    named like this one counts for that node; an unknown namespace counts for none."""
    import os
    from pathlib import Path

    from clusterctl.bench.sandbox import ProcessSampler

    comm = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    sampler = ProcessSampler({"node1": os.getpid(), "gone": 0}, comm)
    assert sampler.running_on() == ("node1",)
    sampler.refresh({"node1": 0})  # the node died: its namespace is forgotten
    assert sampler.running_on() == ()
    sampler.refresh({"node1": os.getpid()})
    sampler.start()
    samples = sampler.stop()
    assert samples and samples[0][1] == ("node1",) and sampler.dual == 0
