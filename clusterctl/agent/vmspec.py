"""The ``vm`` resource's parameters, checked when the configuration is read (config.py) and
used by the resource (resources/vm.py). No imports of either: config.py imports this module."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

ACCELS = ("kvm", "tcg")
IFNAMSIZ = 15  # the longest name Linux gives an interface
MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", re.IGNORECASE)


def parse_forwards(value: Any) -> list[tuple[int, int]]:
    """``"8080:80"`` or a list of them: (port on the node, port in the guest) pairs."""
    items = value if isinstance(value, list) else [value] if value else []
    forwards = []
    for item in items:
        host, sep, guest = str(item).partition(":")
        if not sep or not host.isdigit() or not guest.isdigit():
            raise ValueError(f"forward {item!r} is not HOST_PORT:GUEST_PORT")
        ports = int(host), int(guest)
        if not all(1 <= p <= 65535 for p in ports):
            raise ValueError(f"forward {item!r}: ports are 1-65535")
        forwards.append(ports)
    return forwards


def validate_params(params: dict[str, Any]) -> None:
    """Raise ``ValueError`` with one line if the ``vm`` parameters are not usable."""
    if not str(params["disk"]).startswith("/"):
        raise ValueError(f"disk {params['disk']!r} is not an absolute path")
    for key, low, high in (("memory", 16, 1 << 20), ("vcpus", 1, 64)):
        value = params.get(key, 1 if key == "vcpus" else 128)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"{key} must be a whole number from {low} to {high}")
    if params.get("accel", "kvm") not in ACCELS:
        raise ValueError(f"accel must be one of {', '.join(ACCELS)}")
    forwards = parse_forwards(params.get("forward"))
    tap = params.get("tap")
    if tap is not None:
        if forwards:
            raise ValueError("tap and forward exclude each other (forward is qemu's user network)")
        if not isinstance(tap, str) or not 1 <= len(tap) <= IFNAMSIZ or "/" in tap:
            raise ValueError(f"tap {tap!r} is not an interface name (1-{IFNAMSIZ} characters)")
        if not params.get("address"):
            raise ValueError("tap needs the guest's address (address), which the check asks")
        try:
            ipaddress.IPv4Address(str(params["address"]))
        except ValueError:
            raise ValueError(f"address {params['address']!r} is not an IPv4 address") from None
    mac = params.get("mac")
    if mac is not None and not MAC.fullmatch(str(mac)):
        raise ValueError(f"mac {mac!r} is not a MAC address (52:54:00:12:34:56)")
    if params.get("check_path") and not forwards and tap is None:
        raise ValueError("check_path needs a forward or a tap (the check goes through it)")
