// Batched UDP for the DNS cache's listeners. Node's dgram module makes one
// system call, one Buffer, one address object and one JavaScript call per
// datagram; at cache-hit rates that is most of the work. This socket
// receives up to BATCH datagrams with one recvmmsg(2) into memory shared
// with JavaScript, makes one JavaScript call for the whole batch, and sends
// the replies queued during that call with one sendmmsg(2).
//
// JavaScript side: dns-cache/udp-batch.ts (the only user of these functions).
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>

#include "addon-util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
// Largest query taken (a longer datagram is reported with length -1).
#define IN_SLOT 4096
// Largest reply queued in the batch; longer ones go through sendTo.
#define OUT_SLOT 4096
// An address as JavaScript sees it: the sockaddr bytes, length in the last byte.
#define ADDR_SLOT 32
// recvmmsg rounds per readiness event, so timers and TCP still get turns
// under overload. libuv polls level-triggered: what is left is reported
// again on the next turn of the loop.
#define ROUNDS 16

typedef struct {
  uv_poll_t poll;
  int fd;
  int uv_closed;  // libuv is done with the poll handle
  int finalized;  // JavaScript is done with the socket object
  napi_env env;
  napi_ref on_batch;
  napi_ref buffers[4];
  napi_async_context actx;
  // Lets the socket close its handle while Node.js tears the environment down.
  napi_async_cleanup_hook_handle cleanup;
  uint8_t *in;       // BATCH * IN_SLOT
  int32_t *meta;     // in: [i] = length; out: [BATCH + k] = length, [2*BATCH + k] = source index
  uint8_t *addr;     // BATCH * ADDR_SLOT
  uint8_t *out;      // BATCH * OUT_SLOT
  struct mmsghdr rx[BATCH];
  struct iovec rxiov[BATCH];
  struct mmsghdr tx[BATCH];
  struct iovec txiov[BATCH];
} Sock;

static Sock *sock_of(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || p == NULL) {
    napi_throw_type_error(env, NULL, "not an open udp-batch socket");
    return NULL;
  }
  Sock *s = p;
  if (s->fd < 0) {
    napi_throw_error(env, "ERR_SOCKET_CLOSED", "udp-batch socket is closed");
    return NULL;
  }
  return s;
}

static void send_queued(Sock *s, int n) {
  int done = 0;
  while (done < n) {
    int r = sendmmsg(s->fd, s->tx + done, n - done, 0);
    if (r > 0) {
      done += r;
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else if (r < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
      // The socket's send buffer is full: the rest would fail alike (UDP may drop).
      return;
    } else {
      // The first unsent datagram failed (unreachable, refused): skip it.
      done++;
    }
  }
}

// Reads and answers until the socket is empty or ROUNDS batches are done.
static void drain(Sock *s) {
  napi_env env = s->env;
  for (int round = 0; round < ROUNDS && s->fd >= 0; round++) {
    // A UDP peer address (sockaddr_in6 at most) fits the slot in front of its length byte.
    for (int i = 0; i < BATCH; i++) s->rx[i].msg_hdr.msg_namelen = ADDR_SLOT - 1;
    int n = recvmmsg(s->fd, s->rx, BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0) return;
    for (int i = 0; i < n; i++) {
      struct msghdr *m = &s->rx[i].msg_hdr;
      s->meta[i] = (m->msg_flags & MSG_TRUNC) ? -1 : (int32_t)s->rx[i].msg_len;
      s->addr[i * ADDR_SLOT + ADDR_SLOT - 1] = (uint8_t)m->msg_namelen;
    }
    napi_handle_scope scope;
    if (napi_open_handle_scope(env, &scope) != napi_ok) return;
    napi_value fn, recv, argv[1], result;
    napi_get_reference_value(env, s->on_batch, &fn);
    napi_get_global(env, &recv);
    napi_create_int32(env, n, &argv[0]);
    int32_t queued = 0;
    napi_status st = napi_make_callback(env, s->actx, recv, fn, 1, argv, &result);
    if (st == napi_ok) napi_get_value_int32(env, result, &queued);
    else {
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending) {
        napi_value e;
        napi_get_and_clear_last_exception(env, &e);
        napi_fatal_exception(env, e);
      }
    }
    napi_close_handle_scope(env, scope);
    if (s->fd < 0) return;  // closed from JavaScript during the batch
    if (queued < 0) queued = 0;
    if (queued > BATCH) queued = BATCH;
    // Entries that do not name a datagram of this batch are skipped.
    int ready = 0;
    for (int k = 0; k < queued; k++) {
      int32_t len = s->meta[BATCH + k];
      int32_t src = s->meta[2 * BATCH + k];
      if (len < 0 || len > OUT_SLOT || src < 0 || src >= n) continue;
      s->txiov[ready].iov_base = s->out + k * OUT_SLOT;
      s->txiov[ready].iov_len = (size_t)len;
      s->tx[ready].msg_hdr.msg_name = s->rx[src].msg_hdr.msg_name;
      s->tx[ready].msg_hdr.msg_namelen = s->rx[src].msg_hdr.msg_namelen;
      ready++;
    }
    if (ready > 0) send_queued(s, ready);
    if (n < BATCH) return;
  }
}

static void on_readable(uv_poll_t *h, int status, int events) {
  Sock *s = h->data;
  if (status < 0 || !(events & UV_READABLE) || s->fd < 0) return;
  drain(s);
}

// The memory goes once both libuv and JavaScript have let go of it.
static void on_closed(uv_handle_t *h) {
  Sock *s = h->data;
  napi_env env = s->env;
  napi_delete_reference(env, s->on_batch);
  for (int i = 0; i < 4; i++) napi_delete_reference(env, s->buffers[i]);
  napi_async_destroy(env, s->actx);
  if (s->cleanup) napi_remove_async_cleanup_hook(s->cleanup);
  s->uv_closed = 1;
  if (s->finalized) free(s);
}

static void stop_sock(Sock *s) {
  if (s->fd < 0) return;
  uv_poll_stop(&s->poll);
  close(s->fd);
  s->fd = -1;
  uv_close((uv_handle_t *)&s->poll, on_closed);
}

static void on_env_cleanup(napi_async_cleanup_hook_handle handle, void *arg) {
  (void)handle;
  stop_sock(arg);
}

static void finalize_sock(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  Sock *s = data;
  s->finalized = 1;
  stop_sock(s);
  if (s->uv_closed) free(s);
}

static napi_value make_buffer(napi_env env, size_t size, void **data, napi_ref *ref) {
  napi_value ab;
  if (napi_create_arraybuffer(env, size, data, &ab) != napi_ok) return NULL;
  memset(*data, 0, size);
  if (napi_create_reference(env, ab, 1, ref) != napi_ok) return NULL;
  return ab;
}

// open(host, port, reusePort, recvBufferSize, onBatch) -> {handle, port, in, meta, addr, out}
static napi_value Open(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char host[64];
  size_t hl = 0;
  int32_t port = 0, rcvbuf = 0;
  bool reuse = false;
  napi_valuetype fnType;
  if (argc < 5 || napi_get_value_string_utf8(env, argv[0], host, sizeof host, &hl) != napi_ok ||
      napi_get_value_int32(env, argv[1], &port) != napi_ok || napi_get_value_bool(env, argv[2], &reuse) != napi_ok ||
      napi_get_value_int32(env, argv[3], &rcvbuf) != napi_ok || napi_typeof(env, argv[4], &fnType) != napi_ok ||
      fnType != napi_function || port < 0 || port > 65535) {
    napi_throw_type_error(env, NULL, "open(host, port, reusePort, recvBufferSize, onBatch)");
    return NULL;
  }
  struct sockaddr_storage ss;
  socklen_t sl;
  int family = parse_addr(host, port, &ss, &sl);
  if (family < 0) {
    napi_throw_type_error(env, NULL, "udp-batch: host must be an IP address");
    return NULL;
  }
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  int one = 1;
  if (reuse && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "SO_REUSEPORT", e);
  }
  // IPv6 sockets stay dual-stack (as Node's udp6 sockets are): IPv4 peers
  // arrive as mapped addresses, which fit ADDR_SLOT.
  if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  if (bind(fd, (struct sockaddr *)&ss, sl) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "bind", e);
  }
  struct sockaddr_storage bound;
  socklen_t bl = sizeof bound;
  if (getsockname(fd, (struct sockaddr *)&bound, &bl) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "getsockname", e);
  }
  int boundPort = ntohs(family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port : ((struct sockaddr_in6 *)&bound)->sin6_port);

  Sock *s = calloc(1, sizeof *s);
  if (!s) {
    close(fd);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  s->env = env;
  napi_value ab[4];
  ab[0] = make_buffer(env, BATCH * IN_SLOT, (void **)&s->in, &s->buffers[0]);
  ab[1] = make_buffer(env, 3 * BATCH * sizeof(int32_t), (void **)&s->meta, &s->buffers[1]);
  ab[2] = make_buffer(env, BATCH * ADDR_SLOT, (void **)&s->addr, &s->buffers[2]);
  ab[3] = make_buffer(env, BATCH * OUT_SLOT, (void **)&s->out, &s->buffers[3]);
  uv_loop_t *loop = NULL;
  if (!ab[0] || !ab[1] || !ab[2] || !ab[3] || napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, &s->poll, fd) != 0) {
    for (int i = 0; i < 4; i++) if (s->buffers[i]) napi_delete_reference(env, s->buffers[i]);
    close(fd);
    free(s);
    napi_throw_error(env, NULL, "udp-batch: cannot set up the socket's buffers or poll handle");
    return NULL;
  }
  // From here on the poll handle exists: failures must close it (on_closed frees).
  s->fd = fd;
  s->poll.data = s;
  for (int i = 0; i < BATCH; i++) {
    s->rxiov[i].iov_base = s->in + i * IN_SLOT;
    s->rxiov[i].iov_len = IN_SLOT;
    s->rx[i].msg_hdr.msg_iov = &s->rxiov[i];
    s->rx[i].msg_hdr.msg_iovlen = 1;
    s->rx[i].msg_hdr.msg_name = s->addr + i * ADDR_SLOT;
    s->tx[i].msg_hdr.msg_iov = &s->txiov[i];
    s->tx[i].msg_hdr.msg_iovlen = 1;
  }
  napi_create_reference(env, argv[4], 1, &s->on_batch);
  napi_value resource, name;
  napi_create_object(env, &resource);
  napi_create_string_utf8(env, "kproxy:udp-batch", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, resource, name, &s->actx);
  napi_add_async_cleanup_hook(env, on_env_cleanup, s, &s->cleanup);

  napi_value result, handle, p;
  if (napi_create_external(env, s, finalize_sock, NULL, &handle) != napi_ok) {
    s->finalized = 1;
    stop_sock(s);
    napi_throw_error(env, NULL, "udp-batch: cannot create the socket object");
    return NULL;
  }
  napi_create_object(env, &result);
  napi_create_int32(env, boundPort, &p);
  napi_set_named_property(env, result, "handle", handle);
  napi_set_named_property(env, result, "port", p);
  napi_set_named_property(env, result, "in", ab[0]);
  napi_set_named_property(env, result, "meta", ab[1]);
  napi_set_named_property(env, result, "addr", ab[2]);
  napi_set_named_property(env, result, "out", ab[3]);
  int r = uv_poll_start(&s->poll, UV_READABLE, on_readable);
  if (r != 0) {
    stop_sock(s);
    return throw_errno(env, "uv_poll_start", -r);
  }
  return result;
}

// sendTo(handle, data: Uint8Array, addr: Uint8Array of ADDR_SLOT bytes) -> bytes sent or -errno
static napi_value SendTo(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3) {
    napi_throw_type_error(env, NULL, "sendTo(handle, data, addr)");
    return NULL;
  }
  Sock *s = sock_of(env, argv[0]);
  if (!s) return NULL;
  void *data, *addr;
  size_t dl, al;
  napi_typedarray_type dt, at;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, argv[1], &dt, &dl, &data, &ab, &off) != napi_ok ||
      napi_get_typedarray_info(env, argv[2], &at, &al, &addr, &ab, &off) != napi_ok ||
      dt != napi_uint8_array || at != napi_uint8_array || al != ADDR_SLOT) {
    napi_throw_type_error(env, NULL, "sendTo: a Uint8Array and a 32-byte address");
    return NULL;
  }
  socklen_t namelen = ((uint8_t *)addr)[ADDR_SLOT - 1];
  if (namelen > ADDR_SLOT - 1) namelen = ADDR_SLOT - 1;
  ssize_t r = sendto(s->fd, data, dl, 0, (struct sockaddr *)addr, namelen);
  napi_value out;
  napi_create_int32(env, r >= 0 ? (int32_t)r : -errno, &out);
  return out;
}

// close(handle): stops reading and closes the socket (idempotent).
static napi_value Close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *p = NULL;
  if (argc < 1 || napi_get_value_external(env, argv[0], &p) != napi_ok || !p) {
    napi_throw_type_error(env, NULL, "close(handle)");
    return NULL;
  }
  stop_sock(p);
  return NULL;
}

// Adds open, sendTo, close and the slot sizes to `exports`.
void udp_batch_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"open", NULL, Open, NULL, NULL, NULL, napi_default, NULL},
    {"sendTo", NULL, SendTo, NULL, NULL, NULL, napi_default, NULL},
    {"close", NULL, Close, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  napi_value v;
  napi_create_int32(env, BATCH, &v);
  napi_set_named_property(env, exports, "BATCH", v);
  napi_create_int32(env, IN_SLOT, &v);
  napi_set_named_property(env, exports, "IN_SLOT", v);
  napi_create_int32(env, OUT_SLOT, &v);
  napi_set_named_property(env, exports, "OUT_SLOT", v);
  napi_create_int32(env, ADDR_SLOT, &v);
  napi_set_named_property(env, exports, "ADDR_SLOT", v);
}
