/*
 * nn_sdk_alloc.h (internal) — force-included (-include) when the guest SDK's grammar engine
 * (guest/sdk/grammar.c, json.c, json_schema.c) is compiled into the host: its malloc family
 * becomes realm_malloc's, so what a wasi-nn grammar allocates is counted against the tenant's
 * host-memory budget (wasi_nn.c's imports run inside the tenant's budget). Every pointer those
 * files allocate is freed by them or by nn_sampler.c with realm_free.
 */
#ifndef REALM_SANDBOX_NN_SDK_ALLOC_H
#define REALM_SANDBOX_NN_SDK_ALLOC_H

#include <stdlib.h>

#include "realm/alloc.h"

#define malloc(n) realm_malloc(n)
#define calloc(n, s) realm_calloc(n, s)
#define realloc(p, n) realm_realloc(p, n)
#define free(p) realm_free(p)

#endif
