package seccomp

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"

	"github.com/tupper/tupper/shim/security"
)

// DefaultCacheDir is where shims share compiled programs. It is on
// tmpfs, so programs never outlive the boot whose kernel they were
// compiled for (the key holds the boot id too, for a directory that
// does).
const DefaultCacheDir = "/run/tupper/seccomp"

// maxCacheEntries bounds the programs kept, in memory and on disk:
// profiles come from specs, and a client making up a new one per
// container must not fill the host's memory.
var maxCacheEntries = 64

// cacheMagic starts every program file and the key: a new layout,
// or a change to how profiles compile that a rebuilt binary might not show
// (see makeSalt), gets a new one.
const cacheMagic = "tupper seccomp program 1\n"

// Cache compiles each profile once: a program is kept in memory,
// for a shim's execs and the containers of its group, and in a directory
// that every shim on the host shares, so that a new shim loads what
// another compiled. The key is a hash of the profile with everything
// else the program depends on (see makeSalt): the kernel's features
// too, which libseccomp checks actions against.
type Cache struct {
	dir      string
	unshared atomic.Bool // the directory is not used (see warn)

	once sync.Once
	salt []byte

	mu  sync.Mutex
	mem map[string]*security.SeccompProgram
}

// NewCache returns a cache sharing programs in dir; "" keeps them
// in this process only. A directory that is a symlink, not this user's,
// or writable by others is not used.
func NewCache(dir string) *Cache {
	return &Cache{dir: dir, mem: map[string]*security.SeccompProgram{}}
}

// Program returns p's program, compiled now or before. A nil cache
// compiles every time. Errors are Compile's: only programs that
// compiled are kept. Callers must not change the program.
func (c *Cache) Program(p *specs.LinuxSeccomp) (*security.SeccompProgram, error) {
	if p == nil {
		return nil, nil
	}
	if c == nil {
		return Compile(p)
	}
	key, err := c.key(p)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	prog := c.mem[key]
	c.mu.Unlock()
	if prog != nil {
		return prog, nil
	}
	if prog = c.load(key); prog == nil {
		if prog, err = Compile(p); err != nil {
			return nil, err
		}
		c.store(key, prog)
	}
	c.mu.Lock()
	if len(c.mem) >= maxCacheEntries {
		clear(c.mem)
	}
	c.mem[key] = prog
	c.mu.Unlock()
	return prog, nil
}

// key is the hex SHA-256 of the salt and p's JSON.
func (c *Cache) key(p *specs.LinuxSeccomp) (string, error) {
	c.once.Do(c.makeSalt)
	profile, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("seccomp profile: %w", err)
	}
	h := sha256.New()
	h.Write(c.salt)
	h.Write(profile)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// makeSalt fixes what a program depends on besides its profile: the
// compile rules of this very executable, the libseccomp it links
// (statically, in the shim: so it is part of the executable too), the
// architecture and the boot. An executable is its file's identity with
// its ctime, which no copy or install can set back. Without a boot id or
// the executable's identity, programs stay in memory.
func (c *Cache) makeSalt() {
	major, minor, micro := libseccomp.GetLibraryVersion()
	c.salt = fmt.Appendf(nil, "%s%d.%d.%d\n%s\n", cacheMagic, major, minor, micro, runtime.GOARCH)
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		c.warn(fmt.Errorf("no boot id: %w", err))
	}
	c.salt = fmt.Appendf(c.salt, "boot %s\n", bytes.TrimSpace(boot))
	var exe unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &exe); err != nil {
		c.warn(fmt.Errorf("no executable to name: %w", err))
	}
	c.salt = fmt.Appendf(c.salt, "exe %d %d %d %d %d\n", exe.Dev, exe.Ino, exe.Size, exe.Mtim.Nano(), exe.Ctim.Nano())
}

// openDir opens the cache directory, made if missing, when it is safe to
// share programs through it.
func (c *Cache) openDir() (int, error) {
	if c.dir == "" || c.unshared.Load() {
		return -1, os.ErrNotExist
	}
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return -1, err
	}
	fd, err := unix.Open(c.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if st.Uid != uint32(os.Geteuid()) || st.Mode&0o022 != 0 {
		unix.Close(fd)
		return -1, fmt.Errorf("owned by uid %d with mode %#o: only its owner (uid %d) may write there", st.Uid, st.Mode&0o7777, os.Geteuid())
	}
	return fd, nil
}

// load reads key's program from the directory; nil when there is none
// that is sound.
func (c *Cache) load(key string) *security.SeccompProgram {
	dir, err := c.openDir()
	if err != nil {
		c.warn(err)
		return nil
	}
	defer unix.Close(dir)
	fd, err := unix.Openat(dir, key, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(fd), key)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || !soundEntry(&st) {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(f, int64(maxEntrySize)))
	if err != nil {
		return nil
	}
	prog, err := decodeProgram(key, b)
	if err != nil {
		log.L.WithError(err).WithField("file", key).Warn("seccomp cache: entry ignored")
		return nil
	}
	return prog
}

// maxEntrySize bounds a program file: the header and the longest program.
const maxEntrySize = len(cacheMagic) + 2*sha256.Size + 16 + security.MaxSeccompProgramSize

// soundEntry: a program file is a regular file of this user's that only
// it may write, with no other name (a hard link made elsewhere).
func soundEntry(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Uid == uint32(os.Geteuid()) &&
		st.Mode&0o022 == 0 && st.Nlink == 1 && st.Size <= int64(maxEntrySize)
}

// encodeProgram lays key's program out for the directory: the magic, the
// key (so a file under another name is not taken for it), the flags and
// the instruction count (little-endian u64s), then the program. The
// count catches a file cut short by whole instructions.
func encodeProgram(key string, p *security.SeccompProgram) []byte {
	b := append([]byte(cacheMagic), key...)
	b = binary.LittleEndian.AppendUint64(b, uint64(p.Flags))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(p.Filter)/unix.SizeofSockFilter))
	return append(b, p.Filter...)
}

func decodeProgram(key string, b []byte) (*security.SeccompProgram, error) {
	rest, ok := bytes.CutPrefix(b, []byte(cacheMagic))
	if !ok {
		return nil, fmt.Errorf("not a program file")
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(key)); !ok || len(key) != 2*sha256.Size || len(rest) < 16 {
		return nil, fmt.Errorf("not the program of %s", key)
	}
	p := &security.SeccompProgram{Flags: uint(binary.LittleEndian.Uint64(rest)), Filter: rest[16:]}
	if n := binary.LittleEndian.Uint64(rest[8:]); n != uint64(len(p.Filter)/unix.SizeofSockFilter) {
		return nil, fmt.Errorf("a program of %d instructions holds %d bytes", n, len(p.Filter))
	}
	return p, p.Check()
}

// store writes key's program for other shims: to a new file renamed into
// place, so a reader sees all of it or none. Failing to share only costs
// time, so it is logged, not returned.
func (c *Cache) store(key string, p *security.SeccompProgram) {
	dir, err := c.openDir()
	if err != nil {
		c.warn(err)
		return
	}
	defer unix.Close(dir)
	evictOldest(dir)
	tmp := key + ".tmp-" + rand.Text()
	fd, err := unix.Openat(dir, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err == nil {
		f := os.NewFile(uintptr(fd), tmp)
		_, err = f.Write(encodeProgram(key, p))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = unix.Renameat(dir, tmp, dir, key)
		}
		if err != nil {
			unix.Unlinkat(dir, tmp, 0)
		}
	}
	if err != nil {
		log.L.WithError(err).Warn("seccomp cache: program not shared")
	}
}

// evictOldest makes room for one more entry in the directory dir.
func evictOldest(dir int) {
	fd, err := unix.Openat(dir, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "seccomp cache")
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil || len(names) < maxCacheEntries {
		return
	}
	type entry struct {
		name string
		when int64
	}
	entries := make([]entry, 0, len(names))
	for _, n := range names {
		var st unix.Stat_t
		if unix.Fstatat(dir, n, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			entries = append(entries, entry{n, st.Mtim.Nano()})
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].when < entries[j].when })
	for _, e := range entries[:max(0, len(entries)-maxCacheEntries+1)] {
		unix.Unlinkat(dir, e.name, 0)
	}
}

// warn logs why the directory is not used, and stops using it.
func (c *Cache) warn(err error) {
	if c.dir == "" || c.unshared.Swap(true) {
		return
	}
	log.L.WithError(err).WithField("dir", c.dir).Warn("seccomp cache: directory not used, programs are not shared")
}
