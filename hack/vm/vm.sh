#!/usr/bin/env bash
# Run tupper's tests in a QEMU guest on cgroup v2 with systemd as PID 1
# (Debian 12, its own kernel): `make test-vm`, and the last step of
# `make test`.
#
#   hack/vm/vm.sh test     build what the guest needs on the host, boot it,
#                          run the suites (hack/vm/guest.sh), print its
#                          output as it comes, power it off
#   hack/vm/vm.sh image    build or reuse the cached guest image only
#
# Nothing is compiled in the guest: the test binaries are `go test -c`'d
# here, the daemons come from bin/ (make build) and /usr/local/bin (make
# deps). The guest has no network device; files go in and results come
# out over a 9p share of a temp dir, which is removed at the end. QEMU runs
# with TCG (KVM only when a quick probe boots a kernel with it), is tracked
# by its PID and always ends: the guest powers itself off after the
# suites, and the host kills QEMU at the time limit. Results, the guest's
# journal and the serial console log are kept in _output/vm/.
#
# Environment:
#   TUPPER_VM_SUITES         suites to run (hack/vm/guest.sh lists them)
#   TUPPER_VM_RUN            -test.run filter for the snapshotter and shim suites
#   TUPPER_VM_COUNT          -test.count for every suite (default 1), to hunt a flake
#   TUPPER_VM_CRI_RUN        -test.run filter for the cri suites (^TestCRIPod$)
#   TUPPER_VM_TIMEOUT        seconds for the whole guest run (default 2400)
#   TUPPER_VM_BOOT_TIMEOUT   seconds for the guest to come up (default 240)
#   TUPPER_VM_SUITE_TIMEOUT  go test -timeout per suite (default 12m)
#   TUPPER_VM_MEM, TUPPER_VM_CPUS  guest size (default 4096 MiB, 2)
#   TUPPER_VM_CACHE          image cache (default /var/cache/tupper-vm)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$REPO/hack/vm
export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
CACHE=${TUPPER_VM_CACHE:-/var/cache/tupper-vm}
export TUPPER_VM_CACHE=$CACHE
RESULTS=$REPO/_output/vm
TIMEOUT=${TUPPER_VM_TIMEOUT:-2400}
BOOT_TIMEOUT=${TUPPER_VM_BOOT_TIMEOUT:-240}

log() { printf 'vm: %s\n' "$*" >&2; }
die() {
	printf 'vm: %s\n' "$*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root"

# image: the cache directory of the guest image, built under a lock so
# that two runs never build at once.
image() {
	mkdir -p "$CACHE"
	flock "$CACHE/.lock" "$HERE/image.sh"
}

# stage DIR: the guest's tree in DIR/in: the repository's binaries, test
# binaries and the files the tests read, the host's containerd tools.
stage() {
	local in=$1/in bin
	mkdir -p "$in"/{bin,tests,tools,_output/bin,integration/shim,snapshotter,shim/task,shim/cgroups} "$1/out"
	for bin in containerd-shim-tupper-v2 containerd-tupper-snapshotter tupper-run; do
		[[ -x $REPO/bin/$bin ]] || die "bin/$bin missing: run make build"
	done
	cp -a "$REPO/bin/." "$in/bin/"
	for bin in containerd ctr containerd-shim-runc-v2 runc crictl; do
		[[ -x /usr/local/bin/$bin ]] || die "/usr/local/bin/$bin missing: run make deps"
		cp /usr/local/bin/$bin "$in/tools/"
	done
	cp -a "$REPO/hack" "$in/"
	cp "$REPO/go.mod" "$in/" # the harness finds the tree by it
	rm -rf "$in/hack/bench" "$in/hack/critest"
	cp -a "$REPO/integration/shim/testdata" "$in/integration/shim/"
	log "building test binaries and tools on the host"
	(
		cd "$REPO"
		go test -c -o "$in/tests/shim.test" ./integration/shim
		go test -c -o "$in/tests/integration.test" ./integration
		go test -c -o "$in/tests/snapshotter.test" ./snapshotter
		go test -c -o "$in/tests/task.test" ./shim/task
		go test -c -o "$in/tests/cgroups.test" ./shim/cgroups
		go build -o "$in/_output/bin/mkimage" ./hack/mkimage
		go build -o "$in/_output/bin/containerd-config" ./hack/containerd-config
		go build -o "$in/_output/bin/registry" ./hack/registry
		gcc -static -O2 -o "$in/_output/bin/pause" hack/pause/pause.c
	)
	{
		local v
		for v in TUPPER_VM_SUITES TUPPER_VM_RUN TUPPER_VM_COUNT TUPPER_VM_CRI_RUN TUPPER_VM_SUITE_TIMEOUT; do
			if [[ -n ${!v:-} ]]; then printf '%s=%q\n' "$v" "${!v}"; fi
		done
	} >"$in/vm.env"
}

# accel: kvm when /dev/kvm is usable and a guest kernel boots with it far
# enough to look for its root (the result is cached per QEMU and host
# kernel); tcg otherwise.
accel() {
	local img=$1 probe key out pid i
	[[ -r /dev/kvm && -w /dev/kvm ]] || {
		echo tcg
		return
	}
	key=$(printf '%s %s' "$(qemu-system-x86_64 --version | head -n1)" "$(uname -r)" | sha256sum | cut -c1-12)
	probe=$CACHE/kvm-probe-$key
	if [[ ! -f $probe ]]; then
		out=$(mktemp)
		qemu-system-x86_64 -accel kvm -m 256 -nodefaults -no-user-config -display none -no-reboot \
			-serial "file:$out" -kernel "$img/vmlinuz" -append "console=ttyS0 panic=-1" &
		pid=$!
		for ((i = 0; i < 40; i++)); do
			grep -q 'VFS: \|Kernel panic' "$out" 2>/dev/null && break
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.5
		done
		if grep -q 'VFS: \|Kernel panic' "$out"; then echo kvm >"$probe"; else echo tcg >"$probe"; fi
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		rm -f "$out"
	fi
	cat "$probe"
}

QEMU_PID='' TAIL_PID='' STAGE=''
cleanup() {
	local p
	for p in $QEMU_PID $TAIL_PID; do
		if kill -0 "$p" 2>/dev/null; then
			kill -TERM "$p" 2>/dev/null || true
			sleep 1
			kill -KILL "$p" 2>/dev/null || true
		fi
		wait "$p" 2>/dev/null || true
	done
	[[ -n $STAGE ]] && rm -rf "$STAGE"
	return 0
}

# boot IMG ACCEL: start QEMU on the image (never written: snapshot=on) with
# the stage as 9p share "tupper"; sets QEMU_PID.
boot() {
	local img=$1 accel=$2 cpu=max
	[[ $accel == kvm ]] && cpu=host
	qemu-system-x86_64 -name tupper-vm -accel "$accel" -cpu "$cpu" \
		-smp "${TUPPER_VM_CPUS:-2}" -m "${TUPPER_VM_MEM:-4096}" \
		-nodefaults -no-user-config -display none -no-reboot -nic none \
		-serial "file:$STAGE/console.log" \
		-kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
		-append "root=/dev/vda rw console=ttyS0 panic=-1 tupper.vm=1" \
		-drive "file=$img/root.img,format=raw,if=virtio,snapshot=on,cache=unsafe" \
		-device virtio-rng-pci \
		-virtfs "local,path=$STAGE,mount_tag=tupper,security_model=passthrough,id=tupper" &
	QEMU_PID=$!
}

# watch: print the guest's log as it grows until QEMU exits; kill QEMU if
# the guest has not come up in BOOT_TIMEOUT or is not done in TIMEOUT.
# Returns QEMU's status, or 124 on a timeout.
watch() {
	local start=$SECONDS rc=0 done_at=0
	while kill -0 "$QEMU_PID" 2>/dev/null; do
		if [[ -z $TAIL_PID && -f $STAGE/out/booted ]]; then
			log "guest up after $((SECONDS - start)) s"
			tail -n +1 -F --pid="$QEMU_PID" "$STAGE/out/guest.log" 2>/dev/null &
			TAIL_PID=$!
		fi
		if [[ -z $TAIL_PID ]] && ((SECONDS - start > BOOT_TIMEOUT)); then
			log "the guest did not boot in $BOOT_TIMEOUT s; last of the serial console:"
			tail -n 40 "$STAGE/console.log" >&2 || true
			return 124
		fi
		# Done (rc written) but not powered off: whatever holds the guest
		# up, the results are complete.
		if [[ -f $STAGE/out/rc ]] && ((done_at == 0)); then
			done_at=$SECONDS
		fi
		if ((done_at > 0 && SECONDS - done_at > 120)); then
			log "the guest finished but did not power off in 120 s; stopping QEMU (pid $QEMU_PID)"
			kill -TERM "$QEMU_PID" 2>/dev/null || true
		fi
		if ((SECONDS - start > TIMEOUT)); then
			log "the guest run passed its time limit ($TIMEOUT s); stopping QEMU (pid $QEMU_PID)"
			return 124
		fi
		sleep 1
	done
	wait "$QEMU_PID" || rc=$?
	QEMU_PID=
	if [[ -n $TAIL_PID ]]; then
		wait "$TAIL_PID" 2>/dev/null || true
		TAIL_PID=
	fi
	return "$rc"
}

# collect: keep the results, logs and console in _output/vm.
collect() {
	rm -rf "$RESULTS"
	mkdir -p "$RESULTS"
	cp -a "$STAGE/out/." "$RESULTS/" 2>/dev/null || true
	cp "$STAGE/console.log" "$RESULTS/" 2>/dev/null || true
	rm -f "$RESULTS/booted"
}

run_test() {
	command -v qemu-system-x86_64 >/dev/null || "$HERE/deps.sh"
	command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (Debian package qemu-system-x86)"
	local img accel rc=0 start=$SECONDS
	img=$(image)
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	STAGE=$(mktemp -d /var/tmp/tupper-vm.XXXXXX)
	stage "$STAGE"
	accel=$(accel "$img")
	log "booting $img with $accel (${TUPPER_VM_CPUS:-2} cpus, ${TUPPER_VM_MEM:-4096} MiB); limit $TIMEOUT s"
	boot "$img" "$accel"
	watch || rc=$?
	collect
	if ((rc == 124)); then
		die "guest run failed: time limit (serial console: $RESULTS/console.log)"
	fi
	if [[ ! -f $RESULTS/rc ]]; then
		log "QEMU exited ($rc) before the guest finished; last of the serial console:"
		tail -n 40 "$RESULTS/console.log" >&2 || true
		die "guest run failed (serial console: $RESULTS/console.log)"
	fi
	log "guest run took $((SECONDS - start)) s; results in $RESULTS"
	log "summary (cgroup v2, systemd PID 1, guest kernel):"
	sed 's/^/vm:   /' "$RESULTS/summary.txt" >&2
	[[ $(cat "$RESULTS/rc") == 0 ]] || die "guest suites failed"
}

case "${1:-}" in
test) run_test ;;
image) image ;;
*) die "usage: hack/vm/vm.sh test|image" ;;
esac
