//go:build linux && cgo

package nsenter

// The `shim delete` fast path (fastdelete.c).
//
// containerd runs `<shim> -namespace N -address A -bundle B ... delete`
// after every task Delete, when the shim's connection closes, and waits
// for it: it is on the path of every container's removal. When the shim's
// Delete undid everything itself, it leaves the marshalled reply in the
// bundle (shim/bundle's MarkCleanedUp, file TUPPER_DELETE_RESPONSE_FILE),
// and the constructor prints that file and exits before the Go runtime
// starts (shim/manager's Stop would do the same in Go, with a runtime
// start-up and a spec to decode first).
//
// It acts only on a command line that ends in "delete" with an absolute
// -bundle, never in a helper, and only when the whole reply was read and
// written; anything unexpected falls through to Go, which does the full
// clean-up. A failed write after part of the reply went out exits 1, so
// Go never appends a second reply.
