#!/usr/bin/env bash
# Installs what clusterctl needs on the controller: Debian packages (when missing) and a
# virtualenv in .venv with the project and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(podman runc debootstrap openssh-client iproute2 curl git make wrk python3-venv)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "error: missing Debian packages: ${missing[*]}" >&2
    echo "hint: run 'sudo apt-get install -y ${missing[*]}' or run 'sudo make up'" >&2
    exit 1
  fi
  echo "installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# etcd for the store tests runs from an unpacked package: installing etcd-server would start
# a system-wide etcd on a host with systemd.
ETCD_DIR=.cache/etcd
if [[ ! -x $ETCD_DIR/usr/bin/etcd ]]; then
  echo "unpacking etcd-server into $ETCD_DIR (for the store tests)" >&2
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download etcd-server >/dev/null 2>&1) || {
    [[ $(id -u) -eq 0 ]] && apt-get update -qq && (cd "$tmp" && apt-get download etcd-server >/dev/null)
  }
  mkdir -p "$ETCD_DIR"
  dpkg -x "$tmp"/etcd-server_*.deb "$ETCD_DIR"
  rm -rf "$tmp"
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "creating virtualenv .venv" >&2
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.clusterctl-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  echo "installing clusterctl and its Python dependencies into .venv" >&2
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi
