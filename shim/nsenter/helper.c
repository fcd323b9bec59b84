// The helper's constructor: see nsenter.go for what it does and why it
// runs before the Go runtime.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "protocol.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

// fail reports on the sync socket as the protocol's Error message (one
// SOCK_SEQPACKET record) and exits. Neither what nor arg holds a quote or
// a backslash: they are ours, or the parent's environment entries.
static void fail(const char *what, const char *arg, int err)
{
	char buf[512];
	int n = snprintf(buf, sizeof(buf), TUPPER_MSG_ERROR_BEGIN "%s %s: %s" TUPPER_MSG_ERROR_END, what, arg, strerror(err));
	if (n > 0 && n < (int)sizeof(buf))
		send(TUPPER_SYNC_FD, buf, n, MSG_NOSIGNAL);
	_exit(1);
}

static const struct {
	const char *name;
	int flag;
} kinds[] = {
	{"user", CLONE_NEWUSER}, {"mnt", CLONE_NEWNS}, {"time", CLONE_NEWTIME},
	{"net", CLONE_NEWNET},   {"ipc", CLONE_NEWIPC}, {"uts", CLONE_NEWUTS},
	{"pid", CLONE_NEWPID},   {"cgroup", CLONE_NEWCGROUP},
};

static int kind(const char *name)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (strcmp(kinds[i].name, name) == 0)
			return kinds[i].flag;
	return -1;
}

// env_list copies the comma-separated list in the environment variable
// name into list (size bytes); it returns 0 when the variable is unset or
// empty.
static int env_list(const char *name, char *list, size_t size)
{
	const char *env = getenv(name);
	if (env == NULL || *env == '\0')
		return 0;
	if (strlen(env) >= size)
		fail(name, "is too long", EINVAL);
	strcpy(list, env);
	return 1;
}

// close_inherited closes every fd from 3 + TUPPER_ENV_FDS up: what the
// parent passed is below that, and anything above was inherited by the
// parent without close-on-exec (a caller's fd on a host directory, a
// listening socket) and must never reach the container.
static void close_inherited(void)
{
	const char *env = getenv(TUPPER_ENV_FDS);
	char *end;
	long n = env != NULL ? strtol(env, &end, 10) : -1;
	if (env == NULL || *end != '\0' || n < 0 || n > 1024)
		fail("nsenter: bad", TUPPER_ENV_FDS, EINVAL);
	unsigned int first = 3 + (unsigned int)n;
	if (syscall(SYS_close_range, first, ~0U, 0) == 0)
		return;
	if (errno != ENOSYS && errno != EINVAL)
		fail("close_range", "inherited fds", errno);
	// Before Linux 5.9: close what /proc/self/fd lists.
	DIR *d = opendir("/proc/self/fd");
	if (d == NULL)
		fail("open", "/proc/self/fd", errno);
	int self = dirfd(d);
	for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
		long fd = strtol(e->d_name, &end, 10);
		if (*end == '\0' && fd >= (long)first && fd != self)
			close((int)fd);
	}
	closedir(d);
}

// join_cgroups moves the helper into its cgroup: TUPPER_ENV_CGROUP_FDS lists
// open v1 "tasks" files. Writing "0" moves the writing thread, here the
// process' only one, without the global lock that moving another process
// takes (see shim/cgroups' Placement). First, so that all
// the helper does is accounted and limited there; the fds stay open for
// the Go side to check that it is listed.
static void join_cgroups(void)
{
	char list[256];
	if (!env_list(TUPPER_ENV_CGROUP_FDS, list, sizeof(list)))
		return;
	char *save = NULL;
	for (char *item = strtok_r(list, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save)) {
		char *end;
		long fd = strtol(item, &end, 10);
		if (*end != '\0' || fd < 0)
			fail("cgroup: bad fd", item, EINVAL);
		if (write((int)fd, "0", 1) != 1)
			fail("join cgroup through fd", item, errno);
	}
}

// join_namespaces joins the namespaces TUPPER_ENV_NSENTER lists, in its
// order (the parent puts a user namespace last: joined first, it would
// leave no capability over namespaces the host's user namespace owns, such
// as a pod's network namespace); after a user namespace, the helper
// becomes that namespace's root.
static void join_namespaces(void)
{
	char list[256];
	if (!env_list(TUPPER_ENV_NSENTER, list, sizeof(list)))
		return;

	char *save = NULL;
	for (char *item = strtok_r(list, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save)) {
		char *colon = strchr(item, ':');
		if (colon == NULL)
			fail("nsenter: bad entry", item, EINVAL);
		*colon = '\0';
		int flag = kind(item);
		char *end;
		long fd = strtol(colon + 1, &end, 10);
		if (flag < 0 || *end != '\0' || fd < 0)
			fail("nsenter: bad entry", item, EINVAL);
		if (setns((int)fd, flag) < 0)
			fail("join namespace", item, errno);
		if (flag == CLONE_NEWUSER) {
			// Become the namespace's root: the helper mounts, pivots
			// and later switches to the process' own ids from there.
			// Host groups mean nothing inside; drop them if allowed.
			if (setresgid(0, 0, 0) < 0)
				fail("setresgid 0 in", "the user namespace", errno);
			if (setgroups(0, NULL) < 0 && errno != EPERM)
				fail("setgroups in", "the user namespace", errno);
			if (setresuid(0, 0, 0) < 0)
				fail("setresuid 0 in", "the user namespace", errno);
		}
	}
}

// unshare_namespaces makes the namespaces TUPPER_ENV_UNSHARE asks for,
// after the joins, so that a joined user namespace owns them.
static void unshare_namespaces(void)
{
	const char *un = getenv(TUPPER_ENV_UNSHARE);
	if (un != NULL && *un != '\0') {
		char *end;
		long flags = strtol(un, &end, 10);
		if (*end != '\0')
			fail("nsenter: bad unshare flags", un, EINVAL);
		if (unshare((int)flags) < 0)
			fail("unshare", un, errno);
	}
}

// fork_into_pid_namespace: a pid namespace was joined or unshared, which
// only takes effect for children. Fork the helper into it (its PID 1 when
// unshared), send its pid as the protocol's Forked message and leave; the
// child returns and starts Go as the helper. With TUPPER_FORK_TO_SUBREAPER
// the fork is the libc's, so that the child's libc holds its own tid (musl
// reads it in gettid(), raise() and abort() and as the owner of the lock
// around the thread list that Go's thread creation takes), and the parent,
// a child subreaper, inherits the child when this intermediate exits.
// Otherwise (a parent that is no subreaper) a raw clone with CLONE_PARENT
// makes the child the parent's at once, as runc's nsexec does, and leaves
// the libc's descriptor with this intermediate's tid: a tid of the
// parent's namespace, which another thread could hold only once the new
// pid namespace reached that number. Single-threaded here, so fork() is
// safe.
static void fork_into_pid_namespace(void)
{
	const char *fork_env = getenv(TUPPER_ENV_FORK);
	if (fork_env != NULL && *fork_env != '\0') {
		long pid;
		if (strcmp(fork_env, TUPPER_FORK_TO_SUBREAPER) == 0)
			pid = fork();
		else
			pid = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
		if (pid < 0)
			fail("fork", fork_env, errno);
		if (pid == 0) {
			// A session of its own, as the parent gave the
			// intermediate: a terminal needs a session leader.
			if (setsid() < 0)
				fail("setsid", "in the pid namespace", errno);
			return;
		}
		char buf[64];
		int n = snprintf(buf, sizeof(buf), TUPPER_MSG_FORKED_FMT, pid);
		send(TUPPER_SYNC_FD, buf, n, MSG_NOSIGNAL);
		_exit(0);
	}
}

void tupper_nsenter(void)
{
	if (getenv(TUPPER_ENV_INIT) == NULL)
		return;
	// Not dumpable until the container's program is exec'd (execve
	// resets it): a process of the container that sees the helper (in
	// a pid namespace it joins) must not ptrace it or reach its fds,
	// root or exe through /proc, even with CAP_SYS_PTRACE there.
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		fail("prctl", "PR_SET_DUMPABLE", errno);
	close_inherited();
	join_cgroups();
	join_namespaces();
	unshare_namespaces();
	fork_into_pid_namespace();
}
