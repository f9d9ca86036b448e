"""Where the project's content lives (the package is installed editable from the repo): the
Ansible content, and the servers `make deps` unpacks into .cache/ (etcd for the store tests
and `bench scale`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = PROJECT_ROOT / "playbooks"
ANSIBLE_CFG = PROJECT_ROOT / "ansible.cfg"
CACHE = PROJECT_ROOT / ".cache"

# (name, Debian package, path in the package): etcd, unpacked by `make deps` rather than
# installed (installing it would start a system-wide service)
ETCD_PACKAGE = ("etcd", "etcd-server", "usr/bin/etcd")


def playbook(name: str) -> Path:
    return PLAYBOOKS / name


def find_tool(name: str, package: str = "", path_in_package: str = "") -> str | None:
    """$CLUSTERCTL_<NAME>_BIN, the unpacked copy in .cache/<package>, or ``name`` on PATH."""
    candidates = [os.environ.get(f"CLUSTERCTL_{name.upper()}_BIN")]
    if package:
        candidates.append(str(CACHE / package / path_in_package))
    candidates.append(shutil.which(name))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)
