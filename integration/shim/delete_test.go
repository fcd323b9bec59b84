package shim

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"google.golang.org/protobuf/proto"

	"github.com/tupper/tupper/shim/bundle"
)

// TestShimDeleteAnswer: `shim delete`, which containerd runs after every
// Delete, answers from the reply the shim's Delete left in the bundle
// (printed by shim/nsenter's constructor, before Go starts), and that
// answer is byte for byte what the Go path prints from the recorded exit.
func TestShimDeleteAnswer(t *testing.T) {
	e := newEnv(t)
	dir := filepath.Join(t.TempDir(), "c1")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1795917245, 123456789).UTC()
	if err := bundle.WriteExit(dir, bundle.Exit{Pid: 4242, Status: 3, ExitedAt: at}); err != nil {
		t.Fatal(err)
	}
	shimDelete := func() []byte {
		t.Helper()
		cmd := exec.Command(e.Shim, "-namespace", e.Namespace, "-address", e.Address, "-publish-binary", "/nonexistent", "-id", "c1", "-bundle", dir, "delete")
		cmd.Dir = dir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("shim delete: %v\n%s", err, stderr.String())
		}
		return out
	}
	fromGo := shimDelete()
	var resp taskAPI.DeleteResponse
	if err := proto.Unmarshal(fromGo, &resp); err != nil || resp.Pid != 4242 || resp.ExitStatus != 3 || !protobuf.FromTimestamp(resp.ExitedAt).Equal(at) {
		t.Fatalf("Go path answered %+v (%v)", &resp, err)
	}
	// Delete encodes its reply as the Go path does.
	if same, _ := proto.Marshal(&taskAPI.DeleteResponse{Pid: 4242, ExitStatus: 3, ExitedAt: protobuf.ToTimestamp(at)}); !bytes.Equal(fromGo, same) {
		t.Fatalf("Go path printed %x, Delete would record %x", fromGo, same)
	}
	// What Delete records: a distinct status, to tell the paths apart.
	want, _ := proto.Marshal(&taskAPI.DeleteResponse{Pid: 4242, ExitStatus: 9, ExitedAt: protobuf.ToTimestamp(at)})
	if err := bundle.MarkCleanedUp(dir, want); err != nil {
		t.Fatal(err)
	}
	if got := shimDelete(); !bytes.Equal(got, want) {
		t.Fatalf("with the recorded reply, shim delete printed %x, want %x", got, want)
	}
	if !bundle.CleanedUp(dir) {
		t.Fatal("CleanedUp does not see the recorded reply")
	}
}
