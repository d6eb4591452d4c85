/*
 * embed.c — pooling of per-token hidden states into one embedding vector (realm_embed_pool in
 * include/realm/sched.h). The states come from realm_sched_embed; the server pools and normalises
 * them per input of /v1/embeddings and /embed.
 *
 * Owns nothing; pure functions, any thread.
 */
#include <math.h>
#include <string.h>

#include "realm/sched.h"
#include "realm/status.h"

int realm_embed_pool(const float *states, int32_t n, int32_t width, enum realm_pooling pooling,
                     bool normalize, float *out) {
    if (!states || !out || n < 1 || width < 1 ||
        (pooling != REALM_POOLING_MEAN && pooling != REALM_POOLING_LAST))
        return REALM_E_INVALID;
    const int32_t first = pooling == REALM_POOLING_LAST ? n - 1 : 0;
    const int32_t count = n - first;
    double norm2 = 0;
    for (int32_t d = 0; d < width; d++) {
        /* token order, in double: the same states always give the same bits */
        double acc = 0;
        for (int32_t i = first; i < n; i++)
            acc += states[(size_t)i * (size_t)width + (size_t)d];
        out[d] = (float)(acc / count);
        norm2 += (double)out[d] * (double)out[d];
    }
    if (normalize && norm2 > 0) {
        const double inv = 1.0 / sqrt(norm2);
        for (int32_t d = 0; d < width; d++)
            out[d] = (float)(out[d] * inv);
    }
    return REALM_OK;
}
