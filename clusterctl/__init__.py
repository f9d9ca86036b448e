"""clusterctl: build Linux clusters with Ansible and keep their services available."""

__version__ = "0.1.0"
