// Package container builds and runs Linux containers from an OCI runtime
// spec without runc. It knows nothing about containerd or the shim API: a
// shim, a tiny CLI or a benchmark can drive it.
//
// A container is created in two steps. Create executes an "init" helper
// inside fresh namespaces: tupper-helper from the current binary's
// directory, or the current binary itself (sealexe_linux.go). The helper
// prepares the root filesystem, pivots into it, resolves the user and the
// executable, then blocks on its sync socket. Start tells the helper to
// drop to the process' credentials and execve the container's program, so
// the program is PID 1 of its pid namespace. Every binary that uses this
// package must call MaybeInit first thing in main (or TestMain), and
// import github.com/tupper/tupper/shim/nsenter (for its cgo constructor)
// to join user or time namespaces: see nsjoin_linux.go.
//
// Checkpoint and Restore (CRIU) are left out when the package is built
// with the tag tupper_nocriu, as runc's runc_nocriu does. tupper-helper is
// built so: a helper never checkpoints, and without CRIU's protobuf
// bindings (whose package init runs in every process that links them) it
// starts in two thirds of the time, once per container start and per exec.
package container
