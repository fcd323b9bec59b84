package protocol

import "encoding/json"

// WarmUp has encoding/json analyse the Config type graph, the OCI spec's
// types included, so that a process that will decode a spec and send a
// Config (a shim daemon) can do it ahead of its first container. The
// analysis (struct fields, tags, name maps, codecs) is cached for the
// process's life and costs about a millisecond in a new process, which
// would otherwise fall on that container's Create. Encoding the zero value
// is enough: encoding/json builds a type's codecs for every type it can
// reach, not only for the fields that are set.
func WarmUp() {
	json.Marshal(wrap(&Config{}))
}
