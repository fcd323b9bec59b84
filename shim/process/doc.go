// Package process holds the shim's view of one process of a container
// (its init or an exec): its lifecycle state machine and its stdio wiring
// to what containerd passed (FIFOs, file:// and binary:// URIs, a pty).
package process
