// The DNS cache's native addon (Node-API, so one build serves every Node.js
// version): batched UDP system calls.
#define NAPI_VERSION 8
#include <node_api.h>

void udp_batch_register(napi_env env, napi_value exports);

static napi_value Init(napi_env env, napi_value exports) {
  udp_batch_register(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
