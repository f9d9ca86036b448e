"""node_digest: one digest that changes with what a converge manages, and only with it."""

from __future__ import annotations

import os


def test_the_digest_follows_files_links_and_modes(run_module, tmp_path):
    config = tmp_path / "agent.json"
    config.write_text('{"node": "node1"}\n')
    link = tmp_path / "site"
    link.symlink_to(config)
    gone = tmp_path / "default-site"  # a file the converge removes
    args = {"paths": [str(config), str(link), str(gone), str(tmp_path)]}

    def digest(check: bool = False) -> str:
        result, _ = run_module("node_digest", args, check=check)
        assert result["changed"] is False
        assert set(result["items"]) >= {str(config), str(gone), "boot links"}
        return result["digest"]

    first = digest()
    assert digest(check=True) == first  # reads the same in check mode
    config.write_text('{"node": "node2"}\n')
    edited = digest()
    assert edited != first
    os.chmod(config, 0o600)
    assert digest() != edited
    os.chmod(config, 0o644)
    assert digest() == edited
    gone.write_text("listen 80 default_server;\n")
    assert digest() != edited
    gone.unlink()
    link.unlink()
    link.symlink_to(tmp_path / "elsewhere")
    assert digest() != edited
