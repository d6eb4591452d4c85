/*
 * wasi_nn.h — the wasi_ephemeral_nn imports as WasmEdge's GGML plugin defines them (core-module
 * ABI), for the WASI command test guests: every function returns an errno (0 success,
 * 100 end of sequence, 101 context full, 102 prompt too long, 103 model not found ...); handles
 * are u32 written through out-pointers.
 */
#ifndef TEST_WASI_NN_H
#define TEST_WASI_NN_H

#include <stdint.h>

#define NN_IMPORT(name) __attribute__((import_module("wasi_ephemeral_nn"), import_name(#name)))

#define NN_SUCCESS 0
#define NN_END_OF_SEQUENCE 100
#define NN_CONTEXT_FULL 101
#define NN_PROMPT_TOO_LONG 102
#define NN_MODEL_NOT_FOUND 103
#define NN_TENSOR_U8 3

/* set_input's tensor: dimensions, type, data (u32 each in guest memory) */
struct nn_tensor {
    const uint32_t *dims;
    uint32_t n_dims;
    uint32_t type;
    const void *data;
    uint32_t len;
};

NN_IMPORT(load_by_name) uint32_t nn_load_by_name(const char *name, uint32_t len, uint32_t *graph);
NN_IMPORT(load_by_name_with_config)
uint32_t nn_load_by_name_with_config(const char *name, uint32_t len, const char *cfg,
                                     uint32_t cfg_len, uint32_t *graph);
NN_IMPORT(init_execution_context) uint32_t nn_init_execution_context(uint32_t graph, uint32_t *ctx);
NN_IMPORT(set_input) uint32_t nn_set_input(uint32_t ctx, uint32_t index, const struct nn_tensor *t);
NN_IMPORT(compute) uint32_t nn_compute(uint32_t ctx);
NN_IMPORT(compute_single) uint32_t nn_compute_single(uint32_t ctx);
NN_IMPORT(get_output)
uint32_t nn_get_output(uint32_t ctx, uint32_t index, void *buf, uint32_t cap, uint32_t *written);
NN_IMPORT(get_output_single)
uint32_t nn_get_output_single(uint32_t ctx, uint32_t index, void *buf, uint32_t cap,
                              uint32_t *written);
NN_IMPORT(fini_single) uint32_t nn_fini_single(uint32_t ctx);
NN_IMPORT(unload) uint32_t nn_unload(uint32_t graph);

#endif
