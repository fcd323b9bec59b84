#!/usr/bin/env bash
# Build the test images into _output/images/ (OCI layout archives):
#   busybox.tar  tupper.local/busybox:latest
#   layers.tar   tupper.local/layers:latest  (see hack/mkimage/layers-rootfs.txt)
# Cheap to rerun: the archives are deterministic and only rewritten when
# their content changes.
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
OUT="${TUPPER_IMAGES:-_output/images}"
mkdir -p "$OUT"

tool="_output/bin/mkimage"
mkdir -p "$(dirname "$tool")"
go build -o "$tool" ./hack/mkimage

for kind in busybox layers; do
	dst="$OUT/$kind.tar"
	"$tool" -kind "$kind" -name "tupper.local/$kind:latest" -o "$dst.new"
	if [[ -f $dst ]] && cmp -s "$dst" "$dst.new"; then
		rm -f "$dst.new"
		echo "images: $dst unchanged"
	else
		mv -f "$dst.new" "$dst"
		echo "images: wrote $dst ($(stat -c %s "$dst") bytes, tupper.local/$kind:latest)"
	fi
done
