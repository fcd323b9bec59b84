package shim

import (
	"context"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/client"

	"github.com/tupper/tupper/internal/migrate"
)

// TestMigrate moves a running tupper container, counting in memory, from
// one containerd to another on this machine (internal/migrate: a
// checkpoint that stops it, its rootfs changes, a restore on the other
// side): it goes on counting there from where it was, with its rootfs
// file and its address, and nothing of it is left at the source.
func TestMigrate(t *testing.T) {
	needCriu(t)
	a := newEnv(t)
	b := newEnv(t)
	id := "mover"
	a.mustCtr("run", "-d", "--null-io", "--runtime", crRuntimes[0], image, id, "sh", "-c", counterScript)
	addr := a.addr(crRuntimes[0], id)
	n := a.countPast(id, 3)

	from, err := client.New(a.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close()
	to, err := client.New(b.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer to.Close()
	res, err := migrate.Move(context.Background(), migrate.Options{
		From: from, To: to, FromNS: a.Namespace, ToNS: b.Namespace, ID: id, Dir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("downtime %v (checkpoint %v, transfer %v, restore %v)", res.Downtime, res.Checkpoint, res.Transfer, res.Restore)

	b.checkRestored(crRuntimes[0], id, n, addr)
	if left := strings.TrimSpace(a.mustCtr("containers", "ls", "-q")); left != "" {
		t.Errorf("left at the source: %q", left)
	}
	b.remove(id)
}
