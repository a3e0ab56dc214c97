// Hands freed C heap back to the kernel. After a burst (a large sync, a
// burst of DNS misses) the C heap is full of free holes between live
// blocks; glibc only returns memory at the heap's top on its own,
// malloc_trim(3) also releases the free pages in between. Its own small
// addon, so every part of kproxy can use it.
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdbool.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

// trim() -> whether any memory was released
static napi_value Trim(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
#ifdef __GLIBC__
  bool released = malloc_trim(0) == 1;
#else
  bool released = false;  // other C libraries give memory back on their own terms
#endif
  napi_get_boolean(env, released, &out);
  return out;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"trim", NULL, Trim, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 1, props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
