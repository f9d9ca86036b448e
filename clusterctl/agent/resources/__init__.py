"""Resources the agent manages: VIPs, systemd units, load balancers and virtual machines,
behind one abstract ``Resource``."""

from __future__ import annotations

from clusterctl.agent.config import ResourceSpec
from clusterctl.agent.resources.base import Resource, ResourceError
from clusterctl.agent.resources.runner import CommandResult, CommandRunner, SubprocessRunner
from clusterctl.agent.resources.systemd import SystemdUnit
from clusterctl.agent.resources.vip import ArpSender, VirtualIP

__all__ = [
    "CommandResult",
    "CommandRunner",
    "Resource",
    "ResourceError",
    "SubprocessRunner",
    "SystemdUnit",
    "VirtualIP",
    "build_resource",
]


def build_resource(
    spec: ResourceSpec, runner: CommandRunner, arp_sender: ArpSender | None = None
) -> Resource:
    """Instantiate the resource class for ``spec.type`` (validated beforehand)."""
    if spec.type == "vip":
        if arp_sender is None:
            return VirtualIP(spec, runner)
        return VirtualIP(spec, runner, arp_sender)
    if spec.type == "systemd":
        return SystemdUnit(spec, runner)
    if spec.type == "lb":
        from clusterctl.agent.resources.lb import LoadBalancer

        return LoadBalancer(spec, runner)
    if spec.type == "vm":
        from clusterctl.agent.resources.vm import VirtualMachine

        return VirtualMachine(spec, runner)
    raise ValueError(f"unknown resource type {spec.type!r}")
