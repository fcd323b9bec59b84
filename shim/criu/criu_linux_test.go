package criu

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFormatVersion(t *testing.T) {
	for v, want := range map[int]string{40200: "4.2", 31701: "3.17.1", 40000: "4.0"} {
		if got := FormatVersion(v); got != want {
			t.Errorf("FormatVersion(%d) = %q, want %q", v, got, want)
		}
	}
}

// A criu that is not there, or not CRIU, is ErrMissing with its path.
func TestFindMissing(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PATH", dir)
	_, err := Find("", nil)
	if !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "no criu on PATH") {
		t.Fatalf("no criu: %v", err)
	}
	fake := filepath.Join(dir, "criu")
	os.WriteFile(fake, []byte("#!/bin/sh\nexit 1\n"), 0o755)
	_, err = Find(fake, nil)
	if !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), fake+" does not answer") {
		t.Fatalf("a criu that does not answer: %v", err)
	}
}

// The installed CRIU (make deps) answers with its version.
func TestFindInstalled(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	c, err := Find("", nil)
	if err != nil {
		t.Skipf("no usable criu: %v", err)
	}
	if c.Version < MinVersion || !filepath.IsAbs(c.Path) {
		t.Fatalf("found %+v", c)
	}
}
