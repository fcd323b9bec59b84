package manager

import (
	"github.com/tupper/tupper/shim/criu"
)

// Annotations of Features that say whether checkpoint and restore work
// here, as runc's "org.opencontainers.runc.checkpoint.enabled" does.
const (
	AnnotationCheckpointEnabled = "io.containerd.tupper.v2.checkpoint.enabled"
	AnnotationCriuVersion       = "io.containerd.tupper.v2.criu.version"
	// AnnotationCheckpointMissing says what is missing when it is not.
	AnnotationCheckpointMissing = "io.containerd.tupper.v2.checkpoint.missing"
)

// checkpointAnnotations asks the criu on PATH for its version, as
// Checkpoint will.
func checkpointAnnotations() map[string]string {
	c, err := criu.Find("", nil)
	if err != nil {
		return map[string]string{AnnotationCheckpointEnabled: "false", AnnotationCheckpointMissing: err.Error()}
	}
	return map[string]string{AnnotationCheckpointEnabled: "true", AnnotationCriuVersion: criu.FormatVersion(c.Version)}
}
