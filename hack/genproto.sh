#!/usr/bin/env bash
# Regenerate proto/ Go code with pinned generators. Needs protoc (Debian's
# protobuf-compiler) and installs protoc-gen-go and protoc-gen-go-ttrpc at
# the versions go.mod pins.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

command -v protoc >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler; }
version=$(go list -m -f '{{.Version}}' google.golang.org/protobuf)
gobin=$(mktemp -d)
trap 'rm -rf "$gobin"' EXIT
GOBIN=$gobin go install "google.golang.org/protobuf/cmd/protoc-gen-go@${version}"
ttrpc=$(go list -m -f '{{.Version}}' github.com/containerd/ttrpc)
GOBIN=$gobin go install "github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc@${ttrpc}"
# containerd renames Id/Io/Os fields to ID/IO/OS after generating; so do we,
# so that its task API reads the same in our package.
GOBIN=$gobin go install github.com/containerd/protobuild/cmd/go-fix-acronym@v0.3.0

for f in proto/*/*.proto; do
	PATH="$gobin:$PATH" protoc --proto_path=proto --go_out=proto --go_opt=paths=source_relative "${f#proto/}"
	echo "genproto: ${f} -> ${f%.proto}.pb.go (protoc-gen-go ${version}, $(protoc --version))"
done

# containerd's task API (v3), generated from the .proto in the module go.mod
# pins, into a package of our own. containerd's Go package for it also
# carries gRPC bindings, which would link gRPC and net/http into every
# shim; the shim serves the task API over ttrpc only. Same proto package
# and file name as containerd's, so the two must never share a binary
# (cmd/containerd-shim-tupper-v2's deps test checks the shim's side).
api=$(go mod download -json github.com/containerd/containerd/api | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
shim_proto=runtime/task/v3/shim.proto
PATH="$gobin:$PATH" protoc --proto_path="$api" \
	--go_out=. --go_opt=module=github.com/tupper/tupper \
	--go_opt="M${shim_proto}=github.com/tupper/tupper/proto/taskapi;taskapi" \
	--go-ttrpc_out=. --go-ttrpc_opt=module=github.com/tupper/tupper \
	--go-ttrpc_opt="M${shim_proto}=github.com/tupper/tupper/proto/taskapi;taskapi" \
	"$shim_proto"
"$gobin/go-fix-acronym" -w -a '^Os' proto/taskapi/*.pb.go
"$gobin/go-fix-acronym" -w -a '(Id|Io|Uuid|Os)$' proto/taskapi/*.pb.go
echo "genproto: containerd api ${shim_proto} -> proto/taskapi (protoc-gen-go ${version}, protoc-gen-go-ttrpc ${ttrpc})"
