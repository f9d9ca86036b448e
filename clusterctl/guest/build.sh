#!/bin/sh
# Build the demo guest into DIR: Debian's cloud kernel (extracted from its package, never
# installed) and a busybox initramfs whose init runs a tiny HTTP service. Runs once, in the
# builder of the sandbox's vm layer, with busybox-static, cpio and kmod installed from Debian.
set -eu
out=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# the kernel: the package linux-image-cloud-amd64 points at (virtio drivers as modules)
package=$(apt-cache depends linux-image-cloud-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n 1)
version=${package#linux-image-}
apt-get download -qq "$package"
dpkg-deb -x "$package"_*.deb kernel
depmod -b "$work/kernel" "$version"  # modules.dep is made at install, not shipped
mkdir -p "$out"
cp "kernel/boot/vmlinuz-$version" "$out/vmlinuz"

# the initramfs: busybox, the virtio modules (and theirs) and the init script
root=$work/root
mkdir -p "$root/bin" "$root/lib/modules" "$root/www/cgi-bin"
cp /bin/busybox "$root/bin/busybox"
modules=kernel/lib/modules/$version
# virtio for the disk and the network; button + evdev: the ACPI power button reaches acpid
wanted="virtio_pci virtio_blk virtio_net button evdev"
for name in $wanted; do
    line=$(grep -E "/$name\.ko:" "$modules/modules.dep" || true)  # none: built in
    for path in $(echo "$line" | tr -d ':'); do
        cp "$modules/$path" "$root/lib/modules/"
    done
done
install -m 0755 "$here/init" "$root/init"
install -m 0755 "$here/status.cgi" "$root/www/cgi-bin/status"
echo "$version" > "$root/kernel-version"
(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -9 > "$out/initrd.gz"
echo "$version" > "$out/kernel-version"
