// probe tries one system call that the hardening tests expect a container to
// be refused, and prints "<name>: allowed" or "<name>: refused". Built static
// by the test and bind-mounted into the container (busybox has neither).
#include <linux/keyctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

int main(int argc, char **argv) {
	long r = -1;
	if (argc == 2 && strcmp(argv[1], "keyctl") == 0) {
		// Joining a new session keyring is what containerd's default
		// profile blocks keyctl for: keys are not namespaced.
		r = syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL);
	} else if (argc == 3 && strcmp(argv[1], "ptrace") == 0) {
		// A host pid: the container's pid namespace must not reach it.
		r = ptrace(PTRACE_ATTACH, (pid_t)atoi(argv[2]), NULL, NULL);
	} else {
		fprintf(stderr, "usage: probe keyctl | probe ptrace <pid>\n");
		return 2;
	}
	printf("%s: %s\n", argv[1], r < 0 ? "refused" : "allowed");
	return 0;
}
