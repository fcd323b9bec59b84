#!/usr/bin/env bash
# Install what tupper's tests and demo need on a Debian 12 host.
#
# Idempotent and quick when everything is present: every item is checked
# first, `apt-get update` runs only when an apt package is missing, and Go
# binaries are rebuilt only when missing from $GOBIN or built from another
# module version. Must run as root (apt, /usr/local/bin).
#
# Environment:
#   GOBIN   where the Go tools go (default /usr/local/bin, on containerd's PATH)
#   GO      go command (default: go, with /usr/local/go/bin first on PATH)
#   INSTALL_DEPS_NO_COPY=1  always build, never copy from $(go env GOPATH)/bin
set -euo pipefail

export PATH="/usr/local/go/bin:$PATH"
GO="${GO:-go}"
GOBIN="${GOBIN:-/usr/local/bin}"
export GOBIN

CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.5.3

log() { printf 'install-deps: %s\n' "$*"; }
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh" # apt_install_missing

if [[ $(id -u) -ne 0 ]]; then
	echo "install-deps: must run as root" >&2
	exit 1
fi

if ! command -v "$GO" >/dev/null; then
	echo "install-deps: no Go toolchain ($GO); install the Go release named in go.mod into /usr/local/go" >&2
	exit 1
fi

# ---------------------------------------------------------------- apt packages
APT_PACKAGES=(
	btrfs-progs
	busybox-static
	libseccomp-dev
	containernetworking-plugins
	iproute2
	iptables
	pkg-config
	gcc
	libc6-dev # cgo for the tests and runc
	musl-tools # musl-gcc: the shim, its helper and tupper-run are linked statically against musl (Makefile)
	autoconf automake libtool gperf # to build libseccomp for musl (below)
	shellcheck # make test checks hack/*.sh
	bsdutils # script(1): the shim's tests give ctr a terminal
)

apt_install_missing "" "${APT_PACKAGES[@]}" || {
	rc=$?
	((rc == 1)) || exit "$rc"
	log "apt: all ${#APT_PACKAGES[@]} packages present"
}

# ------------------------------------------------------- libseccomp for musl
# The shim, its helper and tupper-run are linked statically against musl
# (Makefile: glibc's static start-up issues ~55 CPUID instructions, each a
# VM exit on a virtual machine). Debian builds libseccomp for glibc only,
# so it is built here with musl-gcc, from its source as the Go module proxy
# serves it (the GitHub repository, as module version +incompatible), into
# $MUSL_PREFIX, with links to the kernel headers musl's own include
# directory lacks and a pkg-config file the Makefile points cgo at.
#
# v2.5.5 knows the syscalls up to Linux 6.7, as Debian 12's libseccomp-dev
# (2.5.4 with its table patched) does: containerd's default profile allows
# fchmodat2, cachestat, futex_wait and others from that table, and a
# libseccomp that cannot name them leaves them to the profile's default
# action (EPERM), where runc on the same host allows them. The build is
# checked for exactly that.
LIBSECCOMP_VERSION=v2.5.5
MUSL_PREFIX=${MUSL_PREFIX:-/usr/local/lib/tupper-musl} # the Makefile's MUSL_PREFIX

# musl_libseccomp_ok: $MUSL_PREFIX has $LIBSECCOMP_VERSION, and a program
# linked with it against musl names fchmodat2 (Linux 6.6).
musl_libseccomp_ok() {
	local tmp ok=1
	[[ -f $MUSL_PREFIX/lib/libseccomp.a && -f $MUSL_PREFIX/lib/pkgconfig/libseccomp.pc &&
		$(cat "$MUSL_PREFIX/libseccomp.version" 2>/dev/null) == "$LIBSECCOMP_VERSION" ]] || return 1
	tmp=$(mktemp -d)
	cat >"$tmp/check.c" <<'C'
#include <seccomp.h>
int main(void) { return seccomp_syscall_resolve_name("fchmodat2") == __NR_SCMP_ERROR; }
C
	musl-gcc -static -I"$MUSL_PREFIX/include" -o "$tmp/check" "$tmp/check.c" -L"$MUSL_PREFIX/lib" -lseccomp 2>/dev/null &&
		"$tmp/check" && ok=0
	rm -rf "$tmp"
	return "$ok"
}

# musl_kernel_headers: the kernel's uapi headers, which musl-gcc does not
# search, next to libseccomp's in $MUSL_PREFIX/include.
musl_kernel_headers() {
	local triplet
	triplet=$(gcc -dumpmachine)
	mkdir -p "$MUSL_PREFIX/include"
	ln -sfn /usr/include/linux "$MUSL_PREFIX/include/linux"
	ln -sfn /usr/include/asm-generic "$MUSL_PREFIX/include/asm-generic"
	ln -sfn "/usr/include/$triplet/asm" "$MUSL_PREFIX/include/asm"
}

install_musl_libseccomp() {
	local out src tmp
	musl_kernel_headers
	if musl_libseccomp_ok; then
		log "libseccomp: $MUSL_PREFIX has $LIBSECCOMP_VERSION built for musl"
		return
	fi
	if ! out=$(cd / && GOFLAGS='' "$GO" mod download -json "github.com/seccomp/libseccomp@$LIBSECCOMP_VERSION+incompatible" 2>&1); then
		printf '%s\n' "$out" >&2
		echo "install-deps: libseccomp: the module proxy did not give the source of $LIBSECCOMP_VERSION" >&2
		exit 1
	fi
	src=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$out")
	if [[ -z $src || ! -f $src/configure.ac ]]; then
		printf '%s\n' "$out" >&2
		echo "install-deps: libseccomp: no source tree for $LIBSECCOMP_VERSION in the module cache" >&2
		exit 1
	fi
	tmp=$(mktemp -d)
	log "libseccomp: building $LIBSECCOMP_VERSION for musl in $tmp"
	cp -r "$src/." "$tmp"
	chmod -R u+w "$tmp"
	chmod +x "$tmp/autogen.sh" "$tmp/src/arch-gperf-generate" # module zips keep no modes
	if ! (cd "$tmp" && ./autogen.sh &&
		CC=musl-gcc CFLAGS="-O2 -fstack-protector-strong -I$MUSL_PREFIX/include" \
			./configure --enable-static --disable-shared --prefix="$MUSL_PREFIX" &&
		make -C src -j"$(nproc)" && make -C src install && make -C include install &&
		make install-pkgconfDATA) >"$tmp/build.log" 2>&1; then
		tail -30 "$tmp/build.log" >&2
		echo "install-deps: building libseccomp for musl failed (log above; tree left in $tmp)" >&2
		exit 1
	fi
	rm -rf "$tmp"
	echo "$LIBSECCOMP_VERSION" >"$MUSL_PREFIX/libseccomp.version"
	if ! musl_libseccomp_ok; then
		echo "install-deps: libseccomp $LIBSECCOMP_VERSION for musl in $MUSL_PREFIX does not name fchmodat2" >&2
		exit 1
	fi
	log "libseccomp: installed $LIBSECCOMP_VERSION for musl into $MUSL_PREFIX"
}
install_musl_libseccomp

# ------------------------------------------------------------------ Go tools
# go_has_module BIN MODULE VERSION [TAGS]: BIN was built from MODULE@VERSION
# (and with -tags=TAGS when given), according to its embedded build info.
go_has_module() {
	local bin=$1 mod=$2 ver=$3 tags=${4:-} info
	[[ -x $bin ]] || return 1
	info=$("$GO" version -m "$bin" 2>/dev/null) || return 1
	grep -Eq "^[[:space:]]+mod[[:space:]]+${mod//./\\.}[[:space:]]+${ver//./\\.}[[:space:]]" <<<"$info" || return 1
	if [[ -n $tags ]]; then
		grep -Eq "^[[:space:]]+build[[:space:]]+-tags=${tags}\$" <<<"$info" || return 1
	fi
}

# go_tool NAME MODULE PACKAGE VERSION [TAGS]: make $GOBIN/NAME. A matching
# binary already in $(go env GOPATH)/bin (an earlier manual `go install`) is
# copied instead of rebuilt, to spare the build.
go_tool() {
	local name=$1 mod=$2 pkg=$3 ver=$4 tags=${5:-}
	local dst="$GOBIN/$name" gopath_bin
	if go_has_module "$dst" "$mod" "$ver" "$tags"; then
		log "go: $dst is $mod@$ver${tags:+ (tags $tags)}"
		return
	fi
	gopath_bin="$("$GO" env GOPATH | cut -d: -f1)/bin/$name"
	if [[ -z ${INSTALL_DEPS_NO_COPY:-} && $gopath_bin != "$dst" ]] && go_has_module "$gopath_bin" "$mod" "$ver" "$tags"; then
		log "go: copying $gopath_bin (built from $mod@$ver) to $dst"
		install -m 0755 "$gopath_bin" "$dst"
		return
	fi
	log "go: installing $pkg@$ver${tags:+ -tags $tags} into $GOBIN"
	local args=(install)
	[[ -n $tags ]] && args+=(-tags "$tags")
	"$GO" "${args[@]}" "$pkg@$ver"
}

mkdir -p "$GOBIN"
CTRD=github.com/containerd/containerd/v2
go_tool containerd "$CTRD" "$CTRD/cmd/containerd" "$CONTAINERD_VERSION"
go_tool ctr "$CTRD" "$CTRD/cmd/ctr" "$CONTAINERD_VERSION"
go_tool containerd-shim-runc-v2 "$CTRD" "$CTRD/cmd/containerd-shim-runc-v2" "$CONTAINERD_VERSION"
go_tool runc github.com/opencontainers/runc github.com/opencontainers/runc "$RUNC_VERSION" seccomp

# ------------------------------------------------------------------ nerdctl
# The nerdctl differential test (integration/nerdctl) drives tupper and runc
# with the same nerdctl. Its go.mod has a replace directive, so `go install
# pkg@version` refuses it, and the proxy may not serve it at all: then it is
# built from the source archive kept beside the repository (with its
# dependencies from the module proxy), stamped with its version as
# nerdctl's Makefile does. Either way `nerdctl --version` names the release.
NERDCTL_VERSION=v2.3.5
NERDCTL_REVISION=347782c28efe1753d5cc9652f6304752ed431221
NERDCTL_SHA256=f23d517d2e365db4cda43ad734d7786940b58da8a211a71d8cc4062ece14124e
NERDCTL_ARCHIVE="$(cd "$(dirname "$0")/.." && pwd)/../shared/third_party/nerdctl-${NERDCTL_VERSION}.tar.gz"

nerdctl_version() { "$1" --version 2>/dev/null | sed -n "s/^nerdctl version v\{0,1\}/v/p"; }

install_nerdctl() {
	local dst="$GOBIN/nerdctl" pkg=github.com/containerd/nerdctl/v2/cmd/nerdctl tmp out
	if [[ -x $dst && $(nerdctl_version "$dst") == "$NERDCTL_VERSION" ]]; then
		log "nerdctl: $dst is $NERDCTL_VERSION"
		return
	fi
	log "nerdctl: trying go install $pkg@$NERDCTL_VERSION"
	if out=$(CGO_ENABLED=0 "$GO" install "$pkg@$NERDCTL_VERSION" 2>&1); then
		log "nerdctl: installed $(nerdctl_version "$dst") from the module proxy"
		return
	fi
	log "nerdctl: go install failed ($(tail -n 1 <<<"$out")); building from $NERDCTL_ARCHIVE"
	if [[ ! -f $NERDCTL_ARCHIVE ]]; then
		echo "install-deps: nerdctl: neither the module proxy nor $NERDCTL_ARCHIVE has nerdctl $NERDCTL_VERSION" >&2
		exit 1
	fi
	if ! sha256sum --quiet -c - <<<"$NERDCTL_SHA256  $NERDCTL_ARCHIVE"; then
		echo "install-deps: nerdctl: $NERDCTL_ARCHIVE does not have sha256 $NERDCTL_SHA256" >&2
		exit 1
	fi
	tmp=$(mktemp -d)
	if ! (tar -xzf "$NERDCTL_ARCHIVE" -C "$tmp" && cd "$tmp/nerdctl-${NERDCTL_VERSION#v}" &&
		CGO_ENABLED=0 "$GO" build -trimpath -o "$tmp/nerdctl" -ldflags "-s -w \
			-X github.com/containerd/nerdctl/v2/pkg/version.Version=$NERDCTL_VERSION \
			-X github.com/containerd/nerdctl/v2/pkg/version.Revision=$NERDCTL_REVISION" ./cmd/nerdctl &&
		install -m 0755 "$tmp/nerdctl" "$dst"); then
		rm -rf "$tmp"
		echo "install-deps: nerdctl: building $NERDCTL_ARCHIVE failed" >&2
		exit 1
	fi
	rm -rf "$tmp"
	log "nerdctl: installed $(nerdctl_version "$dst") from the archive"
}
install_nerdctl

# ---------------------------------------------------------------------- CRIU
# Checkpoint/restore (shim/criu, runc's checkpoint) needs CRIU >= 4.0 whose
# `criu check` passes. Debian 12's criu 3.17 fails that check on recent
# kernels, so CRIU 4.2 is built from the source archive kept beside the
# repository (../shared/third_party, see its README) when no working criu
# is installed; the build takes under a minute on 2 cores.
CRIU_ARCHIVE=${CRIU_ARCHIVE:-$(cd "$(dirname "$0")/.." && pwd)/../shared/third_party/criu-v4.2.tar.gz}
CRIU_BUILD_DEPS=(libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler python3-protobuf
	libnl-3-dev libnet1-dev libcap-dev libaio-dev libbsd-dev libdrm-dev libgnutls28-dev libnftables-dev
	uuid-dev pkg-config make)

# criu_works BIN: BIN is CRIU >= 4.0 and `criu check` passes on this kernel.
criu_works() {
	local bin=$1 v major
	[[ -x $bin ]] || return 1
	v=$("$bin" --version 2>/dev/null | sed -n 's/^Version: *//p')
	major=${v%%.*}
	[[ $major =~ ^[0-9]+$ ]] && ((major >= 4)) || return 1
	"$bin" check >/dev/null 2>&1
}

install_criu() {
	local have tmp
	have=$(command -v criu || true)
	if [[ -n $have ]] && criu_works "$have"; then
		log "criu: $have is $("$have" --version | sed -n 's/^Version: *//p') and passes criu check"
		return
	fi
	if [[ ! -f $CRIU_ARCHIVE ]]; then
		echo "install-deps: no working criu >= 4.0 (${have:-none on PATH}) and no $CRIU_ARCHIVE to build one from" >&2
		exit 1
	fi
	apt_install_missing "CRIU's build dependencies " "${CRIU_BUILD_DEPS[@]}" || (($? == 1))
	tmp=$(mktemp -d)
	log "criu: building $(basename "$CRIU_ARCHIVE") in $tmp (${have:+$have does not work; }about a minute)"
	tar -xzf "$CRIU_ARCHIVE" -C "$tmp"
	if ! make -C "$tmp"/criu-* -j"$(nproc)" criu >"$tmp/build.log" 2>&1; then
		tail -30 "$tmp/build.log" >&2
		echo "install-deps: building CRIU failed (log above; tree left in $tmp)" >&2
		exit 1
	fi
	install -m 0755 "$tmp"/criu-*/criu/criu "$GOBIN/criu"
	rm -rf "$tmp"
	if ! criu_works "$GOBIN/criu"; then
		"$GOBIN/criu" check >&2 || true
		echo "install-deps: $GOBIN/criu does not pass criu check on this kernel" >&2
		exit 1
	fi
	log "criu: installed $GOBIN/criu ($("$GOBIN/criu" --version | sed -n 's/^Version: *//p'))"
}
install_criu

# --------------------------------------------------------- CRI test tooling
# Place for crictl / critest (cri-tools) when the CRI work starts, e.g.:
#   go_tool crictl github.com/kubernetes-sigs/cri-tools \
#       github.com/kubernetes-sigs/cri-tools/cmd/crictl "$CRI_TOOLS_VERSION"

log "done"
