#!/usr/bin/env bash
# Build (or reuse) the Debian 12 guest of hack/vm: a debootstrap minbase
# root with systemd as PID 1, in a raw ext4 image, plus the kernel and
# initrd from its /boot, for QEMU to boot with root=/dev/vda.
#
#   hack/vm/image.sh        print the cache directory holding root.img,
#                           vmlinuz and initrd.img, building it if needed
#
# The image is cached under $TUPPER_VM_CACHE (default /var/cache/tupper-vm)
# in a directory named by a hash of its inputs (this script, the guest
# files baked into it, the package list, the suite and mirror), so a change
# to any of them builds a new one; older builds are removed. Tests never
# write to it: QEMU boots it with snapshot=on. The downloaded packages are
# kept in $TUPPER_VM_CACHE/debs, so that a rebuild fetches only what changed.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${TUPPER_VM_CACHE:-/var/cache/tupper-vm}
SUITE=bookworm
MIRROR=${TUPPER_VM_MIRROR:-http://deb.debian.org/debian}
IMAGE_SIZE=12G

# What the guest needs: systemd as init with D-Bus (the systemd cgroup
# driver talks to it), the kernel and its modules (btrfs, 9p, nf_tables),
# and the tools the tests and hack/cri.sh call. gcc and libc6-dev build
# integration/shim's static syscall probe (testdata/probe.c).
PACKAGES=(
	systemd-sysv udev kmod dbus linux-image-amd64 initramfs-tools
	btrfs-progs e2fsprogs mount util-linux procps psmisc iproute2 iptables
	busybox-static containernetworking-plugins curl gcc libc6-dev
)

log() { printf 'vm-image: %s\n' "$*" >&2; }
die() {
	printf 'vm-image: %s\n' "$*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, mkfs)"

key=$({
	cat "$0" "$HERE/guest/tupper-vm.service" "$HERE/guest/tupper-vm-boot"
	echo "$SUITE $MIRROR ${PACKAGES[*]}"
} | sha256sum | cut -c1-16)
out=$CACHE/$key

if [[ -f $out/done ]]; then
	echo "$out"
	exit 0
fi

"$HERE/deps.sh"

mkdir -p "$CACHE"
tmp=$(mktemp -d "$CACHE/build.XXXXXX")
cleanup() {
	# debootstrap may leave its chroot's proc/sys mounted when it fails.
	awk -v d="$tmp/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT

root=$tmp/root
start=$SECONDS
log "debootstrap $SUITE (minbase + ${#PACKAGES[@]} packages) from $MIRROR; a few minutes"
mkdir -p "$CACHE/debs"
if ! debootstrap --variant=minbase --cache-dir="$CACHE/debs" --include="$(
	IFS=,
	echo "${PACKAGES[*]}"
)" "$SUITE" "$root" "$MIRROR" >"$tmp/debootstrap.log" 2>&1; then
	tail -n 40 "$tmp/debootstrap.log" >&2
	die "debootstrap failed (log above)"
fi

# The guest: no network device, a serial console, root on /dev/vda, and
# the unit that runs the share's script once booted and powers off.
echo tupper-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 tupper-vm\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 rw,relatime 0 1\n' >"$root/etc/fstab"
install -m 0644 "$HERE/guest/tupper-vm.service" "$root/etc/systemd/system/tupper-vm.service"
install -m 0755 "$HERE/guest/tupper-vm-boot" "$root/usr/local/sbin/tupper-vm-boot"
ln -sf /etc/systemd/system/tupper-vm.service "$root/etc/systemd/system/multi-user.target.wants/tupper-vm.service"
# Nothing to wait for at boot that the tests do not need.
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer systemd-timesyncd.service; do
	ln -sf /dev/null "$root/etc/systemd/system/$u"
done
chroot "$root" passwd -d root >/dev/null
rm -f "$root"/var/cache/apt/archives/*.deb

vmlinuz=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' | sort | tail -n1)
initrd=$(find "$root/boot" -maxdepth 1 -name 'initrd.img-*' | sort | tail -n1)
[[ -n $vmlinuz && -n $initrd ]] || die "no kernel or initrd in the guest's /boot"
install -m 0644 "$vmlinuz" "$tmp/vmlinuz"
install -m 0644 "$initrd" "$tmp/initrd.img"
# shellcheck disable=SC2016 # dpkg-query's format, not the shell's
chroot "$root" dpkg-query -W -f '${Package} ${Version}\n' >"$tmp/packages.txt"

log "ext4 image ($IMAGE_SIZE, sparse)"
truncate -s "$IMAGE_SIZE" "$tmp/root.img"
mkfs.ext4 -q -L tupper-vm -d "$root" "$tmp/root.img"
rm -rf "$root"

rm -f "$tmp/debootstrap.log"
touch "$tmp/done"
# Replace any older build: one guest image in the cache at a time.
find "$CACHE" -mindepth 1 -maxdepth 1 -type d ! -path "$tmp" ! -path "$CACHE/debs" -exec rm -rf {} +
mv "$tmp" "$out"
trap - EXIT
log "built $out in $((SECONDS - start)) s ($(du -sh "$out" | cut -f1) on disk)"
echo "$out"
