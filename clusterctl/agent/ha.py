"""The agent's loop step: keep the member lease, place groups, fence when in doubt.

``Agent.step()`` does one iteration and returns ONE sentence describing it (logged, exposed
to the API and asserted on by tests). The safety rule, in order of precedence:

1. Before any I/O, a node that runs a group checks its fencing deadline (last successful
   renewal + lease_ttl - fence_margin, on the monotonic clock). Past it — frozen, or cut off
   from etcd — it stops its resources (exclusive ones first) before doing anything else.
2. Every store call and resource command made while holding is bounded by the time left
   before that deadline, and the deadline is re-checked between resource operations, so no
   single blocking call can carry the node past it.
3. A group is acquired only through ``create_if_absent`` on its leader key, bound to the
   member lease; exclusive resources start only after that succeeds, and the key is released
   (compare-and-delete) only after they stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from clusterctl.agent.admin import publish_spec
from clusterctl.agent.clock import Clock, MonotonicClock
from clusterctl.agent.config import AgentConfig, group_to_dict
from clusterctl.agent.fencing import RETRY_INTERVAL, FenceOutcome, Fencer, devices_from_config
from clusterctl.agent.group import GroupRunner
from clusterctl.agent.handover import Handover
from clusterctl.agent.history import FIRST_START, History
from clusterctl.agent.keys import Keys
from clusterctl.agent.member import MemberLease
from clusterctl.agent.metrics import Metrics
from clusterctl.agent.peers import ASK_TIMEOUT, Peers
from clusterctl.agent.placement import (
    acquire_block,
    eligible,
    move_wait,
    release_reason,
    taking_order,
)
from clusterctl.agent.resources import (
    CommandRunner,
    Resource,
    ResourceError,
    SubprocessRunner,
    build_resource,
)
from clusterctl.agent.resources.base import MigrationStatus
from clusterctl.agent.resources.lb import BackendStats, LoadBalancer
from clusterctl.agent.resources.vip import ArpSender, VirtualIP
from clusterctl.agent.statereader import DirectReader, StateReader
from clusterctl.agent.store.base import (
    Compare,
    LeaseExpired,
    Store,
    StoreError,
    StoreUnavailable,
    Write,
)
from clusterctl.agent.view import ClusterView, GroupView, parse_view

log = logging.getLogger(__name__)

HANDOVER_POLL = 0.01  # seconds between steps while a planned move to this node is pending
# seconds a live migration may take before the holder cancels the move: within the move's
# own life (the API's MOVE_TTL, 30 s), after which the move is gone and so is the migration
MIGRATION_TIMEOUT = 25.0
# Of many eligible nodes, this many try to take a freed group at once, the next as many
# FIRST_TAKERS_LEAD seconds later, and so on (placement.taking_order says why). Clusters of
# up to three eligible nodes are not affected.
FIRST_TAKERS = 3
FIRST_TAKERS_LEAD = 0.5
VIP_PROBE_POLL = 0.02  # seconds between steps while a freed VIP still answers elsewhere
# How long past a VIP's lifetime its last holder's kernel may still answer for it: the
# kernel deletes an address 0-0.25 s after its lifetime (measured up to 0.22 s here); longer
# is no frozen holder but another host with that address.
VIP_LIFETIME_SLACK = 1.0


class _Fence(Exception):
    """Raised mid-action when the fencing deadline has passed: unwind and fence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class GroupStatus:
    name: str
    leader: str | None
    running_here: bool
    started: tuple[str, ...]
    failcount: int
    failcounts: tuple[tuple[str, int], ...] = ()  # every node's, sorted by node
    notes: tuple[tuple[str, str], ...] = ()  # started resources' state_note, in group order


@dataclass(frozen=True)
class AgentSnapshot:
    """Immutable state after a step: what an API thread may read without locking (the agent
    replaces the whole object; it never mutates one)."""

    node: str
    sentence: str
    at: float
    lease_valid: bool
    lease_time_left: float
    standby: bool
    members: tuple[str, ...]
    groups: tuple[GroupStatus, ...]
    store_reachable: bool = False  # the last iteration read the cluster's keys from the store
    iteration: int = 0  # completed loop iterations (0: not stepped yet)


class Agent:
    """One node's HA logic. Not thread-safe: one thread calls ``step``; others read
    ``snapshot``."""

    def __init__(
        self,
        config: AgentConfig,
        store: Store,
        clock: Clock | None = None,
        runner: CommandRunner | None = None,
        arp_sender: ArpSender | None = None,
        fencer: Fencer | None = None,
        state_reader: StateReader | None = None,
    ) -> None:
        """``state_reader``: where each step reads the cluster's state (default: the store,
        one range read per step; the daemon passes a watched copy, agent/statereader.py)."""
        self.config = config
        self.node = config.node
        self.store = store
        self.clock = clock or MonotonicClock()
        self.keys = Keys(config.cluster)
        self.state_reader: StateReader = state_reader or DirectReader(
            store, self.keys.root, self.keys.state_end
        )
        # a change of the state wakes the loop (the daemon's mirror listener): a quiet
        # idle node may then sleep until its next renewal (next_wakeup)
        self.woken_by_changes = False
        self.metrics = Metrics()
        self.lease = MemberLease(
            store, self.keys, config, self.clock, on_renew=self.metrics.observe_renewal
        )
        runner = runner or SubprocessRunner()
        self.groups = {
            g.name: GroupRunner(g, [build_resource(r, runner, arp_sender) for r in g.resources])
            for g in config.groups
        }
        self._standby_local = config.standby  # the config's, or set_standby's
        self.standby = config.standby  # effective: local, or the ``standby/<node>`` key
        self.view: ClusterView | None = None
        self._store_ok = False
        self._iteration = 0
        self.fence_failed = False  # a fence could not stop everything: the daemon must exit
        self.on_progress: Callable[[], None] | None = None  # the daemon pings its watchdog
        # the holders' own word on their leases (agent/peers.py; the daemon's PeerWatch)
        self.peers: Peers | None = None
        self.peer_targets: dict[str, str] = {}  # node -> address: whom the peer watch asks
        self._vanished_at: dict[str, float] = {}  # member -> when its key vanished here
        self._asked_at: dict[str, float] = {}  # peer -> when we last asked it for a word
        self._asking_peer = False  # a word was asked for: step again soon
        self._vip_answered_since: dict[str, float] = {}  # group -> first probe answered
        self._step_started = 0.0
        self._planned_wake = float("inf")  # when the last next_wakeup asked to step again
        self._seeded: set[str] = set()
        self._backend_registered = False
        self.handover = Handover(runner)
        self._registered_at = float("-inf")
        self._started_at = self.clock.now()
        self._member_rejoined = not config.etcd_member  # nothing to wait for elsewhere
        self.history = History(config.node)  # transitions, written to etcd by the daemon
        self._last_leader: dict[str, str] = {}  # per group: the last holder we saw
        self._backend_health: dict[str, str] = {}  # per backend: as our LB last reported it
        self._seen_members: set[str] = set()  # members in the last view
        self._mass_expiry_until = float("-inf")  # no free group is taken before this
        self._fast_until = float("-inf")  # keep a fast lease until then (fast_lease_linger)
        self._free_since: dict[str, float] = {}  # group -> when this node first saw it free
        self._left_to_takers: dict[str, float] = {}  # group -> until when (taking_order)
        self._replaced_leases: list[int] = []  # to revoke once the member key left them
        devices = devices_from_config(config.fence_devices)
        self.fencer = fencer or Fencer(devices, config.fence_timeout)
        self.snapshot = self._make_snapshot("starting")

    # -- public ------------------------------------------------------------------------------

    def step(self) -> str:
        """One loop iteration; returns its sentence and publishes a new ``snapshot``."""
        sentence = self._step()
        self._iteration += 1
        self.snapshot = self._make_snapshot(sentence)
        return sentence

    def next_wakeup(self) -> float:
        """When the loop should call ``step`` next: after ``loop_interval``, but never later
        than the fencing deadline while holding (so fencing is not late by a tick) nor than
        the next renewal (a renewal waiting for the next tick is up to a tick older when the
        etcd leader dies, and that tick is missing before the deadline)."""
        now = self.clock.now()
        idle = self.config.idle_renew_interval if self._quiet(now) else self.config.loop_interval
        wake = now + idle
        for until in self._left_to_takers.values():  # a freed group left to others a moment
            if until > now:
                wake = min(wake, until)
        deadline = self.lease.deadline
        holding = self.holding()
        if holding and deadline is not None:
            wake = min(wake, max(now, deadline))
        renewal = self.lease.next_renewal(holding)
        if renewal is not None and renewal > now:  # one overdue (failing) waits for the tick
            wake = min(wake, renewal)
        if self._asking_peer:
            wake = min(wake, now + HANDOVER_POLL)  # its answer comes in a few milliseconds
        if self._vip_answered_since:
            wake = min(wake, now + VIP_PROBE_POLL)  # the old holder's kernel drops it soon
        if any(g.migrating_to for g in self.groups.values()):
            wake = min(wake, now + HANDOVER_POLL)  # the guest pauses when it completes
        if self._awaiting_handover():
            # The holder drops the VIP and deletes its leader key as soon as we pre-started;
            # until we take over, nobody serves. Polling at loop_interval made that gap up to
            # 0.1 s, and clients' connections in it failed (measured on real nodes); the move
            # key expires after 30 s, so the fast poll is bounded.
            wake = min(wake, now + HANDOVER_POLL)
        self._planned_wake = wake
        return wake

    def woken_by(self, changed: tuple[str, ...] | None) -> bool:
        """Whether a change of the state's keys ``changed`` (None: any may have changed)
        should start the next step at once. Not when only other nodes' member keys changed
        (hundreds of nodes registering): a quiet node acts on none of them (what it does when
        a group frees up reads the members then), and a busy one polls anyway."""
        if changed is None:
            return True
        prefix, own = self.keys.members_prefix(), self.keys.member(self.node)
        return any(not key.startswith(prefix) or key == own for key in changed)

    def _quiet(self, now: float) -> bool:
        """Whether nothing but a change of the state (which wakes the loop) or the next
        renewal can give this step anything to do: an idle node whose view is a watched copy
        the store vouches for, every group held elsewhere, no timer of its own pending."""
        view = self.view
        return (
            self.woken_by_changes
            and self.state_reader.serving
            and view is not None
            and not self.lease.fast
            and not self.lease.last_attempt_failed  # retried at the next tick, not 1.3 s on
            and not self.holding()
            and not any(g.started for g in self.groups.values())
            and all(
                view.groups[name].leader is not None
                or now < self._left_to_takers.get(name, float("-inf"))
                for name in self.groups
            )
            and not (self._asking_peer or self._vip_answered_since or self._replaced_leases)
            and now >= self._mass_expiry_until
            and not self._awaiting_handover()
        )

    def _awaiting_handover(self) -> bool:
        """True while a planned move targets this node and the group is not ours yet."""
        if self.view is None or self.standby:
            return False
        for name, g in self.groups.items():
            move = gv.move if (gv := self.view.groups.get(name)) is not None else None
            if not g.active and move is not None and move.target == self.node:
                return True
        return False

    def holding(self) -> list[str]:
        """Groups this node holds (leader key won, resources started or starting)."""
        return [g.name for g in self.groups.values() if g.active]

    def set_standby(self, standby: bool) -> None:
        """Put the node in (or out of) local standby: it releases its groups and acquires
        none. Published in ``members/<node>`` by the next step. The node stays in standby
        while a ``standby/<node>`` key exists (the persistent, cluster-wide switch)."""
        self._standby_local = standby
        keyed = self.view is not None and self.node in self.view.standby
        self._set_standby(standby or keyed)

    def _set_standby(self, standby: bool) -> None:
        """The effective standby flag, with a history entry when it changes."""
        if standby != self.standby:
            self.history.record("standby" if standby else "unstandby")
        self.standby = standby

    def startup_cleanup(self) -> str:
        """Before the first step: stop, locally, every configured resource found running.

        A starting agent holds nothing, so anything running here (an nginx started by its
        package, a VIP left by a previous run) must not serve from a non-holder. Like
        Pacemaker's probes. Each group is stopped exclusive resources first, then in reverse
        start order. Returns one sentence; never raises.
        """
        done: list[str] = []
        if any(r.spec.type == "vip" for g in self.groups.values() for r in g.resources):
            self.handover.remove()  # a forwarding table left by a previous run's move
        for g in self.groups.values():
            order = sorted(reversed(g.resources), key=lambda r: not r.exclusive)
            for res in order:
                verb, what = _describe(res)
                try:
                    if not res.monitor(res.spec.timeout):
                        continue
                    res.stop(res.spec.timeout)
                except ResourceError as exc:
                    g.cleanup_failed = True
                    done.append(f"failed to stop {what} ({exc})")
                except Exception as exc:  # a bug must not keep the agent from starting
                    g.cleanup_failed = True
                    log.exception("start-up cleanup of %s failed", res.name)
                    done.append(f"failed to stop {what} ({type(exc).__name__})")
                else:
                    done.append(f"{verb} {what}")
        sentence = f"start-up cleanup: {', '.join(done) if done else 'nothing was running'}"
        self.history.record("agent-started", reason=sentence)
        return sentence

    def shutdown(self) -> str:
        """Stop everything, release leader keys, revoke the lease (SIGTERM path)."""
        stopped = self.holding()
        for g in self.groups.values():
            # within the lease, as any stop of a held group: a stop that outlasts it (a
            # guest's ACPI power-off) would have the next holder fence this node
            errors = g.stop(self._op_timeout, exclusive_first=True)
            if g.active:
                g.active = False
                # On failure the key goes with the lease, revoked below or expiring.
                with contextlib.suppress(StoreError):
                    if not errors and g.fencing_target is None:
                        self._let_go(g)
                    else:
                        self.store.compare_and_delete(self.keys.leader(g.name), self.node)
        try:
            lease = "revoked lease" if self.lease.lease_id is not None else "had no lease"
            self.lease.revoke()
        except StoreError:
            self.lease.forget()
            lease = "lease left to expire (store unreachable)"
        what = f"stopped {', '.join(stopped)}, released it" if stopped else "held nothing"
        for name in stopped:
            self.history.record("released", name, "the agent is stopping")
        self.history.record("agent-stopped", reason=f"{what}, {lease}")
        return f"shutting down: {what}, {lease}"

    # -- the step ----------------------------------------------------------------------------

    def _step(self) -> str:
        now = self._step_started = self.clock.now()
        self._asking_peer = False
        late, self._planned_wake = now - self._planned_wake, float("inf")
        if late > self.config.lease_ttl - self.config.fence_margin and not self.holding():
            # Frozen (SIGSTOP, a paused VM or container), or starved: what this node knew is
            # old, and its own etcd member may be a leader that resumes with it, revoking the
            # leases it thinks expired (etcd issue 15247). A node on a short lease used to
            # find its own lease gone then and hold off; an idle lease outlives a freeze of a
            # few seconds, so the stall itself must: the holders retake their groups first.
            self._hold_off(f"this node stalled for {late:.2f} s")
        self.handover.expire(now)
        # Rule 1: no I/O before checking the deadline (a frozen process wakes up here).
        if self.holding() and not self.lease.valid(now):
            reason = "renewal failed" if self.lease.last_attempt_failed else "lease deadline passed"
            return self._fence(reason)
        if self.lease.lease_id is None and not self._member_has_rejoined(now):
            return "waiting for this node's etcd member to rejoin before registering"
        try:
            self._maintain_lease()
            # a holder reads the store itself (statereader.MirrorReader says why)
            kv = self.state_reader.read(self._timeout(), current=bool(self.holding()))
            self._store_ok = True
            view = parse_view(self.keys, kv, tuple(g.spec for g in self.groups.values()))
            self.view = view
            self._note_vanished_members(view)
            self._update_standby(view)
            self._repair(view)
            self._register_backend(view)
            self._hand_backends(view)
            parts = {
                name: self._group_step(g, view.groups[name], view)
                for name, g in self.groups.items()
            }
            self._publish_peer_targets(view)
        except _Fence as fence:
            return self._fence(fence.reason)
        except LeaseExpired:
            return self._lease_vanished()
        except StoreUnavailable:
            self._store_ok = False
            return self._unreachable()
        self._note_backend_health()
        return self._compose(parts)

    def _note_vanished_members(self, view: ClusterView) -> None:
        """Several members' leases vanishing in one step is not several crashes: it is what
        an etcd leader does when it resumes after a freeze and revokes every lease it thinks
        expired (etcd issue 15247, in Debian's 3.4.23) - holders that renewed their leases a
        moment ago among them, unaware until their next renewal. Nobody takes a free group
        until that renewal has failed on every old holder and made it fence: one renewal
        interval plus its timeout plus a loop tick. A single node's crash is not delayed."""
        members = set(view.members)
        gone = self._seen_members - members
        self._seen_members = members
        now = self.clock.now()
        for node in gone:
            self._vanished_at[node] = now
        if len(gone) >= 2:
            self._hold_off(f"leases of {', '.join(sorted(gone))} vanished at once")

    def _lease_vanished(self) -> str:
        """etcd says our lease does not exist. Before the deadline it cannot have expired
        (member.py): it was revoked, which a resuming stale etcd leader does to healthy
        leases (agent/peers.py). A holder then takes its groups back with a new lease."""
        held = self.holding()
        revoked = self.lease.valid(self.clock.now())
        deadline = self.lease.deadline
        self.lease.forget()
        self._hold_off("this node's lease vanished")
        self._seen_members.discard(self.node)
        if not held:
            return "lease expired, registering again"
        if not revoked or deadline is None:
            return self._fence("lease expired")
        try:
            return self._take_back(deadline)
        except _Fence as fence:
            return self._fence(fence.reason)
        except StoreError as exc:
            return self._fence(f"lease revoked, taking the groups back failed ({exc})")

    def _take_back(self, deadline: float) -> str:
        """A new lease, each held group's leader key if it is still free
        (``create_if_absent``: a node that took it meanwhile keeps it, and we fence), then
        our member key. Every call is bounded by the old lease's deadline, the rule while
        holding; the standbys leave the groups alone until past it (agent/peers.py).

        Leader keys first: a standby that saw our member key back while a group was still
        free would take it for a clean release, and start it at once (no probe of the VIP,
        no word asked): seen on real nodes, two VIP holders after an etcd leader resumed."""
        left = deadline - self.clock.now() - self.config.renew_timeout
        if left <= 0:
            raise _Fence("lease revoked too close to its deadline to take the groups back")
        self.lease.grant(timeout=min(self.config.request_timeout, left))
        self._registered_at = self.clock.now()
        assert self.lease.lease_id is not None
        held = [g for g in self.groups.values() if g.active]
        for g in held:
            key = self.keys.leader(g.name)
            if not self.store.create_if_absent(
                key, self.node, self.lease.lease_id, self._timeout()
            ):
                raise _Fence(f"lease revoked and {g.name} taken by another node")
            if g.fencing_target is not None:
                self._publish_fencing(g, "")
        self.lease.register(self.standby, timeout=self._timeout())
        self._keepalive()
        names = ", ".join(g.name for g in held)
        for g in held:
            self.history.record(
                "retaken", g.name, "this node's lease was revoked before it could expire"
            )
        return f"lease revoked before it could expire: took {names} back with a new lease"

    def _hold_off(self, why: str) -> None:
        wait = self.config.renew_interval + self.config.renew_timeout + self.config.loop_interval
        self._mass_expiry_until = self.clock.now() + wait
        log.warning("%s: no free group is taken for %.2f s", why, wait)

    def _note_backend_health(self) -> None:
        """Record each backend our LB takes out of or puts back into service."""
        for stats in self.lb_stats():
            before = self._backend_health.get(stats.node)
            if stats.health in ("up", "down") and before is not None and before != stats.health:
                self.history.record(
                    f"backend-{stats.health}",
                    reason=f"{stats.node} ({stats.address}) is {stats.health}",
                )
            self._backend_health[stats.node] = stats.health

    def _member_has_rejoined(self, now: float) -> bool:
        """After a (re)start on a node with an etcd member: whether that member serves the
        cluster's data again. Until then the node does not register, so "online" in status
        means its vote is back in etcd's quorum too (an operator restarting nodes one by one
        waits for exactly that). Checked until it first holds; after ``member_rejoin_wait``
        the node registers anyway (a broken member must not keep it out for good)."""
        if self._member_rejoined:
            return True
        endpoint = self.config.etcd_endpoints[0]
        if self.store.member_ready(endpoint, self.keys.root, timeout=self._timeout()):
            self._member_rejoined = True
        elif now - self._started_at >= self.config.member_rejoin_wait:
            log.warning(
                "etcd member %s has not rejoined after %.0f s: registering without it",
                endpoint,
                self.config.member_rejoin_wait,
            )
            self._member_rejoined = True
        return self._member_rejoined

    def _update_standby(self, view: ClusterView) -> None:
        """Standby = local (config, set_standby) or the ``standby/<node>`` key; publish it in
        our member value when it changed (placement already sees the key through the view)."""
        self._set_standby(self._standby_local or self.node in view.standby)
        self.lease.register(self.standby, timeout=self._timeout())

    def _maintain_lease(self) -> None:
        now = self.clock.now()
        if self.holding():
            self._fast_until = now + self.config.fast_lease_linger
        if self.lease.lease_id is None:
            self.lease.grant(fast=self._needs_fast_lease(now))
            self._registered_at = self.clock.now()
        elif self.lease.fast and not self._needs_fast_lease(now):
            self._switch_lease(fast=False)
        elif self.lease.renew_due(now, self.holding()):
            self.lease.renew()
            self._keepalive()
        self.lease.register(self.standby, timeout=self._timeout())
        while self._replaced_leases:
            # bound to nothing now (the member key moved to the new lease): revoked so its
            # expiry later is not taken for anything; if this fails, it expires on its own
            with contextlib.suppress(StoreError):
                self.store.revoke(self._replaced_leases[-1], timeout=self._timeout())
            self._replaced_leases.pop()

    def _needs_fast_lease(self, now: float) -> bool:
        """A node needs its lease to carry a deadline while it holds, starts or pre-starts a
        group (and for a while after: ``fast_lease_linger``); otherwise an idle lease does."""
        if self.config.idle_ttl <= self.config.lease_ttl:
            return True
        return (
            bool(self.holding())
            or now < self._fast_until
            or any(g.started for g in self.groups.values())
            or self._awaiting_handover()
        )

    def _ensure_fast_lease(self) -> None:
        """Before taking a group or pre-starting for a move: a fast lease, the member key
        bound to it (two round trips on an idle node; none on one that holds)."""
        if not self.lease.fast:
            self._fast_until = self.clock.now() + self.config.fast_lease_linger
            self._switch_lease(fast=True)

    def _switch_lease(self, fast: bool) -> None:
        """Move the member key to a new lease of the other kind; the old lease is revoked
        at the next step (nothing else is bound to it: an idle lease carries only the member
        key, and a fast one is given up only when nothing is held)."""
        replaced = self.lease.grant(timeout=self._timeout(), fast=fast)
        self.lease.register(self.standby, timeout=self._timeout())
        if replaced is not None:
            self._replaced_leases.append(replaced)

    def _keepalive(self) -> None:
        """After a renewal: let running resources extend their own deadlines (VIP lifetime)."""
        for g in self.groups.values():
            if not g.active:
                continue
            for res in g.resources:
                if not self.lease.valid(self.clock.now()):
                    return  # frozen since the renewal: extend nothing, the next step fences
                if res.name in g.started:
                    try:
                        res.keepalive(self._op_timeout(res))
                    except ResourceError as exc:
                        log.warning("keepalive of %s failed: %s", res.name, exc)

    def _repair(self, view: ClusterView) -> None:
        """Re-register if our member key vanished; publish our groups' configuration once
        per start (the operators' run-time bans kept: admin.publish_spec)."""
        if self.node not in view.members:
            self.lease._member_written = None
            self.lease.register(self.standby, timeout=self._timeout())
        for name, g in self.groups.items():
            if name not in self._seeded:
                spec = group_to_dict(g.spec)
                if publish_spec(self.store, self.keys, spec, timeout=self._timeout()):
                    log.info("published the configuration of group %s", name)
                self._seeded.add(name)

    def _register_backend(self, view: ClusterView) -> None:
        """Register this node as an LB backend once; afterwards ``backends/<node>`` belongs
        to the operator (weight, drain), so it is never overwritten here."""
        spec = self.config.backend
        if spec is None or self.node in view.backends or self._backend_registered:
            return
        value = json.dumps(
            {
                "address": spec.get("address", ""),
                "port": spec.get("port", 80),
                "weight": spec.get("weight", 1),
                "state": "active",
            },
            sort_keys=True,
        )
        self.store.create_if_absent(self.keys.backend(self.node), value, timeout=self._timeout())
        self._backend_registered = True

    def _hand_backends(self, view: ClusterView) -> None:
        """Give every load balancer the registered backends, as of this step."""
        for g in self.groups.values():
            for res in g.resources:
                if isinstance(res, LoadBalancer):
                    res.set_backends(view.backends.values())

    def lb_stats(self) -> tuple[BackendStats, ...]:
        """Backends as seen by a load balancer running here (empty on other nodes)."""
        for g in self.groups.values():
            for res in g.resources:
                if isinstance(res, LoadBalancer) and res.name in g.started:
                    return res.stats
        return ()

    def _unreachable(self) -> str:
        held = self.holding()
        if not held:
            return "no quorum: store unreachable, standing by"
        now = self.clock.now()
        if not self.lease.valid(now):
            return self._fence("renewal failed")
        left = self.lease.time_left(now)
        return f"renewal failed, holding {', '.join(held)} for {left:.2f} s more"

    def _compose(self, parts: dict[str, str | None]) -> str:
        quiet = [n for n, p in parts.items() if p is None and self.groups[n].active]
        notes = [p for p in parts.values() if p]
        if quiet:
            notes.insert(0, f"renewed lease, holding {', '.join(quiet)}")
        return "; ".join(notes) or "no groups configured, standing by"

    # -- fencing -----------------------------------------------------------------------------

    def _fence(self, reason: str) -> str:
        """Stop every held group now, exclusive resources first, and drop the lease."""
        stopped = self.holding()
        errors: list[str] = []
        for g in self.groups.values():
            if g.active:
                # Full timeouts: the deadline has passed, stopping is all that matters now.
                errors += g.stop(lambda r: r.spec.timeout, exclusive_first=True)
                g.active = False
                g.fencing_target = None  # whoever holds the group next fences the owner
        self.lease.forget()
        self.metrics.fenced()
        self.fence_failed = bool(errors)
        for name in stopped:
            self.history.record("fenced", name, reason)
        sentence = f"{reason}, fencing: stopped {', '.join(stopped)}"
        if errors:
            sentence += f" (failed to stop: {'; '.join(errors)})"
        return sentence

    def _checkpoint(self) -> None:
        """Between resource operations while holding: renew if due; abort past the deadline."""
        if not self.holding():
            return
        now = self.clock.now()
        if self.lease.valid(now) and self.lease.renew_due(now, holding=True):
            try:
                self.lease.renew()
                self._keepalive()
            except StoreUnavailable:
                pass  # keep going until the deadline
            except LeaseExpired:
                raise _Fence("lease expired") from None
        if not self.lease.valid(self.clock.now()):
            raise _Fence("renewal failed")
        if self.on_progress is not None and self.clock.now() - self._step_started > 0.5:
            # A step that runs several (bounded) resource commands may outlast WatchdogSec;
            # a checkpoint passed with a valid lease is progress, not a hung loop.
            self.on_progress()

    def _timeout(self, cap: float | None = None) -> float:
        """A call's timeout: ``cap`` (default request_timeout); while holding, short enough
        that one renewal attempt still fits before the deadline. A read that waited up to the
        deadline itself (a follower's linearizable read while etcd elects a new leader)
        left no time to renew, and a healthy holder fenced when the etcd leader's node died."""
        cap = self.config.request_timeout if cap is None else cap
        if not self.holding():
            return cap
        left = self.lease.time_left(self.clock.now()) - self.config.renew_timeout
        return min(cap, max(0.01, left))

    def _op_timeout(self, res: Resource) -> float:
        return self._timeout(res.spec.timeout)

    # -- groups ------------------------------------------------------------------------------

    def _group_step(self, g: GroupRunner, gv: GroupView, view: ClusterView) -> str | None:
        """One group's part of the sentence; None for a quiet, healthy holder."""
        sentence = self._group_part(g, gv, view)
        if g.active or gv.leader is not None:
            self._last_leader[g.name] = self.node if g.active else str(gv.leader)
            self._vip_answered_since.pop(g.name, None)
        return sentence

    def _group_part(self, g: GroupRunner, gv: GroupView, view: ClusterView) -> str | None:
        if g.active:
            return self._hold(g, gv, view)
        if gv.owner == self.node and not g.started and not g.cleanup_failed:
            # We own a fencing group we do not run (we fenced ourselves, or restarted):
            # its resources are stopped here, so the next holder need not fence us.
            self._disown(g)
            return f"{g.name}'s resources are stopped here: cleared this node's ownership"
        if gv.leader == self.node:
            # A leader key of ours that we do not run: left by a lease we gave up (fenced).
            # Our resources are stopped, so letting it go is safe and frees the group sooner.
            self.store.compare_and_delete(self.keys.leader(g.name), self.node, self._timeout())
            return f"cleared a stale leader key of {g.name}"
        if gv.leader is not None:
            self._free_since.pop(g.name, None)
            self._left_to_takers.pop(g.name, None)
            return self._follow(g, gv, view)
        block = acquire_block(self.node, view, gv)
        if block:
            return f"{g.name} is free but {block}, standing by"
        herd = self._leave_to_first_takers(g, gv, view)
        if herd:
            return herd
        wait = self._mass_expiry_until - self.clock.now()
        if wait > 0:
            return (
                f"{g.name} is free but several members' leases vanished at once, waiting "
                f"{wait:.2f} s for their holders to notice"
            )
        still = self._holder_still_renews(g)
        if still:
            return still
        if self.clock.now() - self._registered_at < self.config.loop_interval:
            # Nodes starting together first see each other's member keys one tick later;
            # without this pause the first to start would beat a preferred node to the group.
            return f"{g.name} is free, waiting one tick for other members to register"
        if not self.lease.fast:
            # taking it from an idle lease costs two calls more (a grant, the member key), at
            # the store's pace; if they would leave too little of the new lease, taking it
            # would fence within a tick (the check below, for a node already fast). The
            # store's pace, not this step's: a step that waited for the CPU (hundreds of
            # agents of `bench scale` woken at once) says nothing of the store.
            call = self.lease.store_pace
            spare = self.config.lease_ttl - self.config.fence_margin - self.config.renew_timeout
            if 2 * call > spare:
                return f"{g.name} is free but store calls are slow ({call:.2f} s), standing by"
            self._ensure_fast_lease()
        if self.lease.time_left(self.clock.now()) < self.config.renew_timeout:
            # Slow store calls this step (a loaded node) ate the lease: taking the group now
            # would fence it again within one tick, a needless second outage. A faster
            # node takes it, or we do after the next renewal.
            return f"{g.name} is free but our lease is about to lapse, renewing first"
        answered = self._vip_still_answered(g)
        if answered:
            return answered
        return self._acquire(g, gv)

    def _leave_to_first_takers(
        self, g: GroupRunner, gv: GroupView, view: ClusterView
    ) -> str | None:
        """In a cluster of many nodes, a freed group is tried by three nodes at once, the next
        three ``FIRST_TAKERS_LEAD`` later if it is still free, and so on
        (placement.taking_order): this node waits for its turn, counted from when it first
        saw the group free."""
        now = self.clock.now()
        seen = self._free_since.setdefault(g.name, now)
        order = taking_order(view, gv)
        if self.node not in order:
            return None
        until = seen + (order.index(self.node) // FIRST_TAKERS) * FIRST_TAKERS_LEAD
        if now >= until:
            return None
        self._left_to_takers[g.name] = until
        takers = ", ".join(order[:FIRST_TAKERS])
        return f"{g.name} is free, leaving it to {takers} for a moment"

    def _lost_holder(self, name: str) -> str | None:
        """The node that last held group ``name`` if its lease vanished (node, agent or
        network down; or revoked), None if it released the group (its member key, so its
        lease, is still there), if nobody held it or this node did, or without a view."""
        previous = self._last_leader.get(name)
        view = self.view
        if previous in (None, self.node) or view is None or previous in view.members:
            return None
        return previous

    def _vip_still_answered(self, g: GroupRunner) -> str | None:
        """A group freed because its holder's lease vanished: that holder may be frozen, and
        its kernel keeps the VIP (serving it, answering ARP for it) until the lifetime the
        holder last gave it runs out - up to a quarter second after etcd expired the lease
        (lease and lifetime are both about a second; etcd and the kernel each check on their
        own tick). Taking the VIP before then puts it on two nodes. So probe it (RFC 5227)
        and wait while another host answers, but no longer than its lifetime plus
        ``VIP_LIFETIME_SLACK``: a host that answers longer is no frozen holder."""
        previous = self._lost_holder(g.name)
        if previous is None:
            self._vip_answered_since.pop(g.name, None)
            return None  # first start, or released cleanly: the holder dropped its VIP
        now = self.clock.now()
        for res in g.resources:
            if not isinstance(res, VirtualIP) or not res.lifetime:
                continue  # without a lifetime nobody drops it: waiting would not help
            owner = res.owner_elsewhere()
            if owner is None:
                continue
            since = self._vip_answered_since.setdefault(g.name, now)
            if now - since > res.lifetime + VIP_LIFETIME_SLACK:
                log.warning(
                    "%s is still answered by %s %.1f s after %s's lease vanished: "
                    "another host has this address; taking it anyway",
                    res.cidr,
                    owner,
                    now - since,
                    previous,
                )
                continue
            return (
                f"{g.name} is free but {res.cidr} still answers at {owner} ({previous}'s "
                f"kernel keeps it until its lifetime runs out), waiting"
            )
        self._vip_answered_since.pop(g.name, None)
        return None

    def _holder_still_renews(self, g: GroupRunner) -> str | None:
        """A group freed because its holder's lease vanished, while that holder told us a
        moment ago that its deadline lies ahead: the lease was revoked, not expired, and the
        holder takes the group back (agent/peers.py). Ask it once more; while it still says
        it holds the group, wait until its deadline plus ``fence_margin``, the earliest a
        dead holder's lease could have expired."""
        previous = self._lost_holder(g.name)
        if self.peers is None or previous is None:
            return None
        word = self.peers.latest(previous)
        now = self.clock.now()
        if word is None or g.name not in word.holding:
            return None
        wait = word.deadline + self.config.fence_margin - now
        if wait <= 0:
            return None
        vanished = self._vanished_at.get(previous, now)
        if word.asked_at < vanished:
            asked = self._asked_at.get(previous, float("-inf"))
            if asked < vanished:
                self._asked_at[previous] = asked = now
                self.peers.refresh(previous)
            if now - asked < ASK_TIMEOUT:
                self._asking_peer = True
                return (
                    f"{g.name} is free but {previous}'s lease vanished before it could "
                    f"expire, asking {previous} whether it still holds {g.name}"
                )
            return (
                f"{g.name} is free but {previous}'s lease vanished before it could expire "
                f"and {previous} does not answer, waiting {wait:.2f} s"
            )
        return (
            f"{g.name} is free but {previous} still holds it (its lease was revoked before "
            f"it could expire), waiting {wait:.2f} s for it to take {g.name} back"
        )

    def _publish_peer_targets(self, view: ClusterView) -> None:
        """Whom the peer watch asks: the last holder we saw of each group, at the address
        its member key had (kept after the key vanished: that is when its word matters)."""
        targets = {}
        for node in set(self._last_leader.values()) - {self.node}:
            member = view.members.get(node)
            address = member.address if member is not None else self.peer_targets.get(node)
            if address:
                targets[node] = address
        if targets != self.peer_targets:
            self.peer_targets = targets  # replaced, never changed: read by another thread

    def _acquire(self, g: GroupRunner, gv: GroupView) -> str:
        assert self.lease.lease_id is not None
        key = self.keys.leader(g.name)
        owned = g.spec.needs_fencing and gv.owner in (None, self.node)
        if owned:
            # nobody to fence: the leader key and our name as owner in one round trip (a
            # live move's pause waits for it), as long as the owner is still as we read it
            taken = self.store.transaction(
                [Compare(key, None), Compare(self.keys.owner(g.name), gv.owner)],
                [
                    Write(key, self.node, self.lease.lease_id),
                    Write(self.keys.owner(g.name), self.node),
                ],
                self._timeout(),
            )
        else:
            taken = self.store.create_if_absent(
                key, self.node, self.lease.lease_id, self._timeout()
            )
        if not taken:
            return f"{g.name} was just taken by another node, standing by"
        g.active = True  # from here on every call is bounded by the fencing deadline
        if g.spec.needs_fencing and gv.owner not in (None, self.node):
            return self._begin_fence(g, gv.owner)
        return self._start_group(g, gv, owner_written=owned)

    def _start_group(
        self, g: GroupRunner, gv: GroupView, reason: str | None = None, owner_written: bool = False
    ) -> str:
        """Start the group we hold the leader key of (an owner first, when it fences)."""
        if g.spec.needs_fencing and not owner_written:
            # before anything starts: a crash from here on leaves our name for the next
            # holder to fence
            self.store.put(self.keys.owner(g.name), self.node, timeout=self._timeout())
        if self.handover.until is not None:
            # we forwarded the VIP away in a recent move: it is ours again, serve it here
            self.handover.remove(self._timeout(1.0))
        try:
            g.start(g.resources, self._op_timeout, self._checkpoint)
        except ResourceError as exc:
            self._record_failure(g, gv, fatal=True)
            return self._release(g, f"failed to start {g.name} ({exc})")
        g.schedule_monitors(self.clock.now())
        self.metrics.acquired(g.name)
        self.history.record("acquired", g.name, reason or self._takeover_reason(g.name, gv))
        if gv.move is not None and gv.move.target == self.node:
            self._finish_move(g, gv)
        return f"acquired {g.name} on {self.node}"

    def _takeover_reason(self, name: str, gv: GroupView) -> str:
        """Why the group was free for us, from what this node saw of its last holder."""
        previous = self._last_leader.get(name)
        if gv.move is not None and gv.move.target == self.node:
            return f"planned move from {previous or 'its holder'}"
        if previous is None:
            return FIRST_START
        if previous == self.node:
            return "taken again by this node after it had stopped it"
        if self._lost_holder(name) is not None:
            return f"{previous} stopped renewing its lease (node, agent or network down)"
        return f"{previous} released it"

    def _hold(self, g: GroupRunner, gv: GroupView, view: ClusterView) -> str | None:
        if gv.leader != self.node:
            # Should not happen while the lease is alive (someone deleted our key): stop.
            errors = g.stop(self._op_timeout)
            g.active = False
            tail = f" (failed to stop: {'; '.join(errors)})" if errors else ""
            self.history.record("lost", g.name, f"leader key is now {gv.leader or 'gone'}")
            if not errors and g.fencing_target is None:
                self._disown(g)
            g.fencing_target = None
            return f"lost {g.name} (leader is now {gv.leader or 'nobody'}): stopped it{tail}"
        if g.fencing_target is not None:
            return self._await_fence(g, gv)
        if g.migrating_to is not None and (gv.move is None or gv.move.target != g.migrating_to):
            return self._abandon_migration(g)
        reason = release_reason(self.node, view, gv)
        if reason:
            # A planned hand-over to a target that already runs the prestart_safe resources:
            # drop the VIP first, so new connections stop arriving here while the local web
            # server still finishes the ones in flight (in reverse order it was stopped first
            # and clients saw "connection refused" on the VIP).
            handover = gv.move is not None and gv.prestarted_by == gv.move.target
            live = handover and any(r.name in g.started for r in g.migratable())
            if live:
                # a live move: send the running state first; release once it arrived
                pending = self._migrate(g, gv, view)
                if pending is not None:
                    return pending
                reason = f"{reason} live"
            elif handover and gv.move is not None:
                # not for a live move: the VIP's traffic goes to the guest, which the target
                # runs only once it holds the group; forwarded, the target node would answer
                self._forward_to(g, view, gv.move.target)
            return self._release(g, reason, exclusive_first=handover)
        if gv.move is not None and gv.move.target == self.node:
            self._finish_move(g, gv)
            return f"{g.name} is already on {self.node}, move done"
        return self._monitor(g, gv) or move_wait(self.node, view, gv)

    def _forward_to(self, g: GroupRunner, view: ClusterView, target: str) -> None:
        """Before a planned hand-over drops the VIP: forward its traffic to the target (which
        already runs the pre-started service) until clients learn the VIP's new MAC."""
        member = view.members.get(target)
        vips = [r for r in g.resources if r.spec.type == "vip" and r.name in g.started]
        if member is None or not member.address or not vips:
            return
        vip = str(vips[0].spec.params["address"])
        self.handover.forward(vip, member.address, self.clock.now(), self._timeout(1.0))

    def _release(self, g: GroupRunner, reason: str, exclusive_first: bool = False) -> str:
        """Stop the group (reverse order, or exclusive resources first), then delete our
        leader key. If an exclusive resource would not stop, keep the key: nobody else may
        start it meanwhile."""
        errors = g.stop(self._op_timeout, exclusive_first=exclusive_first)
        stuck = [r.name for r in g.resources if r.exclusive and r.name in g.started]
        if stuck:
            failed = f"failed to stop {', '.join(stuck)} ({'; '.join(errors)})"
            return f"{reason}: {failed}, keeping {g.name}"
        g.active = False
        if g.fencing_target is None:
            self._let_go(g)
        else:  # never started: the previous owner is still to be fenced by whoever comes next
            self._stop_fencing(g)
            self.store.compare_and_delete(self.keys.leader(g.name), self.node, self._timeout())
        self.history.record("released", g.name, reason)
        return f"{reason}: stopped {g.name}, released it"

    # -- fencing (agent/fencing.py) -----------------------------------------------------------

    def _let_go(self, g: GroupRunner) -> None:
        """Our resources of the group are stopped: delete our leader key, and our name as its
        owner first (one transaction when both are ours: the next holder, a live move's
        target above all, sees the group free in one round trip)."""
        leader, owner = self.keys.leader(g.name), self.keys.owner(g.name)
        if g.spec.needs_fencing and self.store.transaction(
            [Compare(leader, self.node), Compare(owner, self.node)],
            [Write(owner, None), Write(leader, None)],
            self._timeout(),
        ):
            return
        self._disown(g)
        self.store.compare_and_delete(leader, self.node, self._timeout())

    def _disown(self, g: GroupRunner) -> None:
        """Our resources of a fencing group are stopped: clear our name as its owner."""
        if g.spec.needs_fencing:
            self.store.compare_and_delete(self.keys.owner(g.name), self.node, self._timeout())

    def _begin_fence(self, g: GroupRunner, target: str) -> str:
        g.fencing_target = target
        self.fencer.begin(target)
        self._publish_fencing(g, "")
        self.history.record(
            "fence-begun", g.name, f"{target} did not stop {g.name} cleanly: fencing it first"
        )
        return f"took {g.name}'s leader key: fencing {target} before starting it"

    def _publish_fencing(self, g: GroupRunner, error: str) -> None:
        assert self.lease.lease_id is not None
        value = json.dumps({"target": g.fencing_target, "error": error})
        self.store.put(
            self.keys.fencing(g.name), value, lease=self.lease.lease_id, timeout=self._timeout()
        )

    def _await_fence(self, g: GroupRunner, gv: GroupView) -> str:
        """Hold the leader key, resources stopped, until the previous owner is off."""
        target = str(g.fencing_target)
        if gv.owner != target:
            # the owner cleared its own name (its resources stopped there), or an operator
            # confirmed the node is off (`clusterctl fence --confirm`)
            return self._fenced(
                g, gv, f"{target} no longer owns {g.name} ({gv.owner or 'nobody'} does)"
            )
        outcome = self.fencer.outcome(target)
        if outcome is None:
            if not self.fencer.running(target) and self.clock.now() >= g.fence_retry_at:
                self.fencer.begin(target)
            return f"fencing {target} before starting {g.name}"
        self.fencer.forget(target)
        self._record_fence(outcome)
        if not outcome.ok:
            g.fence_retry_at = self.clock.now() + RETRY_INTERVAL
            self._publish_fencing(g, outcome.detail)
            self.history.record("fence-failed", g.name, f"{target}: {outcome.detail}")
            return (
                f"fencing {target} failed ({outcome.detail}): {g.name} stays stopped, "
                f"retrying in {RETRY_INTERVAL:.0f} s"
            )
        return self._fenced(g, gv, f"{target} fenced ({outcome.detail}, {outcome.took:.1f} s)")

    def _stop_fencing(self, g: GroupRunner) -> None:
        """No fence is pending for the group any more: forget it and its published state."""
        g.fencing_target = None
        self.store.delete(self.keys.fencing(g.name), timeout=self._timeout())

    def _fenced(self, g: GroupRunner, gv: GroupView, why: str) -> str:
        self._stop_fencing(g)
        self.history.record("fence-done", g.name, why)
        return self._start_group(g, gv, reason=why)

    def _record_fence(self, outcome: FenceOutcome) -> None:
        self.metrics.fence_attempt(outcome.ok)
        record = {
            "by": self.node,
            "at": outcome.at,
            "took": round(outcome.took, 3),
            "result": "ok" if outcome.ok else "failed",
            "detail": outcome.detail,
        }
        self.store.put(self.keys.fence(outcome.node), json.dumps(record), timeout=self._timeout())

    def _monitor(self, g: GroupRunner, gv: GroupView) -> str | None:
        if g.restart_from is not None:
            return self._restart(g, gv)
        for res in g.due_monitors(self.clock.now()):
            self._checkpoint()
            healthy = res.monitor(self._op_timeout(res))
            g.next_monitor[res.name] = self.clock.now() + g.monitor_interval(res)
            if healthy:
                continue
            threshold = gv.spec.migration_threshold
            failures = self._record_failure(g, gv)
            self.history.record(
                "monitor-failed", g.name, f"{res.name} failed its check ({failures}/{threshold})"
            )
            if failures >= threshold:
                return self._release(g, f"{res.name} failed ({failures}/{threshold} failures)")
            if not any(r.exclusive for r in g.after(res)):
                g.restart_from = res.name
                grace = min(res.spec.timeout, gv.spec.restart_grace)
                g.restart_until = self.clock.now() + grace
                return self._restart(g, gv)
            try:
                g.stop(self._op_timeout, only=g.after(res))
                g.start(g.after(res), self._op_timeout, self._checkpoint)
            except ResourceError as exc:
                self._record_failure(g, gv, fatal=True)
                return self._release(g, f"restart of {res.name} failed ({exc})")
            return self._restarted(g, res, failures, threshold)
        return None

    def _restart(self, g: GroupRunner, gv: GroupView) -> str:
        """Restart in place a failed resource with no exclusive resource after it, over as
        many steps as it takes within the resource's ``timeout``.

        Why: a killed service's unit may stay "deactivating" for seconds (seen with nginx on
        the sandbox nodes: systemd waited its whole TimeoutStopSec for the killed workers),
        and ``systemctl stop/start`` block meanwhile. Done in one step, each command used up
        the time left before the fencing deadline, so the group was fenced (or the loop
        overran WatchdogSec and systemd killed the agent) instead of restarted in place.
        Here each command leaves time to renew the lease, and a command that did not finish
        is retried on the next step. Past the group's ``restart_grace`` (1 s; at most the
        resource's ``timeout``) the restart counts as failed and the group moves: another node
        serves within about a second, instead of this one after the unit finally stops (5 s,
        nginx's TimeoutStopSec, measured in `bench failover`).
        """
        res = next(r for r in g.resources if r.name == g.restart_from)
        threshold = gv.spec.migration_threshold
        failures = gv.failcounts.get(self.node, 0)
        errors = g.stop(self._restart_timeout, only=g.after(res))
        if not errors:
            try:
                self._checkpoint()
                g.start(g.after(res), self._restart_timeout, self._checkpoint)
            except ResourceError as exc:
                errors = [str(exc)]
        if not errors:
            g.restart_from = None
            return self._restarted(g, res, failures, threshold)
        if self.clock.now() >= g.restart_until:
            g.restart_from = None
            self._record_failure(g, gv, fatal=True)
            return self._release(g, f"restart of {res.name} failed ({errors[0]})")
        return (
            f"{res.name} failed, restart in place pending ({errors[0]}) "
            f"(failcount {failures}/{threshold})"
        )

    def _restarted(self, g: GroupRunner, res: Resource, failures: int, threshold: int) -> str:
        """A failed resource runs again in place: monitors from now, a history entry."""
        g.schedule_monitors(self.clock.now())
        self.history.record("restarted", g.name, f"{res.name} restarted in place")
        return f"{res.name} failed, restarted in place (failcount {failures}/{threshold})"

    def _restart_timeout(self, res: Resource) -> float:
        """A restart command's timeout: like ``_op_timeout`` but leaving ``renew_timeout``
        before the fencing deadline, so a slow command never costs the lease."""
        left = self.lease.time_left(self.clock.now()) - self.config.renew_timeout
        return max(0.01, min(res.spec.timeout, left))

    def _record_failure(self, g: GroupRunner, gv: GroupView, fatal: bool = False) -> int:
        """Count a failure in ``failcount/<node>``; a failed start counts as reaching the
        threshold (as Pacemaker's start-failure-is-fatal). Returns the new count."""
        current = gv.failcounts.get(self.node, 0)
        count = max(current + 1, gv.spec.migration_threshold if fatal else 0)
        self.store.put(self.keys.failcount(g.name, self.node), str(count), timeout=self._timeout())
        gv.failcounts[self.node] = count  # the view is this step's: keep it consistent
        return count

    # -- planned moves -----------------------------------------------------------------------

    def _follow(self, g: GroupRunner, gv: GroupView, view: ClusterView) -> str:
        """Another node holds the group. As the target of a move, pre-start the prestart_safe
        resources (make-before-break) and say so; otherwise stand by with nothing running."""
        move = gv.move
        targeted = move is not None and move.target == self.node
        pre, incoming = g.prestart_safe(), g.migratable()
        if targeted and (pre or incoming) and eligible(self.node, view, gv):
            if gv.prestarted_by == self.node and all(r.name in g.started for r in pre + incoming):
                return f"{g.name} is held by {gv.leader}, pre-started for the move"
            self._ensure_fast_lease()
            try:
                g.start(pre, self._op_timeout, lambda: None)
                g.prepare_incoming(incoming, self._op_timeout)
            except ResourceError as exc:
                return f"pre-start for the move of {g.name} failed ({exc}), standing by"
            assert self.lease.lease_id is not None
            self.store.put(
                self.keys.prestarted(g.name), self.node, self.lease.lease_id, self._timeout()
            )
            names = ", ".join([r.name for r in pre] + [f"{r.name} (incoming)" for r in incoming])
            return f"pre-started {names} for the move of {g.name} from {gv.leader}"
        if g.started:
            names = ", ".join(sorted(g.started))
            errors = g.stop(self._op_timeout)
            # Withdraw our "prestarted" claim, or a later move here would not wait for us.
            self.store.compare_and_delete(self.keys.prestarted(g.name), self.node, self._timeout())
            tail = f" (failed: {'; '.join(errors)})" if errors else ""
            return f"move of {g.name} cancelled: stopped pre-started {names}{tail}"
        return f"{g.name} is held by {gv.leader}, standing by"

    def _migrate(self, g: GroupRunner, gv: GroupView, view: ClusterView) -> str | None:
        """One step of a live move as the holder: start the migration, or see how it goes.
        None once it completed (the caller releases); else the step's sentence. A migration
        that fails or outlasts its time cancels the move: the guest runs on here."""
        assert gv.move is not None
        res = next(r for r in g.migratable() if r.name in g.started)
        target = gv.move.target
        if g.migrating_to != target:
            member = view.members.get(target)
            if member is None or not member.address:
                return f"move of {g.name} to {target} on hold: its address is unknown"
            try:
                res.migrate_begin(member.address, self._op_timeout(res))
            except ResourceError as exc:
                return self._move_failed(g, gv, f"live migration of {res.name} failed ({exc})")
            g.migrating_to = target
            timeout = float(res.spec.params.get("migration_timeout", MIGRATION_TIMEOUT))
            g.migration_deadline = self.clock.now() + timeout
            return f"migrating {res.name} to {target}"
        try:
            status = res.migrate_status(self._op_timeout(res))
        except ResourceError as exc:
            status = MigrationStatus(f"unknown ({exc})")
        if status.done:
            g.migrating_to = None
            self.history.record(
                "migrated",
                g.name,
                f"{res.name} to {target} live: {status.total_ms} ms, "
                f"paused {status.downtime_ms} ms",
            )
            return None
        if status.failed or self.clock.now() >= g.migration_deadline:
            if not status.failed:
                res.migrate_cancel(self._op_timeout(res))
            g.migrating_to = None
            return self._move_failed(g, gv, f"live migration of {res.name} {status.summary}")
        return f"migrating {res.name} to {target} ({status.state})"

    def _abandon_migration(self, g: GroupRunner) -> str:
        """The move we were migrating for is gone (cleared, expired, or the target left):
        stop sending. qemu resumes the guest here (a migration cancelled before it completed
        leaves the source running)."""
        res = next(r for r in g.migratable() if r.name in g.started)
        target, g.migrating_to = g.migrating_to, None
        res.migrate_cancel(self._op_timeout(res))
        why = f"live migration of {res.name} to {target} cancelled: the move was withdrawn"
        self.history.record("move-failed", g.name, f"{why}: it runs on {self.node}")
        return why

    def _move_failed(self, g: GroupRunner, gv: GroupView, why: str) -> str:
        """A planned move could not be made: forget it (the target stops what it prepared);
        the group runs on here."""
        assert gv.move is not None
        self.store.compare_and_delete(self.keys.move(g.name), gv.move.raw, self._timeout())
        self.history.record("move-failed", g.name, f"{why}: it runs on {self.node}")
        return f"{why}: move of {g.name} to {gv.move.target} cancelled, it runs on here"

    def _finish_move(self, g: GroupRunner, gv: GroupView) -> None:
        assert gv.move is not None
        self.store.compare_and_delete(self.keys.move(g.name), gv.move.raw, self._timeout())
        self.store.compare_and_delete(self.keys.prestarted(g.name), self.node, self._timeout())

    # -- snapshot ----------------------------------------------------------------------------

    def _make_snapshot(self, sentence: str) -> AgentSnapshot:
        now = self.clock.now()
        view = self.view
        groups = []
        for name, g in self.groups.items():
            gv = view.groups.get(name) if view else None
            groups.append(
                GroupStatus(
                    name=name,
                    leader=gv.leader if gv else None,
                    running_here=g.active,
                    started=tuple(r.name for r in g.resources if r.name in g.started),
                    failcount=gv.failcounts.get(self.node, 0) if gv else 0,
                    failcounts=tuple(sorted(gv.failcounts.items())) if gv else (),
                    notes=tuple(
                        (r.name, note)
                        for r in g.resources
                        if r.name in g.started and (note := r.state_note()) is not None
                    ),
                )
            )
        return AgentSnapshot(
            node=self.node,
            sentence=sentence,
            at=now,
            lease_valid=self.lease.valid(now),
            lease_time_left=max(0.0, self.lease.time_left(now)),
            standby=self.standby,
            members=tuple(sorted(view.members)) if view else (),
            groups=tuple(groups),
            store_reachable=self._store_ok,
            iteration=self._iteration,
        )


def _describe(res: Resource) -> tuple[str, str]:
    """(verb, object) for the start-up cleanup sentence: ("removed", "VIP 10.0.0.100")."""
    if res.spec.type == "vip":
        return "removed", f"VIP {res.spec.params.get('address', res.name)}"
    if res.spec.type == "systemd":
        return "stopped", str(res.spec.params.get("unit", res.name))
    if res.spec.type == "vm":
        return "stopped", f"VM {res.name}"
    return "stopped", res.name
