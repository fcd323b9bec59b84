package container

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"github.com/moby/sys/user"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tupper/tupper/shim/container/protocol"
	"github.com/tupper/tupper/shim/security"
	"golang.org/x/sys/unix"
)

// preparedProcess is a process whose user and executable have been
// resolved inside the container, so that Create can fail on them.
type preparedProcess struct {
	spec   *specs.Process
	path   string
	env    []string
	uid    int
	gid    int
	groups []int
	caps   *security.Capabilities
	cfg    *protocol.Process
	cwd    *os.File // O_PATH, inside the root
}

// prepareProcess runs in the helper after the container's root is in
// place (or after joining it). create is true for a new container's init,
// which may create its working directory.
func prepareProcess(cfg *protocol.Process, create bool) (*preparedProcess, error) {
	p := cfg.Spec
	pp := &preparedProcess{spec: p, cfg: cfg, env: p.Env, uid: int(p.User.UID), gid: int(p.User.GID)}
	if p.User.Username != "" {
		u, err := lookupUser(p.User.Username)
		if err != nil {
			return nil, err
		}
		pp.uid, pp.gid = u.Uid, u.Gid
	}
	for _, g := range p.User.AdditionalGids {
		pp.groups = append(pp.groups, int(g))
	}
	caps, err := security.ParseCapabilities(p.Capabilities)
	if err != nil {
		return nil, invalid("%v", err)
	}
	pp.caps = caps
	if pp.cwd, err = openCwd(p.Cwd, create); err != nil {
		return nil, err
	}
	if pp.env, err = processEnv(p.Env, pp.uid); err != nil {
		return nil, err
	}
	path, err := lookPath(p.Args[0], p.Cwd, envValue(pp.env, "PATH"))
	if err != nil {
		return nil, err
	}
	pp.path = path
	return pp, nil
}

// lookupUser resolves a user name through the container's /etc/passwd.
func lookupUser(name string) (user.User, error) {
	users, err := passwdEntries(func(u user.User) bool { return u.Name == name })
	if err != nil {
		return user.User{}, err
	}
	if len(users) == 0 {
		return user.User{}, invalid("unknown user %q: no matching entry in the container's /etc/passwd", name)
	}
	if u := users[0]; u.Uid < 0 || u.Gid < 0 || u.Uid > math.MaxInt32 || u.Gid > math.MaxInt32 {
		return user.User{}, invalid("user %q has ids %d:%d in the container's /etc/passwd, out of range", name, u.Uid, u.Gid)
	}
	return users[0], nil
}

// passwdEntries reads the container's /etc/passwd (the helper is in its
// root by now): a regular file of at most 4 MiB, or none. An image could
// make it a FIFO, which would block the helper forever.
func passwdEntries(match func(user.User) bool) ([]user.User, error) {
	f, err := os.OpenFile("/etc/passwd", os.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read /etc/passwd in the container: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, invalid("the container's /etc/passwd is not a regular file")
	}
	users, err := user.ParsePasswdFilter(io.LimitReader(f, 4<<20), match)
	if err != nil {
		return nil, fmt.Errorf("read /etc/passwd in the container: %w", err)
	}
	return users, nil
}

// processEnv is the program's environment as runc makes it: the last of
// duplicate names wins, and HOME, when unset or empty, is the process
// user's home in the container's /etc/passwd, or "/".
func processEnv(env []string, uid int) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	home := false
	for i := len(env) - 1; i >= 0; i-- {
		k, v, ok := strings.Cut(env[i], "=")
		switch {
		case !ok || k == "":
			return nil, invalid("process.env entry %q is not NAME=value", env[i])
		case strings.IndexByte(env[i], 0) >= 0:
			return nil, invalid("process.env entry %s holds a NUL byte", k)
		case seen[k], k == "HOME" && v == "":
			continue
		}
		seen[k], home = true, home || k == "HOME"
		out = append(out, env[i])
	}
	slices.Reverse(out)
	if !home {
		dir := "/"
		if users, _ := passwdEntries(func(u user.User) bool { return u.Uid == uid }); len(users) > 0 && users[0].Home != "" {
			dir = users[0].Home
		}
		out = append(out, "HOME="+dir)
	}
	return out, nil
}

// openCwd opens the process' working directory inside the root it now
// has, made for a new container's init when missing. It is resolved with
// RESOLVE_IN_ROOT and no magic links: a cwd such as /proc/self/fd/N would
// otherwise follow an fd of the helper out of the root.
func openCwd(cwd string, create bool) (*os.File, error) {
	if !filepath.IsAbs(cwd) {
		return nil, invalid("process.cwd %q is not an absolute path", cwd)
	}
	f, err := pathrs.OpenInRoot("/", cwd)
	if errors.Is(err, os.ErrNotExist) && create {
		if err = pathrs.MkdirAll("/", cwd, 0o755); err == nil {
			f, err = pathrs.OpenInRoot("/", cwd)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("process.cwd %s: %w", cwd, err)
	}
	st, err := f.Stat()
	if err == nil && !st.IsDir() {
		err = errors.New("not a directory")
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("process.cwd %s: %w", cwd, err)
	}
	return f, nil
}

func envValue(env []string, key string) string {
	v := ""
	for _, e := range env {
		if k, val, ok := strings.Cut(e, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// lookPath finds the executable the way execvp would, inside the
// container's root (the helper has already pivoted or joined it).
func lookPath(file, cwd, pathEnv string) (string, error) {
	check := func(p string) error {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if st.IsDir() {
			return fmt.Errorf("%s is a directory", p)
		}
		if st.Mode()&0o111 == 0 {
			return fmt.Errorf("%s is not executable", p)
		}
		return nil
	}
	if strings.Contains(file, "/") {
		p := file
		if !filepath.IsAbs(p) {
			p = filepath.Join(cwd, p)
		}
		if err := check(p); err != nil {
			return "", invalid("executable %q: %v", file, err)
		}
		return p, nil
	}
	if pathEnv == "" {
		pathEnv = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(cwd, dir)
		}
		p := filepath.Join(dir, file)
		if check(p) == nil {
			return p, nil
		}
	}
	return "", invalid("executable %q not found in $PATH (%s) in the container", file, pathEnv)
}

// exec applies the process attributes and execve's. notify hands a
// seccomp listener fd to the parent. commit marks the point from which a
// failure is the process' own (see protocol): before a filter that does
// not notify is loaded, after which the helper reports nothing to the
// parent; else right before the execve. It returns only on failure.
//
// The order is runc's: without no_new_privs, loading a seccomp filter
// needs CAP_SYS_ADMIN, so it goes before the capabilities are dropped (the
// profile must then allow the remaining setup calls, as containerd's
// default does); with no_new_privs it goes last, so the filter sees
// nothing but the exec.
func (p *preparedProcess) exec(notify func(fd int) error, commit func()) error {
	s := p.spec
	if err := p.applyLimits(); err != nil {
		return err
	}
	if err := security.ApplyAttrs(p.cfg.Personality, s); err != nil {
		return err
	}
	load := func() error {
		if f := p.cfg.Seccomp; f != nil && !f.Notifies() {
			commit()
		}
		return p.cfg.Seccomp.Load(notify)
	}
	if !s.NoNewPrivileges {
		if err := load(); err != nil {
			return err
		}
	}
	if err := p.switchCredentials(); err != nil {
		return err
	}
	if s.NoNewPrivileges {
		if err := security.SetNoNewPrivileges(); err != nil {
			return fmt.Errorf("set no_new_privs: %w", err)
		}
		if err := load(); err != nil {
			return err
		}
	}
	if err := p.cfg.LSM.ApplyOnExec(); err != nil {
		return err
	}
	commit()
	if err := unix.Exec(p.path, s.Args, p.env); err != nil {
		return fmt.Errorf("exec %s: %w", p.path, err)
	}
	return nil
}

// applyLimits sets rlimits and oom_score_adj, and enters the working
// directory.
func (p *preparedProcess) applyLimits() error {
	s := p.spec
	for _, rl := range s.Rlimits {
		// syscall.Setrlimit, not a raw prlimit: the Go runtime raised our
		// soft RLIMIT_NOFILE at startup and syscall.Exec puts the
		// original back unless RLIMIT_NOFILE was set through it.
		lim := syscall.Rlimit{Cur: rl.Soft, Max: rl.Hard}
		if err := syscall.Setrlimit(rlimitNames[rl.Type], &lim); err != nil {
			if err == unix.EPERM {
				return fmt.Errorf("set %s soft=%d hard=%d: %w (raising a hard limit needs CAP_SYS_RESOURCE)", rl.Type, rl.Soft, rl.Hard, err)
			}
			return fmt.Errorf("set %s: %w", rl.Type, err)
		}
	}
	if s.OOMScoreAdj != nil && !oomScoreAdjIs(*s.OOMScoreAdj) {
		if err := security.WriteOOMScoreAdj(strconv.Itoa(*s.OOMScoreAdj)); err != nil {
			return fmt.Errorf("set oom_score_adj to %d: %w (lowering it needs CAP_SYS_RESOURCE)", *s.OOMScoreAdj, err)
		}
	}
	err := unix.Fchdir(int(p.cwd.Fd()))
	p.cwd.Close()
	if err != nil {
		return fmt.Errorf("chdir %s: %w", s.Cwd, err)
	}
	return nil
}

// switchCredentials drops the bounding set, becomes the process' user
// and groups, keeping the permitted capabilities across the uid change,
// then sets exactly the spec's capabilities and umask.
func (p *preparedProcess) switchCredentials() error {
	if err := p.caps.DropBounding(); err != nil {
		return fmt.Errorf("dropping bounding capabilities: %w", err)
	}
	if err := security.KeepCapsAcrossSetuid(true); err != nil {
		return fmt.Errorf("set keepcaps: %w", err)
	}
	if err := unix.Setgroups(p.groups); err != nil {
		return fmt.Errorf("setgroups %v: %w", p.groups, err)
	}
	if err := security.SetThreadIDs(p.uid, p.gid); err != nil {
		return err
	}
	if r, e, s := unix.Getresuid(); r != p.uid || e != p.uid || s != p.uid {
		return fmt.Errorf("setuid %d left uids %d/%d/%d", p.uid, r, e, s)
	}
	if r, e, s := unix.Getresgid(); r != p.gid || e != p.gid || s != p.gid {
		return fmt.Errorf("setgid %d left gids %d/%d/%d", p.gid, r, e, s)
	}
	if err := security.KeepCapsAcrossSetuid(false); err != nil {
		return fmt.Errorf("clear keepcaps: %w", err)
	}
	if err := p.caps.Apply(); err != nil {
		return err
	}
	umask := 0o022
	if u := p.spec.User.Umask; u != nil {
		umask = int(*u)
	}
	unix.Umask(umask)
	return nil
}

// oomScoreAdjIs reports whether ours is already v (the parent sets it for
// a helper in a user namespace, where lowering it is not allowed).
func oomScoreAdjIs(v int) bool {
	b, err := security.ReadProcSelf("oom_score_adj")
	return err == nil && strings.TrimSpace(b) == strconv.Itoa(v)
}
