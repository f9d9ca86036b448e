"""Where the project's Ansible content lives (the package is installed editable from the repo)."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = PROJECT_ROOT / "playbooks"
ANSIBLE_CFG = PROJECT_ROOT / "ansible.cfg"


def playbook(name: str) -> Path:
    return PLAYBOOKS / name
