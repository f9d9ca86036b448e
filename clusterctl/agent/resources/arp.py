"""Gratuitous ARP and address probes with a raw AF_PACKET socket (stdlib only; needs
CAP_NET_RAW).

When a VIP moves, its MAC changes; neighbours keep the old one in their ARP caches until told.
A gratuitous ARP (sender = target = the VIP) makes them update at once. Before a VIP is
taken from a holder that stopped renewing, a probe (RFC 5227) asks whether any host still
answers for it.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
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


# How long a probe listens for an answer. On one broadcast domain an owner's kernel answers
# within microseconds (in softirq, even on a frozen node); a crashed owner never does, and
# every takeover after a lost lease pays this window once.
PROBE_WINDOW = 0.03
ZERO_IP = b"\0" * 4


def probe_frame(mac: bytes, address: str) -> bytes:
    """An RFC 5227 probe for ``address``: an ARP request whose sender address is 0.0.0.0,
    so that asking changes no neighbour's cache."""
    ip = ipaddress.IPv4Address(address).packed
    eth = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    return eth + struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, ZERO_IP, b"\0" * 6, ip)


def answering_mac(frame: bytes, address: str, own_mac: bytes) -> str | None:
    """The sender's MAC if ``frame`` is ARP from another host that claims ``address`` (a
    reply to our probe, or its own request or announcement); None otherwise."""
    if len(frame) < 42 or frame[12:14] != struct.pack("!H", ETH_P_ARP):
        return None
    sender_mac, sender_ip = frame[22:28], frame[28:32]
    if sender_ip != ipaddress.IPv4Address(address).packed or sender_mac == own_mac:
        return None
    return sender_mac.hex(":")


def find_address_owner(interface: str, address: str, window: float = PROBE_WINDOW) -> str | None:
    """Ask the link who has ``address`` (two probes, ``window`` seconds of listening): the
    MAC of the host that answers, or None. A VIP whose holder froze stays in that node's
    kernel until its lifetime runs out, and its kernel still answers ARP for it. Raises
    ``OSError`` if the socket cannot be opened or used."""
    own_mac = interface_mac(interface)
    probe = probe_frame(own_mac, address)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((interface, 0))
        start = time.monotonic()
        for until in (start + window / 3, start + window):
            sock.send(probe)  # twice: one lost frame must not hide an owner
            while (left := until - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    frame = sock.recv(128)
                except TimeoutError:
                    break
                owner = answering_mac(frame, address, own_mac)
                if owner is not None:
                    return owner
    return None
