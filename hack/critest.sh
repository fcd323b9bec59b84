#!/usr/bin/env bash
# Run critest (cri-tools v1.37.0) offline against the private CRI containerd
# of hack/cri.sh, with one runtime handler:
#
#   hack/critest.sh [HANDLER]        (make critest HANDLER=runc)
#
# It starts the stack (hack/cri.sh up) if it is not running, builds critest's
# images from Debian packages and pushes them to the loopback registry
# (hack/critest-images.sh push), runs every spec except those listed in SKIPS
# below, writes the summary to _output/critest-HANDLER.txt (and ginkgo's JSON
# report and the full log next to it), and ends with hack/cri.sh down.
#
# Environment: HANDLER (default runc; the first argument wins), KEEP=1 to
# leave the stack running, FOCUS=regexp to run only matching specs,
# CRITEST_ARGS for extra critest flags.
#
# Failing specs are reported, not fatal: the exit status is non-zero only
# when critest could not run (stack, images, no report).
set -euo pipefail
export INSTALL_CRITEST=1 # hack/cri.sh up builds critest too

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

HANDLER=${1:-${HANDLER:-runc}}
KEEP=${KEEP:-0}
FOCUS=${FOCUS:-}
RUN_DIR=${TUPPER_CRI_DIR:-/run/tupper-cri}
ENDPOINT=unix://$RUN_DIR/containerd.sock
OUT=$REPO/_output
SUMMARY=$OUT/critest-$HANDLER.txt
JSON=$OUT/critest-$HANDLER.json
LOG=$OUT/critest-$HANDLER.log

# Specs that cannot pass offline or on these hosts, whatever the runtime:
# "regexp|reason". Each is matched against the full spec text.
SKIPS=(
	'AppArmor|the hosts have no AppArmor (not in the kernel: no /sys/module/apparmor; no apparmor_parser); the specs load and enforce profiles'
	'Image Manager public image with digest|pulls test-image-digest@sha256:9700f9…, a pinned upstream digest that a locally built image cannot have'
	'Image Manager image status should support all kinds of references|looks the image up by the pinned upstream digest of test-image-digest'
)

say() { printf '\033[1mcritest:\033[0m %s\n' "$*"; }
die() {
	printf 'critest: %s\n' "$*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root"
[[ $HANDLER =~ ^[A-Za-z0-9._-]+$ ]] || die "bad handler name: $HANDLER"

teardown() {
	if [[ $KEEP == 1 ]]; then
		say "KEEP=1: the stack keeps running (hack/cri.sh down to stop it)"
	else
		"$REPO/hack/cri.sh" down
	fi
}

start=$(date +%s)
trap teardown EXIT
# Reuses what runs; imports the pinned sandbox image again if it is gone.
"$REPO/hack/cri.sh" up
nice -n 10 "$REPO/hack/critest-images.sh" push

skip_re=""
for s in "${SKIPS[@]}"; do
	skip_re+="${skip_re:+|}(${s%%|*})"
done
args=(
	-runtime-endpoint "$ENDPOINT" -image-endpoint "$ENDPOINT"
	-runtime-handler "$HANDLER"
	-nri-socket "$RUN_DIR/nri.sock"
	-ginkgo.skip "$skip_re"
	-ginkgo.no-color -ginkgo.v
	-ginkgo.json-report "$JSON"
)
[[ -n $FOCUS ]] && args+=(-ginkgo.focus "$FOCUS")
# shellcheck disable=SC2206
[[ -n ${CRITEST_ARGS:-} ]] && args+=($CRITEST_ARGS)

rm -f "$JSON"
say "critest ${args[*]}"
say "log: $LOG"
t0=$(date +%s)
rc=0
# crictl's config warning goes to the log like everything else.
(cd "$OUT" && nice -n 10 critest "${args[@]}") >"$LOG" 2>&1 || rc=$?
t1=$(date +%s)
[[ -s $JSON ]] || die "critest did not run (exit $rc); see $LOG"

{
	echo "critest v1.37.0, runtime handler $HANDLER, $(date -u +%Y-%m-%dT%H:%MZ), kernel $(uname -r), critest took $((t1 - t0))s"
	jq -r --arg skip "$skip_re" '
		def name: (.ContainerHierarchyTexts + [.LeafNodeText]) | join(" ");
		def bad: .State != "passed" and .State != "skipped" and .State != "pending";
		[.[].SpecReports[] | select(.LeafNodeType == "It")] as $s
		| ($s | map(select(.State == "skipped" or .State == "pending"))) as $k
		| ($k | map(select((.Failure.Message // "") != ""))) as $self
		| ($k | map(select((.Failure.Message // "") == "" and (name | test($skip))))) as $ours
		| "passed \($s | map(select(.State == "passed")) | length)  failed \($s | map(select(bad)) | length)  skipped \($k | length)  (of \($s | length) specs)",
		  "skipped: \($ours | length) by this script, \($self | length) by the specs themselves, \(($k | length) - ($ours | length) - ($self | length)) not selected (critest runs benchmarks only with -benchmark; FOCUS)",
		  "",
		  "failed:",
		  ($s[] | select(bad) | "  " + name + "\n      " + .State + ": " + ((.Failure.Message // "") | gsub("\\s+"; " ") | .[0:400])),
		  "",
		  "skipped by the specs themselves:",
		  ($self[] | "  " + name + "\n      " + (.Failure.Message | gsub("\\s+"; " ") | .[0:400]))' "$JSON"
	echo
	echo "skipped by this script:"
	for s in "${SKIPS[@]}"; do
		echo "  /${s%%|*}/: ${s#*|}"
	done
} >"$SUMMARY"
cat "$SUMMARY"
say "summary: $SUMMARY (critest exit $rc, $(($(date +%s) - start))s in all)"
