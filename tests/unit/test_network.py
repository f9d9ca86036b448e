import ipaddress

import pytest

from clusterctl.errors import ClusterctlError
from clusterctl.providers.network import (
    POOL,
    choose_subnet,
    node_address,
    node_mac,
    parse_subnet,
)


def test_subnet_choice_avoids_taken_networks():
    first = choose_subnet("demo", [])
    assert first.subnet_of(POOL) and first.prefixlen == 24
    second = choose_subnet("demo", [first])
    assert second != first
    assert choose_subnet("demo", []) == first  # stable per cluster name


def test_subnet_choice_avoids_a_wide_overlap():
    taken = [ipaddress.ip_network("10.213.0.0/17")]
    chosen = choose_subnet("demo", taken)
    assert not chosen.overlaps(taken[0])


def test_parse_subnet_errors():
    with pytest.raises(ClusterctlError, match="invalid subnet"):
        parse_subnet("10.1.2.3/24")  # host bits set
    with pytest.raises(ClusterctlError, match="not usable"):
        parse_subnet("10.0.0.0/8")


def test_node_addresses_and_macs():
    net = ipaddress.ip_network("10.213.5.0/24")
    assert node_address(net, 1) == "10.213.5.11"
    assert node_address(net, 3) == "10.213.5.13"
    mac = node_mac("demo", "node1")
    assert mac == node_mac("demo", "node1")
    assert mac != node_mac("demo", "node2") != node_mac("other", "node1")
    first_octet = int(mac.split(":")[0], 16)
    assert first_octet & 0b10 and not first_octet & 0b1  # locally administered, unicast
