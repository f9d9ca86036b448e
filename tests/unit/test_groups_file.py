"""`clusterctl up --groups FILE`: the operator's groups, checked by the agent's rules first."""

from __future__ import annotations

import json

import pytest

from clusterctl.cluster import load_groups
from clusterctl.errors import ClusterctlError

WRITER = {"name": "writer", "type": "systemd", "unit": "writer.service", "exclusive": True}


def groups(**group: object) -> str:
    return json.dumps([{"resources": [WRITER], **group}])


def test_a_valid_file_gives_the_groups_in_the_agents_syntax(tmp_path) -> None:
    path = tmp_path / "groups.yml"
    path.write_text(
        "- name: shared\n  fencing: required\n  resources:\n"
        "    - {name: writer, type: systemd, unit: writer.service, exclusive: true}\n"
    )
    (group,) = load_groups(path, "podman", fencing=True)
    assert group["name"] == "shared" and group["fencing"] == "required"
    assert group["resources"][0]["unit"] == "writer.service"
    json.dumps(group)  # goes into the record and the inventory as it is


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{not: [a list", "not YAML or JSON"),
        ("name: x", "a list of groups"),
        ("[]", "a list of groups"),
        ('[{"name": "x", "resources": []}]', "no resources"),
        (groups(name="web"), "taken"),
        (groups(name="y", fencing="maybe"), "fencing"),
        (groups(name="y", fencing="required"), "--fencing"),
    ],
)
def test_bad_files_are_one_line_errors_with_a_hint(tmp_path, text: str, words: str) -> None:
    path = tmp_path / "groups.json"
    path.write_text(text)
    with pytest.raises(ClusterctlError) as error:
        load_groups(path, "podman", fencing=False)
    assert words in f"{error.value} {error.value.hint}"
    assert "\n" not in str(error.value)


def test_a_missing_file_says_so(tmp_path) -> None:
    with pytest.raises(ClusterctlError, match="cannot read"):
        load_groups(tmp_path / "absent.yml", "podman", fencing=True)
