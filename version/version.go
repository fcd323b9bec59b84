// Package version holds the build's version, set with -ldflags at link time.
package version

// Version is overwritten by the Makefile with `git describe`.
var Version = "dev"
