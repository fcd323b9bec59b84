#!/usr/bin/env bash
# A btrfs filesystem in a sparse file, mounted through a loop device.
#
#   btrfs-loop.sh up <image-file> <size> <mountpoint>
#       Create <image-file> (truncate to <size>, e.g. 4G; mkfs.btrfs) unless
#       it already holds a btrfs, attach it to a loop device (reusing one
#       already attached to that file) and mount it on <mountpoint>.
#       Nothing to do when <mountpoint> already is that btrfs. Prints the
#       loop device.
#
#   btrfs-loop.sh down <mountpoint> [--rm]
#       Unmount <mountpoint> and detach exactly the loop device it was
#       mounted from. --rm also deletes the backing image file. Nothing to
#       do when <mountpoint> is not mounted.
set -euo pipefail

die() {
	echo "btrfs-loop: $*" >&2
	exit 1
}
usage() {
	sed -n '2,/^set /p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2
	exit 2
}

[[ $(id -u) -eq 0 ]] || die "must run as root"

# mounted_source MOUNTPOINT: the device mounted exactly at MOUNTPOINT.
mounted_source() {
	{ findmnt -n -o SOURCE --mountpoint "$1" 2>/dev/null || true; } | head -n1
}

# loop_of FILE: a loop device already attached to FILE, if any.
loop_of() {
	{ losetup -n -O NAME -j "$1" 2>/dev/null || true; } | head -n1 | tr -d ' '
}

cmd_up() {
	(($# == 3)) || usage
	local img=$1 size=$2 mnt=$3 dev src

	mkdir -p "$mnt"
	mnt=$(realpath "$mnt")
	src=$(mounted_source "$mnt")
	if [[ -n $src ]]; then
		if [[ $(findmnt -n -o FSTYPE --mountpoint "$mnt") != btrfs ]]; then
			die "$mnt is already mounted from $src, and not as btrfs"
		fi
		echo "btrfs-loop: $mnt already mounted from $src" >&2
		echo "$src"
		return
	fi

	mkdir -p "$(dirname "$img")"
	if [[ ! -e $img ]]; then
		truncate -s "$size" "$img"
		echo "btrfs-loop: created sparse $img ($size)" >&2
	fi
	img=$(realpath "$img")
	if [[ $(blkid -p -o value -s TYPE "$img" 2>/dev/null || true) != btrfs ]]; then
		mkfs.btrfs -q "$img" >/dev/null
		echo "btrfs-loop: mkfs.btrfs $img" >&2
	fi

	dev=$(loop_of "$img")
	if [[ -z $dev ]]; then
		dev=$(losetup --find --show "$img")
		echo "btrfs-loop: attached $img to $dev" >&2
	fi
	if ! mount -t btrfs -o noatime "$dev" "$mnt"; then
		losetup -d "$dev" || true
		die "mounting $dev on $mnt failed"
	fi
	echo "btrfs-loop: mounted $dev on $mnt" >&2
	echo "$dev"
}

cmd_down() {
	(($# >= 1 && $# <= 2)) || usage
	local mnt=$1 rm_image=false dev back=""
	if (($# == 2)); then
		[[ $2 == --rm ]] || usage
		rm_image=true
	fi
	[[ -d $mnt ]] || {
		echo "btrfs-loop: $mnt does not exist, nothing to do" >&2
		return
	}
	mnt=$(realpath "$mnt")
	dev=$(mounted_source "$mnt")
	if [[ -z $dev ]]; then
		echo "btrfs-loop: $mnt is not mounted, nothing to do" >&2
		return
	fi
	if [[ $dev == /dev/loop* ]]; then
		back=$(losetup -n -O BACK-FILE "$dev" | sed 's/[[:space:]]*$//')
	fi
	umount "$mnt"
	echo "btrfs-loop: unmounted $mnt" >&2
	if [[ -z $back ]]; then
		echo "btrfs-loop: $mnt was mounted from $dev, not a loop device; leaving it" >&2
		return
	fi
	# The same loop device may still be mounted elsewhere: detach it only
	# when it is not.
	if findmnt -n -S "$dev" >/dev/null 2>&1; then
		echo "btrfs-loop: $dev is still mounted elsewhere; not detaching" >&2
		return
	fi
	losetup -d "$dev"
	echo "btrfs-loop: detached $dev ($back)" >&2
	if $rm_image; then
		rm -f "$back"
		echo "btrfs-loop: removed $back" >&2
	fi
}

case "${1:-}" in
up)
	shift
	cmd_up "$@"
	;;
down)
	shift
	cmd_down "$@"
	;;
*) usage ;;
esac
