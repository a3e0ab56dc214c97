// nf_tables change events, read straight from the kernel: a netlink socket
// joined to the NFNLGRP_NFTABLES multicast group, every message turned into
// one short text line and nothing kept. `nft monitor` does the same job but
// first reads the whole ruleset into its cache and keeps it (about 200 MB
// at 10,000 Services in nftables mode, 430 MB on iptables-nft); this keeps
// only the run of messages being coalesced.
//
// Lines written (one per run of like messages; names with bytes outside
// '!'..'~', or a backslash, are written as \xHH):
//
//   VERB OBJECT FAMILY TABLE [NAME] COUNT [KEY...]
//   # new generation ID by process PID (COMM)
//   # lost events
//
// VERB is add, replace (a rule replaced) or delete; OBJECT table, chain,
// rule, set, element, obj or flowtable; NAME the chain of a rule, the set
// of an element, the object's own name (none for a table). Consecutive
// messages that differ in nothing of that are one line with their COUNT
// (kproxy's own full sync is about 100,000 element messages). For element
// lines the keys follow, in hex, when the run has at most `maxKeys`
// elements: "!" before a key that ends an interval, "~HEX" after it for a
// range's end, "*" for an element without a key. Each transaction ends with
// its generation line; "# lost events" says the kernel dropped messages
// (ENOBUFS: the socket's receive buffer was full).
#define NAPI_VERSION 8
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nf_tables.h>

// Kernels from 6.3 on also know "destroy" (delete if present); their events
// are reported as deletions. Older headers lack the numbers.
#ifndef NFT_MSG_DESTROYTABLE
#define NFT_MSG_DESTROYTABLE 26
#define NFT_MSG_DESTROYCHAIN 27
#define NFT_MSG_DESTROYRULE 28
#define NFT_MSG_DESTROYSET 29
#define NFT_MSG_DESTROYSETELEM 30
#define NFT_MSG_DESTROYOBJ 31
#define NFT_MSG_DESTROYFLOWTABLE 32
#endif

#define NAME_MAX_BYTES 256
// Room for the attributes of any object message (sets have the most).
#define ATTRS_MAX 64

typedef struct {
  char *p;
  size_t len, cap;
} buf_t;

static bool buf_reserve(buf_t *b, size_t more) {
  if (b->len + more <= b->cap) return true;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + more) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) return false;
  b->p = p;
  b->cap = cap;
  return true;
}

static void buf_add(buf_t *b, const char *s, size_t n) {
  if (!buf_reserve(b, n)) return;
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

static void buf_str(buf_t *b, const char *s) { buf_add(b, s, strlen(s)); }

static void buf_uint(buf_t *b, unsigned long v) {
  char tmp[24];
  int n = snprintf(tmp, sizeof tmp, "%lu", v);
  buf_add(b, tmp, (size_t)n);
}

// A name from the kernel, as one token: printable bytes as they are, others escaped.
static void buf_name(buf_t *b, const uint8_t *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  if (!buf_reserve(b, n * 4)) return;
  for (size_t i = 0; i < n; i++) {
    uint8_t c = s[i];
    if (c > ' ' && c < 0x7f && c != '\\') {
      b->p[b->len++] = (char)c;
    } else {
      b->p[b->len++] = '\\';
      b->p[b->len++] = 'x';
      b->p[b->len++] = hex[c >> 4];
      b->p[b->len++] = hex[c & 15];
    }
  }
}

static void buf_hex(buf_t *b, const uint8_t *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  if (!buf_reserve(b, n * 2)) return;
  for (size_t i = 0; i < n; i++) {
    b->p[b->len++] = hex[s[i] >> 4];
    b->p[b->len++] = hex[s[i] & 15];
  }
}

// A run of like messages waiting to be written as one line.
typedef struct {
  bool active;
  const char *verb, *object;
  uint8_t family;
  uint8_t table[NAME_MAX_BYTES];
  size_t table_len;
  uint8_t name[NAME_MAX_BYTES];
  size_t name_len;
  bool has_name;
  unsigned long count;
  buf_t keys;
  unsigned long nkeys;
  bool keys_dropped;
} run_t;

typedef struct {
  run_t run;
  buf_t out;
  unsigned long max_keys;
} state_t;

static const char *family_name(uint8_t f, char *tmp, size_t size) {
  switch (f) {
    case NFPROTO_INET: return "inet";
    case NFPROTO_IPV4: return "ip";
    case NFPROTO_ARP: return "arp";
    case NFPROTO_NETDEV: return "netdev";
    case NFPROTO_BRIDGE: return "bridge";
    case NFPROTO_IPV6: return "ip6";
    default: snprintf(tmp, size, "%u", f); return tmp;
  }
}

static void run_flush(state_t *s) {
  run_t *r = &s->run;
  if (!r->active) return;
  char tmp[8];
  buf_t *o = &s->out;
  buf_str(o, r->verb);
  buf_add(o, " ", 1);
  buf_str(o, r->object);
  buf_add(o, " ", 1);
  buf_str(o, family_name(r->family, tmp, sizeof tmp));
  buf_add(o, " ", 1);
  buf_name(o, r->table, r->table_len);
  if (r->has_name) {
    buf_add(o, " ", 1);
    buf_name(o, r->name, r->name_len);
  }
  buf_add(o, " ", 1);
  buf_uint(o, r->count);
  if (!r->keys_dropped && r->nkeys > 0 && r->nkeys == r->count) buf_add(o, r->keys.p, r->keys.len);
  buf_add(o, "\n", 1);
  r->active = false;
  r->keys.len = 0;
  r->nkeys = 0;
  r->keys_dropped = false;
}

typedef struct {
  const uint8_t *data;
  size_t len;
} span_t;

// The attributes of one nested block by type (only types below `max` are kept; a later duplicate wins).
static void parse_attrs(const uint8_t *p, size_t len, span_t *out, unsigned max) {
  memset(out, 0, sizeof(span_t) * max);
  while (len >= NLA_HDRLEN) {
    const struct nlattr *a = (const struct nlattr *)p;
    size_t alen = a->nla_len;
    if (alen < NLA_HDRLEN || alen > len) return;  // malformed: stop here
    unsigned type = a->nla_type & NLA_TYPE_MASK;
    if (type < max) {
      out[type].data = p + NLA_HDRLEN;
      out[type].len = alen - NLA_HDRLEN;
    }
    size_t step = NLA_ALIGN(alen);
    if (step >= len) return;
    p += step;
    len -= step;
  }
}

static size_t str_len(span_t s) {
  const uint8_t *nul = s.data ? memchr(s.data, 0, s.len) : NULL;
  size_t n = nul ? (size_t)(nul - s.data) : s.len;
  return n > NAME_MAX_BYTES ? NAME_MAX_BYTES : n;
}

static bool be32(span_t s, uint32_t *v) {
  if (!s.data || s.len < 4) return false;
  uint32_t x;
  memcpy(&x, s.data, 4);
  *v = ntohl(x);
  return true;
}

// The raw value of an nft_data block (NFTA_DATA_VALUE inside it).
static bool data_value(span_t nested, span_t *value) {
  span_t d[NFTA_DATA_MAX + 1];
  if (!nested.data) return false;
  parse_attrs(nested.data, nested.len, d, NFTA_DATA_MAX + 1);
  if (!d[NFTA_DATA_VALUE].data) return false;
  *value = d[NFTA_DATA_VALUE];
  return true;
}

// Appends the keys of an element list to the run; returns how many elements it holds.
static unsigned long add_elements(state_t *s, span_t list) {
  unsigned long n = 0;
  const uint8_t *p = list.data;
  size_t len = list.len;
  run_t *r = &s->run;
  while (p && len >= NLA_HDRLEN) {
    const struct nlattr *a = (const struct nlattr *)p;
    size_t alen = a->nla_len;
    if (alen < NLA_HDRLEN || alen > len) break;
    if ((a->nla_type & NLA_TYPE_MASK) == NFTA_LIST_ELEM) {
      n++;
      if (!r->keys_dropped && r->nkeys >= s->max_keys) {
        r->keys_dropped = true;
        r->keys.len = 0;
      }
      if (!r->keys_dropped) {
        span_t e[NFTA_SET_ELEM_MAX + 1];
        parse_attrs(p + NLA_HDRLEN, alen - NLA_HDRLEN, e, NFTA_SET_ELEM_MAX + 1);
        uint32_t flags = 0;
        be32(e[NFTA_SET_ELEM_FLAGS], &flags);
        span_t key, end;
        buf_add(&r->keys, " ", 1);
        if (flags & NFT_SET_ELEM_INTERVAL_END) buf_add(&r->keys, "!", 1);
        if (!(flags & NFT_SET_ELEM_CATCHALL) && data_value(e[NFTA_SET_ELEM_KEY], &key) && key.len > 0) buf_hex(&r->keys, key.data, key.len);
        else buf_add(&r->keys, "*", 1);
        if (data_value(e[NFTA_SET_ELEM_KEY_END], &end) && end.len > 0) {
          buf_add(&r->keys, "~", 1);
          buf_hex(&r->keys, end.data, end.len);
        }
        r->nkeys++;
      }
    }
    size_t step = NLA_ALIGN(alen);
    if (step >= len) break;
    p += step;
    len -= step;
  }
  return n;
}

static void generation(state_t *s, const uint8_t *attrs, size_t len) {
  span_t a[NFTA_GEN_MAX + 1];
  parse_attrs(attrs, len, a, NFTA_GEN_MAX + 1);
  uint32_t id = 0, pid = 0;
  be32(a[NFTA_GEN_ID], &id);
  be32(a[NFTA_GEN_PROC_PID], &pid);
  run_flush(s);
  buf_str(&s->out, "# new generation ");
  buf_uint(&s->out, id);
  buf_str(&s->out, " by process ");
  buf_uint(&s->out, pid);
  buf_str(&s->out, " (");
  span_t comm = a[NFTA_GEN_PROC_NAME];
  if (comm.data) buf_name(&s->out, comm.data, str_len(comm));
  buf_str(&s->out, ")\n");
}

// One nf_tables message (type within the subsystem, flags, family, attributes).
static void message(state_t *s, unsigned type, unsigned flags, uint8_t family, const uint8_t *attrs, size_t len) {
  const char *verb, *object;
  unsigned table_attr, name_attr = 0, max;
  switch (type) {
    case NFT_MSG_NEWGEN:
      generation(s, attrs, len);
      return;
    case NFT_MSG_NEWTABLE: case NFT_MSG_DELTABLE: case NFT_MSG_DESTROYTABLE:
      object = "table"; table_attr = NFTA_TABLE_NAME; max = NFTA_TABLE_MAX + 1; break;
    case NFT_MSG_NEWCHAIN: case NFT_MSG_DELCHAIN: case NFT_MSG_DESTROYCHAIN:
      object = "chain"; table_attr = NFTA_CHAIN_TABLE; name_attr = NFTA_CHAIN_NAME; max = NFTA_CHAIN_MAX + 1; break;
    case NFT_MSG_NEWRULE: case NFT_MSG_DELRULE: case NFT_MSG_DESTROYRULE:
      object = "rule"; table_attr = NFTA_RULE_TABLE; name_attr = NFTA_RULE_CHAIN; max = NFTA_RULE_MAX + 1; break;
    case NFT_MSG_NEWSET: case NFT_MSG_DELSET: case NFT_MSG_DESTROYSET:
      object = "set"; table_attr = NFTA_SET_TABLE; name_attr = NFTA_SET_NAME; max = NFTA_SET_MAX + 1; break;
    case NFT_MSG_NEWSETELEM: case NFT_MSG_DELSETELEM: case NFT_MSG_DESTROYSETELEM:
      object = "element"; table_attr = NFTA_SET_ELEM_LIST_TABLE; name_attr = NFTA_SET_ELEM_LIST_SET; max = NFTA_SET_ELEM_LIST_MAX + 1; break;
    case NFT_MSG_NEWOBJ: case NFT_MSG_DELOBJ: case NFT_MSG_DESTROYOBJ:
      object = "obj"; table_attr = NFTA_OBJ_TABLE; name_attr = NFTA_OBJ_NAME; max = NFTA_OBJ_MAX + 1; break;
    case NFT_MSG_NEWFLOWTABLE: case NFT_MSG_DELFLOWTABLE: case NFT_MSG_DESTROYFLOWTABLE:
      object = "flowtable"; table_attr = NFTA_FLOWTABLE_TABLE; name_attr = NFTA_FLOWTABLE_NAME; max = NFTA_FLOWTABLE_MAX + 1; break;
    default:
      return;  // not a change (a trace, a reply)
  }
  switch (type) {
    case NFT_MSG_NEWTABLE: case NFT_MSG_NEWCHAIN: case NFT_MSG_NEWSET: case NFT_MSG_NEWSETELEM:
    case NFT_MSG_NEWOBJ: case NFT_MSG_NEWFLOWTABLE:
      verb = "add"; break;
    case NFT_MSG_NEWRULE:
      verb = (flags & NLM_F_REPLACE) ? "replace" : "add"; break;
    default:
      verb = "delete";
  }
  span_t a[ATTRS_MAX];
  parse_attrs(attrs, len, a, max < ATTRS_MAX ? max : ATTRS_MAX);
  span_t table = a[table_attr];
  span_t name = name_attr ? a[name_attr] : (span_t){NULL, 0};
  size_t tlen = str_len(table), nlen = str_len(name);
  run_t *r = &s->run;
  bool same = r->active && strcmp(r->verb, verb) == 0 && strcmp(r->object, object) == 0 && r->family == family &&
      r->table_len == tlen && (tlen == 0 || memcmp(r->table, table.data, tlen) == 0) &&
      r->has_name == (name_attr != 0) && r->name_len == nlen && (nlen == 0 || memcmp(r->name, name.data, nlen) == 0);
  if (!same) {
    run_flush(s);
    r->active = true;
    r->verb = verb;
    r->object = object;
    r->family = family;
    r->table_len = tlen;
    if (tlen) memcpy(r->table, table.data, tlen);
    r->has_name = name_attr != 0;
    r->name_len = nlen;
    if (nlen) memcpy(r->name, name.data, nlen);
    r->count = 0;
  }
  if (type == NFT_MSG_NEWSETELEM || type == NFT_MSG_DELSETELEM || type == NFT_MSG_DESTROYSETELEM) {
    unsigned long n = a[NFTA_SET_ELEM_LIST_ELEMENTS].data ? add_elements(s, a[NFTA_SET_ELEM_LIST_ELEMENTS]) : 0;
    if (n == 0) {
      // A change to a set's elements that names none: their keys are unknown.
      n = 1;
      r->keys_dropped = true;
      r->keys.len = 0;
    }
    r->count += n;
  } else {
    r->count++;
  }
}

// Every nf_tables message in one datagram; anything else, or a malformed tail, is skipped.
static void datagram(state_t *s, const uint8_t *p, size_t len) {
  while (len >= NLMSG_HDRLEN) {
    const struct nlmsghdr *h = (const struct nlmsghdr *)p;
    size_t mlen = h->nlmsg_len;
    if (mlen < NLMSG_HDRLEN || mlen > len) return;
    if ((h->nlmsg_type >> 8) == NFNL_SUBSYS_NFTABLES && mlen >= NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg))) {
      const struct nfgenmsg *g = (const struct nfgenmsg *)(p + NLMSG_HDRLEN);
      size_t off = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg));
      message(s, h->nlmsg_type & 0xff, h->nlmsg_flags, g->nfgen_family, p + off, mlen - off);
    }
    size_t step = NLMSG_ALIGN(mlen);
    if (step >= len) return;
    p += step;
    len -= step;
  }
}

static void state_free(state_t *s) {
  free(s->out.p);
  free(s->run.keys.p);
}

// Writes all of `b` to `fd` (waiting while a non-blocking pipe is full); false once the reader is gone.
static bool write_all(int fd, buf_t *b) {
  size_t at = 0;
  while (at < b->len) {
    ssize_t n = write(fd, b->p + at, b->len - at);
    if (n >= 0) {
      at += (size_t)n;
    } else if (errno == EAGAIN) {
      struct pollfd pfd = {.fd = fd, .events = POLLOUT};
      poll(&pfd, 1, -1);
    } else if (errno != EINTR) {
      return false;
    }
  }
  b->len = 0;
  return true;
}

static napi_value throw_errno(napi_env env, const char *what) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(errno));
  napi_throw_error(env, NULL, msg);
  return NULL;
}

static bool int_arg(napi_env env, napi_value v, int64_t *out) {
  return napi_get_value_int64(env, v, out) == napi_ok;
}

// listen(rcvbufBytes) -> [fd, rcvbuf the kernel granted]. Also asks for
// SIGTERM when the parent ends, so a listener never outlives kproxy.
static napi_value Listen(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int64_t want = 0;
  if (argc < 1 || !int_arg(env, argv[0], &want) || want < 0 || want > (1 << 30)) {
    napi_throw_type_error(env, NULL, "listen(rcvbufBytes): a byte count up to 1 GiB");
    return NULL;
  }
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) raise(SIGTERM);
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) return throw_errno(env, "socket(AF_NETLINK, NETLINK_NETFILTER)");
  if (want > 0) {
    int size = (int)want;
    // Beyond net.core.rmem_max needs CAP_NET_ADMIN, which kproxy has; without it, the most allowed.
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }
  struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return throw_errno(env, "bind(netlink)");
  }
  int group = NFNLGRP_NFTABLES;
  if (setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return throw_errno(env, "joining NFNLGRP_NFTABLES");
  }
  int got = 0;
  socklen_t gl = sizeof got;
  getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &gl);
  napi_value out, v;
  napi_create_array_with_length(env, 2, &out);
  napi_create_int32(env, fd, &v);
  napi_set_element(env, out, 0, v);
  napi_create_int64(env, got, &v);
  napi_set_element(env, out, 1, v);
  return out;
}

// pump(fd, outFd, maxKeys) -> why it stopped. Reads events and writes their
// lines to outFd until that is closed (kproxy ended) or the socket fails.
// Lines are written whenever the socket has been read empty; a run of like
// changes is written once something else comes, at the latest its
// transaction's generation line, so a commit of 100,000 elements is one
// line however often the reader catches up with the kernel.
static napi_value Pump(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int64_t fd, out_fd, max_keys;
  if (argc < 3 || !int_arg(env, argv[0], &fd) || !int_arg(env, argv[1], &out_fd) || !int_arg(env, argv[2], &max_keys) || max_keys < 0) {
    napi_throw_type_error(env, NULL, "pump(fd, outFd, maxKeys)");
    return NULL;
  }
  state_t s = {.max_keys = (unsigned long)max_keys};
  size_t cap = 1 << 18;
  uint8_t *in = malloc(cap);
  const char *why = NULL;
  char whybuf[160];
  if (!in) why = "out of memory";
  while (!why) {
    struct iovec iov = {.iov_base = in, .iov_len = cap};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t n = recvmsg((int)fd, &mh, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN) {
        // The run in hand stays open: its transaction's generation line (or a loss) ends it.
        if (s.out.len && !write_all((int)out_fd, &s.out)) why = "output closed";
        struct pollfd pfd = {.fd = (int)fd, .events = POLLIN};
        poll(&pfd, 1, -1);
      } else if (errno == ENOBUFS) {
        run_flush(&s);
        buf_str(&s.out, "# lost events\n");
      } else if (errno != EINTR) {
        snprintf(whybuf, sizeof whybuf, "recv: %s", strerror(errno));
        why = whybuf;
      }
      continue;
    }
    if (mh.msg_flags & MSG_TRUNC) {
      // Cannot happen with this buffer; if it did, the message's end is gone.
      run_flush(&s);
      buf_str(&s.out, "# lost events\n");
    }
    datagram(&s, in, (size_t)n < cap ? (size_t)n : cap);
    if (s.out.len >= (1 << 16) && !write_all((int)out_fd, &s.out)) why = "output closed";
  }
  free(in);
  state_free(&s);
  napi_value r;
  napi_create_string_utf8(env, why, NAPI_AUTO_LENGTH, &r);
  return r;
}

// format(buffer, maxKeys) -> the lines for the netlink messages in
// `buffer`, as pump would write them (the parser alone, for tests of what
// malformed input does).
static napi_value Format(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *data;
  size_t len;
  int64_t max_keys;
  if (argc < 2 || napi_get_buffer_info(env, argv[0], &data, &len) != napi_ok || !int_arg(env, argv[1], &max_keys) || max_keys < 0) {
    napi_throw_type_error(env, NULL, "format(buffer, maxKeys)");
    return NULL;
  }
  state_t s = {.max_keys = (unsigned long)max_keys};
  datagram(&s, data, len);
  run_flush(&s);
  napi_value r;
  napi_create_string_utf8(env, s.out.p ? s.out.p : "", s.out.len, &r);
  state_free(&s);
  return r;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"listen", NULL, Listen, NULL, NULL, NULL, napi_default, NULL},
    {"pump", NULL, Pump, NULL, NULL, NULL, napi_default, NULL},
    {"format", NULL, Format, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 3, props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
