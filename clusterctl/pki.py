"""The cluster's own certificate authority: one CA per cluster, in its state directory.

It signs one certificate per node, used by that node's etcd member (client and peer port),
by its agent's API and by the agent when it calls etcd or another agent; and one for the
controller (the CLI and the Ansible modules calling the agents). Nothing outside the
cluster is trusted: etcd and the agents accept only certificates this CA signed.

Layout under ``<state>/pki``::

    ca.crt ca.key                 the CA (the key never leaves the controller)
    nodes/<node>.crt <node>.key   a node's certificate: its address and name as SANs
    controller.crt controller.key the controller's client certificate

Why no common name: etcd's JSON gateway (which the agent speaks) refuses client certificates
with a CN once authentication is on (CVE-2018-16886), so identities are in O/OU, and RBAC
uses etcd users with passwords (see ``Secrets``).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clusterctl.state import write_private

CA_DAYS = 3650
CERT_DAYS = 825
RENEW_BEFORE_DAYS = 30  # a certificate closer than this to its end is issued again
CONTROLLER = "controller"
FENCE_DEVICE = "fence-device"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(path, pem.decode())


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    write_private(path, cert.public_bytes(serialization.Encoding.PEM).decode())


@dataclass(frozen=True)
class Issued:
    """Where one certificate and its key are, and whether this call (re)issued them."""

    cert: Path
    key: Path
    changed: bool


class ClusterCA:
    """The CA of one cluster. Every method is idempotent: files that are valid are kept."""

    def __init__(self, pki_dir: Path, cluster: str) -> None:
        self.dir = pki_dir
        self.cluster = cluster

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    def node_paths(self, node: str) -> tuple[Path, Path]:
        return self.dir / "nodes" / f"{node}.crt", self.dir / "nodes" / f"{node}.key"

    def ensure_ca(self) -> bool:
        """Create the CA unless it exists; True if created."""
        if self.ca_cert.exists() and self.ca_key.exists():
            return False
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"clusterctl/{self.cluster}"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"clusterctl {self.cluster} CA"),
            ]
        )
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        _write_key(self.ca_key, key)
        _write_cert(self.ca_cert, cert)
        return True

    def ensure_node(self, node: str, addresses: Iterable[str]) -> Issued:
        """A certificate for ``node`` naming exactly these IP addresses (plus 127.0.0.1, as
        etcd and the agent also answer on loopback) and the node's name."""
        ips = sorted({ipaddress.ip_address(a) for a in [*addresses, "127.0.0.1"]}, key=str)
        cert_path, key_path = self.node_paths(node)
        return self._ensure_leaf(node, cert_path, key_path, ips, [node, "localhost"])

    def controller_paths(self) -> tuple[Path, Path]:
        return self.dir / "controller.crt", self.dir / "controller.key"

    def forget_node(self, node: str) -> None:
        """Delete a removed node's certificate and key here (it is not revoked: etcd and the
        agents would accept it until the CA is replaced)."""
        for path in self.node_paths(node):
            path.unlink(missing_ok=True)

    def fence_device_paths(self) -> tuple[Path, Path]:
        return self.dir / "fence-device.crt", self.dir / "fence-device.key"

    def ensure_fence_device(self, address: str) -> Issued:
        """The sandbox fence device's server certificate (clusterctl/fenced.py), for the
        host's address on the cluster's network."""
        ips = [ipaddress.ip_address(address)]
        return self._ensure_leaf(FENCE_DEVICE, *self.fence_device_paths(), ips, [])

    def ensure_controller(self) -> Issued:
        """The controller's client certificate (no addresses: it never serves)."""
        return self._ensure_leaf(CONTROLLER, *self.controller_paths(), [], [])

    def _ensure_leaf(
        self,
        unit: str,
        cert_path: Path,
        key_path: Path,
        ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
        dns: list[str],
    ) -> Issued:
        self.ensure_ca()
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        if self._still_good(cert_path, key_path, ca_cert, ips, dns):
            return Issued(cert_path, key_path, changed=False)
        cert_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"clusterctl/{self.cluster}"),
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
                    ]
                )
            )
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                # both: etcd's gateway dials its own server with the server's certificate,
                # and an agent presents its node certificate when it calls etcd or a peer
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), False
            )
        )
        if ips or dns:
            names: list[x509.GeneralName] = [x509.IPAddress(ip) for ip in ips]
            names += [x509.DNSName(d) for d in dns]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_key(key_path, key)
        _write_cert(cert_path, cert)
        return Issued(cert_path, key_path, changed=True)

    def _still_good(
        self,
        cert_path: Path,
        key_path: Path,
        ca_cert: x509.Certificate,
        ips: list,
        dns: list[str],
    ) -> bool:
        """The existing certificate is signed by this CA, names exactly these addresses and
        names, and is not near its end."""
        if not (cert_path.exists() and key_path.exists()):
            return False
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        if cert.not_valid_after_utc - _now() < datetime.timedelta(days=RENEW_BEFORE_DAYS):
            return False
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return not ips and not dns
        have_ips = sorted(san.get_values_for_type(x509.IPAddress), key=str)
        return have_ips == ips and sorted(san.get_values_for_type(x509.DNSName)) == sorted(dns)
