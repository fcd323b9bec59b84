#!/usr/bin/env bash
# Build the Kubernetes node installer's image (deploy/kubernetes/
# installer.yaml) as an OCI archive, the way the test images are made
# (hack/mkimage -kind dir): busybox (sh, nsenter), tupper-install as the
# entrypoint, and under /tupper what it installs: both binaries from bin/
# (`make build`), the snapshotter's systemd unit and the containerd
# fragment. Import it with `ctr images import`, or push it anywhere with
# any OCI tool.
#
#   hack/installer-image.sh [OUT]   (default _output/tupper-installer.tar)
#
# Environment: INSTALLER_IMAGE_NAME (default tupper.local/tupper-installer:<version>).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH="/usr/local/go/bin:$PATH"
OUT=${1:-$REPO/_output/tupper-installer.tar}
VERSION=$(git -C "$REPO" describe --tags --always --dirty 2>/dev/null || echo dev)
NAME=${INSTALLER_IMAGE_NAME:-tupper.local/tupper-installer:$VERSION}

for f in bin/containerd-tupper-snapshotter bin/containerd-shim-tupper-v2 bin/tupper-helper; do
	[[ -x $REPO/$f ]] || {
		echo "installer-image: no $f: run \`make build\`" >&2
		exit 1
	}
done
[[ -x /bin/busybox ]] || {
	echo "installer-image: no /bin/busybox: run \`make deps\`" >&2
	exit 1
}

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/tupper/bin" "$STAGE/tmp"
cp /bin/busybox "$STAGE/bin/busybox"
for a in sh nsenter cat ls sleep; do
	ln -s busybox "$STAGE/bin/$a"
done
(cd "$REPO" && CGO_ENABLED=0 go build -o "$STAGE/tupper/bin/tupper-install" ./cmd/tupper-install)
cp "$REPO/bin/containerd-tupper-snapshotter" "$REPO/bin/containerd-shim-tupper-v2" "$REPO/bin/tupper-helper" "$STAGE/tupper/bin/"
cp "$REPO/hack/systemd/containerd-tupper-snapshotter.service" "$STAGE/tupper/"
cp "$REPO/deploy/kubernetes/containerd-tupper.toml" "$STAGE/tupper/"
mkdir -p "$(dirname "$OUT")"
(cd "$REPO" && go run ./hack/mkimage -kind dir -rootfs "$STAGE" -name "$NAME" \
	-entrypoint '["/tupper/bin/tupper-install"]' -cmd '[]' -env PATH=/bin -o "$OUT")
echo "installer-image: $NAME in $OUT"
