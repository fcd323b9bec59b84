#!/usr/bin/env bash
# Regenerate proto/ Go code with pinned generators. Needs protoc (Debian's
# protobuf-compiler) and installs protoc-gen-go at the version go.mod pins.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

command -v protoc >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler; }
version=$(go list -m -f '{{.Version}}' google.golang.org/protobuf)
gobin=$(mktemp -d)
trap 'rm -rf "$gobin"' EXIT
GOBIN=$gobin go install "google.golang.org/protobuf/cmd/protoc-gen-go@${version}"

for f in proto/*/*.proto; do
	PATH="$gobin:$PATH" protoc --proto_path=proto --go_out=proto --go_opt=paths=source_relative "${f#proto/}"
	echo "genproto: ${f} -> ${f%.proto}.pb.go (protoc-gen-go ${version}, $(protoc --version))"
done
