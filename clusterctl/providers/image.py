"""The sandbox node image: Debian bookworm built from Debian packages with debootstrap.

No container registry is reachable, so the image is made from a debootstrap tree and
imported into podman. It is tagged with a hash of this recipe and rebuilt only when the
recipe changes. Every package a role may need is baked in, so converging a sandbox node
installs nothing and a warm `up` stays fast; the roles still install them on real hosts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from clusterctl.errors import ClusterctlError
from clusterctl.providers.podman_cli import Podman
from clusterctl.reporter import Reporter

IMAGE_REPO = "localhost/clusterctl-node"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

PACKAGES = [
    # what systemd as PID 1 and Ansible need
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-apt",
    "iproute2",
    "procps",
    "openssh-server",
    "ca-certificates",
    "curl",
    "sudo",  # what the ssh provider's tests log in through as a non-root user (become)
    # the services clusterctl runs on its nodes
    "nginx-light",
    "etcd-server",
    "haproxy",
    "nftables",
    "iputils-arping",
    "iputils-ping",
    "conntrack",
]

# Host keys are made at first boot, so that no two nodes share one.
HOSTKEYS_UNIT = """\
[Unit]
Description=Generate this node's SSH host keys at first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
"""

# sshd on a node: keys only (the controller's), and no forwarding of any kind - a node
# must not become a tunnel into the cluster's network for whoever reaches its SSH port.
SSHD_CONFIG = """\
# clusterctl node image
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
AllowTcpForwarding no
AllowStreamLocalForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTunnel no
GatewayPorts no
"""

# Services the roles enable where they are wanted; the package default (etcd starts a
# single-node cluster at install) must not run on a fresh node.
DISABLED_UNITS = ["etcd.service", "haproxy.service"]

# 2: a disabled unit loses every link to it, its aliases too (etcd's etcd2.service link made
# `systemctl is-enabled etcd` say "enabled" while nothing started it at boot).
# 3: sshd takes keys only and forwards nothing (SSHD_CONFIG).
# 4: sudo, for a non-root SSH user with `become` (the ssh provider's tests).
RECIPE_VERSION = "4"


def recipe_hash() -> str:
    digest = hashlib.sha256()
    for part in (
        RECIPE_VERSION,
        SUITE,
        " ".join(PACKAGES),
        HOSTKEYS_UNIT,
        " ".join(DISABLED_UNITS),
        SSHD_CONFIG,
    ):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def image_name(profile: str | None = None) -> str:
    """The image a node of `profile` boots: the node image, or its profile layer."""
    if profile in PROFILE_LAYERS:
        return f"{IMAGE_REPO}-{profile}:{layer_hash(profile)}"
    return f"{IMAGE_REPO}:{recipe_hash()}"


# Profile layers: packages only one profile needs, installed from Debian into a container of
# the node image and committed, only when a cluster of that profile is first made, so the
# node image (and every other profile's warm `up`) stays as it is.
PROFILE_LAYERS = {
    "hpc": [
        "slurm-wlm",  # slurmctld, slurmd and the client commands
        "munge",
        "openmpi-bin",
        "python3-mpi4py",
        "libpmix-dev",  # libpmix.so, which `srun --mpi=pmix` loads
        "fence-agents",  # the controller's group is on shared storage: always fenced
    ],
    "vm": [
        "qemu-system-x86",  # qemu with TCG and KVM; its recommends (GUI, firmware) are not
        "qemu-utils",  # qemu-img
        "fence-agents",  # a VM's disk is shared storage: its group is always fenced
        # what builds the demo guest (clusterctl/guest/build.sh) into the layer
        "busybox-static",
        "cpio",
        "kmod",
    ],
}
# Built into a layer after its packages: the demo guest (kernel + initramfs) at GUEST_DIR,
# from clusterctl/guest, so that no node builds or downloads it at run time.
GUEST_SOURCE = Path(__file__).resolve().parent.parent / "guest"
GUEST_DIR = "/usr/local/lib/clusterctl/guest"
LAYER_GUEST = ("vm",)
# The roles enable what a node runs; the packages' own keys never reach a node: each
# package install makes its own random munge key, and the cluster needs one shared key.
LAYER_DISABLED_UNITS = {
    "hpc": ["munge.service", "slurmd.service", "slurmctld.service", "nginx.service"],
    "vm": ["nginx.service"],
}
LAYER_VERSION = "1"


def _guest_files() -> list[Path]:
    return sorted(p for p in GUEST_SOURCE.iterdir() if p.is_file())


def layer_hash(profile: str) -> str:
    digest = hashlib.sha256()
    parts = [
        recipe_hash(),
        LAYER_VERSION,
        " ".join(PROFILE_LAYERS[profile]),
        " ".join(LAYER_DISABLED_UNITS.get(profile, [])),
    ]
    if profile in LAYER_GUEST:  # a changed guest recipe is a new layer
        parts += [f"{f.name}:{f.read_text()}" for f in _guest_files()]
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def ensure_profile_image(podman: Podman, reporter: Reporter, profile: str) -> str:
    """Return the image of `profile`'s nodes, building the node image and its layer first if
    they were never built."""
    base = ensure_image(podman, reporter)
    if profile not in PROFILE_LAYERS:
        return base
    name = image_name(profile)
    if podman.image_exists(name):
        return name
    packages = PROFILE_LAYERS[profile]
    reporter.info(f"building the {profile} layer {name} (once; about a minute)")
    disable = " ".join(LAYER_DISABLED_UNITS.get(profile, []))
    script = (
        "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; "
        f"apt-get install -y -qq --no-install-recommends {' '.join(packages)} >/dev/null; "
        f"systemctl disable {disable} >/dev/null 2>&1 || true; "
        "rm -f /etc/munge/munge.key; "
        + (f"sh /guest/build.sh {GUEST_DIR}; " if profile in LAYER_GUEST else "")
        + f"apt-get clean; echo {layer_hash(profile)} > /etc/clusterctl-image-{profile}"
    )
    builder = f"clusterctl-build-{profile}-{layer_hash(profile)}"
    volumes = ["--volume", f"{GUEST_SOURCE}:/guest:ro"] if profile in LAYER_GUEST else []
    podman.run("rm", "-f", "-t", "0", builder, check=False)
    try:
        reporter.progress(f"installing {', '.join(packages)} from Debian")
        built = podman.run(
            "run", "--name", builder, *volumes, base, "sh", "-c", script, check=False
        )
        if built.returncode != 0:
            raise ClusterctlError(
                f"building the {profile} layer failed: {built.stderr.strip()[-300:]}",
                "check that deb.debian.org is reachable from podman's default network",
            )
        reporter.progress(f"committing the {profile} layer")
        podman.run("commit", "-q", "--change", 'CMD ["/sbin/init"]', builder, name)
    finally:
        podman.run("rm", "-f", "-t", "0", builder, check=False)
    reporter.info(f"{profile} layer {name} built")
    return name


def ensure_image(podman: Podman, reporter: Reporter) -> str:
    """Return the node image's name, building it first if this recipe was never built."""
    name = image_name()
    if podman.image_exists(name):
        return name
    if shutil.which("debootstrap") is None:
        raise ClusterctlError(
            "debootstrap is not installed (needed once, to build the node image)",
            "run `make up`, or `apt-get install -y debootstrap`",
        )
    if os.geteuid() != 0:
        raise ClusterctlError(
            "building the node image needs root (debootstrap)", "run `sudo make up` once"
        )
    reporter.info(f"building node image {name} (once; about 2 minutes)")
    build_root = Path(tempfile.mkdtemp(prefix="clusterctl-image-"))
    rootfs = build_root / "rootfs"
    try:
        _debootstrap(rootfs, reporter)
        _customize(rootfs)
        reporter.progress("importing the node image into podman")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        proc = subprocess.run(
            [podman.binary, "import", "--change", 'CMD ["/sbin/init"]', "-", name],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            env=podman.env,
        )
        tar.wait()
        if proc.returncode != 0 or tar.returncode != 0:
            raise ClusterctlError(
                f"podman import of the node image failed: {proc.stderr.strip()[-300:]}",
                "check free disk space and `podman info`",
            )
    finally:
        shutil.rmtree(build_root, ignore_errors=True)
    reporter.info(f"node image {name} built")
    return name


def _debootstrap(rootfs: Path, reporter: Reporter) -> None:
    mirror = os.environ.get("CLUSTERCTL_DEBIAN_MIRROR", DEFAULT_MIRROR)
    cmd = [
        "debootstrap",
        "--variant=minbase",
        "--include=" + ",".join(PACKAGES),
        SUITE,
        str(rootfs),
        mirror,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.strip()
        tail = (tail + [line])[-20:]
        if line.startswith("I: "):
            reporter.progress("debootstrap: " + line[3:])
    if proc.wait() != 0:
        raise ClusterctlError(
            "debootstrap failed: " + (tail[-1] if tail else "no output"),
            f"check that {mirror} is reachable (set CLUSTERCTL_DEBIAN_MIRROR to another mirror)",
        )


def _customize(rootfs: Path) -> None:
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    sshd_dir = rootfs / "etc/ssh/sshd_config.d"
    sshd_dir.mkdir(parents=True, exist_ok=True)
    (sshd_dir / "clusterctl.conf").write_text(SSHD_CONFIG)
    systemd_dir = rootfs / "etc/systemd/system"
    (systemd_dir / "ssh-hostkeys.service").write_text(HOSTKEYS_UNIT)
    wants = systemd_dir / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "ssh-hostkeys.service"
    if not link.is_symlink():
        link.symlink_to("/etc/systemd/system/ssh-hostkeys.service")
    _disable_units(systemd_dir, DISABLED_UNITS)
    shutil.rmtree(rootfs / "var/lib/etcd/default", ignore_errors=True)
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/clusterctl-image").write_text(recipe_hash() + "\n")


def _disable_units(systemd_dir: Path, units: list[str]) -> None:
    """Remove every link to `units` under /etc/systemd/system: wants links and aliases.

    This is what `systemctl disable` does; removing only the wants link left an alias link
    behind, which made `is-enabled` answer "enabled" for a unit nothing starts at boot.
    """
    for link in list(systemd_dir.rglob("*")):
        if link.is_symlink() and (link.name in units or Path(os.readlink(link)).name in units):
            link.unlink()
