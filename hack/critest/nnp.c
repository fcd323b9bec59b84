/*
 * nnp: prints the effective uid it runs with. The critest images install
 * it setuid root, so it prints 0 when the kernel honours the setuid bit and
 * the user's uid when no_new_privs is set (critest's NoNewPrivs specs).
 */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	printf("Effective uid: %d\n", (int)geteuid());
	return 0;
}
