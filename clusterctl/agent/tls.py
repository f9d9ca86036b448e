"""TLS for the agent: one CA per cluster, one certificate per node (clusterctl/pki.py).

The same node certificate serves the agent's API and authenticates the agent to etcd and to
the other agents. Both directions verify the peer against the cluster's CA only (never the
system's trust store): a certificate from any other authority, or none, is refused.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


class TlsError(ValueError):
    """The TLS files cannot be used (missing, unreadable, key not matching)."""


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the cluster CA, this node's certificate and its key (PEM)."""

    ca: str
    cert: str
    key: str

    def check(self) -> None:
        """Raise ``TlsError`` unless the three files load as a usable client identity."""
        for label, path in (("ca", self.ca), ("cert", self.cert), ("key", self.key)):
            if not Path(path).is_file():
                raise TlsError(f"tls {label} file {path} does not exist")
        self.client_context()

    def client_context(self) -> ssl.SSLContext:
        """Verifies the server (name or IP in its certificate) and presents our certificate."""
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"cannot load TLS files ({self.cert}, {self.key}): {exc}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def server_context(self) -> ssl.SSLContext:
        """Serves our certificate and requires a client certificate signed by the CA."""
        try:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.cert, self.key)
            context.load_verify_locations(cafile=self.ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"cannot load TLS files ({self.cert}, {self.key}): {exc}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        return context
