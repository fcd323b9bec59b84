#!/usr/bin/env bash
# Install what hack/vm needs on the host (Debian 12): QEMU, debootstrap and
# mkfs.ext4 with -d. Idempotent: apt runs only when a package is missing.
set -euo pipefail

PACKAGES=(qemu-system-x86 debootstrap e2fsprogs)

log() { echo "vm-deps: $*" >&2; }
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/../lib.sh" # apt_install_missing
apt_install_missing "" "${PACKAGES[@]}" >/dev/null || (($? == 1))
if ! command -v qemu-system-x86_64 >/dev/null; then
	echo "vm-deps: qemu-system-x86_64 is missing after installing qemu-system-x86" >&2
	exit 1
fi
