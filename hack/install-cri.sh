#!/usr/bin/env bash
# Install what the offline CRI stack needs beyond hack/install-deps.sh:
# crictl (and, with INSTALL_CRITEST=1, critest: about 5 minutes on 2 cores
# the first time) built from sigs.k8s.io/cri-tools@v1.37.0, Debian's CNI
# plugins, and tupper's static pause binary. Quick when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:/usr/local/bin:$PATH"
CRI_TOOLS_VERSION=v1.37.0

say() { echo "install-cri: $*"; }

if [[ ! -x /usr/lib/cni/bridge ]]; then
	say "apt: containernetworking-plugins"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containernetworking-plugins
fi

# Built inside the module, the binaries' build info says "(devel)"; they
# are stamped with the release (-X .../pkg/version.Version, as cri-tools'
# Makefile does) and asked for it.
VERSION_LDFLAGS="-X sigs.k8s.io/cri-tools/pkg/version.Version=${CRI_TOOLS_VERSION#v}"
built_from() {
	case $1 in
	*/crictl) "$1" --version 2>/dev/null | sed -n 's/^crictl version /v/p' ;;
	*/critest) "$1" -version 2>/dev/null | sed -n 's/^critest version: /v/p' ;;
	esac
}
# critest is a long build and only `make critest` needs it (INSTALL_CRITEST=1).
tools=(crictl)
[[ ${INSTALL_CRITEST:-0} == 1 ]] && tools+=(critest)
for tool in "${tools[@]}"; do
	if [[ -x /usr/local/bin/$tool && $(built_from "/usr/local/bin/$tool") == "$CRI_TOOLS_VERSION" ]]; then
		say "$tool is cri-tools@$CRI_TOOLS_VERSION"
		continue
	fi
	GOFLAGS=-mod=mod go mod download "sigs.k8s.io/cri-tools@$CRI_TOOLS_VERSION"
	src=$(GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/cri-tools@$CRI_TOOLS_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
	say "building $tool from $src"
	if [[ $tool == crictl ]]; then
		(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "$VERSION_LDFLAGS" -o /usr/local/bin/crictl ./cmd/crictl)
	else
		(cd "$src" && CGO_ENABLED=0 go test -c -trimpath -ldflags "$VERSION_LDFLAGS" -o /usr/local/bin/critest ./cmd/critest)
	fi
done

mkdir -p _output/bin
if [[ ! -x _output/bin/pause || hack/pause/pause.c -nt _output/bin/pause ]]; then
	say "building the static pause"
	gcc -static -O2 -Wall -o _output/bin/pause hack/pause/pause.c
	strip _output/bin/pause
fi
say "done"
