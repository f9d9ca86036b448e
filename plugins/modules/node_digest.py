#!/usr/bin/python
# Copyright: clusterctl developers
# Apache License 2.0 (see galaxy.yml)
# ruff: noqa: E402  (imports follow DOCUMENTATION/EXAMPLES/RETURN, as in Ansible modules)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: node_digest
short_description: One digest of the state a converge left on a node
description:
  - Reads, never changes, what a converge manages on a node and returns one SHA-256 digest
    of it, so that the controller can tell in one task whether a node still matches its last
    converge (C(clusterctl up) converges again only when it does not).
  - Covers the given files (content, mode, owner; a missing one counts as missing), the
    regular files directly inside the given directories under C(/etc) and C(/usr) (so files a
    converge writes without logging their names, such as keys, count too; a data directory
    elsewhere counts by its mode and owner alone), symbolic links and their targets, the
    units systemd starts at boot (every link in C(/etc/systemd/system) and its C(.wants)
    directories), whether each of O(units) is active, and every installed package with its
    version.
version_added: "0.4.0"
author:
  - clusterctl developers
options:
  paths:
    description: Files, directories and links the converge manages.
    type: list
    elements: path
    default: []
  units:
    description: Units the converge keeps running.
    type: list
    elements: str
    default: []
notes:
  - Supports check mode (it changes nothing either way).
"""

EXAMPLES = r"""
- name: Digest the state the last converge left
  clusterctl.cluster.node_digest:
    paths: [/etc/default/etcd, /etc/etcd/pki]
    units: [etcd]
  register: node_state
"""

RETURN = r"""
digest:
  description: SHA-256 (hex) over everything the module read.
  returned: always
  type: str
items:
  description: >-
    What went into the digest, item by item (a path, V(unit NAME), V(boot links),
    V(packages)) with a short hash of each, so that a difference can be named.
  returned: always
  type: dict
"""

import hashlib
import json
import os
import stat

from ansible.module_utils.basic import AnsibleModule

SYSTEMD_DIR = "/etc/systemd/system"


def _file_entry(path: str) -> str:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return f"{path} missing"
    owner = f"{stat.S_IMODE(info.st_mode):o} {info.st_uid}:{info.st_gid}"
    if stat.S_ISLNK(info.st_mode):
        return f"{path} link {os.readlink(path)}"
    if stat.S_ISDIR(info.st_mode):
        return f"{path} dir {owner}"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} special {owner}"
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return f"{path} file {owner} {digest.hexdigest()}"


# Directories whose files are configuration and programs, read with the directory; elsewhere
# (/var: data, pages) a directory's contents change by themselves.
LISTED_ROOTS = ("/etc/", "/usr/")


def _directory_entries(path: str) -> list[str]:
    """The directory itself and, under LISTED_ROOTS, the files and links directly in it."""
    entries = [_file_entry(path)]
    if not path.startswith(LISTED_ROOTS):
        return entries
    try:
        names = sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return entries
    for name in names:
        child = os.path.join(path, name)
        if os.path.islink(child) or os.path.isfile(child):
            entries.append(_file_entry(child))
    return entries


def _boot_links() -> str:
    """Every unit link systemd's own directory holds: what starts at boot, and aliases."""
    entries = []
    for root, dirs, files in os.walk(SYSTEMD_DIR):
        dirs.sort()
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(root, d))]):
            path = os.path.join(root, name)
            if os.path.islink(path):
                entries.append(f"{path} link {os.readlink(path)}")
    return "\n".join(entries)


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "paths": {"type": "list", "elements": "path", "default": []},
            "units": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    items: dict[str, str] = {}
    for path in sorted(set(module.params["paths"])):
        if os.path.isdir(path) and not os.path.islink(path):
            items[path] = _short("\n".join(_directory_entries(path)))
        else:
            items[path] = _short(_file_entry(path))
    items["boot links"] = _short(_boot_links())
    units = sorted(set(module.params["units"]))
    if units:
        systemctl = module.get_bin_path("systemctl", required=True)
        rc, out, err = module.run_command([systemctl, "is-active", *units])
        if rc not in (0, 3):  # 3: at least one unit is not active, which is an answer
            module.fail_json(msg=f"systemctl is-active failed: {err.strip()}")
        for unit, state in zip(units, out.split(), strict=False):
            items[f"unit {unit}"] = state
    dpkg = module.get_bin_path("dpkg-query")
    if dpkg:
        rc, out, err = module.run_command([dpkg, "-W", "-f", "${Package} ${Version}\\n"])
        if rc != 0:
            module.fail_json(msg=f"dpkg-query failed: {err.strip()}")
        items["packages"] = _short(out)
    digest = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()
    module.exit_json(changed=False, digest=digest, items=items)


if __name__ == "__main__":
    main()
