package task

import (
	"testing"

	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	taskAPI "github.com/tupper/tupper/proto/taskapi"
)

// TestStateExitTimeOnlyAfterExit: a process that has not exited reports
// the zero exit time, as runc's shim does. Left out, the timestamp is nil,
// which containerd turns into 1970-01-01 (FromTimestamp of nil), so that
// nerdctl showed FinishedAt 1970-01-01T00:00:00Z for running containers.
func TestStateExitTimeOnlyAfterExit(t *testing.T) {
	s, _, ctx := newService(t)
	bundle := newBundle(t, "sleep", "100")
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "st", Bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	defer s.Delete(ctx, &taskAPI.DeleteRequest{ID: "st"})
	check := func(want task.Status, exited bool) {
		t.Helper()
		st, err := s.State(ctx, &taskAPI.StateRequest{ID: "st"})
		if err != nil || st.Status != want {
			t.Fatalf("state %v, %v; want %v", st, err, want)
		}
		at := protobuf.FromTimestamp(st.ExitedAt)
		if exited == at.IsZero() || at.Unix() == 0 {
			t.Errorf("%v: exit time %v (timestamp %v), want zero: %v", want, at, st.ExitedAt, !exited)
		}
	}
	check(task.Status_CREATED, false)
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "st"}); err != nil {
		t.Fatal(err)
	}
	check(task.Status_RUNNING, false)
	if _, err := s.Kill(ctx, &taskAPI.KillRequest{ID: "st", Signal: 9}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Wait(ctx, &taskAPI.WaitRequest{ID: "st"}); err != nil {
		t.Fatal(err)
	}
	check(task.Status_STOPPED, true)
}
