/*
 * http.c — libmicrohttpd glue: the listening socket, request bodies (size-capped → 413),
 * routing, authentication, OpenAI JSON and SSE responses, and client hang-up detection.
 *
 * Threading: MHD runs one thread per connection (MHD_USE_THREAD_PER_CONNECTION). A generation
 * request is admitted on its connection thread and run by a worker (server.c); the connection
 * thread then blocks — in the access handler for non-streamed answers, in the SSE content
 * reader for streams — on the job's condition variable with a short timeout, polling the
 * client's socket for POLLRDHUP in between. A client that goes away is noticed within one
 * poll period (50 ms) and its job cancelled: the sandbox sees the flag at its next host call or
 * scheduler step.
 *
 * Thread rule: the handler runs concurrently on connection threads; everything it shares lives
 * in server.c's structures.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "realm/alloc.h"
#include "realm/log.h"
#include "realm/registry.h"
#include "realm/status.h"
#include "server/embed.h"
#include "server/srv.h"

#define POLL_PERIOD_S 0.05

/* Per-connection request state (MHD's con_cls). */
struct http_req {
    double t_begin;            /* headers complete (the body must arrive within read_timeout_s) */
    struct srv_tenant *tenant; /* authenticated from the headers, before any body byte is kept */
    bool admin;                /* an operator key (full /metrics; the admin API in state mode) */
    char key_label[129];       /* state mode: the key's label (for the usage ledger) */
    size_t body_max; /* this route's body limit (max_body_bytes, or max_guest_bytes for uploads) */
    struct realm_buf body;
    bool too_large; /* over max_body_bytes: the rest is read and dropped, then 413 */
    size_t drained; /* bytes dropped so far */
    bool responded; /* a response was queued before the body ended (413) */
    enum srv_endpoint ep;
    struct srv_job *job; /* this request's reference, if a job was admitted */
};

/* MHD's per-connection inactivity limit: while headers or a body are read, and between requests
 * on a kept-alive connection. */
static unsigned read_timeout(const struct realm_server *s) {
    double t = s->cfg->read_timeout_s;
    return t < 1 ? 1u : (unsigned)t;
}

/* ---- responses ---- */

static enum MHD_Result queue_body(struct MHD_Connection *c, int status, char *body, size_t len,
                                  const char *content_type, int retry_after) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer_with_free_callback(len, body, realm_free);
    if (!r) {
        realm_free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", retry_after);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (status == 401) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    /* refused before its body was read (no key, too large, too slow): close rather than read
     * a body nobody will use */
    if (status == 401 || status == 408 || status == 413)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result send_buf(struct realm_server *s, struct http_req *hr,
                                struct MHD_Connection *c, int status, struct realm_buf *b,
                                const char *content_type) {
    srv_metrics_http(&s->metrics, hr->ep, status);
    char *data = b->data;
    size_t len = b->len;
    if (!data) { /* an empty body still needs a buffer MHD can free */
        data = realm_malloc(1);
        if (!data) return MHD_NO;
        len = 0;
    }
    b->data = NULL;
    b->len = b->cap = 0;
    return queue_body(c, status, data, len, content_type, 0);
}

static enum MHD_Result send_error(struct realm_server *s, struct http_req *hr,
                                  struct MHD_Connection *c, const struct srv_error *e) {
    srv_metrics_http(&s->metrics, hr->ep, e->http);
    size_t len;
    char *body = srv_error_json(e, &len);
    if (!body) return MHD_NO;
    return queue_body(c, e->http, body, len, "application/json", e->retry_after);
}

/* ---- client liveness ---- */

static int conn_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* True if the peer closed its end (or the socket failed). Data waiting to be read (a pipelined
 * next request) is not a hang-up. */
static bool client_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static void job_cancel(struct srv_job *j) {
    realm_sbx_request_cancel(&j->sreq);
}

/* The client went away before its response ended: cancel, and count it once. */
static void client_left(struct srv_job *j) {
    job_cancel(j);
    if (!atomic_exchange(&j->client_gone, true)) atomic_fetch_add(&j->srv->metrics.disconnects, 1);
}

/* Waits until the job is done (or, with first_output, has output); polls the client meanwhile.
 * Returns false if the client went away (the job is then cancelled). */
static bool wait_job(struct srv_job *j, bool first_output) {
    pthread_mutex_lock(&j->mu);
    for (;;) {
        if (j->done || (first_output && j->pending.len > 0)) break;
        struct timespec ts;
        realm_deadline_after(&ts, POLL_PERIOD_S);
        if (pthread_cond_timedwait(&j->cv, &j->mu, &ts) == ETIMEDOUT) {
            pthread_mutex_unlock(&j->mu);
            if (client_gone(j->fd)) {
                client_left(j);
                return false;
            }
            pthread_mutex_lock(&j->mu);
        }
    }
    pthread_mutex_unlock(&j->mu);
    return true;
}

/* A stream's client must take what it is sent within stream_stall_s: MHD's inactivity timer
 * (which only runs while MHD itself waits to write) is restarted for each chunk handed over —
 * setting it from 0 restarts it — so time spent waiting for the guest never counts, and a client
 * that stops reading is cut once the socket buffers are full for that long (on_completed then
 * cancels the job, which frees its worker, KV blocks and, when the response closes, its slot). */
static void arm_stall_timer(struct srv_job *j) {
    if (!j->conn) return;
    double st = j->srv->cfg->stream_stall_s;
    MHD_set_connection_option(j->conn, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    MHD_set_connection_option(j->conn, MHD_CONNECTION_OPTION_TIMEOUT, st < 1 ? 1u : (unsigned)st);
}

/* MHD content reader of an SSE response (connection thread). */
static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    struct srv_job *j = cls;
    for (;;) {
        if (j->sse_off < j->sse.len) {
            size_t n = j->sse.len - j->sse_off;
            if (n > max) n = max;
            memcpy(buf, j->sse.data + j->sse_off, n);
            j->sse_off += n;
            arm_stall_timer(j);
            if (j->sse_off == j->sse.len) {
                realm_buf_reset(&j->sse);
                j->sse_off = 0;
            }
            return (ssize_t)n;
        }
        if (j->sse_phase == 3) return MHD_CONTENT_READER_END_OF_STREAM;
        if (j->sse_phase == 0 && j->req.kind == SRV_CHAT) {
            j->sse_phase = 1;
            if (srv_openai_chunk(&j->sse, j, NULL, 0, NULL, true)) goto fail;
            continue;
        }
        j->sse_phase = j->sse_phase ? j->sse_phase : 1;
        /* output pending or done stays true until this thread consumes it, so it still holds
         * when the lock is taken again */
        if (!wait_job(j, true)) return MHD_CONTENT_READER_END_WITH_ERROR;
        pthread_mutex_lock(&j->mu);
        int rc = 0;
        if (j->pending.len > 0) {
            rc = srv_openai_chunk(&j->sse, j, j->pending.data, j->pending.len, NULL, false);
            realm_buf_reset(&j->pending);
            pthread_cond_broadcast(&j->cv); /* wakes an emit waiting on back-pressure */
        } else {                            /* done */
            rc = srv_openai_trailer(&j->sse, j);
            j->sse_phase = 3;
        }
        pthread_mutex_unlock(&j->mu);
        if (rc) goto fail;
    }
fail:
    job_cancel(j);
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

static void sse_free(void *cls) {
    struct srv_job *j = cls;
    atomic_fetch_sub(&j->srv->metrics.streams_open, 1);
    job_cancel(j); /* no-op if it finished; stops it if the stream ended early */
    srv_job_unref(j);
}

static enum MHD_Result start_stream(struct realm_server *s, struct http_req *hr,
                                    struct MHD_Connection *c, struct srv_job *j) {
    atomic_fetch_add(&j->refs, 1); /* the reader's */
    atomic_fetch_add(&s->metrics.streams_open, 1);
    j->conn = c;
    arm_stall_timer(j);
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_read, j, sse_free);
    if (!r) {
        sse_free(j);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    srv_metrics_http(&s->metrics, hr->ep, 200);
    enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ok;
}

/* ---- auth ---- */

/* Who is calling, from the Authorization header: a tenant (*tenant) or an operator (*admin).
 * Every stored digest is compared, so the time taken tells neither whether the key is an admin's
 * nor which tenant's it is. Returns false with a 401 in *e. */
static bool authenticate(struct realm_server *s, struct MHD_Connection *c,
                         struct srv_tenant **tenant, bool *admin, char *label, size_t label_cap,
                         struct srv_error *e) {
    *tenant = NULL;
    *admin = false;
    label[0] = '\0';
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || !h[0]) {
        srv_error_set(e, 401, "invalid_request_error", "missing_api_key", NULL,
                      "You didn't provide an API key. Send it in an Authorization header: "
                      "\"Authorization: Bearer KEY\".");
        return false;
    }
    if (strncasecmp(h, "Bearer ", 7) != 0) {
        srv_error_set(e, 401, "invalid_request_error", "invalid_api_key", NULL,
                      "The Authorization header must be \"Bearer KEY\".");
        return false;
    }
    const char *key = h + 7;
    while (*key == ' ')
        key++;
    size_t len = strlen(key);
    while (len && key[len - 1] == ' ')
        len--;
    if (s->state) return srv_state_auth(s, key, len, tenant, admin, label, label_cap, e);
    unsigned char d[32];
    srv_sha256(key, len, d);
    *admin = srv_key_matches(d, (const unsigned char(*)[32])s->admin_keys, s->n_admin_keys);
    *tenant = srv_tenant_auth(s->tenants, s->n_tenants, key, len);
    if (!*tenant && !*admin) {
        srv_error_set(e, 401, "invalid_request_error", "invalid_api_key", NULL,
                      "Incorrect API key provided.");
        return false;
    }
    return true;
}

/* A tenant's key, for the routes that act on behalf of a tenant (an admin key is not one). */
static bool need_tenant(const struct http_req *hr, struct srv_error *e) {
    if (hr->tenant) return true;
    srv_error_set(e, 401, "invalid_request_error", "invalid_api_key", NULL,
                  "This route needs a tenant's API key; an operator key only reads /metrics.");
    return false;
}

/* ---- routes ---- */

static enum MHD_Result route_generate(struct realm_server *s, struct http_req *hr,
                                      struct MHD_Connection *c, enum srv_kind kind) {
    struct srv_error e;
    if (!need_tenant(hr, &e)) return send_error(s, hr, c, &e);
    struct srv_tenant *t = hr->tenant;
    if (atomic_load(&s->draining)) {
        srv_error_set(&e, 503, "server_error", "server_shutting_down", NULL,
                      "The server is shutting down.");
        e.retry_after = 1;
        return send_error(s, hr, c, &e);
    }
    struct srv_request req;
    const char *body = hr->body.data ? hr->body.data : "";
    if (srv_request_parse(s->cfg, t->spec, kind, body, hr->body.len, &req, &e))
        return send_error(s, hr, c, &e);
    realm_buf_free(&hr->body); /* the guest request is a separate copy */
    memcpy(req.key_label, hr->key_label, sizeof req.key_label);
    int64_t reserved = 0;
    /* n choices may each use max_tokens: the reservation covers them all */
    const int64_t want =
        req.max_tokens > 0 ? (int64_t)req.max_tokens * (req.n > 0 ? req.n : 1) : req.max_tokens;
    if (srv_tenant_admit(t, want, &reserved, &e)) {
        atomic_fetch_add(&t->st.rejected_limit, 1);
        srv_request_free(&req);
        return send_error(s, hr, c, &e);
    }
    struct srv_job *j;
    if (srv_job_submit(s, t, reserved, &req, conn_fd(c), &j, &e)) {
        srv_tenant_settle(t, reserved, 0);
        srv_tenant_slot_release(t);
        srv_request_free(&req);
        return send_error(s, hr, c, &e);
    }
    atomic_fetch_add(&t->st.requests, 1);
    hr->job = j;
    /* MHD's idle timeout must not fire while we wait on the guest: off now, back on (which also
     * restarts its timer) before the response goes out */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0u);

    if (!wait_job(j, j->req.stream)) {
        srv_metrics_http(&s->metrics, hr->ep, 499);
        return MHD_NO; /* close the connection */
    }
    pthread_mutex_lock(&j->mu);
    bool failed_early = j->done && !j->any_output && j->result.status != REALM_OK;
    pthread_mutex_unlock(&j->mu);
    if (!j->req.stream)
        MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, read_timeout(s));
    if (failed_early) { /* nothing was produced: a proper HTTP error */
        srv_openai_error(j, &e);
        return send_error(s, hr, c, &e);
    }
    if (j->req.stream) return start_stream(s, hr, c, j);

    /* non-streamed: the job is done */
    if (j->result.status != REALM_OK && j->result.status != REALM_E_CONTEXT_FULL) {
        srv_openai_error(j, &e);
        return send_error(s, hr, c, &e);
    }
    struct realm_buf b = {0};
    if (hr->ep == SRV_EP_INFER ? srv_spin_infer_response(&b, j) : srv_openai_response(&b, j)) {
        realm_buf_free(&b);
        return MHD_NO;
    }
    return send_buf(s, hr, c, 200, &b, "application/json");
}

/* POST /infer (Spin's remote LLM protocol): the body becomes the completion request it means and
 * runs as one, through the tenant's guest; route_generate answers in Spin's shape. */
static enum MHD_Result route_infer(struct realm_server *s, struct http_req *hr,
                                   struct MHD_Connection *c) {
    struct srv_error e;
    if (!need_tenant(hr, &e)) return send_error(s, hr, c, &e);
    struct realm_buf body = {0};
    if (srv_spin_infer_body(hr->body.data ? hr->body.data : "", hr->body.len, &body, &e)) {
        realm_buf_free(&body);
        return send_error(s, hr, c, &e);
    }
    realm_buf_free(&hr->body);
    hr->body = body;
    return route_generate(s, hr, c, SRV_COMPLETION);
}

/* POST /v1/embeddings, /embed: host work on the connection's thread (embed.c). */
static enum MHD_Result route_embed(struct realm_server *s, struct http_req *hr,
                                   struct MHD_Connection *c, enum srv_embed_shape shape) {
    struct srv_error e;
    if (!need_tenant(hr, &e)) return send_error(s, hr, c, &e);
    struct realm_buf b = {0};
    const char *body = hr->body.data ? hr->body.data : "";
    int rc = srv_embed_handle(s, hr->tenant, hr->key_label, shape, body, hr->body.len, &b, &e);
    realm_buf_free(&hr->body);
    if (rc) {
        realm_buf_free(&b);
        return send_error(s, hr, c, &e);
    }
    return send_buf(s, hr, c, 200, &b, "application/json");
}

static enum MHD_Result route_models(struct realm_server *s, struct http_req *hr,
                                    struct MHD_Connection *c, const char *one) {
    struct srv_error e;
    if (!need_tenant(hr, &e)) return send_error(s, hr, c, &e);
    struct srv_tenant *t = hr->tenant;
    struct realm_buf b = {0};
    int64_t created = srv_unix_time() - (int64_t)(realm_now_s() - s->t_start);
    int rc = 0;
    if (one) {
        for (size_t i = 0; i < s->cfg->n_models; i++) {
            const struct realm_model_spec *m = &s->cfg->models[i];
            if (!strcmp(m->name, one) && realm_tenant_may_use(t->spec, m->name)) {
                if (srv_openai_model(&b, m, created) || realm_buf_puts(&b, "\n")) break;
                return send_buf(s, hr, c, 200, &b, "application/json");
            }
        }
        realm_buf_free(&b);
        srv_error_set(&e, 404, "invalid_request_error", "model_not_found", "model",
                      "The model '%.200s' does not exist.", one);
        return send_error(s, hr, c, &e);
    }
    rc = realm_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    bool first = true;
    for (size_t i = 0; i < s->cfg->n_models && !rc; i++) {
        const struct realm_model_spec *m = &s->cfg->models[i];
        if (!realm_tenant_may_use(t->spec, m->name)) continue;
        rc = (!first && realm_buf_puts(&b, ",")) || srv_openai_model(&b, m, created);
        first = false;
    }
    if (rc || realm_buf_puts(&b, "]}\n")) {
        realm_buf_free(&b);
        return MHD_NO;
    }
    return send_buf(s, hr, c, 200, &b, "application/json");
}

/* Readiness for load balancers and Kubernetes probes: 503 while draining, without a model, or
 * (state mode) while the registry cannot be read — a node that cannot check keys or see tenant
 * changes should get no traffic. The registry check is one indexed read (the generation). */
static enum MHD_Result route_health(struct realm_server *s, struct http_req *hr,
                                    struct MHD_Connection *c) {
    struct realm_buf b = {0};
    bool draining = atomic_load(&s->draining);
    struct realm_registry *reg = srv_state_registry(s);
    uint64_t gen = 0;
    bool reg_ok = !reg || realm_registry_generation(reg, &gen, NULL) == REALM_OK;
    bool ready = !draining && reg_ok && s->cfg->n_models > 0;
    const char *status = draining ? "draining" : ready ? "ok" : "unavailable";
    if (realm_buf_printf(&b,
                         "{\"status\":\"%s\",\"ready\":%s,\"registry\":\"%s\",\"uptime_s\":%.3f,"
                         "\"active\":%lld,\"models\":",
                         status, ready ? "true" : "false",
                         !reg     ? "none"
                         : reg_ok ? "ok"
                                  : "unreachable",
                         realm_now_s() - s->t_start, (long long)atomic_load(&s->metrics.active)) ||
        realm_buf_printf(&b, "%zu,\"tenants\":%zu}\n", s->cfg->n_models, s->n_tenants)) {
        realm_buf_free(&b);
        return MHD_NO;
    }
    return send_buf(s, hr, c, ready ? 200 : 503, &b, "application/json");
}

static enum MHD_Result route_metrics(struct realm_server *s, struct http_req *hr,
                                     struct MHD_Connection *c) {
    /* public (if configured) or an operator key: everything; a tenant key: its own series only */
    const struct srv_tenant *only = s->cfg->metrics_public || hr->admin ? NULL : hr->tenant;
    struct realm_buf b = {0};
    if (srv_metrics_render(s, &b, only)) {
        realm_buf_free(&b);
        return MHD_NO;
    }
    return send_buf(s, hr, c, 200, &b, "text/plain; version=0.0.4; charset=utf-8");
}

static const struct realm_tokenizer *tokenizer_of(void *ctx, size_t model) {
    return srv_backend_tokenizer(ctx, model);
}

/* POST /tokenize, /detokenize: host work on the connection's thread, bounded by max_body_bytes
 * (no tokens are generated, so nothing is charged against tokens_per_minute). */
static enum MHD_Result route_tokenize(struct realm_server *s, struct http_req *hr,
                                      struct MHD_Connection *c, bool detokenize) {
    struct srv_error e;
    if (!need_tenant(hr, &e)) return send_error(s, hr, c, &e);
    struct realm_buf b = {0};
    const char *body = hr->body.data ? hr->body.data : "";
    if (srv_tokenize(s->cfg, hr->tenant->spec, tokenizer_of, s->backend, detokenize, body,
                     hr->body.len, &b, &e)) {
        realm_buf_free(&b);
        return send_error(s, hr, c, &e);
    }
    return send_buf(s, hr, c, 200, &b, "application/json");
}

/* The admin API and guest deployment (admin.c), state mode only. */
static enum MHD_Result route_admin(struct realm_server *s, struct http_req *hr,
                                   struct MHD_Connection *c, const char *url, const char *method) {
    struct srv_admin_args a = {
        .tenant = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "tenant"),
        .since = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "since"),
        .until = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "until"),
        .format = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "format")};
    struct srv_error e;
    struct realm_buf b = {0};
    const char *ctype = "application/json";
    const char *body = hr->body.data ? hr->body.data : "";
    int status = srv_admin_route(s, method, url, hr->tenant, hr->admin, body, hr->body.len, &a, &b,
                                 &ctype, &e);
    realm_buf_free(&hr->body);
    if (status < 0) {
        realm_buf_free(&b);
        return send_error(s, hr, c, &e);
    }
    if (!b.data && realm_buf_puts(&b, "")) return MHD_NO;
    return send_buf(s, hr, c, status, &b, ctype);
}

/* Guest uploads may be larger than any JSON body: they get max_guest_bytes. */
static bool is_upload(const char *url, const char *method) {
    if (strcmp(method, "PUT")) return false;
    size_t n = strlen(url);
    return !strcmp(url, "/v1/guest") ||
           (!strncmp(url, "/admin/v1/tenants/", 18) && n > 6 && !strcmp(url + n - 6, "/guest"));
}

static enum srv_endpoint endpoint_of(const char *url) {
    if (!strcmp(url, "/v1/chat/completions")) return SRV_EP_CHAT;
    if (!strcmp(url, "/v1/completions")) return SRV_EP_COMPLETIONS;
    if (!strcmp(url, "/v1/models") || !strncmp(url, "/v1/models/", 11)) return SRV_EP_MODELS;
    if (!strcmp(url, "/health")) return SRV_EP_HEALTH;
    if (!strcmp(url, "/metrics")) return SRV_EP_METRICS;
    if (!strcmp(url, "/tokenize")) return SRV_EP_TOKENIZE;
    if (!strcmp(url, "/detokenize")) return SRV_EP_DETOKENIZE;
    if (!strncmp(url, "/admin/", 7)) return SRV_EP_ADMIN;
    if (!strcmp(url, "/v1/guest") || !strncmp(url, "/v1/guest/", 10)) return SRV_EP_GUEST;
    if (!strcmp(url, "/v1/embeddings")) return SRV_EP_EMBEDDINGS;
    if (!strcmp(url, "/infer")) return SRV_EP_INFER;
    if (!strcmp(url, "/embed")) return SRV_EP_EMBED;
    return SRV_EP_OTHER;
}

static enum MHD_Result method_not_allowed(struct realm_server *s, struct http_req *hr,
                                          struct MHD_Connection *c, const char *method,
                                          const char *url) {
    struct srv_error e;
    srv_error_set(&e, 405, "invalid_request_error", "method_not_allowed", NULL,
                  "%.16s is not allowed on %.200s.", method, url);
    return send_error(s, hr, c, &e);
}

static enum MHD_Result route(struct realm_server *s, struct http_req *hr, struct MHD_Connection *c,
                             const char *url, const char *method) {
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    switch (hr->ep) {
    case SRV_EP_CHAT:
    case SRV_EP_COMPLETIONS:
        if (!post) return method_not_allowed(s, hr, c, method, url);
        return route_generate(s, hr, c, hr->ep == SRV_EP_CHAT ? SRV_CHAT : SRV_COMPLETION);
    case SRV_EP_MODELS:
        if (!get) return method_not_allowed(s, hr, c, method, url);
        return route_models(s, hr, c, url[10] == '/' ? url + 11 : NULL);
    case SRV_EP_HEALTH:
        if (!get) return method_not_allowed(s, hr, c, method, url);
        return route_health(s, hr, c);
    case SRV_EP_METRICS:
        if (!get) return method_not_allowed(s, hr, c, method, url);
        return route_metrics(s, hr, c);
    case SRV_EP_TOKENIZE:
    case SRV_EP_DETOKENIZE:
        if (!post) return method_not_allowed(s, hr, c, method, url);
        return route_tokenize(s, hr, c, hr->ep == SRV_EP_DETOKENIZE);
    case SRV_EP_ADMIN:
    case SRV_EP_GUEST:
        return route_admin(s, hr, c, url, method);
    case SRV_EP_EMBEDDINGS:
    case SRV_EP_EMBED:
        if (!post) return method_not_allowed(s, hr, c, method, url);
        return route_embed(s, hr, c, hr->ep == SRV_EP_EMBED ? SRV_EMBED_SPIN : SRV_EMBED_OPENAI);
    case SRV_EP_INFER:
        if (!post) return method_not_allowed(s, hr, c, method, url);
        return route_infer(s, hr, c);
    default: {
        struct srv_error e;
        srv_error_set(&e, 404, "invalid_request_error", "not_found", NULL,
                      "Unknown request URL: %.16s %.200s.", method, url);
        return send_error(s, hr, c, &e);
    }
    }
}

static enum MHD_Result too_large(struct realm_server *s, struct http_req *hr,
                                 struct MHD_Connection *c) {
    struct srv_error e;
    srv_error_set(&e, 413, "invalid_request_error", "request_too_large", NULL,
                  "The request body is larger than this server's limit of %zu bytes.",
                  hr->body_max);
    hr->responded = true;
    realm_buf_free(&hr->body);
    return send_error(s, hr, c, &e);
}

/* A client that sends a too-large body without waiting for "100 Continue" would see its
 * connection reset if we answered and closed at once, so the rest of its body is read and
 * dropped, up to this much; beyond it the 413 goes out immediately and the connection closes. */
#define DRAIN_MAX_BYTES (64u << 20)

static bool expects_continue(struct MHD_Connection *c) {
    const char *e = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    return e && !strcasecmp(e, "100-continue");
}

/* Routes that need a key: everything but /health, and /metrics unless it is public. Unknown
 * routes too, so that probing for routes needs a key. */
static bool needs_key(const struct realm_server *s, enum srv_endpoint ep) {
    if (ep == SRV_EP_HEALTH) return false;
    if (ep == SRV_EP_METRICS) return !s->cfg->metrics_public;
    return true;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)version;
    struct realm_server *s = cls;
    struct http_req *hr = *con_cls;
    if (!hr) { /* first call: headers only */
        hr = realm_calloc(1, sizeof *hr);
        if (!hr) return MHD_NO;
        hr->ep = endpoint_of(url);
        hr->t_begin = realm_now_s();
        hr->body_max =
            s->state && is_upload(url, method) ? s->cfg->max_guest_bytes : s->cfg->max_body_bytes;
        *con_cls = hr;
        /* the key is checked from the headers, before a single body byte is kept: a client without
         * a valid key cannot make the server buffer anything */
        if (needs_key(s, hr->ep)) {
            struct srv_error e;
            if (!authenticate(s, c, &hr->tenant, &hr->admin, hr->key_label, sizeof hr->key_label,
                              &e)) {
                hr->responded = true;
                return send_error(s, hr, c, &e);
            }
        }
        const char *cl =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno || *end || n > hr->body_max) {
                hr->too_large = true;
                if (expects_continue(c) || errno || *end || n > DRAIN_MAX_BYTES)
                    return too_large(s, hr, c);
            }
        }
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (hr->responded) return MHD_YES;
        if (realm_now_s() - hr->t_begin >
            s->cfg->read_timeout_s) { /* a body trickled in too slowly */
            struct srv_error e;
            srv_error_set(&e, 408, "invalid_request_error", "request_timeout", NULL,
                          "The request body did not arrive within %.0f seconds.",
                          s->cfg->read_timeout_s);
            hr->responded = true;
            realm_buf_free(&hr->body);
            return send_error(s, hr, c, &e);
        }
        if (!hr->too_large && hr->body.len + n > hr->body_max) {
            hr->too_large = true;
            realm_buf_free(&hr->body);
        }
        if (hr->too_large) {
            hr->drained += n;
            return hr->drained > DRAIN_MAX_BYTES ? too_large(s, hr, c) : MHD_YES;
        }
        if (realm_buf_append(&hr->body, upload, n)) return MHD_NO;
        return MHD_YES;
    }
    if (hr->responded) return MHD_YES;
    if (hr->too_large) return too_large(s, hr, c);
    return route(s, hr, c, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    struct realm_server *s = cls;
    struct http_req *hr = *con_cls;
    if (!hr) return;
    if (hr->job) {
        if (toe ==
            MHD_REQUEST_TERMINATED_COMPLETED_OK) { /* back to the idle limit between requests */
            MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
            MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, read_timeout(s));
        }
        struct srv_job *j = hr->job;
        pthread_mutex_lock(&j->mu);
        bool done = j->done;
        pthread_mutex_unlock(&j->mu);
        /* MHD's timer ran out while a stream was being written: the reader stopped taking it for
         * stream_stall_s (arm_stall_timer), which is a stall whichever side noticed it first */
        if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED && j->req.stream && j->sse_phase != 0)
            srv_job_count_stall(j);
        if (toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN)
            job_cancel(j);
        else if (!done || toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
            client_left(j);
        srv_reply_done(j->srv);
        srv_job_unref(j);
    }
    realm_buf_free(&hr->body);
    realm_free(hr);
    *con_cls = NULL;
}

/* MHD's logger hands us its own printf format. */
__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = '\0';
    realm_log(REALM_LOG_INFO, "http", "%s", msg);
}

/* ---- start / stop ---- */

static int open_listener(struct realm_server *s, struct realm_err *err) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char port[8];
    snprintf(port, sizeof port, "%u", (unsigned)s->cfg->port);
    int g = getaddrinfo(s->cfg->host, port, &hints, &res);
    if (g)
        return realm_err_set(err, REALM_E_IO, "server: cannot resolve host '%s': %s", s->cfg->host,
                             gai_strerror(g));
    int fd = -1, e = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        /* accepted sockets inherit this: a small send buffer makes a client that stops reading a
         * stream show as a stall after ~64 KiB instead of after the several MiB the kernel would
         * otherwise queue (which on loopback outlasts a whole generation) */
        int sndbuf = 64 * 1024;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 256) == 0) break;
        e = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return realm_err_set(err, REALM_E_IO, "server: cannot listen on %s:%u: %s", s->cfg->host,
                             (unsigned)s->cfg->port, strerror(e));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    s->listen_fd = fd;
    return REALM_OK;
}

int http_start(struct realm_server *s, struct realm_err *err) {
    int rc = open_listener(s, err);
    if (rc) return rc;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    s->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)s->listen_fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)s->cfg->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)s->cfg->max_connections_per_ip, MHD_OPTION_CONNECTION_TIMEOUT, read_timeout(s),
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)(64 * 1024), MHD_OPTION_END);
    if (!s->mhd) {
        close(s->listen_fd);
        s->listen_fd = -1;
        return realm_err_set(err, REALM_E_INTERNAL,
                             "server: libmicrohttpd failed to start on %s:%u", s->cfg->host,
                             (unsigned)s->port);
    }
    realm_log(REALM_LOG_INFO, "server", "listening on %s:%u", s->cfg->host, (unsigned)s->port);
    return REALM_OK;
}

void http_quiesce(struct realm_server *s) {
    if (!s->mhd || s->quiesced) return;
    MHD_quiesce_daemon(s->mhd); /* returns our listen_fd, which we close after the stop */
    s->quiesced = true;
    /* quiesce only stops accepting: new clients would sit in the backlog until the process
     * exits. Shutting the listening socket down refuses them now (it is closed after the stop,
     * as MHD requires). */
    if (s->listen_fd >= 0) shutdown(s->listen_fd, SHUT_RDWR);
}

void http_stop(struct realm_server *s) {
    if (s->mhd) {
        MHD_stop_daemon(s->mhd);
        s->mhd = NULL;
        /* MHD closes the listening socket itself unless it was quiesced */
        if (s->quiesced && s->listen_fd >= 0) close(s->listen_fd);
        s->listen_fd = -1;
    }
}
