#!/usr/bin/env bash
# Run tupper's checks: gofmt, go vet, shellcheck, unit tests, the race
# detector where it means something, bounded fuzzing, then the snapshotter
# and integration tests verbosely. Run as root (via `make test`, after `make
# deps build`) or the root-only tests skip, loudly. Every step runs; the
# exit status is non-zero if any failed.
#
# Environment:
#   TEST_TIMEOUT   go test -timeout for the verbose suites (default 30m)
#   TEST_RUN       go test -run filter for the verbose suites (default all)
#   TUPPER_SHIM    the shim integration/shim runs (default bin/'s)
#   TUPPER_VM=0    leave out the last step, the suites in a QEMU guest on
#                  cgroup v2 with systemd (hack/vm); it says so loudly
set -uo pipefail

cd "$(dirname "$0")/.." || exit
export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

failed=()
step() {
	local name=$1
	shift
	printf '\n==> %s\n' "$name"
	if ! "$@"; then
		failed+=("$name")
		printf '==> FAILED: %s\n' "$name"
	fi
}

# Each go test step's output is also kept in _output/test/<log>.log, so
# that the last lines of the run can name the tests that failed in it (a CI
# log may keep only those).
declare -A step_log=()
logged_step() {
	local name=$1 log=_output/test/$2.log
	shift 2
	step_log[$name]=$log
	step "$name" tee_to "$log" "$@"
}
tee_to() {
	local log=$1
	shift
	mkdir -p "$(dirname "$log")"
	"$@" 2>&1 | tee "$log"
}

gofmt_check() {
	local files sources
	mapfile -t sources < <(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './_output/*')
	files=$(gofmt -l "${sources[@]}")
	if [[ -n $files ]]; then
		echo "not gofmt'ed:"
		echo "$files"
		return 1
	fi
}

if [[ $(id -u) -ne 0 ]]; then
	echo "test.sh: not root: root-only tests will skip" >&2
else
	# As root on a machine `make deps` prepared, nothing may skip: a test
	# that would skip fails instead (internal/testutil.Require).
	export TUPPER_TEST_STRICT=1
fi

# integration/shim tests the shim `make build` made (statically linked),
# not a build of its own.
export TUPPER_SHIM=${TUPPER_SHIM:-$PWD/bin/containerd-shim-tupper-v2}

verbose_pkgs=(./snapshotter/... ./integration/...)
mapfile -t unit_pkgs < <(go list ./... | grep -v -e '/snapshotter$' -e '/snapshotter/' -e '/integration$' -e '/integration/')
run_args=()
[[ -n ${TEST_RUN:-} ]] && run_args=(-run "$TEST_RUN")

# Every shell script in hack/, through shellcheck (hack/install-deps.sh
# installs it).
shellcheck_all() {
	local scripts
	mapfile -t scripts < <(git ls-files 'hack/*.sh' 2>/dev/null || find hack -name '*.sh')
	shellcheck "${scripts[@]}"
}

# The race detector on the packages whose logic runs in goroutines of
# their own and whose tests are quick: process I/O and state, the task
# service, the shim's daemon (events, idle release), IPAM and bridges,
# cgroup OOM watching, the shim manager, the snapshotter's spares, the
# benchmark driver's statistics.
race_pkgs=(./shim/process ./shim/task ./shim/serve ./shim/network ./shim/bundle ./shim/cgroups ./shim/manager ./hack/bench)

# Files the run makes are newer than this one.
run_start=$(mktemp)
trap 'rm -f "$run_start"' EXIT

step "gofmt" gofmt_check
step "go vet" go vet ./...
step "shellcheck" shellcheck_all
if ((${#unit_pkgs[@]})); then
	logged_step "unit tests" unit go test -count=1 "${unit_pkgs[@]}"
fi
logged_step "race detector" race go test -race -count=1 "${race_pkgs[@]}"
logged_step "race detector (snapshotter spares)" race-spares go test -race -count=1 -run 'TestSpares' ./snapshotter
# Bounded fuzzing of hostile input (make fuzz runs longer). The budget is a
# count of executions, not a duration: a duration -fuzztime races Go's fuzz
# coordinator (go.dev/issue/75804, fixed in Go 1.27) and fails with a bare
# "context deadline exceeded" on a loaded machine.
fuzz_all() {
	local t
	local t name pkg
	for t in "FuzzKey ./snapshotter" "FuzzMaxSize ./snapshotter" "FuzzFromTOML ./shim/options" "FuzzAnnotations ./shim/network" "FuzzResolveInRoot ./shim/container" "FuzzValidateSpec ./shim/container"; do
		read -r name pkg <<<"$t"
		go test -run='^$' -fuzz="^$name\$" -fuzztime="${FUZZTIME:-50000x}" "$pkg" || return 1
	done
}
if [[ ${1:-} == fuzz ]]; then
	step "fuzz" fuzz_all
	((${#failed[@]})) && exit 1
	exit 0
fi
logged_step "fuzz (bounded, ${FUZZTIME:-50000x} each)" fuzz fuzz_all
logged_step "snapshotter and integration tests" verbose \
	go test -count=1 -v -timeout "${TEST_TIMEOUT:-30m}" "${run_args[@]}" "${verbose_pkgs[@]}"
# Every shim socket made during the run must be gone by now, or still be
# listening (a demo's shims): a killed shim cannot remove its own, and
# `shim delete` has to.
dead_shim_sockets() {
	local f listening dead=()
	listening=$(ss -xlH | awk '{print $5}')
	while IFS= read -r -d '' f; do
		grep -qxF -- "$f" <<<"$listening" || dead+=("$f")
	done < <(find /run/containerd/s -type s -newer "$run_start" -print0 2>/dev/null)
	if ((${#dead[@]})); then
		printf 'shim sockets nothing listens on, left by the run:\n'
		printf '  %s\n' "${dead[@]}"
		return 1
	fi
	echo "no dead shim socket left"
}
step "no dead shim socket left" dead_shim_sockets
# This host is cgroup v1 without systemd; users run cgroup v2 with systemd.
if [[ ${TUPPER_VM:-1} == 0 ]]; then
	printf '\n==> SKIPPED: cgroup v2 + systemd in a VM (TUPPER_VM=0)\n'
	failed+=("VM part skipped (TUPPER_VM=0)")
else
	step "cgroup v2 + systemd in a QEMU guest (hack/vm)" hack/vm/vm.sh test
fi

echo
if ((${#failed[@]})); then
	for name in "${failed[@]}"; do
		log=${step_log[$name]:-}
		[[ -n $log && -f $log ]] || continue
		echo "test.sh: what failed in $name ($log):"
		grep -E -e '--- FAIL:|^panic:|^FAIL|test timed out' "$log" | head -n 20
	done
	printf 'test.sh: FAILED: %s\n' "${failed[*]}"
	exit 1
fi
echo "test.sh: all passed"
