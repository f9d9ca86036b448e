#!/usr/bin/env bash
# The collection as a user gets it: build the tarball, check it is small and holds no caches,
# install it into an empty path, and check that ansible-doc documents every module and that a
# user's playbook resolves each by its FQCN. (ansible-test sanity needs a download this
# machine kind cannot make; this is the closest offline check.)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(cd "${BIN:-.venv/bin}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# an empty config of the user's own, so nothing of this repository's ansible.cfg applies
printf '[defaults]\n' > "$work/ansible.cfg"
"$BIN/ansible-galaxy" collection build --output-path "$work/dist" >/dev/null
tarball=$(ls "$work"/dist/*.tar.gz)
size=$(stat -c %s "$tarball")
if ((size > 1024 * 1024)); then
  echo "error: collection tarball is $size bytes (limit 1 MiB): check build_ignore in galaxy.yml" >&2
  exit 1
fi
if tar tzf "$tarball" | grep -E '(^|/)(\.cache|\.venv|__pycache__|tests|bench)(/|$)' >&2; then
  echo "error: the collection tarball holds the files above" >&2
  exit 1
fi
export ANSIBLE_CONFIG="$work/ansible.cfg" ANSIBLE_COLLECTIONS_PATH="$work/collections"
(cd "$work" && "$BIN/ansible-galaxy" collection install -p "$work/collections" "$tarball" >/dev/null)
modules=$(cd plugins/modules && ls *.py | grep -v '^__' | sed 's/\.py$//')
listed=$("$BIN/ansible-doc" -t module -l clusterctl.cluster)
{
  echo "- hosts: localhost"
  echo "  gather_facts: false"
  echo "  tasks:"
} > "$work/user.yml"
for module in $modules; do
  grep -q "^clusterctl.cluster.$module " <<<"$listed" || { echo "error: ansible-doc -l misses $module" >&2; exit 1; }
  doc=$(ANSIBLE_NOCOLOR=1 "$BIN/ansible-doc" -t module "clusterctl.cluster.$module")
  for part in EXAMPLES RETURN; do
    grep -q "^$part" <<<"$doc" || { echo "error: ansible-doc shows no $part for $module" >&2; exit 1; }
  done
  printf '    - name: %s\n      clusterctl.cluster.%s: {}\n' "$module" "$module" >> "$work/user.yml"
done
(cd "$work" && "$BIN/ansible-playbook" --syntax-check -i localhost, user.yml >/dev/null)
echo "collection OK: $(basename "$tarball"), $((size / 1024)) KiB, modules: $(echo $modules)"
