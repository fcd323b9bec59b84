#!/usr/bin/env bash
# Install what hack/vm needs on the host (Debian 12): QEMU, debootstrap and
# mkfs.ext4 with -d. Idempotent: apt runs only when a package is missing.
set -euo pipefail

PACKAGES=(qemu-system-x86 debootstrap e2fsprogs)

missing=()
for p in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed; then
		missing+=("$p")
	fi
done
if ((${#missing[@]})); then
	echo "vm-deps: apt: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v qemu-system-x86_64 >/dev/null; then
	echo "vm-deps: qemu-system-x86_64 is missing after installing qemu-system-x86" >&2
	exit 1
fi
