"""IPv4 addresses set from the agent's own process over rtnetlink (stdlib only).

A VIP's lifetime is refreshed after every lease renewal. Done by a child process (`ip addr
replace`), a node frozen while that child was starting finished the call on resume and put
back an address whose lease was long gone, next to the new holder's, until the agent's first
step fenced it (seen on sandbox nodes: 1 freeze in 10). One ``send`` from the agent's own
thread leaves no such window: a frozen agent sends nothing, and the first thing it does on
resume is check its deadline.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import socket
import struct

RTM_NEWADDR = 20
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400
IFA_ADDRESS, IFA_LOCAL, IFA_CACHEINFO = 1, 2, 6
HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_sequence = itertools.count(1)


def _attribute(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * (-length % 4)


def new_address_message(
    index: int, address: str, prefix: int, lifetime: int | None, sequence: int
) -> bytes:
    """RTM_NEWADDR that adds ``address/prefix`` on interface ``index`` or replaces it (what
    `ip addr replace` sends), with ``lifetime`` seconds valid and preferred if given."""
    ip = ipaddress.IPv4Address(address).packed
    body = struct.pack("=BBBBI", socket.AF_INET, prefix, 0, 0, index)  # ifaddrmsg
    body += _attribute(IFA_LOCAL, ip) + _attribute(IFA_ADDRESS, ip)
    if lifetime is not None:
        body += _attribute(IFA_CACHEINFO, struct.pack("=IIII", lifetime, lifetime, 0, 0))
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    return HEADER.pack(HEADER.size + len(body), RTM_NEWADDR, flags, sequence, 0) + body


def acknowledgement(data: bytes, sequence: int) -> int | None:
    """The error code (0: done) of the kernel's answer to ``sequence`` in ``data``; None
    if ``data`` holds no answer to it."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, kind, _flags, answered, _port = HEADER.unpack_from(data, offset)
        if kind == NLMSG_ERROR and answered == sequence and offset + 20 <= len(data):
            return -struct.unpack_from("=i", data, offset + HEADER.size)[0]
        if length < HEADER.size:
            return None
        offset += (length + 3) & ~3
    return None


def set_address(
    interface: str, address: str, prefix: int, lifetime: int | None, timeout: float
) -> None:
    """Add or refresh ``address/prefix`` on ``interface``; raises ``OSError``."""
    index = socket.if_nametoindex(interface)
    sequence = next(_sequence)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(max(timeout, 0.01))
        sock.bind((0, 0))
        sock.send(new_address_message(index, address, prefix, lifetime, sequence))
        while (code := acknowledgement(sock.recv(65536), sequence)) is None:
            pass
    if code:
        raise OSError(code, os.strerror(code))
