// probe tries one system call that the hardening tests compare between
// runtimes, and prints "<name>: allowed" or "<name>: refused" (with the
// error where it tells a seccomp filter from an old kernel). Built static
// by the test and bind-mounted into the container (busybox has none).
#include <errno.h>
#include <fcntl.h>
#include <linux/keyctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452 // Linux 6.6, the same number on every architecture
#endif

int main(int argc, char **argv) {
	long r = -1;
	if (argc == 2 && strcmp(argv[1], "keyctl") == 0) {
		// Joining a new session keyring is what containerd's default
		// profile blocks keyctl for: keys are not namespaced.
		r = syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL);
	} else if (argc == 3 && strcmp(argv[1], "ptrace") == 0) {
		// A host pid: the container's pid namespace must not reach it.
		r = ptrace(PTRACE_ATTACH, (pid_t)atoi(argv[2]), NULL, NULL);
	} else if (argc == 2 && strcmp(argv[1], "fchmodat2") == 0) {
		// Newer than some libseccomp tables, and allowed by containerd's
		// default profile: a runtime whose libseccomp cannot name it
		// leaves it to the profile's default action (EPERM). On a kernel
		// older than 6.6 it is ENOSYS under either runtime.
		struct stat st;
		if (stat("/", &st) == 0)
			r = syscall(SYS_fchmodat2, AT_FDCWD, "/", st.st_mode & 07777, AT_SYMLINK_NOFOLLOW);
		if (r < 0) {
			printf("%s: refused (%s)\n", argv[1], strerror(errno));
			return 0;
		}
	} else {
		fprintf(stderr, "usage: probe keyctl | probe ptrace <pid> | probe fchmodat2\n");
		return 2;
	}
	printf("%s: %s\n", argv[1], r < 0 ? "refused" : "allowed");
	return 0;
}
