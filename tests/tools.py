"""Binaries the tests run, found where the project's install step (`make deps`) puts them.

Servers (etcd, HAProxy) are unpacked from their Debian packages into .cache/<package>, since
installing them would start a system-wide service; plain tools (nft) are installed. A missing
one fails the test with a hint instead of skipping it: a test that skips on a fresh machine
does not exist.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def find_tool(name: str, package: str = "", path_in_package: str = "") -> str | None:
    """$CLUSTERCTL_<NAME>_BIN, the unpacked copy in .cache/<package>, or ``name`` on PATH."""
    candidates = [os.environ.get(f"CLUSTERCTL_{name.upper()}_BIN")]
    if package:
        candidates.append(str(REPO / ".cache" / package / path_in_package))
    candidates.append(shutil.which(name))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def require_tool(name: str, package: str = "", path_in_package: str = "") -> str:
    found = find_tool(name, package, path_in_package)
    if found is None:
        pytest.fail(
            f"{name} is missing: run `make deps` (it installs or unpacks {package or name})"
        )
    return found
