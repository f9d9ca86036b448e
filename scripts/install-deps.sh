#!/usr/bin/env bash
# Installs what clusterctl needs on the controller: Debian packages (when missing) and a
# virtualenv in .venv with the project and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# nftables and HAProxy's libraries: the tests check rendered nft scripts and HAProxy configs
# with the real tools (installing nftables starts no service; HAProxy itself is unpacked below)
APT_PACKAGES=(podman runc debootstrap openssh-client iproute2 curl git make wrk python3-venv
  nftables liblua5.3-0 libopentracing-c-wrapper0)

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

# Servers the tests run or check with run from unpacked packages: installing etcd-server or
# haproxy would start a system-wide service on a host with systemd.
unpack() {  # unpack PACKAGE BINARY (relative to .cache/PACKAGE) WHY
  local dir=.cache/$1
  [[ -x $dir/$2 ]] && return
  echo "unpacking $1 into $dir ($3)" >&2
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download "$1" >/dev/null 2>&1) || {
    [[ $(id -u) -eq 0 ]] && apt-get update -qq && (cd "$tmp" && apt-get download "$1" >/dev/null)
  }
  mkdir -p "$dir"
  dpkg -x "$tmp/$1"_*.deb "$dir"
  rm -rf "$tmp"
}
unpack etcd-server usr/bin/etcd "for the store tests"
unpack haproxy usr/sbin/haproxy "to check rendered HAProxy configs"

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
