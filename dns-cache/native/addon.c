// kproxy's native addon (Node-API, so one build serves every Node.js
// version): the DNS cache's batched UDP system calls, giving C heap back to
// the kernel, and the userspace forwarder's TCP and UDP relays.
#define NAPI_VERSION 8
#include <node_api.h>

void udp_batch_register(napi_env env, napi_value exports);
void memory_register(napi_env env, napi_value exports);
void tcp_relay_register(napi_env env, napi_value exports);
void udp_relay_register(napi_env env, napi_value exports);
void fd_pass_register(napi_env env, napi_value exports);

static napi_value Init(napi_env env, napi_value exports) {
  udp_batch_register(env, exports);
  memory_register(env, exports);
  tcp_relay_register(env, exports);
  udp_relay_register(env, exports);
  fd_pass_register(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
