package container

// runExec is the helper of a process exec'd into a running container
// (runc's setns init): it is already in the container's cgroup and in the
// namespaces its constructor and the parent's thread joined; it joins the
// mount namespace, and goes straight to the process. It returns only on
// failure.
func (h *helper) runExec() error {
	if err := h.enter(); err != nil {
		return err
	}
	if err := helperJoins(h.cfg.NsFds); err != nil {
		return err
	}
	return h.finish(false, nil)
}
