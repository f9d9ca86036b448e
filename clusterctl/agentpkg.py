"""Packs the agent into one zipapp that a node runs with its own python3.

The archive is byte-for-byte reproducible (sorted entries, fixed timestamps), so Ansible's
copy reports a change, and the agent restarts, only when the agent's code changed.

    python -m clusterctl.agentpkg OUTPUT.pyz
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
FIXED_TIME = (2020, 1, 1, 0, 0, 0)
MAIN = b"from clusterctl.agent.daemon import main\n\nraise SystemExit(main())\n"


def agent_sources() -> list[tuple[str, bytes]]:
    """(archive name, content) of every file the agent needs: stdlib-only modules."""
    files = [("clusterctl/__init__.py", (PACKAGE_ROOT / "__init__.py").read_bytes())]
    for path in sorted((PACKAGE_ROOT / "agent").rglob("*.py")):
        name = "clusterctl/" + path.relative_to(PACKAGE_ROOT).as_posix()
        files.append((name, path.read_bytes()))
    return [("__main__.py", MAIN), *files]


def build() -> bytes:
    buffer = io.BytesIO()
    buffer.write(b"#!/usr/bin/python3\n")
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in agent_sources():
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return buffer.getvalue()


def write(output: Path) -> bool:
    """Write the archive if it differs; return whether the file changed."""
    data = build()
    if output.exists() and output.read_bytes() == data:
        return False
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    tmp.replace(output)
    return True


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m clusterctl.agentpkg OUTPUT.pyz")
    print("changed" if write(Path(sys.argv[1])) else "unchanged")
