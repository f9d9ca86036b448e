"""``clusterctl-agent``: the daemon around ``Agent.step``.

    clusterctl-agent --config /etc/clusterctl/agent.json [--check-config]

Exit codes: 0 after a clean stop (SIGTERM/SIGINT: resources stopped, lease revoked); 1 when
a fence could not stop every resource (systemd's ``ExecStopPost=`` then removes the VIP);
2 for a configuration error, reported on one line naming the broken rule.

Before the first step it stops every configured resource found running (start-up cleanup:
a starting agent holds nothing). The history of its transitions goes to etcd from a thread
of its own (agent/history.py); on a node with an etcd member, another keeps etcd's
leadership away while this node holds a group (agent/etcd_leader.py), and with the API on, a
third asks the holders of groups for their own word on their leases (agent/peers.py).
With ``api_port`` != 0 it serves the REST API and ``/metrics`` (docs/agent-api.md) in a
thread that reads ``Agent.snapshot`` (immutable, replaced after every step) without locking
and talks to etcd through its own store client.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from clusterctl.agent import apiclient
from clusterctl.agent.api import Api, ApiServer, load_tokens
from clusterctl.agent.config import AgentConfig, ConfigError, load_config
from clusterctl.agent.etcd_leader import LeaderMover
from clusterctl.agent.fencing import FenceError, device_from_config, devices_from_config
from clusterctl.agent.ha import Agent
from clusterctl.agent.history import HistoryWriter
from clusterctl.agent.keys import Keys
from clusterctl.agent.notify import SystemdNotifier
from clusterctl.agent.peers import PeerWatch
from clusterctl.agent.statereader import MirrorReader
from clusterctl.agent.store.etcd import EtcdStore
from clusterctl.agent.store.watch import KeyspaceMirror
from clusterctl.agent.tls import TlsError

log = logging.getLogger("clusterctl.agent")


def run(
    agent: Agent,
    notifier: SystemdNotifier,
    stop: threading.Event,
    wake: threading.Event | None = None,
) -> int:
    """Step ``agent`` until ``stop`` is set; then shut it down. Returns the exit code.

    Logs each sentence when it differs from the previous one; pings the watchdog after each
    iteration that completed without an unexpected exception. ``wake`` (set by a change of
    the watched state, and with ``stop``) starts the next step before its time.
    """
    waiter = wake or stop
    log.info("%s", agent.startup_cleanup())
    agent.on_progress = notifier.watchdog
    notifier.ready()
    previous = None
    code = 0
    while not stop.is_set():
        try:
            sentence = agent.step()
        except Exception:  # a bug must not stop the loop: the next step still fences
            log.exception("loop iteration failed")
        else:
            if sentence != previous:
                log.info("%s", sentence)
                notifier.status(sentence)
                previous = sentence
            if agent.fence_failed:
                log.error("fencing could not stop every resource: exiting for ExecStopPost")
                code = 1
                break
            notifier.watchdog()
        waiter.wait(max(0.0, agent.next_wakeup() - agent.clock.now()))
        if wake is not None:
            wake.clear()
    notifier.stopping()
    log.info("%s", agent.shutdown())
    return code


def check_fencing(config: AgentConfig) -> int:
    """One line per node's device: its status, or why it gave none (``up``'s preflight, run
    while every node is up: a device that says its node is off names another machine)."""
    failed = 0
    for node, data in sorted(config.fence_devices.items()):
        device = device_from_config(data)
        try:
            status = device.status(config.fence_timeout)
        except FenceError as exc:
            failed += 1
            print(f"{node}: {exc}", file=sys.stderr)
            continue
        if status != "on":
            failed += 1
            print(
                f"{node}: {device.agent} says {node} is {status}, but it is up: the device "
                "names another machine (check its plug/port and address options)",
                file=sys.stderr,
            )
            continue
        print(f"{node}: {device.agent} says {status}")
    if not config.fence_devices:
        print("no fence devices configured")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="clusterctl-agent",
        description="Keep HA resource groups on exactly one node, with etcd for consensus.",
        epilog="example: clusterctl-agent --config /etc/clusterctl/agent.json --check-config",
    )
    parser.add_argument("--config", required=True, help="path of the agent's JSON config")
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument(
        "--check-fencing",
        action="store_true",
        help="ask every node's fence device for its status and exit (1 if one does not answer)",
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        token = load_tokens(config.api_token_file) if config.api_enabled else None
        if config.tls is not None:
            config.tls.check()
    except (ConfigError, TlsError) as exc:
        print(f"clusterctl-agent: config error: {exc}", file=sys.stderr)
        return 2
    if args.check_fencing:
        return check_fencing(config)
    if args.check_config:
        groups = ", ".join(g.name for g in config.groups) or "no groups"
        api = f"API on {config.api_bind}:{config.api_port}" if token else "API disabled"
        api += " over TLS" if token and config.tls else ""
        print(f"config OK: node {config.node}, cluster {config.cluster}, {groups}, {api}")
        print(f"timings: {describe_timings(config)}")
        return 0
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    stop, wake = threading.Event(), threading.Event()

    def on_signal(*_: object) -> None:
        stop.set()
        wake.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    store = make_store(config)
    mirror = watched_state(config) if config.watch_state else None
    reader = MirrorReader(store, mirror, time.monotonic) if mirror is not None else None
    agent = Agent(config, store, state_reader=reader)
    if mirror is not None:
        # a change wakes the loop: a standby reacts to a freed group at once
        mirror.add_listener(lambda changed: wake.set() if agent.woken_by(changed) else None)
        mirror.start()
    log.info("starting on %s (cluster %s)", config.node, config.cluster)
    server = start_api(agent, config, token) if token else None
    signal.signal(signal.SIGHUP, lambda *_: reload(agent, server, config, args.config))
    history = HistoryWriter(
        agent.history, make_store(config), agent.keys, config.history_retention,
        timeout=config.request_timeout,
    )  # fmt: skip
    helpers_stop = threading.Event()
    helpers = [threading.Thread(target=history.run, args=(helpers_stop,), name="history")]
    if server is not None:
        peers = peer_watch(agent, config, server.api)
        agent.peers = peers
        helpers.append(threading.Thread(target=peers.run, args=(helpers_stop,), name="peers"))
    if config.etcd_member and config.move_etcd_leadership:
        mover = LeaderMover(make_store(config), config.etcd_endpoints[0], agent.holding)
        helpers.append(threading.Thread(target=mover.run, args=(helpers_stop,), name="etcd-leader"))
    for thread in helpers:
        thread.daemon = True
        thread.start()
    # After every other thread started (they inherit their creator's policy and stay
    # ordinary): the loop alone, which renews the lease and fences, runs at real time.
    log.info("%s", raise_priority(config.realtime_priority))
    try:
        return run(agent, SystemdNotifier(), stop, wake)
    finally:
        helpers_stop.set()
        if mirror is not None:
            mirror.stop()
        history.flush()  # the shutdown's own entries (bounded: one timeout per entry)
        if server is not None:
            server.stop()


def raise_priority(priority: int) -> str:
    """Run the calling thread at SCHED_RR ``priority``; what it spawns (systemctl, ip, nft)
    starts ordinary again (SCHED_RESET_ON_FORK). Returns a sentence; never raises.

    Why: on a saturated node the loop was seen to run 0.4 s past its fencing deadline
    (`bench lb`, README "No false failovers"): the lease had expired and another node had
    the group before this one fenced. The kernel's VIP lifetime still protected the VIP, but
    the holder must be on time, as corosync and keepalived are (real-time priority)."""
    if priority <= 0:
        return "CPU priority: ordinary scheduling (realtime_priority 0)"
    try:
        os.sched_setscheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
    except (OSError, AttributeError) as exc:
        return f"CPU priority: ordinary scheduling, real time refused ({exc})"
    return f"CPU priority: the loop runs at SCHED_RR {priority}"


def describe_timings(config: AgentConfig) -> str:
    """The effective timings, as the agent derived them (seconds)."""
    lifetimes = sorted(
        {
            r.params["lifetime"]
            for g in config.groups
            for r in g.resources
            if r.type == "vip" and "lifetime" in r.params
        }
    )
    return (
        f"lease_ttl={config.lease_ttl:g} renew_interval={config.renew_interval:g} "
        f"holding_renew_interval={config.holding_renew_interval:g} "
        f"renew_timeout={config.renew_timeout:g} fence_margin={config.fence_margin:g} "
        f"loop_interval={config.loop_interval:g} request_timeout={config.request_timeout:g} "
        f"vip_lifetime={','.join(str(v) for v in lifetimes) or '-'}"
    )


def make_store(config: AgentConfig) -> EtcdStore:
    """A client of the cluster's etcd, over TLS with this node's certificate when set; its
    renewals are confirmed by a quorum read of this node's member key."""
    return EtcdStore(
        config.etcd_endpoints,
        request_timeout=config.request_timeout,
        tls=config.tls,
        credentials=config.etcd_credentials,
        quorum_key=Keys(config.cluster).member(config.node),
    )


def watched_state(config: AgentConfig) -> KeyspaceMirror:
    """The cluster's state kept by a watch (agent/store/watch.py) with a client of its own."""
    keys = Keys(config.cluster)
    return KeyspaceMirror(make_store(config), keys.root, keys.state_end)


def peer_watch(agent: Agent, config: AgentConfig, api: Api) -> PeerWatch:
    """Asks the holders of groups for their word (agent/peers.py) with this agent's own
    token and TLS client certificate, every renewal interval."""

    def ask(address: str, timeout: float) -> Any:
        urls = apiclient.base_urls([address], config.api_port, tls=api.client_tls is not None)
        return apiclient.AgentApi(urls, api.token.decode(), timeout, api.client_tls).health()

    return PeerWatch(lambda: agent.peer_targets, ask, agent.clock, config.renew_interval)


def reload(agent: Agent, server: ApiServer | None, config: AgentConfig, path: str) -> None:
    """SIGHUP (`systemctl reload`): the token file's tokens and the config file's fence
    devices, taken without a restart (a group held here keeps running)."""
    if server is not None:
        reload_tokens(server.api, config)
    reload_fence_devices(agent, path)


def reload_fence_devices(agent: Agent, path: str) -> None:
    """The fence devices of the config file as it is now: `clusterctl scale --add` gives the
    existing nodes the new nodes' devices, or no group could fail over from a new node."""
    try:
        devices = load_config(path).fence_devices
    except ConfigError as exc:
        log.error("fence devices not reloaded: %s", exc)
        return
    agent.fencer.set_devices(devices_from_config(devices))
    log.info("fence devices reloaded: %s", ", ".join(sorted(devices)) or "none")


def reload_tokens(api: Api, config: AgentConfig) -> None:
    """SIGHUP (`systemctl reload`): accept the token file's tokens from now on - how
    `clusterctl token rotate` replaces the token without restarting any agent."""
    try:
        tokens = load_tokens(config.api_token_file)
    except ConfigError as exc:
        log.error("API tokens not reloaded: %s", exc)
        return
    api.set_tokens(tokens)
    log.info("API tokens reloaded: %d accepted", len(tokens))


def start_api(agent: Agent, config: AgentConfig, token: tuple[str, ...]) -> ApiServer | None:
    """Serve the API in a thread, with a store client of its own. A port that cannot be
    bound is logged, not fatal: keeping the node's groups available matters more."""
    tls = config.tls
    api = Api(agent, token, make_store(config), client_tls=tls.client_context() if tls else None)
    try:
        server = ApiServer(
            api, config.api_bind, config.api_port, tls.server_context() if tls else None
        )
    except OSError as exc:
        log.error("cannot serve the API on %s:%s: %s", config.api_bind, config.api_port, exc)
        return None
    log.info("API listening on %s:%s", config.api_bind, server.port)
    return server.start()


if __name__ == "__main__":
    sys.exit(main())
