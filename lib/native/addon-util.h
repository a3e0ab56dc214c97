// Small helpers every kproxy addon's C shares (included, so each stays one
// .node file): a JavaScript Error from an errno, and an address literal to
// a sockaddr.
#ifndef KPROXY_ADDON_UTIL_H
#define KPROXY_ADDON_UTIL_H

#include <node_api.h>
#include <uv.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

// Throws an Error whose code is the errno's name (ECONNREFUSED, ...) and whose message says what failed.
static inline napi_value throw_errno(napi_env env, const char *what, int err) {
  char text[160];
  snprintf(text, sizeof text, "%s: %s", what, strerror(err));
  napi_value code, msg, e;
  napi_create_string_utf8(env, uv_err_name(-err), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, code, msg, &e);
  napi_set_named_property(env, e, "code", code);
  napi_throw(env, e);
  return NULL;
}

// Fills `ss` from an IPv4 or IPv6 literal and a port; the family, or -1 for anything else.
static inline int parse_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons(port);
    *len = sizeof *a4;
    return AF_INET;
  }
  if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(port);
    *len = sizeof *a6;
    return AF_INET6;
  }
  return -1;
}

#endif
