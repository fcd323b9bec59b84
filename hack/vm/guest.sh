#!/usr/bin/env bash
# Runs inside hack/vm's guest (started by tupper-vm-boot from the 9p share):
# checks that the guest is what the tests are for (systemd as PID 1, cgroup
# v2), copies the staged tree to the guest's disk, runs each suite and
# writes out/summary.txt. Its output is out/guest.log, which the host
# prints as it grows.
#
# Suites (TUPPER_VM_SUITES, space-separated, from in/vm.env):
#   snapshotter    ./snapshotter on the guest's kernel (classic qgroups;
#                  the crash stress test with 100 operations)
#   shim-cgroups   ./shim/cgroups: the cgroup manager on v2 (and the kernel
#                  log's OOM kills)
#   shim-task      ./shim/task: the task service with its cgroups, both
#                  drivers where a test asks for one (TestCgroupDelegation)
#   shim-cgroupfs  ./integration/shim, cgroupfs driver
#   shim-systemd   ./integration/shim but TestNetwork, systemd driver
#                  (SystemdCgroup = true)
#   cri-systemd    integration TestCRIPod, CRI with SystemdCgroup = true
#   cri-cgroupfs   integration TestCRIPod, cgroupfs driver
#   leftovers      no scope, slice or cgroup of the tests is left
set -uo pipefail

SHARE=/mnt/tupper
IN=$SHARE/in
OUT=$SHARE/out
TREE=/opt/tupper
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TMPDIR=/var/tmp

# shellcheck source=/dev/null
[[ -f $IN/vm.env ]] && source "$IN/vm.env"
SUITES=${TUPPER_VM_SUITES:-snapshotter shim-cgroups shim-task shim-cgroupfs shim-systemd cri-systemd leftovers}
SUITE_TIMEOUT=${TUPPER_VM_SUITE_TIMEOUT:-12m}

say() { printf '\n=== vm: %s\n' "$*"; }

# facts fails unless the guest is cgroup v2 only, with systemd as PID 1.
facts() {
	say "guest: $(uname -r), PID 1 $(cat /proc/1/comm), $(systemctl --version | head -n1)"
	say "/sys/fs/cgroup: $(stat -f -c %T /sys/fs/cgroup), controllers: $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)"
	say "$(nproc) cpus, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB, system $(systemctl is-system-running 2>/dev/null)"
	[[ $(cat /proc/1/comm) == systemd ]] || return 1
	[[ $(stat -f -c %T /sys/fs/cgroup) == cgroup2fs ]] || return 1
	modprobe btrfs && modprobe loop && grep -qw btrfs /proc/filesystems
}

install_tree() {
	mkdir -p "$TREE"
	cp -a "$IN/." "$TREE/"
	install -m 0755 "$TREE"/tools/* /usr/local/bin/
	# crictl's default timeout is a few seconds; under TCG a pod sandbox
	# takes longer to start (the kubelet allows 2 minutes).
	echo 'timeout: 60' >/etc/crictl.yaml
}

declare -A RESULT
# run_suite NAME DIR TESTBIN [ENV=VAL...] -- [TEST ARGS...]: run one test
# binary in DIR (its package directory), verbosely, and count its results.
run_suite() {
	local name=$1 dir=$2 bin=$3
	shift 3
	local -a envs=()
	while (($#)) && [[ $1 != -- ]]; do
		envs+=("$1")
		shift
	done
	shift
	local log=$OUT/$name.log start=$SECONDS rc
	say "suite $name: $bin $* (${envs[*]})"
	(cd "$TREE/$dir" && env TUPPER_TEST_STRICT=1 "${envs[@]}" \
		timeout -k 30s "$SUITE_TIMEOUT" "$TREE/tests/$bin" -test.v -test.count="${TUPPER_VM_COUNT:-1}" -test.timeout "$SUITE_TIMEOUT" "$@") 2>&1 |
		tee "$log"
	rc=${PIPESTATUS[0]}
	local pass fail skip
	pass=$(grep -c -- '--- PASS:' "$log")
	fail=$(grep -c -- '--- FAIL:' "$log")
	skip=$(grep -c -- '--- SKIP:' "$log")
	RESULT[$name]="$pass passed, $fail failed, $skip skipped (exit $rc, $((SECONDS - start)) s)"
	say "suite $name: ${RESULT[$name]}"
	((rc == 0 && fail == 0 && skip == 0))
}

# stragglers lists the processes of this unit's cgroup other than this
# script and tupper-vm-boot: what a test started and left running, which
# would also keep the unit, and so the guest, up until systemd's stop
# timeout. This script is every ancestor of the shell running this
# function (a $(...) subshell is one more bash with the script's command
# line). The list is read before anything is forked to print it.
stragglers() {
	local cg p cmd stat
	local -A ours=()
	for ((p = BASHPID; p > 1; )); do
		ours[$p]=1
		read -r stat <"/proc/$p/stat" || break
		stat=${stat##*) } # after "pid (comm) ": state ppid ...
		read -r _ p _ <<<"$stat"
	done
	cg=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)
	local -a pids
	mapfile -t pids <"$cg/cgroup.procs"
	for p in "${pids[@]}"; do
		[[ -n ${ours[$p]:-} || ! -r /proc/$p/cmdline ]] && continue
		cmd=$(tr '\0' ' ' </proc/"$p"/cmdline)
		[[ -n $cmd ]] && echo "$p $cmd"
	done
}

# leftovers: after every suite, nothing of the tests' may remain: no
# transient scope or slice of theirs, no cgroup directory of theirs, no
# process.
leftovers() {
	local units dirs procs
	units=$(systemctl list-units --all --no-legend --plain 'tshim*' 'tupper-*.scope' 'cri-containerd-*' 'tpit*' 2>/dev/null || true)
	dirs=$(find /sys/fs/cgroup -mindepth 1 -maxdepth 3 -type d \( -name 'tshim*' -o -name tupper -o -name 'tupper-*.scope' \
		-o -name 'tupper-it-*' -o -name 'cri-containerd-*' -o -name 'tpit*' -o -name k8s.io \) 2>/dev/null || true)
	procs=$(stragglers)
	say "leftovers: units: ${units:-none}; cgroups: ${dirs:-none}; processes: ${procs:-none}"
	if [[ -n $units || -n $dirs || -n $procs ]]; then
		RESULT[leftovers]="0 passed, 1 failed, 0 skipped"
		return 1
	fi
	RESULT[leftovers]="1 passed, 0 failed, 0 skipped"
}

main() {
	local failed=() s
	if ! facts; then
		say "FAILED: the guest is not cgroup v2 with systemd as PID 1 and btrfs"
		echo "facts: 0 passed, 1 failed" >"$OUT/summary.txt"
		return 1
	fi
	install_tree
	local NOT_IN_VM='TestCheckpointCtr|TestCheckpointWithoutCriu|TestCheckpointTCPEstablished|TestMigrate|TestInstallerImage'
	for s in $SUITES; do
		case $s in
		snapshotter) run_suite "$s" snapshotter snapshotter.test TUPPER_STRESS_OPS="${TUPPER_STRESS_OPS:-100}" -- \
			${TUPPER_VM_RUN:+-test.run "$TUPPER_VM_RUN"} ;;
		# The two v1-only tests (hybrid hosts, v1 swap accounting) run on
		# the build host.
		shim-cgroups) run_suite "$s" shim/cgroups cgroups.test -- \
			-test.skip '^(TestHybridUnifiedCgroup|TestUpdateRaisesMemoryAndSwap)$' ${TUPPER_VM_RUN:+-test.run "$TUPPER_VM_RUN"} ;;
		shim-task) run_suite "$s" shim/task task.test TUPPER_TEST_TUPPER_RUN="$TREE/bin/tupper-run" -- \
			${TUPPER_VM_RUN:+-test.run "$TUPPER_VM_RUN"} ;;
		# TestNetwork runs once, with the cgroupfs driver: the network does
		# not depend on the driver, it takes 3 minutes, and its fifty
		# concurrent starts as fifty scopes outlast ctr's 60 s under TCG
		# (systemd, PID 1, runs each scope's job and signals every
		# subscribed shim of every job).
		# Not here: checkpoint and migration (CRIU, which the guest has
		# not; they do not depend on cgroups) and the installer image
		# (built with Go, which the guest has not).
		shim-cgroupfs) run_suite "$s" integration/shim shim.test TUPPER_SHIM="$TREE/bin/containerd-shim-tupper-v2" \
			TUPPER_MKIMAGE="$TREE/_output/bin/mkimage" TUPPER_TEST_CGROUP_DRIVER=cgroupfs -- \
			-test.skip "^($NOT_IN_VM)\$" ${TUPPER_VM_RUN:+-test.run "$TUPPER_VM_RUN"} ;;
		shim-systemd) run_suite "$s" integration/shim shim.test TUPPER_SHIM="$TREE/bin/containerd-shim-tupper-v2" \
			TUPPER_MKIMAGE="$TREE/_output/bin/mkimage" TUPPER_TEST_CGROUP_DRIVER=systemd -- \
			-test.skip "^(TestNetwork|$NOT_IN_VM)\$" ${TUPPER_VM_RUN:+-test.run "$TUPPER_VM_RUN"} ;;
		cri-systemd | cri-cgroupfs) run_suite "$s" integration integration.test TUPPER_MKIMAGE="$TREE/_output/bin/mkimage" \
			TUPPER_CRI_PREBUILT=1 TUPPER_TEST_CGROUP_DRIVER="${s#cri-}" -- -test.run "${TUPPER_VM_CRI_RUN:-^TestCRIPod\$}" ;;
		leftovers) leftovers ;;
		*)
			say "unknown suite $s"
			false
			;;
		esac || failed+=("$s")
	done
	{
		for s in $SUITES; do
			echo "$s: ${RESULT[$s]:-did not run}"
		done
	} >"$OUT/summary.txt"
	say "summary"
	cat "$OUT/summary.txt"
	journalctl -b --no-pager >"$OUT/journal.txt" 2>&1
	local p
	for p in $(stragglers | cut -d' ' -f1); do
		kill -KILL "$p" 2>/dev/null
	done
	if ((${#failed[@]})); then
		say "FAILED: ${failed[*]}"
		return 1
	fi
	say "all suites passed"
}

main
