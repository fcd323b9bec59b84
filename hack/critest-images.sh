#!/usr/bin/env bash
# Build the images critest v1.37.0 pulls, from Debian packages, as OCI
# archives named for the loopback registry (127.0.0.1:5000/path:tag), which
# hack/cri.sh makes stand in for registry.k8s.io and gcr.io:
#
#   e2e-test-images/busybox:1.29-2   busybox with its applets as hard links
#                                    in /bin (so a masked /bin/ls is really
#                                    masked), plus pgrep/pkill (procps) and
#                                    ipcs/ipcmk/ipcrm (util-linux)
#   e2e-test-images/nginx:1.14-2     + nginx on port 80, pid in /var/run/nginx.pid
#   k8s-staging-cri-tools/hostnet-nginx-amd64   + the same nginx on port 12003
#   e2e-test-images/httpd:2.4.39-4   + Apache as /usr/local/apache2/bin/httpd
#   e2e-test-images/nonewprivs:1.3   + a setuid-root program printing its euid
#   k8s-staging-cri-tools/test-image-user-{uid,username,uid-group,username-group}
#   k8s-staging-cri-tools/test-image-predefined-group
#   k8s-staging-cri-tools/test-image-{latest,1,2,3}, test-image-tag:{test,all},
#   test-image-tags:{1,2,3}, pause:3.9   (image and image-volume specs)
#
#   hack/critest-images.sh build        archives into _output/critest/images/
#   hack/critest-images.sh push         build, then hack/cri.sh push each one
#
# Packages are fetched once with `apt-get download` into _output/critest/debs
# and extracted into a pool; each image layer copies what it needs from the
# pool, with the shared libraries ld.so resolves for it. Rootfs trees and
# archives are cached under _output/critest and rebuilt only when this
# script, hack/critest/ or the downloaded packages change. Archives are
# deterministic for given packages (mkimage -kind dir fixes times and order);
# the versions used are listed in _output/critest/images/PACKAGES, and
# `rm -rf _output/critest/debs` fetches the mirror's current ones.
set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
OUT=$REPO/_output/critest
DEBS=$OUT/debs
POOL=$OUT/pool
ROOTFS=$OUT/rootfs
IMAGES=$OUT/images
REG=127.0.0.1:5000
FILES=$REPO/hack/critest
MKIMAGE=$REPO/_output/bin/mkimage

# Everything the images take files from, dependencies resolved by hand and
# checked below: every binary's libraries must resolve inside the pool.
PACKAGES=(
	libc6 libgcc-s1 busybox
	procps libproc2-0 libsystemd0 libcap2 libgcrypt20 libgpg-error0 liblz4-1 liblzma5 libzstd1
	util-linux
	nginx nginx-common libcrypt1 libpcre2-8-0 libssl3 zlib1g
	apache2-bin libapr1 libaprutil1 libexpat1 libuuid1
)

say() { echo "critest-images: $*"; }
die() {
	echo "critest-images: $*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (packages are extracted with their owners)"

fetch() {
	mkdir -p "$DEBS"
	local p missing=()
	for p in "${PACKAGES[@]}"; do
		compgen -G "$DEBS/${p}_*.deb" >/dev/null || missing+=("$p")
	done
	if ((${#missing[@]})); then
		say "apt-get download ${missing[*]}"
		# _apt cannot write into root's tree; download as root, quietly.
		(cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "${missing[@]}" >/dev/null)
	fi
}

# The pool is every package extracted into one tree (not installed: no
# maintainer scripts run).
make_pool() {
	rm -rf "$POOL"
	mkdir -p "$POOL"
	local d
	for d in "$DEBS"/*.deb; do
		dpkg-deb -x "$d" "$POOL"
	done
}

# take DEST PATH...: copy each pool PATH (absolute inside the pool) into the
# tree DEST, following symlinks to copy their targets too, unless a lower
# layer (the trees in $LOWER) already has it.
LOWER=()
take() {
	local dest=$1 p t l
	shift
	for p in "$@"; do
		while [[ -n $p ]]; do
			[[ -e $POOL$p || -L $POOL$p ]] || die "$p is not in the pool (add its package to PACKAGES)"
			for l in "${LOWER[@]}"; do
				if [[ -e $l$p || -L $l$p ]]; then
					continue 3
				fi
			done
			if [[ ! -e $dest$p && ! -L $dest$p ]]; then
				mkdir -p "$dest$(dirname "$p")"
				cp -a "$POOL$p" "$dest$p"
			fi
			t=""
			if [[ -L $POOL$p ]]; then
				t=$(readlink "$POOL$p")
				[[ $t == /* ]] || t=$(dirname "$p")/$t
				t=$(realpath -m -s "$t")
			fi
			p=$t
		done
	done
}

# take_bin DEST PATH...: take PATH and every library ld.so finds for it
# inside the pool; fails when one is missing.
take_bin() {
	local dest=$1 p libs
	shift
	for p in "$@"; do
		libs=$(chroot "$POOL" /lib64/ld-linux-x86-64.so.2 --list "$p") || die "ld.so --list $p failed"
		if grep -q 'not found' <<<"$libs"; then
			die "$p: $(grep 'not found' <<<"$libs" | tr '\n' ' ')"
		fi
		take "$dest" "$p"
		# "libx.so.1 => /lib/.../libx.so.1 (0x...)" and "/lib64/ld-linux... (0x...)"
		# shellcheck disable=SC2046
		take "$dest" $(awk '$2 == "=>" {print $3; next} $1 ~ /^\// {print $1}' <<<"$libs")
	done
}

newtree() {
	rm -rf "${ROOTFS:?}/$1"
	mkdir -p "$ROOTFS/$1"
	echo "$ROOTFS/$1"
}

build_trees() {
	local t a
	# base: busybox, procps's pgrep, util-linux's ipc tools.
	t=$(newtree base)
	LOWER=()
	mkdir -p "$t"/{bin,dev,etc,home,proc,root,run,sys,tmp,usr/bin,usr/sbin,var/tmp,var/www}
	ln -s ../run "$t/var/run"
	chmod 1777 "$t/tmp" "$t/var/tmp"
	chmod 700 "$t/root"
	chmod 555 "$t/proc" "$t/sys"
	take_bin "$t" /bin/busybox /usr/bin/pgrep /usr/bin/pkill /usr/bin/ipcs /usr/bin/ipcmk /usr/bin/ipcrm
	# glibc dlopens libgcc_s when a thread exits or is cancelled.
	take "$t" /lib/x86_64-linux-gnu/libgcc_s.so.1
	# Every applet a hard link in /bin, as in the upstream busybox image: a
	# shell that finds ls runs /bin/ls, so masking /bin/ls masks only ls.
	for a in $(chroot "$t" /bin/busybox --list); do
		[[ $a == busybox || $a == linuxrc ]] && continue
		[[ -e $t/bin/$a || -e $t/usr/bin/$a ]] && continue
		ln "$t/bin/busybox" "$t/bin/$a"
	done
	install -m 644 "$FILES/passwd" "$t/etc/passwd"
	install -m 644 "$FILES/group" "$t/etc/group"

	LOWER=("$ROOTFS/base")
	# nginx: Debian's nginx, our config.
	t=$(newtree nginx)
	take_bin "$t" /usr/sbin/nginx
	take "$t" /etc/nginx/mime.types
	mkdir -p "$t/etc/nginx/conf.d" "$t/var/lib/nginx" "$t/var/log/nginx" "$t/usr/share/nginx/html"
	install -m 644 "$FILES/nginx.conf" "$t/etc/nginx/nginx.conf"
	install -m 644 "$FILES/nginx-default.conf" "$t/etc/nginx/conf.d/default.conf"
	install -m 644 "$FILES/index.html" "$t/usr/share/nginx/html/index.html"

	t=$(newtree hostnet-nginx)
	mkdir -p "$t/etc/nginx/conf.d"
	install -m 644 "$FILES/nginx-hostnet.conf" "$t/etc/nginx/conf.d/default.conf"

	# httpd: Debian's apache2 binary under the upstream httpd image's name.
	t=$(newtree httpd)
	take_bin "$t" /usr/sbin/apache2 \
		/usr/lib/apache2/modules/mod_mpm_event.so /usr/lib/apache2/modules/mod_authz_core.so \
		/usr/lib/apache2/modules/mod_dir.so
	mkdir -p "$t/usr/local/apache2"/{bin,conf,htdocs,logs}
	ln "$t/usr/sbin/apache2" "$t/usr/local/apache2/bin/httpd"
	ln -s /usr/lib/apache2/modules "$t/usr/local/apache2/modules"
	install -m 644 "$FILES/httpd.conf" "$t/usr/local/apache2/conf/httpd.conf"
	install -m 644 "$FILES/index.html" "$t/usr/local/apache2/htdocs/index.html"

	# nonewprivs: a static setuid-root program that prints its euid.
	t=$(newtree nonewprivs)
	mkdir -p "$t/usr/local/bin"
	gcc -static -O2 -Wall -o "$t/usr/local/bin/nnp" "$FILES/nnp.c"
	strip "$t/usr/local/bin/nnp"
	chown 0:0 "$t/usr/local/bin/nnp"
	chmod 4755 "$t/usr/local/bin/nnp"

	t=$(newtree predefined-group)
	mkdir -p "$t/etc" "$t/home/default-user"
	chown 1000:1000 "$t/home/default-user"
	install -m 644 "$FILES/passwd-predefined-group" "$t/etc/passwd"
	install -m 644 "$FILES/group-predefined-group" "$t/etc/group"

	# One marker file per image-test image, as upstream's ADD ${TEST}.
	for a in test-image-latest test-image-1 test-image-2 test-image-3 test-image-tag same-image; do
		t=$(newtree "marker-$a")
		: >"$t/$a"
	done
}

# image NAME TREES [mkimage flags...]: archive NAME (without the registry).
image() {
	local name=$1 trees=$2 file
	shift 2
	file=$IMAGES/$(tr '/:' '__' <<<"$name").tar
	"$MKIMAGE" -kind dir -name "$REG/$name" -rootfs "$trees" -o "$file" "$@"
}

build() {
	fetch
	local stamp want
	want=$(cat "$0" "$FILES"/* <(ls -l "$DEBS") "$REPO"/hack/mkimage/*.go | sha256sum | cut -d' ' -f1)
	stamp=$OUT/stamp
	if [[ -f $stamp && $(cat "$stamp") == "$want" ]] && compgen -G "$IMAGES/*.tar" >/dev/null; then
		say "images up to date in $IMAGES"
		return
	fi
	rm -f "$stamp"
	go build -o "$MKIMAGE" ./hack/mkimage
	say "extracting ${#PACKAGES[@]} packages"
	make_pool
	build_trees
	rm -rf "$IMAGES"
	mkdir -p "$IMAGES"
	local b=$ROOTFS/base m t
	image e2e-test-images/busybox:1.29-2 "$b" -cmd '["sh"]'
	image e2e-test-images/nginx:1.14-2 "$b,$ROOTFS/nginx" -cmd '["nginx","-g","daemon off;"]'
	image k8s-staging-cri-tools/hostnet-nginx-amd64:latest "$b,$ROOTFS/nginx,$ROOTFS/hostnet-nginx" -cmd '["nginx","-g","daemon off;"]'
	image e2e-test-images/httpd:2.4.39-4 "$b,$ROOTFS/httpd" -workdir /usr/local/apache2 \
		-cmd '["/usr/local/apache2/bin/httpd","-DFOREGROUND","-f","/usr/local/apache2/conf/httpd.conf"]' \
		-env PATH=/usr/local/apache2/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
	image e2e-test-images/nonewprivs:1.3 "$b,$ROOTFS/nonewprivs" -cmd '["/usr/local/bin/nnp"]'
	image k8s-staging-cri-tools/test-image-user-uid:latest "$b" -user 1002 -cmd '["sh"]'
	image k8s-staging-cri-tools/test-image-user-username:latest "$b" -user www-data -cmd '["sh"]'
	image k8s-staging-cri-tools/test-image-user-uid-group:latest "$b" -user 1003:1004 -cmd '["sh"]'
	image k8s-staging-cri-tools/test-image-user-username-group:latest "$b" -user www-data:1004 -cmd '["sh"]'
	image k8s-staging-cri-tools/test-image-predefined-group:latest "$b,$ROOTFS/predefined-group" -user 1000 -cmd '["sh"]'
	for m in test-image-latest test-image-1 test-image-2 test-image-3; do
		image "k8s-staging-cri-tools/$m:latest" "$b,$ROOTFS/marker-$m" -cmd '["sh"]'
	done
	image k8s-staging-cri-tools/test-image-tag:test "$b,$ROOTFS/marker-test-image-tag" -cmd '["sh"]'
	image k8s-staging-cri-tools/test-image-tag:all "$b,$ROOTFS/marker-test-image-tag" -cmd '["sh"]'
	for m in 1 2 3; do
		image "k8s-staging-cri-tools/test-image-tags:$m" "$b,$ROOTFS/marker-same-image" -cmd '["sh"]'
	done
	# pause:3.9 (image identifier specs, pulled from two registries) must not
	# be the same image as the pinned sandbox image registry.k8s.io/pause:3.10.2,
	# which mkimage -kind pause writes from the same binary: a spec removing
	# pause:3.9 by id would remove the sandbox image too. As a -kind dir
	# image its config (history) differs.
	[[ -x $REPO/_output/bin/pause ]] || "$REPO/hack/install-cri.sh"
	t=$(newtree pause-3.9)
	install -m 755 "$REPO/_output/bin/pause" "$t/pause"
	image pause:3.9 "$t" -entrypoint '["/pause"]' -cmd ''
	for m in "$DEBS"/*.deb; do
		dpkg-deb -f "$m" Package Version | sed 's/^[^:]*: //' | paste -sd' '
	done >"$IMAGES/PACKAGES"
	echo "$want" >"$stamp"
	say "built $(compgen -G "$IMAGES/*.tar" | wc -l) archives in $IMAGES ($(du -sh "$IMAGES" | cut -f1)); package versions in $IMAGES/PACKAGES"
}

push() {
	build
	local f
	for f in "$IMAGES"/*.tar; do
		"$REPO/hack/cri.sh" push "$f" 2> >(grep -v DEPRECATION >&2)
	done
}

case "${1:-build}" in
build) build ;;
push) push ;;
*) die "usage: hack/critest-images.sh build|push" ;;
esac
