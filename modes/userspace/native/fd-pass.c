// Handing sockets between the forwarder's processes: the supervisor opens
// each TCP listener once and passes it to every worker (SCM_RIGHTS over a
// Unix socket pair), so the workers share one accept queue per listener
// and a worker that is not scheduled just now leaves its share of new
// connections to the others, instead of each worker owning a partition of
// them (what separate SO_REUSEPORT sockets would give).
//
// JavaScript side: modes/userspace/fd-channel.ts.
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>

#include "addon-util.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

// Descriptors per message (the kernel takes at most SCM_MAX_FD, 253).
#define FDS_PER_MSG 250

// socketPair() -> [a, b]: a Unix SOCK_SEQPACKET pair (close-on-exec; a child gets its end through spawn's stdio).
static napi_value SocketPair(napi_env env, napi_callback_info info) {
  (void)info;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return throw_errno(env, "socketpair", errno);
  napi_value arr, v;
  napi_create_array_with_length(env, 2, &arr);
  for (int i = 0; i < 2; i++) {
    napi_create_int32(env, sv[i], &v);
    napi_set_element(env, arr, i, v);
  }
  return arr;
}

// sendFds(sock, fds: number[]): sends them in order, FDS_PER_MSG per message.
static napi_value SendFds(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t sock = -1;
  uint32_t n = 0;
  bool is_array = false;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &sock) != napi_ok || napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array) {
    napi_throw_type_error(env, NULL, "sendFds(sock, fds)");
    return NULL;
  }
  napi_get_array_length(env, argv[1], &n);
  for (uint32_t at = 0; at < n; at += FDS_PER_MSG) {
    uint32_t k = n - at < FDS_PER_MSG ? n - at : FDS_PER_MSG;
    int fds[FDS_PER_MSG];
    for (uint32_t i = 0; i < k; i++) {
      napi_value v;
      napi_get_element(env, argv[1], at + i, &v);
      if (napi_get_value_int32(env, v, &fds[i]) != napi_ok || fds[i] < 0) {
        napi_throw_type_error(env, NULL, "sendFds: descriptors must be non-negative integers");
        return NULL;
      }
    }
    union {
      char buf[CMSG_SPACE(sizeof(int) * FDS_PER_MSG)];
      struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    uint32_t count = k;
    struct iovec iov = {&count, sizeof count};
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl.buf;
    m.msg_controllen = CMSG_SPACE(sizeof(int) * k);
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * k);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * k);
    ssize_t r;
    do r = sendmsg(sock, &m, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r < 0) return throw_errno(env, "sendmsg", errno);
  }
  return NULL;
}

// recvFds(sock, count, timeoutMs) -> number[]: the next `count` descriptors sent (close-on-exec).
static napi_value RecvFds(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t sock = -1, count = 0, timeout = 0;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &sock) != napi_ok || napi_get_value_int32(env, argv[1], &count) != napi_ok ||
      napi_get_value_int32(env, argv[2], &timeout) != napi_ok || count < 0) {
    napi_throw_type_error(env, NULL, "recvFds(sock, count, timeoutMs)");
    return NULL;
  }
  napi_value arr;
  napi_create_array_with_length(env, (size_t)count, &arr);
  int got = 0;
  while (got < count) {
    struct pollfd pfd = {sock, POLLIN, 0};
    int pr = poll(&pfd, 1, timeout);
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) return throw_errno(env, "recvFds", pr == 0 ? ETIMEDOUT : errno);
    union {
      char buf[CMSG_SPACE(sizeof(int) * FDS_PER_MSG)];
      struct cmsghdr align;
    } ctl;
    uint32_t k = 0;
    struct iovec iov = {&k, sizeof k};
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl.buf;
    m.msg_controllen = sizeof ctl.buf;
    ssize_t r = recvmsg(sock, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (r <= 0) return throw_errno(env, "recvmsg", r == 0 ? EPIPE : errno);
    if (m.msg_flags & MSG_CTRUNC) return throw_errno(env, "recvmsg: descriptors truncated", EMFILE);
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      int *fds = (int *)CMSG_DATA(c);
      for (int i = 0; i < n; i++) {
        if (got >= count) {
          close(fds[i]);  // more than asked for: not ours to keep
          continue;
        }
        napi_value v;
        napi_create_int32(env, fds[i], &v);
        napi_set_element(env, arr, (uint32_t)got++, v);
      }
    }
  }
  return arr;
}

// closeFd(fd)
static napi_value CloseFd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd = -1;
  if (argc >= 1 && napi_get_value_int32(env, argv[0], &fd) == napi_ok && fd > 2) close(fd);
  return NULL;
}

void fd_pass_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"socketPair", NULL, SocketPair, NULL, NULL, NULL, napi_default, NULL},
    {"sendFds", NULL, SendFds, NULL, NULL, NULL, napi_default, NULL},
    {"recvFds", NULL, RecvFds, NULL, NULL, NULL, napi_default, NULL},
    {"closeFd", NULL, CloseFd, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
