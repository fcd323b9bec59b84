#!/usr/bin/env bash
# `make bench`: tupper side by side with containerd's own snapshotters and
# with containerd-shim-runc-v2.
#
# Sets up, under a temp dir, one sparse loopback btrfs and one private
# containerd (own root, state and socket; no CRI) with three snapshotters:
#   tupper      our daemon (bin/containerd-tupper-snapshotter), a proxy plugin
#   btrfs       containerd's built-in btrfs snapshotter
#   overlayfs   containerd's overlayfs snapshotter
# all with their roots on that btrfs (overlayfs: see BENCH_OVERLAY_ROOT),
# and two runtimes: tupper's shim (containerd-shim-tupper-v2, on a bridge,
# subnet and address pool of the bench's own) and containerd-shim-runc-v2
# (runc state in a root of the bench's own).
# Then runs the Go driver hack/bench, which prints the table and writes
# bench/results/<timestamp>/{results.md,results.json,results.svg} and
# bench/results/latest.{md,svg}. Everything it starts is stopped by PID
# (shims and containers too), and every mount, loop device, cgroup and the
# bridge undone, also on failure or ^C.
#
# Environment:
#   BENCH_RUNS          paired runs per metric (default 10; 3 for a quick check)
#   BENCH_MEM_RUNS      paired runs of the shim memory rows (default 3)
#   BENCH_DENSITY_RUNS  paired runs of the density rows (default 2)
#   BENCH_OVERLAY_ROOT  put overlayfs' root in a fresh directory below this
#                       one (default: on the loopback btrfs; e.g. /var/tmp
#                       for the host's ext4); removed afterwards
#   BENCH_IMG_SIZE      size of the sparse btrfs file (default 8G)
#   BENCH_ONLY          comma-separated subset of the driver's benchmarks
#                       (ops,usage,unpack,start,memory,grouped,density,checkpoint); such a run
#                       leaves bench/results/latest.* alone
#   BENCH_KEEP=1        keep the temp dir (logs, config) after the run
#   TUPPER_BIN          snapshotter binary (default bin/containerd-tupper-snapshotter)
#   BENCH_NOOP_SHIM     hack/noopshim's binary for the start latency floor rows
#                       (default _output/bin/containerd-shim-noop-v2, which
#                       `make bench` builds; without it, no floor rows)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
unset NOTIFY_SOCKET

RUNS="${BENCH_RUNS:-10}"
MEM_RUNS="${BENCH_MEM_RUNS:-3}"
DENSITY_RUNS="${BENCH_DENSITY_RUNS:-2}"
IMG_SIZE="${BENCH_IMG_SIZE:-8G}"
TUPPER_BIN="${TUPPER_BIN:-$REPO/bin/containerd-tupper-snapshotter}"

# shellcheck source=hack/lib.sh
source "$REPO/hack/lib.sh" # containerd_config, wait_gone; the functions below are bench's own
log() { printf '\033[1mbench:\033[0m %s\n' "$*" >&2; }
die() {
	printf 'bench: %s\n' "$*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root"
for v in RUNS MEM_RUNS DENSITY_RUNS; do
	[[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || die "BENCH_$v must be a positive integer, not '${!v}'"
done
[[ -x $TUPPER_BIN ]] || die "no snapshotter binary $TUPPER_BIN: run \`make build\`"
[[ -x $REPO/bin/containerd-shim-tupper-v2 ]] || die "no $REPO/bin/containerd-shim-tupper-v2: run \`make build\`"
NOOP_SHIM="${BENCH_NOOP_SHIM:-$REPO/_output/bin/containerd-shim-noop-v2}"
if [[ ! -x $NOOP_SHIM ]]; then
	log "no $NOOP_SHIM (make bench builds it): no start latency floor rows"
	NOOP_SHIM=""
fi
for bin in containerd ctr mkfs.btrfs losetup btrfs runc containerd-shim-runc-v2 ip; do
	command -v "$bin" >/dev/null || die "$bin not on PATH: run \`make deps\`"
done
grep -qw btrfs /proc/filesystems || modprobe btrfs || die "no btrfs in this kernel"

# ------------------------------------------------------------------ cleanup
TMP=""
LOOP=""
OVERLAY_OUTSIDE="" # overlayfs root outside TMP (BENCH_OVERLAY_ROOT)
PIDS=() # daemons we started, in start order
ADDRESS=""    # our containerd's socket: its shims name it in their arguments
TOK=tb$$      # every container id starts with it (cgroups, runc state)
BRIDGE=""     # tupper's bridge for the bench's containers, once chosen
RUNC_ROOT=""  # runc's state root for the bench's containers
CG_NS=tupper-bench # the driver's containerd namespace: cgroups /$CG_NS/<id>

stop_pid() { # stop_pid NAME PID: SIGTERM, 10 s, SIGKILL
	local name=$1 pid=$2 i
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	log "$name (pid $pid) ignored SIGTERM; SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	wait_gone "$pid" || log "$name (pid $pid) survived SIGKILL"
}

cleanup() {
	local rc=$? i mp f pid d killed=()
	trap - EXIT INT TERM
	set +e
	[[ -n $TMP ]] || exit "$rc"
	# Shims: processes whose arguments name our containerd's socket.
	if [[ -n $ADDRESS ]]; then
		for f in /proc/[0-9]*/cmdline; do
			pid=${f#/proc/}
			pid=${pid%/cmdline}
			# (processes that end meanwhile have no cmdline left to read)
			{ tr '\0' '\n' <"$f"; } 2>/dev/null | grep -qxF -- "$ADDRESS" && kill -KILL "$pid" 2>/dev/null && killed+=("$pid")
		done
	fi
	# Container processes: everything in our containers' cgroups ...
	for f in /sys/fs/cgroup/*/"$CG_NS"/"$TOK"-*/cgroup.procs; do
		[[ -f $f ]] || continue
		while read -r pid; do
			[[ $pid =~ ^[0-9]+$ ]] && ((pid > 1)) && kill -KILL "$pid" 2>/dev/null && killed+=("$pid")
		done <"$f"
	done
	# ... and the inits their bundles name (runc: a number; tupper: JSON).
	while IFS= read -r -d '' f; do
		pid=$(grep -o '[0-9]\+' "$f" 2>/dev/null | head -n 1)
		[[ $pid =~ ^[0-9]+$ ]] && ((pid > 1)) && kill -KILL "$pid" 2>/dev/null && killed+=("$pid")
	done < <(find "$TMP/containerd/state" \( -name shim.pid -o -name init.pid \) -print0 2>/dev/null)
	((${#killed[@]} == 0)) || wait_gone "${killed[@]}" || log "killed processes still there: ${killed[*]}"
	# containerd first (the snapshotter's client), then the snapshotter.
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${PIDS[i]%%:*}" "${PIDS[i]#*:}"
	done
	# Everything mounted below TMP (and the overlayfs root), deepest first;
	# the btrfs itself last.
	for d in ${OVERLAY_OUTSIDE:+"$OVERLAY_OUTSIDE"} "$TMP"; do
		while read -r mp; do
			umount "$mp" 2>/dev/null || umount -l "$mp" || log "cannot unmount $mp"
		done < <(findmnt -rn -o TARGET | awk -v d="$d/" 'index($0, d) == 1' | awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-)
	done
	[[ -z $OVERLAY_OUTSIDE ]] || rm -rf "$OVERLAY_OUTSIDE"
	# Our containers' cgroups, then the namespace's if nobody else uses it.
	for d in /sys/fs/cgroup/*/"$CG_NS"/"$TOK"-*/; do
		[[ -d $d ]] && rmdir "$d" 2>/dev/null
	done
	for d in /sys/fs/cgroup/*/"$CG_NS"/; do
		[[ -d $d ]] && rmdir "$d" 2>/dev/null
	done
	if [[ -n $BRIDGE ]] && ip link show "$BRIDGE" >/dev/null 2>&1; then
		ip link del "$BRIDGE" || log "cannot delete bridge $BRIDGE"
	fi
	[[ -z $RUNC_ROOT ]] || rm -rf "$RUNC_ROOT"
	if [[ -n $LOOP ]] && [[ $(losetup -n -O BACK-FILE "$LOOP" 2>/dev/null | sed 's/[[:space:]]*$//') == "$TMP/btrfs.img" ]]; then
		losetup -d "$LOOP" || log "cannot detach $LOOP"
	fi
	if [[ ${BENCH_KEEP:-} == 1 ]]; then
		log "keeping $TMP (BENCH_KEEP=1)"
		rm -f "$TMP/btrfs.img"
	else
		rm -rf "$TMP"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The temp dir is on the host disk, not tmpfs: containerd's content store
# lives there, and the sparse image file.
TMP=$(mktemp -d /var/tmp/tupper-bench.XXXXXX)
log "working in $TMP"

# ------------------------------------------------------------ the images
log "building the benchmark image (mkimage -kind big)"
mkdir -p "$REPO/_output/bin" "$REPO/_output/images"
go build -o "$REPO/_output/bin/mkimage" "$REPO/hack/mkimage"
go build -o "$REPO/_output/bin/bench" "$REPO/hack/bench"
IMAGE_TAR="$REPO/_output/images/big.tar"
(cd "$REPO" && _output/bin/mkimage -kind big -name tupper.local/big:latest -o "$IMAGE_TAR")
BUSYBOX_TAR="$REPO/_output/images/busybox.tar"
(cd "$REPO" && _output/bin/mkimage -kind busybox -name tupper.local/busybox:latest -o "$BUSYBOX_TAR")

# ------------------------------------------------------------ loopback btrfs
MNT=$TMP/btrfs
LOOP=$("$REPO/hack/btrfs-loop.sh" up "$TMP/btrfs.img" "$IMG_SIZE" "$MNT")
log "btrfs $IMG_SIZE on $LOOP, mounted on $MNT"

TUPPER_ROOT=$MNT/tupper
BTRFS_ROOT=$MNT/builtin-btrfs
OVERLAY_ROOT="${BENCH_OVERLAY_ROOT:-$MNT/overlayfs}"
# Each snapshotter's root is a subvolume of its own, so that no
# snapshotter's subvolume deletes or quota groups reach into another's.
btrfs -q subvolume create "$TUPPER_ROOT"
btrfs -q subvolume create "$BTRFS_ROOT"
if [[ -z ${BENCH_OVERLAY_ROOT:-} ]]; then
	btrfs -q subvolume create "$OVERLAY_ROOT"
else
	# A fresh directory of our own below it, removed by cleanup.
	mkdir -p "$BENCH_OVERLAY_ROOT"
	OVERLAY_ROOT=$(mktemp -d "$BENCH_OVERLAY_ROOT/tupper-bench-overlayfs.XXXXXX")
	OVERLAY_OUTSIDE=$OVERLAY_ROOT
fi
OVERLAY_FS=$(findmnt -n -o FSTYPE --target "$OVERLAY_ROOT")
if [[ -z ${BENCH_OVERLAY_ROOT:-} ]]; then
	OVERLAY_DESC="the loopback btrfs (own subvolume; upper and work dirs on btrfs)"
else
	OVERLAY_DESC="the host's $OVERLAY_FS (BENCH_OVERLAY_ROOT=$BENCH_OVERLAY_ROOT)"
fi
log "overlayfs root $OVERLAY_ROOT is on $OVERLAY_FS"

# ------------------------------------------------------------ daemons
start() { # start NAME LOG CMD...: detached, own session, pid recorded
	local name=$1 logf=$2
	shift 2
	setsid "$@" >>"$logf" 2>&1 </dev/null &
	PIDS+=("$name:$!")
	log "started $name (pid $!), log $logf"
}
wait_for() { # wait_for NAME SECONDS CMD...
	local name=$1 secs=$2 i pid
	shift 2
	pid=$(printf '%s\n' "${PIDS[@]}" | awk -F: -v n="$name" '$1 == n { print $2 }')
	for ((i = 0; i < secs * 10; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		kill -0 "$pid" 2>/dev/null || {
			tail -n 30 "$TMP/$name.log" >&2
			die "$name exited"
		}
		sleep 0.1
	done
	tail -n 30 "$TMP/$name.log" >&2
	die "$name not ready after ${secs}s"
}

# A free loopback port for the snapshotter's Prometheus /metrics, which the
# driver reads to check that tupper's Usage did not walk files.
METRICS_PORT=""
for ((p = 20000 + RANDOM % 20000, i = 0; i < 50; i++, p++)); do
	if ! ss -Hltn "sport = :$p" | grep -q .; then
		METRICS_PORT=$p
		break
	fi
done
[[ -n $METRICS_PORT ]] || die "no free loopback port for the snapshotter's metrics"

SNAP_SOCK=$TMP/tupper.sock
start snapshotter "$TMP/snapshotter.log" "$TUPPER_BIN" --address "$SNAP_SOCK" --root "$TUPPER_ROOT" \
	--metrics-address "127.0.0.1:$METRICS_PORT"
wait_for snapshotter 20 test -S "$SNAP_SOCK"

ADDRESS=$TMP/containerd.sock
CONFIG=$TMP/containerd.toml
SHIM_SOCKETS=$TMP/s
mkdir -p "$TMP/containerd/root" "$TMP/containerd/state"
{
	echo "# Generated by hack/bench.sh: a private containerd for the benchmarks."
	containerd_config "$TMP/containerd/root" "$TMP/containerd/state" "$ADDRESS" "$SNAP_SOCK" "$TUPPER_ROOT"
	cat <<EOF

# Shim sockets of our own, removed with the temp dir.
[plugins.'io.containerd.shim.v1.manager']
  socket_dir = "$SHIM_SOCKETS"

[plugins.'io.containerd.snapshotter.v1.btrfs']
  root_path = "$BTRFS_ROOT"

[plugins.'io.containerd.snapshotter.v1.overlayfs']
  root_path = "$OVERLAY_ROOT"

[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
  platform = "linux/amd64"
  snapshotter = "btrfs"
  differ = "walking"
EOF
} >"$CONFIG"
# containerd unpacks a checkpoint it restores into a temporary directory
# under XDG_RUNTIME_DIR (else /tmp) and leaves it there: under $TMP it goes
# with the run.
mkdir -p "$TMP/xdg"
XDG_RUNTIME_DIR="$TMP/xdg" PATH="$REPO/bin:$PATH" start containerd "$TMP/containerd.log" containerd --config "$CONFIG"
wait_for containerd 60 ctr --address "$ADDRESS" version
for sn in tupper btrfs overlayfs; do
	wait_for containerd 60 ctr --address "$ADDRESS" snapshots --snapshotter "$sn" ls
done

# ------------------------------------------------------------ runtimes
# tupper's containers get a bridge, subnet and address pool of the bench's
# own (runtime options TOML), never the host's tupper0; a second options
# file turns their network off, for the like-for-like start latency.
BRIDGE_NAME=tpbench$((RANDOM % 10000))
SUBNET=""
for n in 250 251 252 253 249 248; do
	if ! ip -4 route show | grep -q "^10\.213\.$n\." && ! ip -4 addr show | grep -q " 10\.213\.$n\."; then
		SUBNET=10.213.$n.0/24
		break
	fi
done
[[ -n $SUBNET ]] || die "no free 10.213.x.0/24 subnet for tupper's bench bridge"
! ip link show "$BRIDGE_NAME" >/dev/null 2>&1 || die "bridge $BRIDGE_NAME exists already"
BRIDGE=$BRIDGE_NAME # from here on, cleanup deletes it
mkdir -p "$TMP/net"
TUPPER_NET=$TMP/tupper-runtime.toml
TUPPER_NONET=$TMP/tupper-runtime-nonet.toml
printf 'Bridge = "%s"\nSubnet = "%s"\nNetworkStateDir = "%s"\n' "$BRIDGE" "$SUBNET" "$TMP/net" >"$TUPPER_NET"
printf 'NetworkMode = "none"\nBridge = "%s"\nSubnet = "%s"\nNetworkStateDir = "%s"\n' "$BRIDGE" "$SUBNET" "$TMP/net" >"$TUPPER_NONET"
RUNC_ROOT=$(mktemp -d /run/tupper-bench-runc.XXXXXX)
log "tupper containers on bridge $BRIDGE ($SUBNET); runc root $RUNC_ROOT; container ids $TOK-*"

# ------------------------------------------------------------ the driver
# tupper turns on btrfs quotas for the whole filesystem it lives on, so the
# baselines on the same btrfs pay the same quota accounting on writes.
UUID=$(findmnt -n -o UUID --mountpoint "$MNT")
QUOTA_MODE=$(cat "/sys/fs/btrfs/$UUID/qgroups/mode" 2>/dev/null || echo off)
NOTE_CMD="Command: \`make bench\` (hack/bench.sh) with BENCH_RUNS=$RUNS BENCH_MEM_RUNS=$MEM_RUNS BENCH_DENSITY_RUNS=$DENSITY_RUNS${BENCH_OVERLAY_ROOT:+ BENCH_OVERLAY_ROOT=$BENCH_OVERLAY_ROOT}${BENCH_ONLY:+ BENCH_ONLY=$BENCH_ONLY}."
NOTE_QUOTA="btrfs quotas on the loopback filesystem: $QUOTA_MODE (turned on by tupper; they apply to every snapshotter on that filesystem)."
NOTE_SHIM="Start latency, shim memory, density: tupper is containerd-shim-tupper-v2 on tupper's snapshotter, its containers on a bridge of the bench's own ($SUBNET) unless a row says NetworkMode=none; runc+overlayfs and runc+btrfs are containerd-shim-runc-v2 with runc, whose containers get a network namespace with only lo."
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
# bench/results/latest.* only from a complete run.
LATEST=$REPO/bench/results
[[ -z ${BENCH_ONLY:-} ]] || LATEST=""
OUT=$REPO/bench/results/$STAMP
log "running the driver: $RUNS paired runs per metric ($MEM_RUNS for shim memory, $DENSITY_RUNS for density)"
"$REPO/_output/bin/bench" \
	--address "$ADDRESS" \
	--runs "$RUNS" \
	--only "${BENCH_ONLY:-}" \
	--image "$IMAGE_TAR" \
	--busybox "$BUSYBOX_TAR" \
	--id-prefix "$TOK" \
	--tupper-runtime-config "$TUPPER_NET" \
	--tupper-runtime-config-nonet "$TUPPER_NONET" \
	--runc-root "$RUNC_ROOT" \
	--mem-runs "$MEM_RUNS" \
	--density-runs "$DENSITY_RUNS" \
	${NOOP_SHIM:+--noop-shim "$NOOP_SHIM"} \
	--work "$TMP/work" \
	--out "$OUT" \
	--latest "$LATEST" \
	--repo "$REPO" \
	--tupper-bin "$TUPPER_BIN" \
	--tupper-metrics "http://127.0.0.1:$METRICS_PORT/metrics" \
	--roots "tupper=$TUPPER_ROOT,btrfs=$BTRFS_ROOT,overlayfs=$OVERLAY_ROOT" \
	--note "$NOTE_CMD" \
	--note "$NOTE_QUOTA" \
	--note "$NOTE_SHIM" \
	--storage "tupper=the loopback btrfs (own subvolume)" \
	--storage "btrfs=the loopback btrfs (own subvolume)" \
	--storage "overlayfs=$OVERLAY_DESC" \
	--storage "runc+overlayfs=overlayfs as above, run by containerd-shim-runc-v2 and runc" \
	--storage "runc+btrfs=the built-in btrfs as above, run by containerd-shim-runc-v2 and runc"
log "results in $OUT${LATEST:+ and bench/results/latest.md, latest.svg}"
