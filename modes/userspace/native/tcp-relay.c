// The userspace forwarder's TCP data path. Node's socket layer costs about
// twice haproxy's CPU per connection (a JavaScript socket object, stream
// state and a copy of every chunk through the heap); here the listening
// sockets, accept, the non-blocking connect and the byte copying are C on
// the worker's own libuv loop, and the bytes move with splice(2) through a
// pipe, never entering user space. JavaScript keeps every decision: it is
// called once per accepted connection (pick an endpoint, or refuse), once
// per connect result (retry on another endpoint, or go), and once when the
// connection ends (counters, least-connections bookkeeping).
//
// Half-close is carried through (EOF on one side becomes shutdown(SHUT_WR)
// on the other once the pipe is flushed), a reset or error on one side
// resets the other (SO_LINGER 0), and back-pressure is structural: a side
// is read only while its pipe has room, so at most one pipe's worth
// (256 KiB) per direction is ever in flight. Pipes come from a small pool and are
// held only while data is in them: an idle connection holds two sockets.
//
// JavaScript side: modes/userspace/native-tcp.ts.
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>

#include "addon-util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

// Bytes moved per splice, and the pipe size: fewer, larger moves for a fast stream.
#define CHUNK (1 << 18)
// Chunks moved per direction per readiness event, so one fast stream does not starve the others.
#define ROUNDS 16
#define ACCEPT_BATCH 64
#define FREE_PIPES_KEPT 64
#define TICK_MS 10

enum { ST_ACCEPTED = 1, ST_HELD, ST_CONNECTING, ST_RELAY };
// Why a connection ended, as onClose reports it.
enum { END_DONE = 0, END_CLIENT_RESET, END_UPSTREAM_RESET, END_IDLE, END_ERROR };

typedef struct Relay Relay;

typedef struct {
  int pr, pw;       // the pipe while data is in flight, else -1
  size_t cap;       // the pipe's size
  size_t in_pipe;   // bytes in the pipe
  int src_eof;
  int dst_shut;
  double bytes;     // moved to the destination
} Dir;

typedef struct Conn {
  Relay *r;
  uint32_t id;
  int state;
  int cfd, ufd;
  uv_poll_t *cpoll, *upoll;
  int cev, uev;
  Dir d[2];  // 0: client → upstream, 1: upstream → client
  uint64_t last_active;
  uint64_t deadline;
  struct Conn *cnext, *cprev;  // the connecting list
} Conn;

typedef struct {
  Relay *r;
  int32_t id;
  int fd;
  int paused;  // out of descriptors: accepting again at the next tick
} Listener;

struct Relay {
  napi_env env;
  uv_loop_t *loop;
  napi_ref on_accept, on_connect, on_close;
  napi_async_context actx;
  napi_async_cleanup_hook_handle cleanup;
  Conn **conns;
  uint32_t cap;
  uint32_t *free_ids;
  uint32_t nfree;
  uint32_t next_id;
  uint32_t open;
  Listener **listeners;
  int32_t lcap;
  int32_t nlisteners;
  // Listeners are watched through an epoll set of their own with
  // EPOLLEXCLUSIVE: a listener shared by several workers wakes one of them
  // per new connection, not all. libuv polls that set's descriptor.
  int lep;
  uv_poll_t *lpoll;
  int free_pipes[FREE_PIPES_KEPT][3];  // read end, write end, size
  int nfree_pipes;
  Conn *connecting;
  uv_timer_t *timer;
  uint64_t idle_ms;
  uint64_t last_sweep;
  int destroyed;
  int finalized;
};

static uint64_t now_ms(Relay *r) { return uv_now(r->loop); }

// ---- pipes ----

static int get_pipe(Relay *r, Dir *d) {
  if (r->nfree_pipes > 0) {
    r->nfree_pipes--;
    d->pr = r->free_pipes[r->nfree_pipes][0];
    d->pw = r->free_pipes[r->nfree_pipes][1];
    d->cap = (size_t)r->free_pipes[r->nfree_pipes][2];
    return 0;
  }
  int p[2];
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) return -errno;
  // Best effort: a smaller pipe (the default 64 KiB) only means more, smaller moves.
  fcntl(p[1], F_SETPIPE_SZ, CHUNK);
  int size = fcntl(p[1], F_GETPIPE_SZ);
  d->pr = p[0];
  d->pw = p[1];
  d->cap = size > 0 ? (size_t)size : 65536;
  return 0;
}

// An empty pipe goes back to the pool; one with data left (a side failed) is closed.
static void put_pipe(Relay *r, Dir *d) {
  if (d->pr < 0) return;
  if (d->in_pipe == 0 && r->nfree_pipes < FREE_PIPES_KEPT && !r->destroyed) {
    r->free_pipes[r->nfree_pipes][0] = d->pr;
    r->free_pipes[r->nfree_pipes][1] = d->pw;
    r->free_pipes[r->nfree_pipes][2] = (int)d->cap;
    r->nfree_pipes++;
  } else {
    close(d->pr);
    close(d->pw);
  }
  d->pr = d->pw = -1;
  d->in_pipe = 0;
}

// ---- connection table ----

static Conn *conn_get(Relay *r, uint32_t id) {
  if (id == 0 || id >= r->cap) return NULL;
  return r->conns[id];
}

static Conn *conn_new(Relay *r, int cfd) {
  uint32_t id;
  if (r->nfree > 0) {
    id = r->free_ids[--r->nfree];
  } else {
    if (r->next_id >= r->cap) {
      uint32_t cap = r->cap ? r->cap * 2 : 1024;
      Conn **c = realloc(r->conns, cap * sizeof *c);
      uint32_t *f = realloc(r->free_ids, cap * sizeof *f);
      if (!c || !f) {
        if (c) r->conns = c;
        if (f) r->free_ids = f;
        return NULL;
      }
      memset(c + r->cap, 0, (cap - r->cap) * sizeof *c);
      r->conns = c;
      r->free_ids = f;
      r->cap = cap;
    }
    id = r->next_id++;
  }
  Conn *c = calloc(1, sizeof *c);
  if (!c) {
    r->free_ids[r->nfree++] = id;
    return NULL;
  }
  c->r = r;
  c->id = id;
  c->state = ST_ACCEPTED;
  c->cfd = cfd;
  c->ufd = -1;
  c->d[0].pr = c->d[0].pw = c->d[1].pr = c->d[1].pw = -1;
  c->last_active = now_ms(r);
  r->conns[id] = c;
  r->open++;
  return c;
}

static void free_poll(uv_handle_t *h) { free(h); }

static void close_poll(uv_poll_t **p) {
  if (!*p) return;
  uv_poll_stop(*p);
  (*p)->data = NULL;
  uv_close((uv_handle_t *)*p, free_poll);
  *p = NULL;
}

static void unlink_connecting(Conn *c) {
  Relay *r = c->r;
  if (c->cprev) c->cprev->cnext = c->cnext;
  else if (r->connecting == c) r->connecting = c->cnext;
  if (c->cnext) c->cnext->cprev = c->cprev;
  c->cnext = c->cprev = NULL;
}

static void reset_fd(int fd) {
  struct linger lg = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
}

// Closes both sides (with a reset where asked) and forgets the connection.
static void conn_free(Conn *c, int reset_client, int reset_upstream) {
  Relay *r = c->r;
  if (c->state == ST_CONNECTING) unlink_connecting(c);
  close_poll(&c->cpoll);
  close_poll(&c->upoll);
  if (c->cfd >= 0) {
    if (reset_client) reset_fd(c->cfd);
    else close(c->cfd);
  }
  if (c->ufd >= 0) {
    if (reset_upstream) reset_fd(c->ufd);
    else close(c->ufd);
  }
  put_pipe(r, &c->d[0]);
  put_pipe(r, &c->d[1]);
  r->conns[c->id] = NULL;
  r->free_ids[r->nfree++] = c->id;
  r->open--;
  free(c);
}

// ---- calls into JavaScript ----

static void report_exception(napi_env env) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) {
    napi_value e;
    napi_get_and_clear_last_exception(env, &e);
    napi_fatal_exception(env, e);
  }
}

static void call_js(Relay *r, napi_ref ref, int argc, napi_value *argv) {
  napi_env env = r->env;
  napi_value fn, recv, result;
  napi_get_reference_value(env, ref, &fn);
  napi_get_undefined(env, &recv);
  if (napi_call_function(env, recv, fn, argc, argv, &result) != napi_ok) report_exception(env);
}

// Every call from a libuv callback runs inside one handle scope and one callback scope (microtasks run once at its end).
typedef struct {
  napi_handle_scope hs;
  napi_callback_scope cs;
} Scope;

static void scope_open(Relay *r, Scope *s) {
  napi_open_handle_scope(r->env, &s->hs);
  napi_value resource;
  napi_create_object(r->env, &resource);
  napi_open_callback_scope(r->env, resource, r->actx, &s->cs);
}

static void scope_close(Relay *r, Scope *s) {
  napi_close_callback_scope(r->env, s->cs);
  napi_close_handle_scope(r->env, s->hs);
}

static void js_close(Conn *c, int why) {
  Relay *r = c->r;
  Scope s;
  scope_open(r, &s);
  napi_value argv[4];
  napi_create_uint32(r->env, c->id, &argv[0]);
  napi_create_double(r->env, c->d[0].bytes, &argv[1]);
  napi_create_double(r->env, c->d[1].bytes, &argv[2]);
  napi_create_int32(r->env, why, &argv[3]);
  call_js(r, r->on_close, 4, argv);
  scope_close(r, &s);
}

// ---- relaying ----

enum { MOVE_WAIT = 0, MOVE_DONE = 1, MOVE_SRC_ERR = -1, MOVE_DST_ERR = -2 };

// Moves what can be moved in direction k; returns MOVE_* with errno set on an error.
// The source is read while the pipe has room and the pipe is written out
// while it holds data, so the two sides overlap; the pipe bounds what is in flight.
static int move(Conn *c, int k) {
  Relay *r = c->r;
  Dir *d = &c->d[k];
  int src = k == 0 ? c->cfd : c->ufd;
  int dst = k == 0 ? c->ufd : c->cfd;
  for (int round = 0; round < ROUNDS; round++) {
    int progress = 0;
    if (!d->src_eof && (d->pr < 0 || d->in_pipe < d->cap)) {
      if (d->pr < 0) {
        int e = get_pipe(r, d);
        if (e < 0) {
          errno = -e;
          return MOVE_SRC_ERR;
        }
      }
      ssize_t n = splice(src, NULL, d->pw, NULL, d->cap - d->in_pipe, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
      if (n > 0) {
        d->in_pipe += (size_t)n;
        c->last_active = now_ms(r);
        progress = 1;
      } else if (n == 0) {
        d->src_eof = 1;
        progress = 1;
      } else if (errno == EINTR) {
        continue;
      } else if (errno != EAGAIN) {
        return MOVE_SRC_ERR;
      }
    }
    if (d->in_pipe > 0) {
      ssize_t w = splice(d->pr, NULL, dst, NULL, d->in_pipe, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
      if (w > 0) {
        d->in_pipe -= (size_t)w;
        d->bytes += (double)w;
        c->last_active = now_ms(r);
        progress = 1;
      } else if (w < 0 && errno == EINTR) {
        continue;
      } else if (!(w < 0 && errno == EAGAIN)) {
        if (w == 0) errno = EPIPE;
        return MOVE_DST_ERR;
      }
    }
    if (d->in_pipe == 0) {
      put_pipe(r, d);
      if (d->src_eof) {
        if (!d->dst_shut) {
          shutdown(dst, SHUT_WR);
          d->dst_shut = 1;
        }
        return MOVE_DONE;
      }
    }
    if (!progress) break;
  }
  return MOVE_WAIT;
}

static void on_conn_event(uv_poll_t *h, int status, int events);

static void set_poll(Conn *c, uv_poll_t **p, int fd, int *cur, int want) {
  if (*cur == want) return;
  *cur = want;
  if (want == 0) {
    if (*p) uv_poll_stop(*p);
    return;
  }
  if (!*p) {
    *p = malloc(sizeof **p);
    if (!*p || uv_poll_init(c->r->loop, *p, fd) != 0) {
      free(*p);
      *p = NULL;
      *cur = -1;
      return;
    }
    (*p)->data = c;
  }
  uv_poll_start(*p, want, on_conn_event);
}

// Runs both directions, then polls for what each side waits on; ends the connection when both are done.
static void pump(Conn *c) {
  int res[2];
  for (int k = 0; k < 2; k++) {
    Dir *d = &c->d[k];
    if (d->src_eof && d->in_pipe == 0 && d->dst_shut) {
      res[k] = MOVE_DONE;
      continue;
    }
    res[k] = move(c, k);
    if (res[k] < 0) {
      int err = errno;
      // An error reading the client, or writing to it, is the client's: reset the upstream, and the other way round.
      int client_side = (k == 0) == (res[k] == MOVE_SRC_ERR);
      int why = err == ECONNRESET ? (client_side ? END_CLIENT_RESET : END_UPSTREAM_RESET) : END_ERROR;
      js_close(c, why);
      conn_free(c, !client_side, client_side);
      return;
    }
  }
  if (res[0] == MOVE_DONE && res[1] == MOVE_DONE) {
    js_close(c, END_DONE);
    conn_free(c, 0, 0);
    return;
  }
  int cwant = 0, uwant = 0;
  Dir *up = &c->d[0], *down = &c->d[1];
  // Read a side while its pipe has room; wait for a side to drain while the pipe towards it holds data.
  if (!up->src_eof && (up->pr < 0 || up->in_pipe < up->cap)) cwant |= UV_READABLE;
  if (up->in_pipe > 0) uwant |= UV_WRITABLE;
  if (!down->src_eof && (down->pr < 0 || down->in_pipe < down->cap)) uwant |= UV_READABLE;
  if (down->in_pipe > 0) cwant |= UV_WRITABLE;
  set_poll(c, &c->cpoll, c->cfd, &c->cev, cwant);
  set_poll(c, &c->upoll, c->ufd, &c->uev, uwant);
  if (c->cev < 0 || c->uev < 0) {
    js_close(c, END_ERROR);
    conn_free(c, 1, 1);
  }
}

static void connect_done(Conn *c, int err);

static void on_conn_event(uv_poll_t *h, int status, int events) {
  Conn *c = h->data;
  if (!c) return;
  // JavaScript is entered (with its own scope) only when the connection ends or a connect completes.
  if (c->state == ST_CONNECTING) {
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->ufd, SOL_SOCKET, SO_ERROR, &err, &el) < 0) err = errno;
    if (err == 0 && status < 0) err = ECONNREFUSED;
    connect_done(c, err);
  } else if (c->state == ST_RELAY) {
    if (status < 0) {
      // libuv reports POLLERR without events; the socket's pending error says what happened.
      int cerr = 0, uerr = 0;
      socklen_t el = sizeof cerr;
      getsockopt(c->cfd, SOL_SOCKET, SO_ERROR, &cerr, &el);
      el = sizeof uerr;
      getsockopt(c->ufd, SOL_SOCKET, SO_ERROR, &uerr, &el);
      if (cerr || uerr) {
        int client_side = cerr != 0;
        int err = client_side ? cerr : uerr;
        js_close(c, err == ECONNRESET ? (client_side ? END_CLIENT_RESET : END_UPSTREAM_RESET) : END_ERROR);
        conn_free(c, !client_side, client_side);
        return;
      }
      // No pending error: let the splices find out (they see EOF or the error).
      c->cev = c->uev = -2;
    }
    (void)events;
    pump(c);
  }
}

static void start_relay(Conn *c) {
  c->state = ST_RELAY;
  c->cev = 0;  // the client was never polled; the upstream's poll is still set for writability
  pump(c);
}

// A connect attempt ended (err 0 = connected). JavaScript decides what follows.
static void connect_done(Conn *c, int err) {
  Relay *r = c->r;
  uint32_t id = c->id;
  unlink_connecting(c);
  if (err != 0) {
    close_poll(&c->upoll);
    c->uev = 0;
    close(c->ufd);
    c->ufd = -1;
    c->state = ST_ACCEPTED;
  }
  Scope s;
  scope_open(r, &s);
  napi_value argv[2];
  napi_create_uint32(r->env, id, &argv[0]);
  napi_create_int32(r->env, err, &argv[1]);
  call_js(r, r->on_connect, 2, argv);
  scope_close(r, &s);
  if (conn_get(r, id) != c) return;  // JavaScript rejected it
  if (err == 0) {
    start_relay(c);
  } else if (c->state == ST_ACCEPTED) {
    // JavaScript neither retried nor rejected: refuse.
    conn_free(c, 1, 0);
  }
}

// ---- accepting ----

static int watch_listener(Relay *r, Listener *l) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN | EPOLLEXCLUSIVE;
  ev.data.u32 = (uint32_t)l->id;
  return epoll_ctl(r->lep, EPOLL_CTL_ADD, l->fd, &ev);
}

// Must come before close(): a socket shared with another process stays open, and so would its registration.
static void unwatch_listener(Relay *r, Listener *l) {
  epoll_ctl(r->lep, EPOLL_CTL_DEL, l->fd, NULL);
}

static void accept_batch(Relay *r, Listener *l) {
  for (int i = 0; i < ACCEPT_BATCH && l->fd >= 0; i++) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // The queue waits; watching it now would spin (level-triggered).
        unwatch_listener(r, l);
        l->paused = 1;
      }
      break;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Conn *c = conn_new(r, fd);
    if (!c) {
      reset_fd(fd);
      continue;
    }
    char ip[INET6_ADDRSTRLEN] = "";
    if (ss.ss_family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof ip);
    else inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof ip);
    uint32_t id = c->id;
    napi_value argv[3];
    napi_create_int32(r->env, l->id, &argv[0]);
    napi_create_uint32(r->env, id, &argv[1]);
    napi_create_string_latin1(r->env, ip, NAPI_AUTO_LENGTH, &argv[2]);
    call_js(r, r->on_accept, 3, argv);
    // JavaScript connects, holds or rejects during the call; anything else is refused.
    if (conn_get(r, id) == c && c->state == ST_ACCEPTED) conn_free(c, 1, 0);
  }
}

static void on_listeners(uv_poll_t *h, int status, int events) {
  Relay *r = h->data;
  if (!r || r->destroyed || status < 0 || !(events & UV_READABLE)) return;
  struct epoll_event ev[64];
  int n = epoll_wait(r->lep, ev, 64, 0);
  if (n <= 0) return;
  Scope s;
  scope_open(r, &s);
  for (int i = 0; i < n && !r->destroyed; i++) {
    int32_t id = (int32_t)ev[i].data.u32;
    Listener *l = id < r->lcap ? r->listeners[id] : NULL;
    if (l && !l->paused) accept_batch(r, l);
  }
  scope_close(r, &s);
}

// ---- timers ----

static void on_tick(uv_timer_t *t) {
  Relay *r = t->data;
  if (!r || r->destroyed) return;
  uint64_t now = now_ms(r);
  for (Conn *c = r->connecting, *next; c; c = next) {
    next = c->cnext;
    if (now < c->deadline) continue;
    connect_done(c, ETIMEDOUT);
    // The callback may have freed other connections on the list: start over from the head.
    next = r->connecting;
    while (next && now < next->deadline) next = next->cnext;
  }
  for (int32_t i = 0; i < r->lcap; i++) {
    Listener *l = r->listeners[i];
    if (l && l->paused && watch_listener(r, l) == 0) l->paused = 0;
  }
  if (r->idle_ms > 0 && now - r->last_sweep >= 1000) {
    r->last_sweep = now;
    for (uint32_t id = 1; id < r->next_id; id++) {
      Conn *c = r->conns[id];
      if (!c || c->state != ST_RELAY || now - c->last_active < r->idle_ms) continue;
      js_close(c, END_IDLE);
      conn_free(c, 0, 0);
    }
  }
}

// ---- the JavaScript API ----

static Relay *relay_of(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p || ((Relay *)p)->destroyed) {
    napi_throw_error(env, "ERR_RELAY_CLOSED", "the TCP relay is closed");
    return NULL;
  }
  return p;
}

static void relay_destroy(Relay *r) {
  if (r->destroyed) return;
  r->destroyed = 1;
  for (uint32_t id = 1; id < r->next_id; id++) if (r->conns[id]) conn_free(r->conns[id], 1, 1);
  for (int32_t i = 0; i < r->lcap; i++) {
    Listener *l = r->listeners[i];
    if (!l) continue;
    unwatch_listener(r, l);
    close(l->fd);
    free(l);
    r->listeners[i] = NULL;
  }
  close_poll(&r->lpoll);
  close(r->lep);
  for (int i = 0; i < r->nfree_pipes; i++) {
    close(r->free_pipes[i][0]);
    close(r->free_pipes[i][1]);
  }
  r->nfree_pipes = 0;
  uv_timer_stop(r->timer);
  r->timer->data = NULL;
  uv_close((uv_handle_t *)r->timer, free_poll);
  napi_delete_reference(r->env, r->on_accept);
  napi_delete_reference(r->env, r->on_connect);
  napi_delete_reference(r->env, r->on_close);
  napi_async_destroy(r->env, r->actx);
  if (r->cleanup) napi_remove_async_cleanup_hook(r->cleanup);
  r->cleanup = NULL;
  free(r->conns);
  free(r->free_ids);
  free(r->listeners);
  r->conns = NULL;
  r->free_ids = NULL;
  r->listeners = NULL;
  r->cap = 0;
  r->next_id = 0;
}

// Node.js is tearing the environment down: close everything; removing the hook (in relay_destroy) says we are done.
static void on_env_cleanup(napi_async_cleanup_hook_handle handle, void *arg) {
  (void)handle;
  relay_destroy(arg);
}

static void finalize_relay(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  Relay *r = data;
  relay_destroy(r);
  free(r);
}

#define ARGS(n)                                           \
  size_t argc = n;                                        \
  napi_value argv[n];                                     \
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);   \
  if (argc < n) {                                         \
    napi_throw_type_error(env, NULL, "missing arguments"); \
    return NULL;                                          \
  }

// createRelay(onAccept(listenerId, connId, clientIP), onConnect(connId, errno), onClose(connId, up, down, why), idleMs) -> relay
static napi_value CreateRelay(napi_env env, napi_callback_info info) {
  ARGS(4);
  napi_valuetype t;
  for (int i = 0; i < 3; i++) {
    if (napi_typeof(env, argv[i], &t) != napi_ok || t != napi_function) {
      napi_throw_type_error(env, NULL, "createRelay(onAccept, onConnect, onClose, idleMs)");
      return NULL;
    }
  }
  double idle = 0;
  napi_get_value_double(env, argv[3], &idle);
  Relay *r = calloc(1, sizeof *r);
  uv_timer_t *timer = malloc(sizeof *timer);
  uv_poll_t *lpoll = malloc(sizeof *lpoll);
  int lep = epoll_create1(EPOLL_CLOEXEC);
  if (!r || !timer || !lpoll || lep < 0 || napi_get_uv_event_loop(env, &r->loop) != napi_ok || uv_timer_init(r->loop, timer) != 0) {
    free(r);
    free(timer);
    free(lpoll);
    if (lep >= 0) close(lep);
    napi_throw_error(env, NULL, "tcp-relay: cannot set up");
    return NULL;
  }
  if (uv_poll_init(r->loop, lpoll, lep) != 0) {
    uv_close((uv_handle_t *)timer, free_poll);
    free(lpoll);
    close(lep);
    free(r);
    napi_throw_error(env, NULL, "tcp-relay: cannot poll the listener set");
    return NULL;
  }
  r->lep = lep;
  r->lpoll = lpoll;
  lpoll->data = r;
  uv_poll_start(lpoll, UV_READABLE, on_listeners);
  uv_unref((uv_handle_t *)lpoll);
  r->env = env;
  r->timer = timer;
  timer->data = r;
  r->next_id = 1;
  r->idle_ms = idle > 0 ? (uint64_t)idle : 0;
  r->last_sweep = now_ms(r);
  napi_create_reference(env, argv[0], 1, &r->on_accept);
  napi_create_reference(env, argv[1], 1, &r->on_connect);
  napi_create_reference(env, argv[2], 1, &r->on_close);
  napi_value resource, name;
  napi_create_object(env, &resource);
  napi_create_string_utf8(env, "kproxy:tcp-relay", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, resource, name, &r->actx);
  napi_add_async_cleanup_hook(env, on_env_cleanup, r, &r->cleanup);
  uv_timer_start(timer, on_tick, TICK_MS, TICK_MS);
  // The timer alone must not keep the worker alive.
  uv_unref((uv_handle_t *)timer);
  napi_value handle;
  if (napi_create_external(env, r, finalize_relay, NULL, &handle) != napi_ok) {
    relay_destroy(r);
    free(r);
    napi_throw_error(env, NULL, "tcp-relay: cannot create the relay object");
    return NULL;
  }
  return handle;
}

// A bound, listening, non-blocking TCP socket; -errno on failure (what names the step).
static int open_listener(const char *host, int port, int backlog, bool reuse, const char **what) {
  struct sockaddr_storage ss;
  socklen_t sl;
  int family = parse_addr(host, port, &ss, &sl);
  *what = "listen";
  if (family < 0) return -EINVAL;
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *what = "socket";
    return -errno;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuse && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
    int e = errno;
    close(fd);
    *what = "SO_REUSEPORT";
    return -e;
  }
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, backlog > 0 ? backlog : 511) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

// Starts accepting on `fd` (which the relay now owns) as listener `id`; 0 or an error text.
static const char *adopt_listener(Relay *r, int32_t id, int fd) {
  if (id < r->lcap && r->listeners[id]) return "listener id in use";
  if (id >= r->lcap) {
    int32_t cap = r->lcap ? r->lcap : 256;
    while (cap <= id) cap *= 2;
    Listener **ls = realloc(r->listeners, cap * sizeof *ls);
    if (!ls) return "out of memory";
    memset(ls + r->lcap, 0, (cap - r->lcap) * sizeof *ls);
    r->listeners = ls;
    r->lcap = cap;
  }
  // A socket handed over from another process may be blocking: accept must not block the loop.
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0 && !(flags & O_NONBLOCK)) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  Listener *l = calloc(1, sizeof *l);
  if (!l) return "out of memory";
  l->r = r;
  l->id = id;
  l->fd = fd;
  if (watch_listener(r, l) < 0) {
    free(l);
    return "cannot watch the listener";
  }
  r->listeners[id] = l;
  // Like a listening net.Server, listening keeps the process alive.
  if (r->nlisteners++ == 0) uv_ref((uv_handle_t *)r->lpoll);
  return NULL;
}

// listen(relay, listenerId, host, port, backlog, reusePort): binds and starts accepting; throws with the errno's code.
static napi_value Listen(napi_env env, napi_callback_info info) {
  ARGS(6);
  Relay *r = relay_of(env, argv[0]);
  if (!r) return NULL;
  int32_t id = -1, port = 0, backlog = 0;
  bool reuse = false;
  char host[64];
  size_t hl;
  if (napi_get_value_int32(env, argv[1], &id) != napi_ok || napi_get_value_string_utf8(env, argv[2], host, sizeof host, &hl) != napi_ok ||
      napi_get_value_int32(env, argv[3], &port) != napi_ok || napi_get_value_int32(env, argv[4], &backlog) != napi_ok ||
      napi_get_value_bool(env, argv[5], &reuse) != napi_ok || id < 0 || id > 1 << 24 || port < 1 || port > 65535) {
    napi_throw_type_error(env, NULL, "listen(relay, listenerId, host, port, backlog, reusePort)");
    return NULL;
  }
  const char *what;
  int fd = open_listener(host, port, backlog, reuse, &what);
  if (fd == -EINVAL && strcmp(what, "listen") == 0) {
    struct sockaddr_storage ss;
    socklen_t sl;
    if (parse_addr(host, port, &ss, &sl) < 0) {
      napi_throw_type_error(env, NULL, "listen: host must be an IP address");
      return NULL;
    }
  }
  if (fd < 0) return throw_errno(env, what, -fd);
  const char *err = adopt_listener(r, id, fd);
  if (err) {
    close(fd);
    napi_throw_error(env, NULL, err);
  }
  return NULL;
}

// adopt(relay, listenerId, fd): accepts on a listening socket opened elsewhere (the relay owns the fd from now on).
static napi_value Adopt(napi_env env, napi_callback_info info) {
  ARGS(3);
  Relay *r = relay_of(env, argv[0]);
  if (!r) return NULL;
  int32_t id = -1, fd = -1;
  if (napi_get_value_int32(env, argv[1], &id) != napi_ok || napi_get_value_int32(env, argv[2], &fd) != napi_ok || id < 0 || id > 1 << 24 || fd < 0) {
    napi_throw_type_error(env, NULL, "adopt(relay, listenerId, fd)");
    return NULL;
  }
  const char *err = adopt_listener(r, id, fd);
  if (err) napi_throw_error(env, NULL, err);
  return NULL;
}

// openTcpListener(host, port, backlog, reusePort) -> fd: a listening socket for another process to adopt.
static napi_value OpenTcpListener(napi_env env, napi_callback_info info) {
  ARGS(4);
  int32_t port = 0, backlog = 0;
  bool reuse = false;
  char host[64];
  size_t hl;
  if (napi_get_value_string_utf8(env, argv[0], host, sizeof host, &hl) != napi_ok || napi_get_value_int32(env, argv[1], &port) != napi_ok ||
      napi_get_value_int32(env, argv[2], &backlog) != napi_ok || napi_get_value_bool(env, argv[3], &reuse) != napi_ok || port < 1 || port > 65535) {
    napi_throw_type_error(env, NULL, "openTcpListener(host, port, backlog, reusePort)");
    return NULL;
  }
  const char *what;
  int fd = open_listener(host, port, backlog, reuse, &what);
  if (fd < 0) return throw_errno(env, what, -fd);
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

// closeListener(relay, listenerId): stops accepting (queued connections move to another socket of the group).
static napi_value CloseListener(napi_env env, napi_callback_info info) {
  ARGS(2);
  Relay *r = relay_of(env, argv[0]);
  if (!r) return NULL;
  int32_t id = -1;
  napi_get_value_int32(env, argv[1], &id);
  if (id < 0 || id >= r->lcap || !r->listeners[id]) return NULL;
  Listener *l = r->listeners[id];
  if (!l->paused) unwatch_listener(r, l);
  close(l->fd);
  l->fd = -1;
  free(l);
  r->listeners[id] = NULL;
  if (--r->nlisteners == 0) uv_unref((uv_handle_t *)r->lpoll);
  return NULL;
}

static Conn *conn_arg(napi_env env, Relay *r, napi_value v) {
  uint32_t id = 0;
  napi_get_value_uint32(env, v, &id);
  return conn_get(r, id);
}

// connect(relay, connId, host, port, timeoutMs) -> 0 (result comes through onConnect) or -errno (failed at once)
static napi_value Connect(napi_env env, napi_callback_info info) {
  ARGS(5);
  Relay *r = relay_of(env, argv[0]);
  if (!r) return NULL;
  Conn *c = conn_arg(env, r, argv[1]);
  char host[64];
  size_t hl;
  int32_t port = 0;
  double timeout = 0;
  napi_value out;
  if (!c || c->state != ST_ACCEPTED || napi_get_value_string_utf8(env, argv[2], host, sizeof host, &hl) != napi_ok ||
      napi_get_value_int32(env, argv[3], &port) != napi_ok || napi_get_value_double(env, argv[4], &timeout) != napi_ok) {
    napi_create_int32(env, -EINVAL, &out);
    return out;
  }
  struct sockaddr_storage ss;
  socklen_t sl;
  int family = parse_addr(host, port, &ss, &sl);
  int err = 0;
  int fd = family < 0 ? -1 : socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (family < 0) err = EINVAL;
  else if (fd < 0) err = errno;
  else {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS) {
      err = errno;
      close(fd);
    }
  }
  if (err == 0) {
    c->ufd = fd;
    c->state = ST_CONNECTING;
    c->deadline = now_ms(r) + (uint64_t)(timeout > 0 ? timeout : 1000);
    c->cnext = r->connecting;
    c->cprev = NULL;
    if (r->connecting) r->connecting->cprev = c;
    r->connecting = c;
    c->uev = 0;
    set_poll(c, &c->upoll, fd, &c->uev, UV_WRITABLE);
    if (c->uev < 0) {
      unlink_connecting(c);
      close(fd);
      c->ufd = -1;
      c->state = ST_ACCEPTED;
      err = ENOMEM;
    }
  }
  napi_create_int32(env, -err, &out);
  return out;
}

// reject(relay, connId): resets the client and forgets the connection (no onClose).
static napi_value Reject(napi_env env, napi_callback_info info) {
  ARGS(2);
  Relay *r = relay_of(env, argv[0]);
  if (!r) return NULL;
  Conn *c = conn_arg(env, r, argv[1]);
  if (c) conn_free(c, 1, 1);
  return NULL;
}

// hold(relay, connId): keeps the client connected without reading or answering (a dropped connection).
static napi_value Hold(napi_env env, napi_callback_info info) {
  ARGS(2);
  Relay *r = relay_of(env, argv[0]);
  if (!r) return NULL;
  Conn *c = conn_arg(env, r, argv[1]);
  if (c && c->state == ST_ACCEPTED) c->state = ST_HELD;
  return NULL;
}

// abort(relay, connId): resets both sides and forgets the connection (no onClose).
static napi_value Abort(napi_env env, napi_callback_info info) {
  return Reject(env, info);
}

// bytes(relay, connId) -> [to upstream, to client] so far, or undefined.
static napi_value Bytes(napi_env env, napi_callback_info info) {
  ARGS(2);
  Relay *r = relay_of(env, argv[0]);
  if (!r) return NULL;
  Conn *c = conn_arg(env, r, argv[1]);
  if (!c) return NULL;
  napi_value arr, v;
  napi_create_array_with_length(env, 2, &arr);
  napi_create_double(env, c->d[0].bytes, &v);
  napi_set_element(env, arr, 0, v);
  napi_create_double(env, c->d[1].bytes, &v);
  napi_set_element(env, arr, 1, v);
  return arr;
}

// stats(relay) -> [open connections, bytes in pipes, pooled pipes]
static napi_value Stats(napi_env env, napi_callback_info info) {
  ARGS(1);
  Relay *r = relay_of(env, argv[0]);
  if (!r) return NULL;
  double in_pipes = 0;
  for (uint32_t id = 1; id < r->next_id; id++) {
    Conn *c = r->conns[id];
    if (c) in_pipes += (double)(c->d[0].in_pipe + c->d[1].in_pipe);
  }
  napi_value arr, v;
  napi_create_array_with_length(env, 3, &arr);
  napi_create_uint32(env, r->open, &v);
  napi_set_element(env, arr, 0, v);
  napi_create_double(env, in_pipes, &v);
  napi_set_element(env, arr, 1, v);
  napi_create_int32(env, r->nfree_pipes, &v);
  napi_set_element(env, arr, 2, v);
  return arr;
}

// destroy(relay): resets every connection and closes every listener.
static napi_value Destroy(napi_env env, napi_callback_info info) {
  ARGS(1);
  void *p = NULL;
  if (napi_get_value_external(env, argv[0], &p) == napi_ok && p) relay_destroy(p);
  return NULL;
}

void tcp_relay_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"createRelay", NULL, CreateRelay, NULL, NULL, NULL, napi_default, NULL},
    {"relayListen", NULL, Listen, NULL, NULL, NULL, napi_default, NULL},
    {"relayAdopt", NULL, Adopt, NULL, NULL, NULL, napi_default, NULL},
    {"openTcpListener", NULL, OpenTcpListener, NULL, NULL, NULL, napi_default, NULL},
    {"relayCloseListener", NULL, CloseListener, NULL, NULL, NULL, napi_default, NULL},
    {"relayConnect", NULL, Connect, NULL, NULL, NULL, napi_default, NULL},
    {"relayReject", NULL, Reject, NULL, NULL, NULL, napi_default, NULL},
    {"relayHold", NULL, Hold, NULL, NULL, NULL, napi_default, NULL},
    {"relayAbort", NULL, Abort, NULL, NULL, NULL, napi_default, NULL},
    {"relayBytes", NULL, Bytes, NULL, NULL, NULL, napi_default, NULL},
    {"relayStats", NULL, Stats, NULL, NULL, NULL, napi_default, NULL},
    {"relayDestroy", NULL, Destroy, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
