package integration

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strings"
)

// expectation is one line of hack/mkimage/layers-rootfs.txt.
type expectation struct {
	path string
	keys map[string]string
	line int
}

func loadExpectations(file string) ([]expectation, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var exps []expectation
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		e := expectation{path: fields[0], keys: map[string]string{}, line: n}
		for _, kv := range fields[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("%s:%d: %q is not key=value", file, n, kv)
			}
			switch k {
			case "type", "mode", "owner", "nlink", "inode", "target", "content", "entries":
			default:
				return nil, fmt.Errorf("%s:%d: unknown key %q", file, n, k)
			}
			e.keys[k] = v
		}
		if _, ok := e.keys["type"]; !ok {
			return nil, fmt.Errorf("%s:%d: no type=", file, n)
		}
		exps = append(exps, e)
	}
	return exps, sc.Err()
}

// Record separators in the probe output; none of them occurs in the
// test image's names or contents.
const (
	recStart = "@@"
	fieldSep = "|"
)

// probeScript is a busybox sh script that prints one record per expected
// path: @@path|kind|mode|uid:gid|inode|nlink|target|content|entries, or
// @@path|absent. Content and entries are collected only where expected.
func probeScript(exps []expectation) string {
	var b strings.Builder
	b.WriteString("set -u\n")
	for _, e := range exps {
		p := shellQuote(e.path)
		fmt.Fprintf(&b, "if [ -L %[1]s ] || [ -e %[1]s ]; then\n", p)
		fmt.Fprintf(&b, "  s=$(stat -c '%%F|%%a|%%u:%%g|%%i|%%h' %s)\n", p)
		fmt.Fprintf(&b, "  t=''; [ -L %[1]s ] && t=$(readlink %[1]s)\n", p)
		b.WriteString("  c=''\n")
		if _, ok := e.keys["content"]; ok {
			fmt.Fprintf(&b, "  [ -f %[1]s ] && c=$(cat %[1]s | tr '\\n' '~')\n", p)
		}
		b.WriteString("  l=''\n")
		if _, ok := e.keys["entries"]; ok {
			fmt.Fprintf(&b, "  [ -d %[1]s ] && l=$(ls -A %[1]s | tr '\\n' ',')\n", p)
		}
		fmt.Fprintf(&b, "  echo \"%s%s|$s|$t|$c|$l\"\n", recStart, e.path)
		fmt.Fprintf(&b, "else\n  echo \"%s%s|absent\"\nfi\n", recStart, e.path)
	}
	b.WriteString("echo @@END\n")
	return b.String()
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// observed is what the probe saw for one path.
type observed struct {
	kind, mode, owner, inode, nlink, target, content string
	entries                                          []string
}

func parseProbe(out string) (map[string]observed, error) {
	recs := map[string]observed{}
	ended := false
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimRight(line, "\r")
		if !strings.HasPrefix(line, recStart) {
			continue
		}
		line = strings.TrimPrefix(line, recStart)
		if line == "END" {
			ended = true
			continue
		}
		f := strings.Split(line, fieldSep)
		if len(f) == 2 && f[1] == "absent" {
			recs[f[0]] = observed{kind: "absent"}
			continue
		}
		if len(f) != 9 {
			return nil, fmt.Errorf("bad probe record %q", line)
		}
		o := observed{
			kind:    statKind(f[1]),
			mode:    f[2],
			owner:   f[3],
			inode:   f[4],
			nlink:   f[5],
			target:  f[6],
			content: strings.TrimSuffix(f[7], "~"),
		}
		for _, n := range strings.Split(f[8], ",") {
			if n != "" {
				o.entries = append(o.entries, n)
			}
		}
		sort.Strings(o.entries)
		recs[f[0]] = o
	}
	if !ended {
		return nil, fmt.Errorf("probe output incomplete (no @@END)")
	}
	return recs, nil
}

// statKind maps busybox `stat -c %F` to the expectation types.
func statKind(f string) string {
	switch {
	case strings.Contains(f, "regular"):
		return "file"
	case f == "directory":
		return "dir"
	case f == "symbolic link":
		return "symlink"
	}
	return f
}

// compareRootfs returns one message per mismatch.
func compareRootfs(exps []expectation, recs map[string]observed) []string {
	var bad []string
	for _, e := range exps {
		o, ok := recs[e.path]
		if !ok {
			bad = append(bad, fmt.Sprintf("%s: no probe record", e.path))
			continue
		}
		check := func(key, got string) {
			if want, ok := e.keys[key]; ok && want != got {
				bad = append(bad, fmt.Sprintf("%s: %s = %q, want %q (layers-rootfs.txt:%d)", e.path, key, got, want, e.line))
			}
		}
		check("type", o.kind)
		if o.kind == "absent" {
			continue
		}
		check("mode", o.mode)
		check("owner", o.owner)
		check("nlink", o.nlink)
		check("target", o.target)
		check("content", o.content)
		check("entries", strings.Join(o.entries, ","))
		if other, ok := e.keys["inode"]; ok {
			oo, found := recs[other]
			switch {
			case !found || oo.kind == "absent":
				bad = append(bad, fmt.Sprintf("%s: inode reference %s not observed", e.path, other))
			case oo.inode != o.inode:
				bad = append(bad, fmt.Sprintf("%s: inode %s, want the inode of %s (%s): not a hard link", e.path, o.inode, other, oo.inode))
			}
		}
	}
	return bad
}
