package protocol

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tupper/tupper/internal/testutil"
)

// aSpec has an object of most of the spec's types, as containerd's and
// CRI's specs do.
const aSpec = `{"ociVersion": "1.2.0",
 "process": {"user": {"uid": 0, "gid": 0, "additionalGids": [10]}, "args": ["sh"], "env": ["PATH=/bin"], "cwd": "/",
  "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
  "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}], "noNewPrivileges": true},
 "root": {"path": "rootfs"}, "hostname": "h",
 "mounts": [{"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]}],
 "hooks": {"createRuntime": [{"path": "/bin/true", "args": ["true"], "timeout": 1}]},
 "annotations": {"a": "b"},
 "linux": {"uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
  "sysctl": {"net.ipv4.ip_forward": "0"},
  "resources": {"devices": [{"allow": false, "access": "rwm"}], "memory": {"limit": 1048576},
   "cpu": {"shares": 1024}, "pids": {"limit": 10}, "blockIO": {"weight": 10},
   "hugepageLimits": [{"pageSize": "2MB", "limit": 0}], "unified": {"memory.high": "max"}},
  "cgroupsPath": "/x", "namespaces": [{"type": "pid"}, {"type": "network", "path": "/proc/1/ns/net"}],
  "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}],
  "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
   "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
  "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"], "mountLabel": "", "rootfsPropagation": "private",
  "timeOffsets": {"monotonic": {"secs": 1, "nanosecs": 0}}, "personality": {"domain": "LINUX"}}}`

// decodeMallocs is how many allocations one decode of aSpec takes.
func decodeMallocs(t *testing.T) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var s specs.Spec
	err := json.Unmarshal([]byte(aSpec), &s)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	return after.Mallocs - before.Mallocs
}

// TestWarmUpPreparesSpecDecoding decodes a spec twice in new processes,
// with and without WarmUp first. The first decode of a cold process builds
// encoding/json's caches, and allocates much more than the second; after
// WarmUp, the first must allocate no more than the second.
func TestWarmUpPreparesSpecDecoding(t *testing.T) {
	if mode := os.Getenv("TUPPER_WARM_TEST"); mode != "" {
		if mode == "warm" {
			WarmUp()
		}
		first := decodeMallocs(t)
		fmt.Printf("mallocs %d %d\n", first, decodeMallocs(t))
		return
	}
	decodes := func(mode string) (first, second uint64) {
		out := testutil.RerunTest(t, "TUPPER_WARM_TEST", mode)
		_, counts, _ := strings.Cut(out, "mallocs ")
		if _, err := fmt.Sscan(counts, &first, &second); err != nil {
			t.Fatalf("%s: no counts in %q", mode, out)
		}
		return first, second
	}
	coldFirst, steady := decodes("cold")
	if coldFirst < 2*steady {
		t.Fatalf("a cold decode allocates %d times, a warm one %d: the test no longer sees the caches", coldFirst, steady)
	}
	if warmFirst, _ := decodes("warm"); warmFirst > steady {
		t.Errorf("after WarmUp the first decode allocates %d times, a warm one %d (cold: %d)", warmFirst, steady, coldFirst)
	}
}
