# shellcheck shell=bash
# Shell helpers shared by hack/demo.sh, hack/cri.sh, hack/bench.sh,
# hack/install-deps.sh and hack/vm/deps.sh: daemons run detached with a pid
# file, and are stopped by that pid (never by name); the containerd config;
# Debian packages installed when missing. The sourcing script defines
# log(), die() and REPO (as far as it uses the functions that need them).

# apt_install_missing WHAT PACKAGE...: installs those of the packages that
# are not installed yet, naming them after WHAT in the log; apt-get update
# runs only then. Status 1 when none was missing (nothing done), 2 when apt
# failed: callers accept only 1 (`|| (($? == 1))`), so that 2 still stops
# them under set -e.
apt_install_missing() {
	local what=$1 p
	shift
	local missing=()
	for p in "$@"; do
		dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
	done
	((${#missing[@]})) || return 1
	log "apt: installing $what${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq || return 2
	apt-get install -y -qq --no-install-recommends "${missing[@]}" || return 2
}

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

# wait_gone PID...: wait (up to 5 s) until none of the processes exists.
wait_gone() {
	local i pid
	for ((i = 0; i < 50; i++)); do
		for pid; do
			kill -0 "$pid" 2>/dev/null && break
			pid=""
		done
		[[ -z ${pid:-} ]] && return 0
		sleep 0.1
	done
	return 1
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
			wait_gone "$pid" || log "$name (pid $pid) survived SIGKILL"
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
# "cri", none of the CRI plugins, which are slow to start), written by the
# Go code the integration harness uses (hack/containerd-config). Callers
# append their own tables; more unpack_config entries may follow anywhere.
# The sourcing script defines REPO.
containerd_config() {
	local cri=()
	[[ ${6:-} == cri ]] && cri=(-cri)
	local gen=(go run ./hack/containerd-config)
	# A built one where there is no Go toolchain (hack/vm's guest).
	[[ -x $REPO/_output/bin/containerd-config ]] && gen=("$REPO/_output/bin/containerd-config")
	(cd "$REPO" && "${gen[@]}" -root "$1" -state "$2" -address "$3" \
		-tupper-socket "$4" -tupper-root "$5" "${cri[@]}")
}
