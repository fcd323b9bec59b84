// See nsenter.go for why this runs before the Go runtime.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

#define SYNC_FD 3

// fail reports on the sync socket as a shim/container error message (one
// SOCK_SEQPACKET record of JSON) and exits. what never holds a quote.
static void fail(const char *what, const char *arg, int err)
{
	char buf[512];
	int n = snprintf(buf, sizeof(buf), "{\"type\":\"error\",\"error\":\"%s %s: %s\"}", what, arg, strerror(err));
	if (n > 0 && n < (int)sizeof(buf))
		send(SYNC_FD, buf, n, MSG_NOSIGNAL);
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

// join_cgroups moves the helper into its cgroup: _TUPPER_CGROUP_FDS lists
// open v1 "tasks" files. Writing "0" moves the writing thread, here the
// process' only one, without the global lock that moving another process
// takes (see shim/container's CgroupJoin). First, so that all
// the helper does is accounted and limited there; the fds stay open for
// the Go side to check that it is listed.
static void join_cgroups(void)
{
	char list[256];
	if (!env_list("_TUPPER_CGROUP_FDS", list, sizeof(list)))
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

// fast_delete answers `shim delete` without starting Go when the shim's
// Delete cleaned up everything and left the answer in the bundle (see
// shim/bundle's MarkCleanedUp). containerd runs `shim delete` after every
// Delete and waits for it, so this is on the path of every container's
// removal. containerd's arguments end in "-bundle <dir> [-debug] delete".
// Anything unexpected leaves the work to Go.
static void fast_delete(void)
{
	if (getenv("_TUPPER_INIT") != NULL)
		return;
	static char cmdline[8192];
	int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, cmdline, sizeof(cmdline) - 1);
	close(fd);
	if (n <= 0 || n == sizeof(cmdline) - 1)
		return;
	cmdline[n] = '\0';
	const char *args[64];
	int argc = 0;
	for (char *p = cmdline; p < cmdline + n && argc < 64; p += strlen(p) + 1)
		args[argc++] = p;
	if (argc < 2 || strcmp(args[argc - 1], "delete") != 0)
		return;
	const char *bundle = NULL;
	for (int i = 1; i + 2 < argc; i++)
		if (strcmp(args[i], "-bundle") == 0)
			bundle = args[i + 1];
	if (bundle == NULL || bundle[0] != '/')
		return;
	char path[4096];
	if (snprintf(path, sizeof(path), "%s/delete-response.pb", bundle) >= (int)sizeof(path))
		return;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	char reply[256];
	n = read(fd, reply, sizeof(reply));
	close(fd);
	if (n <= 0 || n == sizeof(reply))
		return;
	// Nothing is written yet: a failure here can still leave it to Go.
	ssize_t w = write(STDOUT_FILENO, reply, n);
	if (w == n)
		_exit(0);
	if (w > 0)
		_exit(1); // a partial reply must not be followed by Go's
}

void tupper_nsenter(void)
{
	fast_delete();
	join_cgroups();
	char list[256];
	if (!env_list("_TUPPER_NSENTER", list, sizeof(list)))
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

	const char *un = getenv("_TUPPER_NSENTER_UNSHARE");
	if (un != NULL && *un != '\0') {
		char *end;
		long flags = strtol(un, &end, 10);
		if (*end != '\0')
			fail("nsenter: bad unshare flags", un, EINVAL);
		if (unshare((int)flags) < 0)
			fail("unshare", un, errno);
	}

	// _TUPPER_NSENTER_FORK: a new pid namespace was unshared, which only
	// takes effect for children. Fork the helper into it as its PID 1,
	// with CLONE_PARENT so that it is the parent's (the shim's) own child
	// to wait for; tell the parent its pid on the sync socket and leave.
	// The child returns from here and starts Go as the helper. A raw
	// clone leaves glibc's thread descriptor with the intermediate's tid
	// (as runc's nsexec, which forks the same way, does); nothing the
	// helper does before its execve goes through it (Go asks the kernel).
	const char *fork_env = getenv("_TUPPER_NSENTER_FORK");
	if (fork_env != NULL && *fork_env != '\0') {
		long pid = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
		if (pid < 0)
			fail("clone", "CLONE_PARENT", errno);
		if (pid == 0)
			return;
		char buf[64];
		int n = snprintf(buf, sizeof(buf), "{\"type\":\"pid\",\"pid\":%ld}", pid);
		send(SYNC_FD, buf, n, MSG_NOSIGNAL);
		_exit(0);
	}
}
