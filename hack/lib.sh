# Shell helpers shared by hack/demo.sh and hack/cri.sh: daemons run
# detached with a pid file, and are stopped by that pid (never by name).
# The sourcing script defines log() and die().

# pid_alive PIDFILE: the pid in PIDFILE, if that process exists.
pid_alive() {
	local pid
	[[ -f $1 ]] || return 1
	pid=$(cat "$1")
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# same_binary PID BIN: PID is running BIN as it is on disk now.
same_binary() {
	[[ $(stat -L -c '%d:%i' "/proc/$1/exe" 2>/dev/null) == $(stat -L -c '%d:%i' "$2" 2>/dev/null) ]]
}

# stop_pidfile NAME PIDFILE: SIGTERM, wait up to 10 s, SIGKILL.
stop_pidfile() {
	local name=$1 pidfile=$2 pid i
	if pid=$(pid_alive "$pidfile"); then
		log "stopping $name (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "$name (pid $pid) ignored SIGTERM; SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.2
		fi
	fi
	rm -f "$pidfile"
}

# start_daemon NAME PIDFILE LOG CMD...: run CMD detached, record its pid.
start_daemon() {
	local name=$1 pidfile=$2 logf=$3
	shift 3
	setsid "$@" >>"$logf" 2>&1 </dev/null &
	echo $! >"$pidfile"
	log "started $name (pid $!), log $logf"
}

wait_for() { # wait_for WHAT SECONDS PIDFILE LOG CMD...
	local what=$1 secs=$2 pidfile=$3 logf=$4 i
	shift 4
	for ((i = 0; i < secs * 10; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		if ! pid_alive "$pidfile" >/dev/null; then
			tail -n 30 "$logf" >&2 || true
			die "$what exited; see $logf"
		fi
		sleep 0.1
	done
	tail -n 30 "$logf" >&2 || true
	die "$what not ready after ${secs}s; see $logf"
}

# containerd_config ROOT STATE ADDRESS SNAP_SOCK SNAP_ROOT [cri]: the
# config of a private containerd with the tupper snapshotter (and, without
# "cri", none of the CRI plugins, which are slow to start). Callers append
# their own tables; more unpack_config entries may follow anywhere.
containerd_config() {
	local root=$1 state=$2 address=$3 snap_sock=$4 snap_root=$5 cri=${6:-}
	cat <<EOF
version = 3
root = "$root"
state = "$state"
EOF
	[[ $cri == cri ]] || cat <<'EOF'
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.cri.v1.runtime",
  "io.containerd.cri.v1.images",
  "io.containerd.podsandbox.controller.v1.podsandbox",
  "io.containerd.sandbox.controller.v1.shim",
  "io.containerd.nri.v1.nri",
]
EOF
	cat <<EOF

[grpc]
  address = "$address"
[ttrpc]
  address = "$address.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[proxy_plugins.tupper]
  type = "snapshot"
  address = "$snap_sock"
  capabilities = ["remap-ids"]
  [proxy_plugins.tupper.exports]
    root = "$snap_root"

# Unpacking goes only into the snapshotters listed (containerd >= 2.1);
# listing any replaces the default, so overlayfs is listed too.
[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
  platform = "linux/amd64"
  snapshotter = "tupper"
  differ = "walking"
[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
  platform = "linux/amd64"
  snapshotter = "overlayfs"
  differ = "walking"
  optional = true
EOF
}
