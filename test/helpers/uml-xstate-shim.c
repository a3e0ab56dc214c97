/*
 * Preloaded into Debian's linux.uml (6.1) by test/helpers/uml.ts.
 *
 * UML restores a guest process's FPU state with
 * ptrace(PTRACE_SETREGSET, NT_X86_XSTATE) and a fixed 832-byte buffer (x87,
 * SSE, AVX). Host kernels insist on a buffer of the host's whole XSAVE size
 * (11008 bytes on CPUs with AMX) and answer EFAULT otherwise, so the guest's
 * first process dies with "userspace - ptrace set fp regs failed, errno = 14"
 * and the kernel panics. When that happens, this reads the full state,
 * overlays UML's part and writes the full size back. On hosts where the
 * short write works, every call goes straight through.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static long raw_ptrace(long request, long pid, void *addr, void *data)
{
	return syscall(SYS_ptrace, request, pid, addr, data);
}

static int need_full_size;

static long set_xstate(long pid, void *addr, struct iovec *iov)
{
	static unsigned char full[1 << 16];
	struct iovec big = { full, sizeof full };

	if (!need_full_size) {
		long r = raw_ptrace(PTRACE_SETREGSET, pid, addr, iov);
		if (r == 0 || errno != EFAULT)
			return r;
		need_full_size = 1;
	}
	if (raw_ptrace(PTRACE_GETREGSET, pid, addr, &big) != 0)
		return -1;
	if (big.iov_len <= iov->iov_len)
		return raw_ptrace(PTRACE_SETREGSET, pid, addr, iov);
	memcpy(full, iov->iov_base, iov->iov_len);
	return raw_ptrace(PTRACE_SETREGSET, pid, addr, &big);
}

long ptrace(enum __ptrace_request request, ...)
{
	va_list ap;
	long pid;
	void *addr, *data;

	va_start(ap, request);
	pid = va_arg(ap, pid_t);
	addr = va_arg(ap, void *);
	data = va_arg(ap, void *);
	va_end(ap);

	if (request == PTRACE_SETREGSET && (long)addr == NT_X86_XSTATE)
		return set_xstate(pid, addr, data);
	if (request == PTRACE_PEEKTEXT || request == PTRACE_PEEKDATA || request == PTRACE_PEEKUSER) {
		/* glibc's convention: the word is the return value, errno tells errors. */
		long word;
		if (raw_ptrace(request, pid, addr, &word) != 0)
			return -1;
		errno = 0;
		return word;
	}
	return raw_ptrace(request, pid, addr, data);
}
