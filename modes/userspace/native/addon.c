// The userspace forwarder's native addon (Node-API, so one build serves every
// Node.js version): the TCP and UDP relays and passing listeners to workers.
#define NAPI_VERSION 8
#include <node_api.h>

void tcp_relay_register(napi_env env, napi_value exports);
void udp_relay_register(napi_env env, napi_value exports);
void fd_pass_register(napi_env env, napi_value exports);

static napi_value Init(napi_env env, napi_value exports) {
  tcp_relay_register(env, exports);
  udp_relay_register(env, exports);
  fd_pass_register(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
