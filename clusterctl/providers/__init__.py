"""Providers make the machines a cluster runs on: podman (sandbox) or ssh (existing hosts)."""
