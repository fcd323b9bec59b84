package seccomp

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/tupper/tupper/shim/security"
)

// errnoProfile allows everything but the named syscall, which fails with
// errno: a different errno makes a different program.
func errnoProfile(name string, errno uint) *specs.LinuxSeccomp {
	return &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
		{Names: []string{name}, Action: specs.ActErrno, ErrnoRet: &errno},
	}}
}

// cacheFiles lists the entries of a cache directory.
func cacheFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func mustProgram(t *testing.T, c *Cache, p *specs.LinuxSeccomp) *security.SeccompProgram {
	t.Helper()
	prog, err := c.Program(p)
	if err != nil {
		t.Fatal(err)
	}
	return prog
}

func mustKey(t *testing.T, c *Cache, p *specs.LinuxSeccomp) string {
	t.Helper()
	key, err := c.key(p)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func TestSeccompCacheSharesPrograms(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "seccomp")
	mkdir := errnoProfile("mkdir", 1)
	first := NewCache(dir)
	prog := mustProgram(t, first, mkdir)
	if again := mustProgram(t, first, mkdir); again != prog {
		t.Error("the same cache compiled the same profile twice")
	}
	key := mustKey(t, first, mkdir)
	if files := cacheFiles(t, dir); len(files) != 1 || files[0] != key {
		t.Fatalf("cache directory holds %v, want just %s", files, key)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("cache directory: %v, mode %v; want 0700", err, st.Mode())
	}

	// A second shim reads the file rather than compiling: give it another
	// program under mkdir's key, and that is what it must return.
	other := mustProgram(t, NewCache(""), errnoProfile("mkdir", 2))
	if bytes.Equal(other.Filter, prog.Filter) {
		t.Fatal("profiles with different errnos compiled to the same program")
	}
	if err := os.WriteFile(filepath.Join(dir, key), encodeProgram(key, other), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := mustProgram(t, NewCache(dir), mkdir); !bytes.Equal(got.Filter, other.Filter) {
		t.Error("a new cache compiled the profile instead of reading its program")
	}
}

func TestSeccompCacheKey(t *testing.T) {
	c := NewCache("")
	a, b := mustKey(t, c, errnoProfile("mkdir", 1)), mustKey(t, c, errnoProfile("mkdir", 2))
	if a == b || a != mustKey(t, c, errnoProfile("mkdir", 1)) {
		t.Errorf("keys: %s for errno 1 (twice: %s), %s for errno 2", a, mustKey(t, c, errnoProfile("mkdir", 1)), b)
	}
	if len(a) != 64 {
		t.Errorf("key %q is not a SHA-256 in hex", a)
	}
}

// An entry that is not a sound program file, or not a regular file of
// the directory's own with one name, is compiled again and replaced.
func TestSeccompCacheIgnoresBadEntries(t *testing.T) {
	mkdir := errnoProfile("mkdir", 1)
	want := mustProgram(t, NewCache(""), mkdir)
	key := mustKey(t, NewCache(""), mkdir)
	other := mustProgram(t, NewCache(""), errnoProfile("mkdir", 2))
	elsewhere := filepath.Join(t.TempDir(), "planted")
	if err := os.WriteFile(elsewhere, encodeProgram(key, other), 0o600); err != nil {
		t.Fatal(err)
	}
	good := encodeProgram(key, want)
	header := len(cacheMagic) + len(key)
	write := func(b []byte, mode os.FileMode) func(string) error {
		return func(p string) error {
			if err := os.WriteFile(p, b, mode); err != nil {
				return err
			}
			return os.Chmod(p, mode) // past the umask
		}
	}
	badFlags := encodeProgram(key, &security.SeccompProgram{Filter: want.Filter, Flags: unix.SECCOMP_FILTER_FLAG_TSYNC})
	for name, plant := range map[string]func(path string) error{
		"cut short":         write(good[:len(good)-3], 0o600),
		"one insn less":     write(good[:len(good)-unix.SizeofSockFilter], 0o600),
		"no magic":          write(good[1:], 0o600),
		"empty program":     write(good[:header+16], 0o600),
		"too long":          write(append(good, make([]byte, security.MaxSeccompProgramSize)...), 0o600),
		"another key":       write(encodeProgram(mustKey(t, NewCache(""), errnoProfile("mkdir", 2)), other), 0o600),
		"TSYNC":             write(badFlags, 0o600),
		"empty file":        write(nil, 0o600),
		"another layout":    write(append([]byte("tupper seccomp program 0\n"), good[len(cacheMagic):]...), 0o600),
		"writable by all":   write(encodeProgram(key, other), 0o666),
		"writable by group": write(encodeProgram(key, other), 0o620),
		"another owner": func(p string) error {
			if err := os.WriteFile(p, encodeProgram(key, other), 0o600); err != nil {
				return err
			}
			return os.Chown(p, os.Geteuid()+1, -1)
		},
		"hard link": func(p string) error { return os.Link(elsewhere, p) },
		"symlink":   func(p string) error { return os.Symlink(elsewhere, p) },
		"fifo":      func(p string) error { return unix.Mkfifo(p, 0o600) },
		"directory": func(p string) error { return os.Mkdir(p, 0o700) },
	} {
		t.Run(name, func(t *testing.T) {
			if name == "another owner" && os.Geteuid() != 0 {
				t.Skip("needs root to chown")
			}
			dir := t.TempDir()
			c := NewCache(dir)
			path := filepath.Join(dir, mustKey(t, c, mkdir))
			if err := plant(path); err != nil {
				t.Fatal(err)
			}
			if got := mustProgram(t, c, mkdir); !bytes.Equal(got.Filter, want.Filter) || got.Flags != want.Flags {
				t.Fatal("the planted entry was used")
			}
			if name == "directory" {
				return // rename cannot replace a directory; it stays unused
			}
			if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, good) {
				t.Errorf("entry not replaced by the compiled program: %v", err)
			}
		})
	}
}

// A directory that others may write, or that another user owns, could
// hand a container any filter: it is not used at all.
func TestSeccompCacheRefusesUnsafeDirectories(t *testing.T) {
	mkdir := errnoProfile("mkdir", 1)
	for name, spoil := range map[string]func(dir string) error{
		"writable by all":   func(d string) error { return os.Chmod(d, 0o777) },
		"writable by group": func(d string) error { return os.Chmod(d, 0o770) },
		"another owner":     func(d string) error { return os.Chown(d, os.Geteuid()+1, -1) },
		"symlink": func(d string) error {
			target := d + "-target"
			if err := os.Rename(d, target); err != nil {
				return err
			}
			return os.Symlink(target, d)
		},
	} {
		t.Run(name, func(t *testing.T) {
			if name == "another owner" && os.Geteuid() != 0 {
				t.Skip("needs root to chown")
			}
			dir := filepath.Join(t.TempDir(), "seccomp")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := spoil(dir); err != nil {
				t.Fatal(err)
			}
			c := NewCache(dir)
			// What an attacker planted under the key is not read...
			planted := encodeProgram(mustKey(t, c, mkdir), mustProgram(t, NewCache(""), errnoProfile("mkdir", 2)))
			if err := os.WriteFile(filepath.Join(dir, mustKey(t, c, mkdir)), planted, 0o600); err != nil {
				t.Fatal(err)
			}
			want := mustProgram(t, NewCache(""), mkdir)
			if got := mustProgram(t, c, mkdir); !bytes.Equal(got.Filter, want.Filter) {
				t.Fatal("a program from an unsafe directory was used")
			}
			// ...and nothing is written there.
			mustProgram(t, c, errnoProfile("rmdir", 1))
			if files := cacheFiles(t, dir); len(files) != 1 {
				t.Errorf("the cache wrote to an unsafe directory: %v", files)
			}
		})
	}
}

func TestSeccompCacheKeepsNoFailures(t *testing.T) {
	dir := t.TempDir()
	c := NewCache(dir)
	bad := &specs.LinuxSeccomp{DefaultAction: "SCMP_ACT_SOMETIMES"}
	for range 2 {
		if _, err := c.Program(bad); err == nil {
			t.Fatal("a profile that does not compile was accepted")
		}
	}
	if files := cacheFiles(t, dir); len(files) != 0 || len(c.mem) != 0 {
		t.Errorf("a failure was kept: files %v, %d in memory", files, len(c.mem))
	}
}

// A client that makes up a new profile per container fills neither the
// directory nor the shim's memory.
func TestSeccompCacheIsBounded(t *testing.T) {
	defer func(n int) { maxCacheEntries = n }(maxCacheEntries)
	maxCacheEntries = 3
	dir := t.TempDir()
	c := NewCache(dir)
	var last string
	for i := range 7 {
		p := errnoProfile("mkdir", uint(i+1))
		mustProgram(t, c, p)
		last = mustKey(t, c, p)
		if files := cacheFiles(t, dir); len(files) > 3 || len(c.mem) > 3 {
			t.Fatalf("after %d profiles: %d files %v, %d in memory", i+1, len(files), files, len(c.mem))
		}
	}
	if _, err := os.Stat(filepath.Join(dir, last)); err != nil {
		t.Errorf("the newest program was evicted: %v", err)
	}
}

func TestSeccompProgramFlags(t *testing.T) {
	listener := "/run/agent.sock"
	for _, tc := range []struct {
		flags  []specs.LinuxSeccompFlag
		notify bool
		want   uint
	}{
		{nil, false, 0},
		{[]specs.LinuxSeccompFlag{specs.LinuxSeccompFlagLog}, false, unix.SECCOMP_FILTER_FLAG_LOG},
		{[]specs.LinuxSeccompFlag{specs.LinuxSeccompFlagSpecAllow}, false, unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW},
		{nil, true, unix.SECCOMP_FILTER_FLAG_NEW_LISTENER},
		{[]specs.LinuxSeccompFlag{specs.LinuxSeccompFlagLog}, true, unix.SECCOMP_FILTER_FLAG_LOG | unix.SECCOMP_FILTER_FLAG_NEW_LISTENER},
	} {
		t.Run(fmt.Sprintf("%v notify=%v", tc.flags, tc.notify), func(t *testing.T) {
			p := errnoProfile("mkdir", 1)
			p.Flags = tc.flags
			if tc.notify {
				p.ListenerPath = listener
				p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{Names: []string{"rmdir"}, Action: specs.ActNotify})
			}
			prog, err := Compile(p)
			if err != nil {
				t.Fatal(err)
			}
			if prog.Flags != tc.want {
				t.Errorf("flags %#x, want %#x", prog.Flags, tc.want)
			}
		})
	}
}
