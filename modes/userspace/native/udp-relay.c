// The userspace forwarder's UDP data path. Through Node's dgram module
// every datagram costs a JavaScript callback, a Buffer and an address
// object on the way in and an address lookup on the way out, twice per
// request/response. Here the listener sockets and the flows' sockets are
// C on the worker's libuv loop; JavaScript is called once per new flow
// (which endpoint, or drop), once at the flow's first answer (health), and
// once when it ends (idle, an ICMP error from the endpoint, its counters).
//
// A flow is one client address and port on one listener, with a socket
// connected to its endpoint: replies arrive on it and go back to the
// client from the listener's socket, i.e. from the Service address the
// client used.
//
// JavaScript side: modes/userspace/native-udp.ts.
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

#define DATAGRAM_MAX 65536
#define BATCH 64

typedef struct UdpRelay UdpRelay;

typedef struct Flow {
  struct Flow *hnext;
  UdpRelay *r;
  uint32_t id;
  int32_t listener;
  struct sockaddr_storage client;
  socklen_t clen;
  uint32_t hash;
  int fd;
  uv_poll_t *poll;
  uint64_t last_seen;
  double up, down;
  int answered;
} Flow;

typedef struct {
  UdpRelay *r;
  int32_t id;
  int fd;
  uv_poll_t *poll;
} ULis;

struct UdpRelay {
  napi_env env;
  uv_loop_t *loop;
  napi_ref on_new, on_answer, on_closed;
  napi_async_context actx;
  napi_async_cleanup_hook_handle cleanup;
  Flow **flows;
  uint32_t cap, next_id, nfree, count;
  uint32_t *free_ids;
  Flow **buckets;
  uint32_t nb;
  ULis **lis;
  int32_t lcap;
  uv_timer_t *timer;
  uint64_t idle_ms;
  // The datagram that asked for a new flow (valid during onNew only).
  int32_t pending_listener;
  struct sockaddr_storage pending;
  socklen_t pending_len;
  int destroyed;
  uint8_t buf[DATAGRAM_MAX];
};

// ---- the flow table: by id, and hashed by listener and client address ----

static uint32_t client_hash(int32_t listener, const struct sockaddr_storage *ss) {
  const uint8_t *p;
  size_t n;
  uint16_t port;
  if (ss->ss_family == AF_INET) {
    p = (const uint8_t *)&((const struct sockaddr_in *)ss)->sin_addr;
    n = 4;
    port = ((const struct sockaddr_in *)ss)->sin_port;
  } else {
    p = (const uint8_t *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
    n = 16;
    port = ((const struct sockaddr_in6 *)ss)->sin6_port;
  }
  uint32_t h = 0x811c9dc5u ^ (uint32_t)listener;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x01000193u;
  h = (h ^ (port & 0xff)) * 0x01000193u;
  h = (h ^ (port >> 8)) * 0x01000193u;
  return h;
}

static int same_client(const Flow *f, int32_t listener, const struct sockaddr_storage *ss) {
  if (f->listener != listener || f->client.ss_family != ss->ss_family) return 0;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)&f->client, *b = (const struct sockaddr_in *)ss;
    return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
  }
  const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&f->client, *b = (const struct sockaddr_in6 *)ss;
  return a->sin6_port == b->sin6_port && memcmp(&a->sin6_addr, &b->sin6_addr, 16) == 0;
}

static Flow *flow_find(UdpRelay *r, int32_t listener, const struct sockaddr_storage *ss, uint32_t h) {
  for (Flow *f = r->buckets[h & (r->nb - 1)]; f; f = f->hnext) if (f->hash == h && same_client(f, listener, ss)) return f;
  return NULL;
}

static void grow_buckets(UdpRelay *r) {
  uint32_t nb = r->nb * 2;
  Flow **b = calloc(nb, sizeof *b);
  if (!b) return;  // longer chains, still correct
  for (uint32_t i = 0; i < r->nb; i++) {
    for (Flow *f = r->buckets[i], *next; f; f = next) {
      next = f->hnext;
      f->hnext = b[f->hash & (nb - 1)];
      b[f->hash & (nb - 1)] = f;
    }
  }
  free(r->buckets);
  r->buckets = b;
  r->nb = nb;
}

static void free_handle(uv_handle_t *h) { free(h); }

static void close_poll(uv_poll_t **p) {
  if (!*p) return;
  uv_poll_stop(*p);
  (*p)->data = NULL;
  uv_close((uv_handle_t *)*p, free_handle);
  *p = NULL;
}

static void flow_free(Flow *f) {
  UdpRelay *r = f->r;
  Flow **pp = &r->buckets[f->hash & (r->nb - 1)];
  while (*pp && *pp != f) pp = &(*pp)->hnext;
  if (*pp) *pp = f->hnext;
  close_poll(&f->poll);
  close(f->fd);
  r->flows[f->id] = NULL;
  r->free_ids[r->nfree++] = f->id;
  r->count--;
  free(f);
}

static Flow *flow_get(UdpRelay *r, uint32_t id) {
  return id > 0 && id < r->cap ? r->flows[id] : NULL;
}

// ---- calls into JavaScript ----

typedef struct {
  napi_handle_scope hs;
  napi_callback_scope cs;
} Scope;

static void scope_open(UdpRelay *r, Scope *s) {
  napi_open_handle_scope(r->env, &s->hs);
  napi_value resource;
  napi_create_object(r->env, &resource);
  napi_open_callback_scope(r->env, resource, r->actx, &s->cs);
}

static void scope_close(UdpRelay *r, Scope *s) {
  napi_close_callback_scope(r->env, s->cs);
  napi_close_handle_scope(r->env, s->hs);
}

static napi_value call_js(UdpRelay *r, napi_ref ref, int argc, napi_value *argv) {
  napi_env env = r->env;
  napi_value fn, recv, result = NULL;
  napi_get_reference_value(env, ref, &fn);
  napi_get_undefined(env, &recv);
  if (napi_call_function(env, recv, fn, argc, argv, &result) != napi_ok) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      napi_value e;
      napi_get_and_clear_last_exception(env, &e);
      napi_fatal_exception(env, e);
    }
    return NULL;
  }
  return result;
}

static void js_closed(Flow *f, int err) {
  UdpRelay *r = f->r;
  napi_value argv[4];
  napi_create_uint32(r->env, f->id, &argv[0]);
  napi_create_double(r->env, f->up, &argv[1]);
  napi_create_double(r->env, f->down, &argv[2]);
  napi_create_int32(r->env, err, &argv[3]);
  call_js(r, r->on_closed, 4, argv);
}

// ---- datagrams ----

static void on_flow(uv_poll_t *h, int status, int events) {
  Flow *f = h->data;
  if (!f) return;
  UdpRelay *r = f->r;
  Scope s;
  scope_open(r, &s);
  int err = 0;
  if (status < 0) {
    socklen_t el = sizeof err;
    getsockopt(f->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (!err) err = ECONNREFUSED;
  }
  ULis *l = f->listener < r->lcap ? r->lis[f->listener] : NULL;
  for (int i = 0; !err && i < BATCH; i++) {
    ssize_t n = recv(f->fd, r->buf, sizeof r->buf, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) break;
      err = errno;  // ECONNREFUSED: the endpoint's kernel answered port unreachable
      break;
    }
    f->down += (double)n;
    f->last_seen = uv_now(r->loop);
    if (l) sendto(l->fd, r->buf, (size_t)n, MSG_DONTWAIT, (struct sockaddr *)&f->client, f->clen);
    if (!f->answered) {
      f->answered = 1;
      napi_value id;
      napi_create_uint32(r->env, f->id, &id);
      call_js(r, r->on_answer, 1, &id);
      if (flow_get(r, f->id) != f) break;
    }
  }
  (void)events;
  if (err) {
    js_closed(f, err);
    flow_free(f);
  }
  scope_close(r, &s);
}

static void on_listener(uv_poll_t *h, int status, int events) {
  ULis *l = h->data;
  if (!l || status < 0 || !(events & UV_READABLE)) return;
  UdpRelay *r = l->r;
  const int32_t lid = l->id;
  Scope s;
  int opened = 0;
  for (int i = 0; i < BATCH; i++) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    ssize_t n = recvfrom(l->fd, r->buf, sizeof r->buf, MSG_DONTWAIT, (struct sockaddr *)&ss, &sl);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    uint32_t hash = client_hash(l->id, &ss);
    Flow *f = flow_find(r, l->id, &ss, hash);
    if (!f) {
      if (!opened) {
        scope_open(r, &s);
        opened = 1;
      }
      char ip[INET6_ADDRSTRLEN] = "";
      int port;
      if (ss.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof ip);
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
      } else {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof ip);
        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
      }
      r->pending_listener = l->id;
      r->pending = ss;
      r->pending_len = sl;
      napi_value argv[3], result;
      napi_create_int32(r->env, l->id, &argv[0]);
      napi_create_string_latin1(r->env, ip, NAPI_AUTO_LENGTH, &argv[1]);
      napi_create_int32(r->env, port, &argv[2]);
      result = call_js(r, r->on_new, 3, argv);
      r->pending_listener = -1;
      uint32_t id = 0;
      if (result) napi_get_value_uint32(r->env, result, &id);
      // JavaScript may have closed this listener meanwhile (then `l` is gone).
      if (r->destroyed || lid >= r->lcap || r->lis[lid] != l) break;
      f = flow_get(r, id);
      if (!f) continue;  // dropped
    }
    f->up += (double)n;
    f->last_seen = uv_now(r->loop);
    send(f->fd, r->buf, (size_t)n, MSG_DONTWAIT);
  }
  if (opened) scope_close(r, &s);
}

static void on_tick(uv_timer_t *t) {
  UdpRelay *r = t->data;
  if (!r || r->destroyed || r->idle_ms == 0) return;
  uint64_t now = uv_now(r->loop);
  Scope s;
  int opened = 0;
  for (uint32_t id = 1; id < r->next_id; id++) {
    Flow *f = r->flows[id];
    if (!f || now - f->last_seen < r->idle_ms) continue;
    if (!opened) {
      scope_open(r, &s);
      opened = 1;
    }
    js_closed(f, 0);
    if (r->flows[id] == f) flow_free(f);
  }
  if (opened) scope_close(r, &s);
}

// ---- the JavaScript API ----

static UdpRelay *relay_of(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p || ((UdpRelay *)p)->destroyed) {
    napi_throw_error(env, "ERR_RELAY_CLOSED", "the UDP relay is closed");
    return NULL;
  }
  return p;
}

static void relay_destroy(UdpRelay *r) {
  if (r->destroyed) return;
  r->destroyed = 1;
  for (uint32_t id = 1; id < r->next_id; id++) if (r->flows[id]) flow_free(r->flows[id]);
  for (int32_t i = 0; i < r->lcap; i++) {
    ULis *l = r->lis[i];
    if (!l) continue;
    close_poll(&l->poll);
    close(l->fd);
    free(l);
  }
  uv_timer_stop(r->timer);
  r->timer->data = NULL;
  uv_close((uv_handle_t *)r->timer, free_handle);
  napi_delete_reference(r->env, r->on_new);
  napi_delete_reference(r->env, r->on_answer);
  napi_delete_reference(r->env, r->on_closed);
  napi_async_destroy(r->env, r->actx);
  if (r->cleanup) napi_remove_async_cleanup_hook(r->cleanup);
  r->cleanup = NULL;
  free(r->flows);
  free(r->free_ids);
  free(r->buckets);
  free(r->lis);
  r->flows = NULL;
  r->free_ids = NULL;
  r->buckets = NULL;
  r->lis = NULL;
  r->cap = r->next_id = 0;
  r->lcap = 0;
}

static void on_env_cleanup(napi_async_cleanup_hook_handle handle, void *arg) {
  (void)handle;
  relay_destroy(arg);
}

static void finalize_relay(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  relay_destroy(data);
  free(data);
}

#define ARGS(n)                                            \
  size_t argc = n;                                         \
  napi_value argv[n];                                      \
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);    \
  if (argc < n) {                                          \
    napi_throw_type_error(env, NULL, "missing arguments"); \
    return NULL;                                           \
  }

// createUdpRelay(onNew(listenerId, clientIP, clientPort) -> flowId|0, onAnswer(flowId), onClosed(flowId, up, down, errno), idleMs)
static napi_value CreateUdpRelay(napi_env env, napi_callback_info info) {
  ARGS(4);
  napi_valuetype t;
  for (int i = 0; i < 3; i++) {
    if (napi_typeof(env, argv[i], &t) != napi_ok || t != napi_function) {
      napi_throw_type_error(env, NULL, "createUdpRelay(onNew, onAnswer, onClosed, idleMs)");
      return NULL;
    }
  }
  double idle = 0;
  napi_get_value_double(env, argv[3], &idle);
  UdpRelay *r = calloc(1, sizeof *r);
  uv_timer_t *timer = malloc(sizeof *timer);
  Flow **buckets = calloc(1024, sizeof *buckets);
  if (!r || !timer || !buckets || napi_get_uv_event_loop(env, &r->loop) != napi_ok || uv_timer_init(r->loop, timer) != 0) {
    free(r);
    free(timer);
    free(buckets);
    napi_throw_error(env, NULL, "udp-relay: cannot set up");
    return NULL;
  }
  r->env = env;
  r->timer = timer;
  timer->data = r;
  r->buckets = buckets;
  r->nb = 1024;
  r->next_id = 1;
  r->pending_listener = -1;
  r->idle_ms = idle > 0 ? (uint64_t)idle : 0;
  napi_create_reference(env, argv[0], 1, &r->on_new);
  napi_create_reference(env, argv[1], 1, &r->on_answer);
  napi_create_reference(env, argv[2], 1, &r->on_closed);
  napi_value resource, name;
  napi_create_object(env, &resource);
  napi_create_string_utf8(env, "kproxy:udp-relay", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, resource, name, &r->actx);
  napi_add_async_cleanup_hook(env, on_env_cleanup, r, &r->cleanup);
  uint64_t period = r->idle_ms > 0 && r->idle_ms < 1000 ? r->idle_ms / 2 + 1 : 1000;
  uv_timer_start(timer, on_tick, period, period);
  uv_unref((uv_handle_t *)timer);
  napi_value handle;
  if (napi_create_external(env, r, finalize_relay, NULL, &handle) != napi_ok) {
    relay_destroy(r);
    free(r);
    napi_throw_error(env, NULL, "udp-relay: cannot create the relay object");
    return NULL;
  }
  return handle;
}

// udpListen(relay, listenerId, host, port, reusePort, recvBufferSize)
static napi_value UdpListen(napi_env env, napi_callback_info info) {
  ARGS(6);
  UdpRelay *r = relay_of(env, argv[0]);
  if (!r) return NULL;
  int32_t id = -1, port = 0, rcvbuf = 0;
  bool reuse = false;
  char host[64];
  size_t hl;
  if (napi_get_value_int32(env, argv[1], &id) != napi_ok || napi_get_value_string_utf8(env, argv[2], host, sizeof host, &hl) != napi_ok ||
      napi_get_value_int32(env, argv[3], &port) != napi_ok || napi_get_value_bool(env, argv[4], &reuse) != napi_ok ||
      napi_get_value_int32(env, argv[5], &rcvbuf) != napi_ok || id < 0 || id > 1 << 24 || port < 1 || port > 65535) {
    napi_throw_type_error(env, NULL, "udpListen(relay, listenerId, host, port, reusePort, recvBufferSize)");
    return NULL;
  }
  if (id < r->lcap && r->lis[id]) {
    napi_throw_error(env, "EEXIST", "listener id in use");
    return NULL;
  }
  struct sockaddr_storage ss;
  socklen_t sl;
  int family = parse_addr(host, port, &ss, &sl);
  if (family < 0) {
    napi_throw_type_error(env, NULL, "udpListen: host must be an IP address");
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
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  if (bind(fd, (struct sockaddr *)&ss, sl) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "bind", e);
  }
  if (id >= r->lcap) {
    int32_t cap = r->lcap ? r->lcap : 256;
    while (cap <= id) cap *= 2;
    ULis **ls = realloc(r->lis, cap * sizeof *ls);
    if (!ls) {
      close(fd);
      napi_throw_error(env, NULL, "out of memory");
      return NULL;
    }
    memset(ls + r->lcap, 0, (cap - r->lcap) * sizeof *ls);
    r->lis = ls;
    r->lcap = cap;
  }
  ULis *l = calloc(1, sizeof *l);
  uv_poll_t *p = malloc(sizeof *p);
  if (!l || !p || uv_poll_init(r->loop, p, fd) != 0) {
    free(l);
    free(p);
    close(fd);
    napi_throw_error(env, NULL, "udp-relay: cannot poll the listener");
    return NULL;
  }
  l->r = r;
  l->id = id;
  l->fd = fd;
  l->poll = p;
  p->data = l;
  r->lis[id] = l;
  uv_poll_start(p, UV_READABLE, on_listener);
  return NULL;
}

// udpCloseListener(relay, listenerId): stops receiving; its flows stay until closed or idle.
static napi_value UdpCloseListener(napi_env env, napi_callback_info info) {
  ARGS(2);
  UdpRelay *r = relay_of(env, argv[0]);
  if (!r) return NULL;
  int32_t id = -1;
  napi_get_value_int32(env, argv[1], &id);
  if (id < 0 || id >= r->lcap || !r->lis[id]) return NULL;
  ULis *l = r->lis[id];
  close_poll(&l->poll);
  close(l->fd);
  l->fd = -1;
  free(l);
  r->lis[id] = NULL;
  return NULL;
}

// udpFlowOpen(relay, endpointIP, endpointPort) -> flowId or -errno; only during onNew, for the datagram that asked.
static napi_value UdpFlowOpen(napi_env env, napi_callback_info info) {
  ARGS(3);
  UdpRelay *r = relay_of(env, argv[0]);
  if (!r) return NULL;
  napi_value out;
  char host[64];
  size_t hl;
  int32_t port = 0;
  if (r->pending_listener < 0 || napi_get_value_string_utf8(env, argv[1], host, sizeof host, &hl) != napi_ok ||
      napi_get_value_int32(env, argv[2], &port) != napi_ok) {
    napi_create_int32(env, -EINVAL, &out);
    return out;
  }
  struct sockaddr_storage ep;
  socklen_t el;
  int family = parse_addr(host, port, &ep, &el);
  int err = 0;
  int fd = family < 0 ? -1 : socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (family < 0) err = EINVAL;
  else if (fd < 0) err = errno;
  else if (connect(fd, (struct sockaddr *)&ep, el) < 0) {
    err = errno;
    close(fd);
  }
  if (!err && r->next_id >= r->cap && r->nfree == 0) {
    uint32_t cap = r->cap ? r->cap * 2 : 1024;
    Flow **fl = realloc(r->flows, cap * sizeof *fl);
    uint32_t *fr = fl ? realloc(r->free_ids, cap * sizeof *fr) : NULL;
    if (fl) r->flows = fl;
    if (fr) r->free_ids = fr;
    if (!fl || !fr) err = ENOMEM;
    else {
      memset(fl + r->cap, 0, (cap - r->cap) * sizeof *fl);
      r->cap = cap;
    }
    if (err) close(fd);
  }
  Flow *f = err ? NULL : calloc(1, sizeof *f);
  uv_poll_t *p = f ? malloc(sizeof *p) : NULL;
  if (!err && (!f || !p || uv_poll_init(r->loop, p, fd) != 0)) {
    free(f);
    free(p);
    close(fd);
    err = ENOMEM;
  }
  if (err) {
    napi_create_int32(env, -err, &out);
    return out;
  }
  uint32_t id = r->nfree > 0 ? r->free_ids[--r->nfree] : r->next_id++;
  f->r = r;
  f->id = id;
  f->listener = r->pending_listener;
  f->client = r->pending;
  f->clen = r->pending_len;
  f->hash = client_hash(f->listener, &f->client);
  f->fd = fd;
  f->poll = p;
  f->last_seen = uv_now(r->loop);
  p->data = f;
  r->flows[id] = f;
  f->hnext = r->buckets[f->hash & (r->nb - 1)];
  r->buckets[f->hash & (r->nb - 1)] = f;
  if (++r->count > r->nb) grow_buckets(r);
  uv_poll_start(p, UV_READABLE, on_flow);
  napi_create_int32(env, (int32_t)id, &out);
  return out;
}

// udpFlowClose(relay, flowId) -> [up, down] (no onClosed), or undefined.
static napi_value UdpFlowClose(napi_env env, napi_callback_info info) {
  ARGS(2);
  UdpRelay *r = relay_of(env, argv[0]);
  if (!r) return NULL;
  uint32_t id = 0;
  napi_get_value_uint32(env, argv[1], &id);
  Flow *f = flow_get(r, id);
  if (!f) return NULL;
  napi_value arr, v;
  napi_create_array_with_length(env, 2, &arr);
  napi_create_double(env, f->up, &v);
  napi_set_element(env, arr, 0, v);
  napi_create_double(env, f->down, &v);
  napi_set_element(env, arr, 1, v);
  flow_free(f);
  return arr;
}

// udpFlowBytes(relay, flowId) -> [up, down] so far, or undefined.
static napi_value UdpFlowBytes(napi_env env, napi_callback_info info) {
  ARGS(2);
  UdpRelay *r = relay_of(env, argv[0]);
  if (!r) return NULL;
  uint32_t id = 0;
  napi_get_value_uint32(env, argv[1], &id);
  Flow *f = flow_get(r, id);
  if (!f) return NULL;
  napi_value arr, v;
  napi_create_array_with_length(env, 2, &arr);
  napi_create_double(env, f->up, &v);
  napi_set_element(env, arr, 0, v);
  napi_create_double(env, f->down, &v);
  napi_set_element(env, arr, 1, v);
  return arr;
}

static napi_value UdpDestroy(napi_env env, napi_callback_info info) {
  ARGS(1);
  void *p = NULL;
  if (napi_get_value_external(env, argv[0], &p) == napi_ok && p) relay_destroy(p);
  return NULL;
}

void udp_relay_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"createUdpRelay", NULL, CreateUdpRelay, NULL, NULL, NULL, napi_default, NULL},
    {"udpListen", NULL, UdpListen, NULL, NULL, NULL, napi_default, NULL},
    {"udpCloseListener", NULL, UdpCloseListener, NULL, NULL, NULL, napi_default, NULL},
    {"udpFlowOpen", NULL, UdpFlowOpen, NULL, NULL, NULL, napi_default, NULL},
    {"udpFlowClose", NULL, UdpFlowClose, NULL, NULL, NULL, napi_default, NULL},
    {"udpFlowBytes", NULL, UdpFlowBytes, NULL, NULL, NULL, napi_default, NULL},
    {"udpDestroy", NULL, UdpDestroy, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
