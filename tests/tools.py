"""Binaries the tests run, found where the project's install step (`make deps`) puts them.

Servers (etcd, HAProxy) are unpacked from their Debian packages into .cache/<package>, since
installing them would start a system-wide service; plain tools (nft) are installed. A missing
one fails the test with a hint instead of skipping it: a test that skips on a fresh machine
does not exist.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterctl.paths import find_tool

REPO = Path(__file__).resolve().parents[1]

__all__ = ["REPO", "find_tool", "require_tool"]


def require_tool(name: str, package: str = "", path_in_package: str = "") -> str:
    found = find_tool(name, package, path_in_package)
    if found is None:
        pytest.fail(
            f"{name} is missing: run `make deps` (it installs or unpacks {package or name})"
        )
    return found
