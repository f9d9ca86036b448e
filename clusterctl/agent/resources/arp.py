"""Gratuitous ARP with a raw AF_PACKET socket (stdlib only; needs CAP_NET_RAW).

When a VIP moves, its MAC changes; neighbours keep the old one in their ARP caches until told.
A gratuitous ARP (sender = target = the VIP) makes them update at once.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path

BROADCAST = b"\xff" * 6
ETH_P_ARP = 0x0806


def gratuitous_arp_frames(mac: bytes, address: str) -> list[bytes]:
    """Ethernet frames announcing ``address`` at ``mac``: a request and a reply (some hosts
    only honour one of the two), each sender = target = ``address``."""
    if len(mac) != 6:
        raise ValueError("a MAC address has 6 bytes")
    ip = ipaddress.IPv4Address(address).packed
    frames = []
    for op, target_mac in ((1, b"\0" * 6), (2, BROADCAST)):
        eth = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac, ip, target_mac, ip)
        frames.append(eth + arp)
    return frames


def interface_mac(interface: str) -> bytes:
    text = Path(f"/sys/class/net/{interface}/address").read_text().strip()
    return bytes.fromhex(text.replace(":", ""))


def send_gratuitous_arp(interface: str, address: str, count: int = 3) -> None:
    """Send ``count`` rounds of gratuitous ARP (request + reply) for ``address`` on
    ``interface``. Raises ``OSError`` if the socket cannot be opened or used."""
    frames = gratuitous_arp_frames(interface_mac(interface), address)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((interface, 0))
        for _ in range(count):
            for frame in frames:
                sock.send(frame)
