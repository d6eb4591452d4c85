/*
 * embed.c — POST /v1/embeddings and POST /embed end to end (embed.h), on the connection's thread:
 * parse and check the request (embed_req.c), resolve the model through the tenant's grants, admit
 * it against the tenant's concurrency and tokens_per_minute, run every input through the model's
 * scheduler at once — one short-lived runner thread per input, up to RUNNERS, so the inputs share
 * batched steps with each other and with every tenant's decoding — pool and normalise each input's
 * states, then charge the tokens the host ran (metrics, minute window, ledger).
 *
 * No guest runs: an embedding has nothing to orchestrate (no sampling, no stop rules), so the host
 * does it and applies the tenant's rules itself — model grants, rate limits, and the KV block quota
 * (each input runs in a paged session of the tenant's).
 *
 * Owns: per request, the parsed request, the output vectors and the runners' scratch, all freed
 * before returning. Thread rule: any number of requests at once.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "realm/alloc.h"
#include "realm/log.h"
#include "realm/sched.h"
#include "realm/status.h"
#include "server/embed.h"
#include "server/srv.h"

#define RUNNERS 8 /* inputs of one request in flight at once (each a thread blocked on steps) */

struct run {
    struct srv_backend *be;
    size_t tenant, model;
    enum realm_pooling pooling;
    int32_t width;
    const struct srv_embed_req *req;
    float *vecs;         /* (n_inputs, width) the pooled, normalised vectors */
    atomic_size_t next;  /* next input to take */
    atomic_bool stop;    /* a runner failed: the others take no more inputs */
    _Atomic int64_t ran; /* tokens of the inputs that ran to the end (what is charged) */
    pthread_mutex_t mu;  /* guards the first failure below */
    int status;
    char msg[REALM_ERR_MSG_MAX];
};

static void fail(struct run *r, int status, const char *msg) {
    pthread_mutex_lock(&r->mu);
    if (r->status == REALM_OK) {
        r->status = status;
        snprintf(r->msg, sizeof r->msg, "%s", msg);
    }
    pthread_mutex_unlock(&r->mu);
    atomic_store(&r->stop, true);
}

/* Takes inputs until none are left: the states of each (its own scratch, sized for the longest
 * input), pooled into its row of vecs. */
static void *runner(void *arg) {
    struct run *r = arg;
    int32_t longest = 0;
    for (size_t i = 0; i < r->req->n_inputs; i++)
        if (r->req->inputs[i].n > longest) longest = r->req->inputs[i].n;
    float *states = realm_malloc((size_t)longest * (size_t)r->width * sizeof *states);
    if (!states) {
        fail(r, REALM_E_NOMEM, "out of memory for the hidden states");
        return NULL;
    }
    for (;;) {
        if (atomic_load(&r->stop)) break;
        const size_t i = atomic_fetch_add(&r->next, 1);
        if (i >= r->req->n_inputs) break;
        const struct srv_embed_input *in = &r->req->inputs[i];
        struct realm_err err;
        realm_err_clear(&err);
        int rc = srv_backend_embed(r->be, r->tenant, r->model, in->tokens, in->n, states, &r->stop,
                                   &err);
        if (rc == REALM_OK)
            rc = realm_embed_pool(states, in->n, r->width, r->pooling, true,
                                  r->vecs + i * (size_t)r->width);
        if (rc) {
            /* a runner stopped because another failed reports nothing of its own */
            if (rc != REALM_E_CANCELLED || !atomic_load(&r->stop))
                fail(r, rc, err.msg[0] ? err.msg : realm_strerror(rc));
            break;
        }
        atomic_fetch_add(&r->ran, in->n);
    }
    realm_free(states);
    return NULL;
}

/* Runs every input of req; returns REALM_OK or the first failure (message in r->msg). */
static int run_all(struct run *r) {
    pthread_t th[RUNNERS];
    int n = (int)(r->req->n_inputs < RUNNERS ? r->req->n_inputs : RUNNERS), started = 0;
    for (; started < n; started++)
        if (pthread_create(&th[started], NULL, runner, r) != 0) break;
    if (started == 0) runner(r); /* no thread to be had: this one runs them all */
    for (int k = 0; k < started; k++)
        pthread_join(th[k], NULL);
    return r->status;
}

static int find_model(const struct realm_server_config *cfg, const struct realm_tenant_spec *t,
                      const char *name, size_t *out, struct srv_error *e) {
    for (size_t i = 0; i < cfg->n_models; i++) {
        if (strcmp(cfg->models[i].name, name)) continue;
        if (!realm_tenant_may_use(t, name))
            return srv_error_set(e, 403, "permission_error", "model_not_allowed", "model",
                                 "Your API key does not have access to the model '%.200s'.", name);
        *out = i;
        return 0;
    }
    return srv_error_set(e, 404, "invalid_request_error", "model_not_found", "model",
                         "The model '%.200s' does not exist.", name);
}

/* A failed run as an HTTP error, as srv_openai_error maps a guest's. */
static void run_error(int status, const char *msg, struct srv_error *e) {
    switch (status) {
    case REALM_E_KV_FULL:
        if (strstr(msg, "pool exhausted"))
            srv_error_set(e, 503, "server_error", "server_overloaded", NULL,
                          "The KV cache is full (pool exhausted); retry shortly.");
        else
            srv_error_set(e, 429, "requests", "rate_limit_exceeded", NULL,
                          "Tenant KV cache quota reached: %s", msg);
        e->retry_after = 1;
        break;
    case REALM_E_CONTEXT_FULL:
        srv_error_set(e, 400, "invalid_request_error", "context_length_exceeded", "input",
                      "An input is longer than the model's context: %s", msg);
        break;
    case REALM_E_CANCELLED:
        srv_error_set(e, 503, "server_error", "cancelled", NULL, "The request was cancelled: %s",
                      msg);
        break;
    default:
        srv_error_set(e, 500, "server_error", NULL, NULL, "Embedding failed: %s: %s",
                      realm_strerror(status), msg);
    }
}

static const char *outcome_of(int status) {
    switch (status) {
    case REALM_OK:
        return "ok";
    case REALM_E_KV_FULL:
        return "kv_full";
    case REALM_E_CANCELLED:
        return "cancelled";
    default:
        return "error";
    }
}

/* The parsed request's model and limits, then its tokens; 0 or -1 with *e. */
static int prepare(struct realm_server *s, const struct realm_tenant_spec *spec,
                   struct srv_embed_req *req, size_t *model, int32_t *width, struct srv_error *e) {
    const struct realm_server_config *cfg = s->cfg;
    if (find_model(cfg, spec, req->model, model, e)) return -1;
    *width = srv_backend_n_embd(s->backend, *model);
    if (req->dimensions && req->dimensions != *width)
        return srv_error_set(e, 400, "invalid_request_error", NULL, "dimensions",
                             "The model '%.200s' gives %d dimensions and cannot shorten them: "
                             "'dimensions' must be %d or omitted (got %lld).",
                             req->model, *width, *width, (long long)req->dimensions);
    int32_t max_tokens = cfg->embed_max_tokens;
    const int32_t n_ctx = cfg->models[*model].n_ctx > 0
                              ? cfg->models[*model].n_ctx
                              : srv_backend_n_ctx_train(s->backend, *model);
    if (n_ctx < max_tokens) max_tokens = n_ctx;
    const struct realm_tokenizer *tok = srv_backend_tokenizer(s->backend, *model);
    return srv_embed_tokenize(req, tok, realm_tokenizer_n_vocab(tok), max_tokens, e);
}

int srv_embed_handle(struct realm_server *s, struct srv_tenant *t, const char *key_label,
                     enum srv_embed_shape shape, const char *body, size_t len,
                     struct realm_buf *out, struct srv_error *e) {
    if (atomic_load(&s->draining)) {
        srv_error_set(e, 503, "server_error", "server_shutting_down", NULL,
                      "The server is shutting down.");
        e->retry_after = 1;
        return -1;
    }
    const struct realm_tenant_spec *spec = atomic_load(&t->spec);
    struct srv_embed_req req;
    /* token-id inputs are capped by the server's limit here, by the model's context after */
    if (srv_embed_parse(shape, body, len, s->cfg->embed_max_inputs, s->cfg->embed_max_tokens, &req,
                        e))
        return -1;
    size_t model = 0;
    int32_t width = 0;
    if (prepare(s, spec, &req, &model, &width, e)) {
        srv_embed_req_free(&req);
        return -1;
    }
    int64_t reserved = 0;
    if (srv_tenant_admit(t, req.n_tokens, &reserved, e)) {
        atomic_fetch_add(&t->st.rejected_limit, 1);
        srv_embed_req_free(&req);
        return -1;
    }
    atomic_fetch_add(&t->st.requests, 1);
    const double t0 = realm_now_s();
    struct run r = {.be = s->backend,
                    .tenant = t->index,
                    .model = model,
                    .pooling = s->cfg->models[model].pooling == REALM_POOLING_LAST
                                   ? REALM_POOLING_LAST
                                   : REALM_POOLING_MEAN,
                    .width = width,
                    .req = &req,
                    .status = REALM_OK};
    pthread_mutex_init(&r.mu, NULL);
    r.vecs = realm_malloc(req.n_inputs * (size_t)width * sizeof *r.vecs);
    int status = r.vecs ? run_all(&r) : REALM_E_NOMEM;
    if (!r.vecs) snprintf(r.msg, sizeof r.msg, "out of memory for %zu vectors", req.n_inputs);
    const double host_s = realm_now_s() - t0;

    /* charged: the tokens that ran, whatever the outcome */
    const int64_t ran = atomic_load(&r.ran);
    atomic_fetch_add(&s->metrics.tokens_in, ran);
    atomic_fetch_add(&t->st.prompt_tokens, ran);
    atomic_fetch_add(status == REALM_OK ? &t->st.succeeded : &t->st.failed, 1);
    srv_tenant_settle(t, reserved, ran);
    srv_tenant_slot_release(t);
    if (s->state)
        srv_state_record_host(s, t, model, key_label, outcome_of(status), ran, host_s, t0);

    int rc = 0;
    if (status != REALM_OK) {
        run_error(status, r.msg, e);
        if (status != REALM_E_KV_FULL && status != REALM_E_CANCELLED)
            realm_log(REALM_LOG_INFO, "server", "embeddings (tenant %s) failed: %s: %s", spec->id,
                      realm_strerror(status), r.msg);
        rc = -1;
    } else {
        int brc = srv_embed_response(out, &req, s->cfg->models[model].name, r.vecs, width);
        if (brc) {
            srv_error_set(e, 500, "server_error", NULL, NULL, "%s",
                          brc == REALM_E_NOMEM ? "out of memory"
                                               : "the model produced a non-finite embedding");
            rc = -1;
        }
    }
    pthread_mutex_destroy(&r.mu);
    realm_free(r.vecs);
    srv_embed_req_free(&req);
    return rc;
}
