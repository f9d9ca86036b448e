"""A thin wrapper around the podman command, always with clusterctl's private config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from clusterctl.errors import ClusterctlError
from clusterctl.state import state_root, write_private

# Podman here works only with runc and explicit ulimits (docs/machine-notes.md); this file is
# ours, so the user's global podman configuration is never touched.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
"""


def require_podman() -> str:
    path = shutil.which("podman")
    if path:
        return path
    if os.geteuid() == 0:
        hint = "run `make up` (it installs podman), or `apt-get install -y podman runc`"
    else:
        hint = "ask an administrator to run `apt-get install -y podman runc`, or use `sudo make up`"
    raise ClusterctlError("podman is not installed", hint)


def _run_to_completion(
    argv: list[str], stdin: bytes | None, env: dict[str, str], timeout: float | None
) -> subprocess.CompletedProcess[str]:
    """Run a command that must not be cut in half by Ctrl-C.

    The child gets its own session, so the terminal's SIGINT reaches only clusterctl; if it
    arrives meanwhile, the child still finishes (a `podman run` killed midway leaks its IP
    allocation) and the interrupt is raised afterwards.
    """
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    interrupted = False
    data = stdin
    while True:
        try:
            out, err = proc.communicate(input=data, timeout=timeout)
            break
        except KeyboardInterrupt:
            interrupted = True
            data = None  # already sent (communicate keeps its progress)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise ClusterctlError(
                f"{' '.join(argv[:3])} did not finish within {timeout:.0f} s",
                "check `podman ps` and the system load",
            ) from None
    if interrupted:
        raise KeyboardInterrupt
    return subprocess.CompletedProcess(
        argv, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    )


class Podman:
    """Runs podman with CONTAINERS_CONF pointing at clusterctl's own containers.conf."""

    def __init__(self, conf_dir: Path | None = None) -> None:
        self.binary = require_podman()
        conf_dir = conf_dir or state_root()
        conf_dir.mkdir(parents=True, exist_ok=True)
        self.conf = conf_dir / "containers.conf"
        if not self.conf.exists() or self.conf.read_text() != CONTAINERS_CONF:
            write_private(self.conf, CONTAINERS_CONF)
        self.env = dict(os.environ, CONTAINERS_CONF=str(self.conf))

    def run(
        self,
        *args: str,
        check: bool = True,
        stdin: bytes | None = None,
        timeout: float | None = 300,
    ) -> subprocess.CompletedProcess[str]:
        proc = _run_to_completion([self.binary, *args], stdin=stdin, env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            reason = detail[-1] if detail else f"exit {proc.returncode}"
            raise ClusterctlError(
                f"podman {args[0]} failed: {reason}",
                "see `podman " + " ".join(args[:2]) + "`; ENVIRONMENT notes: podman needs runc",
            )
        return proc

    def popen(self, *args: str, stdin: bytes | None = None) -> subprocess.Popen[str]:
        """Start ``podman ARGS`` without waiting; ``stdin`` is written and closed at once.
        For commands that print little: read stdout after ``wait``."""
        proc = subprocess.Popen(
            [self.binary, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=self.env,
            text=True,
        )
        assert proc.stdin is not None
        proc.stdin.write((stdin or b"").decode())
        proc.stdin.close()
        return proc

    def json(self, *args: str) -> list[dict]:
        out = self.run(*args).stdout.strip()
        return json.loads(out) if out else []

    def container_exists(self, name: str) -> bool:
        return self.run("container", "exists", name, check=False).returncode == 0

    def network_exists(self, name: str) -> bool:
        return self.run("network", "exists", name, check=False).returncode == 0

    def image_exists(self, name: str) -> bool:
        return self.run("image", "exists", name, check=False).returncode == 0

    def containers_with_label(self, label: str) -> list[str]:
        out = self.run("ps", "-a", "--filter", f"label={label}", "--format", "{{.Names}}").stdout
        return [line for line in out.split() if line]

    def networks(self) -> list[dict]:
        return self.json("network", "ls", "--format", "json")
