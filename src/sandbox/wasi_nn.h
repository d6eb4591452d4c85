/*
 * wasi_nn.h (internal) — WASI command guests of src/sandbox/: guests written for WasmEdge's
 * wasi-nn GGML backend (module "wasi_ephemeral_nn", core-module ABI) that use WASI preview 1 for
 * stdio, args, env, clock and random, and export `_start` instead of the realm ABI.
 *
 *   command.c     the guest kind (detected at module load), its import/export check, and one
 *                 run of `_start` per request in a fresh store: stdin holds the request, stdout
 *                 is the request's emitted text, no files, sockets, env or inherited args.
 *   wasi_nn.c     the wasi_ephemeral_nn host functions: graphs are configured models (by name,
 *                 never a path), each execution context is a realm session decoded through the
 *                 model's scheduler, sampled on the host from the guest's metadata.
 *   nn_sampler.c  the guest SDK's sampler (guest/sdk/sample.c) behind an opaque type, so that
 *                 greedy and seeded sampling match the default guest token for token.
 *
 * Thread rule: everything runs on the thread running the tenant.
 */
#ifndef REALM_SANDBOX_WASI_NN_H
#define REALM_SANDBOX_WASI_NN_H

#include <stdbool.h>
#include <stdint.h>

#include "sandbox/nn_sampler.h"
#include "sandbox/sandbox.h"

/* ---- wasi_nn.c ---- */
/* Defines every wasi_ephemeral_nn import in the host's linker. */
int sbx_nn_define_imports(struct realm_sbx_host *h, struct realm_err *err);
/* Whether `name` with signature `sig` ("params:results", i = i32) is a wasi_ephemeral_nn import
 * the host defines. */
bool sbx_nn_known_import(const char *name, size_t name_len, const char *sig);
/* Frees the instance's graphs and execution contexts (their sessions included). */
void sbx_nn_free(struct realm_sbx_tenant *t);
/* What the instance's contexts generated in this call, for the request's usage: prompt tokens,
 * completion tokens (summed over contexts) and the last finish reason (REALM_ABI_FINISH_*, -1:
 * nothing was generated). */
void sbx_nn_usage(const struct realm_sbx_tenant *t, int32_t *prompt, int32_t *completion,
                  int32_t *finish);
/* The realm status for the last wasi-nn call of this instance that failed (REALM_OK: none),
 * for the error of a guest that exits with a failure status. */
int sbx_nn_realm_status(const struct realm_sbx_tenant *t);

/* ---- command.c ---- */
/* True if the module is a WASI command (exports `_start`, no `realm_generate`). */
bool sbx_command_detect(const wasmtime_module_t *m);
/* Checks a command's imports (wasi_snapshot_preview1.*, wasi_ephemeral_nn.* as defined) and
 * exports (a 32-bit memory, `_start: () -> ()`). Errors: REALM_E_FORMAT, naming the problem. */
int sbx_command_check(const wasmtime_module_t *m, const char *name, struct realm_err *err);
/* One request: a fresh store and instance, stdin = the request's stdin bytes (or its JSON),
 * stdout → its emit callback, `_start` run under the tenant's limits; the store is dropped after.
 * Same contract as realm_sbx_tenant_generate. */
int sbx_command_generate(struct realm_sbx_tenant *t, struct realm_sbx_request *r,
                         struct realm_err *err);

#endif
