// helper.c's fork into a new pid namespace, in a program of its own: the
// intermediate sends the child's pid on the sync fd and exits; the child
// prints the thread id its libc holds and the kernel's. argv[1] is the
// fork mode (_TUPPER_NSENTER_FORK). Built with musl by
// TestForkToSubreaperKeepsLibcThreadID.
#include "../helper.c"

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: forktid MODE\n");
		return 2;
	}
	if (unshare(CLONE_NEWPID) < 0) {
		perror("unshare(CLONE_NEWPID)");
		return 2;
	}
	if (setenv(TUPPER_ENV_FORK, argv[1], 1) < 0) {
		perror("setenv");
		return 2;
	}
	fork_into_pid_namespace();
	printf("libc %d kernel %ld\n", (int)gettid(), (long)syscall(SYS_gettid));
	return 0;
}
