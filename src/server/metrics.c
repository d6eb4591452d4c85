/*
 * metrics.c — Prometheus text exposition (format 0.0.4) of the server's counters: HTTP requests
 * by endpoint and status, requests active/queued/running, tokens in and out, time to first
 * token, per-tenant counters, and what the backend knows (scheduler batch sizes, KV use,
 * sessions and guest instances).
 *
 * Thread rule: counters are atomics updated anywhere; rendering reads them without a lock (each
 * value is consistent on its own, the set is not a snapshot).
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "realm/alloc.h"
#include "realm/status.h"
#include "server/srv.h"

/* histogram bucket upper bounds, seconds */
static const double g_bounds[SRV_HIST_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                  1,     2.5,  5,     10,   30,  60,   300};

void srv_hist_observe(struct srv_hist *h, double s) {
    int i = 0;
    while (i < SRV_HIST_BUCKETS && s > g_bounds[i])
        i++;
    atomic_fetch_add(&h->counts[i], 1);
    atomic_fetch_add(&h->sum_us, (int64_t)(s * 1e6));
    atomic_fetch_add(&h->n, 1);
}

static const int g_codes[SRV_CODES_N - 1] = {200, 400, 401, 403, 404, 405, 413, 429, 499, 500, 503};
static const char *const g_ep_names[SRV_EP_COUNT] = {"chat_completions",
                                                     "completions",
                                                     "models",
                                                     "health",
                                                     "metrics",
                                                     "tokenize",
                                                     "detokenize",
                                                     "admin",
                                                     "guest",
                                                     "embeddings",
                                                     "infer",
                                                     "embed",
                                                     "other"};

void srv_metrics_http(struct srv_metrics *m, enum srv_endpoint ep, int status) {
    int i = 0;
    while (i < SRV_CODES_N - 1 && g_codes[i] != status)
        i++;
    atomic_fetch_add(&m->http[ep][i], 1);
}

static int label_value(struct realm_buf *b, const char *s) {
    int rc = realm_buf_puts(b, "\"");
    for (; *s && !rc; s++) {
        if (*s == '\\')
            rc = realm_buf_puts(b, "\\\\");
        else if (*s == '"')
            rc = realm_buf_puts(b, "\\\"");
        else if (*s == '\n')
            rc = realm_buf_puts(b, "\\n");
        else
            rc = realm_buf_append(b, s, 1);
    }
    return rc ? rc : realm_buf_puts(b, "\"");
}

static int header(struct realm_buf *b, const char *name, const char *type, const char *help) {
    return realm_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int scalar(struct realm_buf *b, const char *name, const char *type, const char *help,
                  double v) {
    return header(b, name, type, help) || realm_buf_printf(b, "%s %.17g\n", name, v) ? REALM_E_NOMEM
                                                                                     : REALM_OK;
}

static int hist(struct realm_buf *b, const char *name, const char *help, const struct srv_hist *h) {
    int rc = header(b, name, "histogram", help);
    int64_t cum = 0;
    for (int i = 0; i < SRV_HIST_BUCKETS && !rc; i++) {
        cum += atomic_load(&h->counts[i]);
        rc = realm_buf_printf(b, "%s_bucket{le=\"%g\"} %lld\n", name, g_bounds[i], (long long)cum);
    }
    cum += atomic_load(&h->counts[SRV_HIST_BUCKETS]);
    if (!rc)
        rc = realm_buf_printf(b, "%s_bucket{le=\"+Inf\"} %lld\n%s_sum %.6f\n%s_count %lld\n", name,
                              (long long)cum, name, (double)atomic_load(&h->sum_us) * 1e-6, name,
                              (long long)cum);
    return rc;
}

/* Per-tenant counter family: one line per tenant. `field` is the counter's offset in the stats. */
static int tenant_family(struct realm_buf *b, struct realm_server *s, const struct srv_tenant *only,
                         const char *name, const char *type, const char *help, size_t field) {
    int rc = header(b, name, type, help);
    for (size_t i = 0; i < s->n_tenants && !rc; i++) {
        if (only && &s->tenants[i] != only) continue;
        const _Atomic int64_t *v =
            (const _Atomic int64_t *)((const char *)&s->tenants[i].st + field);
        rc = realm_buf_printf(b, "%s{tenant=", name) || label_value(b, s->tenants[i].spec->id) ||
             realm_buf_printf(b, "} %lld\n", (long long)atomic_load(v));
    }
    return rc;
}

static long rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    long size = 0, res = 0;
    int n = fscanf(f, "%ld %ld", &size, &res);
    fclose(f);
    return n == 2 ? res * sysconf(_SC_PAGESIZE) : -1;
}

/* Tokens the scheduler ran per tenant (its share of the batched steps) and its step weight. */
static int render_tenant_sched(struct realm_server *s, struct realm_buf *b,
                               const struct srv_tenant *only) {
    /* one family per figure, labelled by tenant alone (a tenant's key sees {tenant="id"} only) */
    static const char *const names[3] = {"realm_tenant_sched_decode_tokens_total",
                                         "realm_tenant_sched_prefill_tokens_total",
                                         "realm_tenant_sched_weight"};
    static const char *const helps[3] = {
        "Decode tokens the batching scheduler ran per tenant (its share of the steps).",
        "Prompt tokens the batching scheduler ran per tenant.",
        "Each tenant's weight in the batched steps (deficit round robin)."};
    int rc = 0;
    for (int f = 0; f < 3 && !rc; f++) {
        rc = header(b, names[f], f < 2 ? "counter" : "gauge", helps[f]);
        for (size_t i = 0; i < s->n_tenants && !rc; i++) {
            if (only && &s->tenants[i] != only) continue;
            int64_t v[2];
            int32_t w;
            srv_backend_tenant_sched(s->backend, i, &v[0], &v[1], &w);
            rc = realm_buf_printf(b, "%s{tenant=", names[f]) ||
                 label_value(b, s->tenants[i].spec->id) ||
                 realm_buf_printf(b, "} %lld\n", f < 2 ? (long long)v[f] : (long long)w);
        }
    }
    return rc ? REALM_E_NOMEM : REALM_OK;
}

/* The per-tenant series: every tenant's, or (only != NULL) that tenant's alone. */
static int render_tenants(struct realm_server *s, struct realm_buf *b,
                          const struct srv_tenant *only) {
    int rc;
#define TF(name, type, help, field)                                                                \
    tenant_family(b, s, only, name, type, help, offsetof(struct srv_tenant_stats, field))
    rc = TF("realm_tenant_requests_total", "counter", "Admitted generation requests per tenant.",
            requests) ||
         TF("realm_tenant_requests_succeeded_total", "counter",
            "Requests that completed per tenant.", succeeded) ||
         TF("realm_tenant_requests_failed_total", "counter",
            "Requests that ended with an error per tenant.", failed) ||
         TF("realm_tenant_requests_cancelled_total", "counter", "Requests cancelled per tenant.",
            cancelled) ||
         TF("realm_tenant_rate_limited_total", "counter", "Requests refused with 429 per tenant.",
            rejected_limit) ||
         TF("realm_tenant_prompt_tokens_total", "counter", "Prompt tokens per tenant.",
            prompt_tokens) ||
         TF("realm_tenant_completion_tokens_total", "counter", "Completion tokens per tenant.",
            completion_tokens);
#undef TF
    if (rc) return REALM_E_NOMEM;
    rc = header(b, "realm_tenant_active_requests", "gauge", "Requests in flight per tenant.");
    for (size_t i = 0; i < s->n_tenants && !rc; i++) {
        struct srv_tenant *t = &s->tenants[i];
        if (only && t != only) continue;
        pthread_mutex_lock(&t->mu);
        int32_t a = t->active;
        pthread_mutex_unlock(&t->mu);
        rc = realm_buf_puts(b, "realm_tenant_active_requests{tenant=") ||
             label_value(b, t->spec->id) || realm_buf_printf(b, "} %d\n", a);
    }
    if (rc) return REALM_E_NOMEM;
    if (s->backend) {
        rc = header(b, "realm_tenant_kv_blocks", "gauge",
                    "KV cache blocks held by each tenant's sessions.");
        for (size_t i = 0; i < s->n_tenants && !rc; i++)
            if (!only || &s->tenants[i] == only)
                rc = realm_buf_puts(b, "realm_tenant_kv_blocks{tenant=") ||
                     label_value(b, s->tenants[i].spec->id) ||
                     realm_buf_printf(b, "} %d\n", srv_backend_tenant_kv_blocks(s->backend, i));
        if (rc) return REALM_E_NOMEM;
        if ((rc = render_tenant_sched(s, b, only))) return rc;
        int64_t mem[2];
        rc = header(
            b, "realm_tenant_host_memory_bytes", "gauge",
            "Host memory each tenant's guests hold through imports (charged to its budget).");
        for (size_t i = 0; i < s->n_tenants && !rc; i++)
            if (!only || &s->tenants[i] == only) {
                srv_backend_tenant_host_memory(s->backend, i, &mem[0], &mem[1]);
                rc = realm_buf_puts(b, "realm_tenant_host_memory_bytes{tenant=") ||
                     label_value(b, s->tenants[i].spec->id) ||
                     realm_buf_printf(b, "} %lld\n", (long long)mem[0]);
            }
        rc =
            rc ||
            header(b, "realm_tenant_host_memory_refused_total", "counter",
                   "Host allocations refused because the tenant's host memory budget was used up.");
        for (size_t i = 0; i < s->n_tenants && !rc; i++)
            if (!only || &s->tenants[i] == only) {
                srv_backend_tenant_host_memory(s->backend, i, &mem[0], &mem[1]);
                rc = realm_buf_puts(b, "realm_tenant_host_memory_refused_total{tenant=") ||
                     label_value(b, s->tenants[i].spec->id) ||
                     realm_buf_printf(b, "} %lld\n", (long long)mem[1]);
            }
        if (rc) return REALM_E_NOMEM;
    }

    return REALM_OK;
}

int srv_metrics_render(struct realm_server *s, struct realm_buf *b, const struct srv_tenant *only) {
    /* a tenant's key sees its own series and nothing that tells about the server or other tenants
     */
    if (only) return render_tenants(s, b, only);
    struct srv_metrics *m = &s->metrics;
    int rc = header(b, "realm_http_requests_total", "counter",
                    "HTTP requests by endpoint and status code.");
    for (int e = 0; e < SRV_EP_COUNT && !rc; e++)
        for (int c = 0; c < SRV_CODES_N && !rc; c++) {
            int64_t v = atomic_load(&m->http[e][c]);
            if (!v) continue;
            if (c < SRV_CODES_N - 1)
                rc = realm_buf_printf(
                    b, "realm_http_requests_total{endpoint=\"%s\",code=\"%d\"} %lld\n",
                    g_ep_names[e], g_codes[c], (long long)v);
            else
                rc = realm_buf_printf(
                    b, "realm_http_requests_total{endpoint=\"%s\",code=\"other\"} %lld\n",
                    g_ep_names[e], (long long)v);
        }
    if (rc) return rc;
    rc = scalar(b, "realm_requests_active", "gauge",
                "Admitted generation requests not finished (queued or running).",
                (double)atomic_load(&m->active)) ||
         scalar(b, "realm_requests_running", "gauge", "Generation requests running in a guest now.",
                (double)atomic_load(&m->running)) ||
         scalar(b, "realm_requests_queued", "gauge", "Generation requests waiting for a worker.",
                (double)atomic_load(&m->queued)) ||
         scalar(b, "realm_streams_open", "gauge", "SSE responses being written.",
                (double)atomic_load(&m->streams_open)) ||
         scalar(b, "realm_prompt_tokens_total", "counter", "Prompt tokens processed (tokens in).",
                (double)atomic_load(&m->tokens_in)) ||
         scalar(b, "realm_completion_tokens_total", "counter",
                "Completion tokens generated (tokens out).", (double)atomic_load(&m->tokens_out)) ||
         scalar(b, "realm_requests_cancelled_total", "counter",
                "Generation requests cancelled (client gone or shutdown).",
                (double)atomic_load(&m->cancelled)) ||
         scalar(b, "realm_client_disconnects_total", "counter",
                "Clients that went away before their response ended.",
                (double)atomic_load(&m->disconnects)) ||
         scalar(b, "realm_requests_rejected_busy_total", "counter",
                "Requests refused with 503 because the queue was full.",
                (double)atomic_load(&m->rejected_busy)) ||
         scalar(b, "realm_streams_stalled_total", "counter",
                "Streams cancelled because their client stopped reading.",
                (double)atomic_load(&m->stalled)) ||
         hist(b, "realm_time_to_first_token_seconds", "From admission to the first emitted text.",
              &m->ttft) ||
         hist(b, "realm_request_duration_seconds", "From admission to the end of generation.",
              &m->duration) ||
         hist(b, "realm_queue_wait_seconds", "From admission to a worker picking the request up.",
              &m->queue_wait);
    if (rc) return REALM_E_NOMEM;

    if ((rc = render_tenants(s, b, NULL))) return rc;

    struct srv_backend_stats bs;
    memset(&bs, 0, sizeof bs);
    if (s->backend) srv_backend_stats_get(s->backend, &bs);
    if (bs.have_sched) {
        static const char *const le[10] = {"1",  "2",  "4",   "8",   "16",
                                           "32", "64", "128", "256", "+Inf"};
        rc = header(b, "realm_batch_rows", "histogram", "Rows (tokens) per batched forward step.");
        int64_t cum = 0;
        for (int i = 0; i < 10 && !rc; i++) {
            cum += bs.batch_hist[i];
            rc = realm_buf_printf(b, "realm_batch_rows_bucket{le=\"%s\"} %lld\n", le[i],
                                  (long long)cum);
        }
        rc = rc || realm_buf_printf(b, "realm_batch_rows_sum %lld\nrealm_batch_rows_count %lld\n",
                                    (long long)bs.rows, (long long)bs.steps);
        rc =
            rc ||
            scalar(b, "realm_sched_steps_total", "counter", "Batched forward steps.",
                   (double)bs.steps) ||
            scalar(b, "realm_sched_decode_rows_total", "counter", "Decode rows run.",
                   (double)bs.decode_rows) ||
            scalar(b, "realm_sched_prefill_rows_total", "counter", "Prefill rows run.",
                   (double)bs.prefill_rows) ||
            scalar(b, "realm_sched_queue_depth", "gauge", "Decode requests waiting for a step.",
                   (double)bs.queue_depth) ||
            scalar(b, "realm_sched_busy_seconds_total", "counter",
                   "Time spent inside batched forwards.", bs.busy_seconds) ||
            scalar(b, "realm_sched_prefix_tokens_total", "counter",
                   "Prompt tokens served from cached KV blocks.", (double)bs.prefix_tokens) ||
            scalar(b, "realm_sched_kv_refused_total", "counter",
                   "Decode calls refused KV blocks (tenant quota or pool exhausted).",
                   (double)bs.kv_refused) ||
            scalar(b, "realm_sched_admission_queue_depth", "gauge",
                   "New sequences waiting for admission (max_active_sequences).",
                   (double)bs.admission_waiting) ||
            scalar(b, "realm_sched_active_sequences", "gauge",
                   "Sequences counted against max_active_sequences.",
                   (double)bs.active_sequences) ||
            scalar(b, "realm_sched_admitted_total", "counter",
                   "New sequences admitted through the admission queue.", (double)bs.admitted) ||
            scalar(b, "realm_sched_admission_wait_seconds_total", "counter",
                   "Time new sequences spent in the admission queue.", bs.admission_wait_seconds) ||
            scalar(b, "realm_sched_admission_wait_seconds_max", "gauge",
                   "The longest admission wait so far.", bs.admission_wait_max_s) ||
            scalar(b, "realm_sched_prompts_total", "counter",
                   "Prompt requests (more than one token) that got their first logits.",
                   (double)bs.prompts_done) ||
            scalar(b, "realm_sched_prompt_steps_total", "counter",
                   "Steps from queued to first logits, summed over prompt requests.",
                   (double)bs.prompt_steps_total) ||
            scalar(b, "realm_sched_prompt_steps_max", "gauge",
                   "The most steps one prompt request waited for its first logits.",
                   (double)bs.prompt_steps_max) ||
            scalar(b, "realm_sched_prompt_seconds_total", "counter",
                   "Time from the decode call (admission included) to first logits, summed.",
                   bs.prompt_seconds_total);
        if (rc) return REALM_E_NOMEM;
    }
    if (bs.have_kv) {
        rc =
            header(b, "realm_kv_blocks", "gauge",
                   "Paged KV cache blocks by state: used (held by sessions), cached (reusable "
                   "prefix, held by "
                   "none), free.") ||
            realm_buf_printf(
                b,
                "realm_kv_blocks{state=\"used\"} %lld\nrealm_kv_blocks{state=\"cached\"} %lld\n"
                "realm_kv_blocks{state=\"free\"} %lld\n",
                (long long)bs.kv_used, (long long)bs.kv_cached, (long long)bs.kv_free) ||
            scalar(b, "realm_kv_blocks_total", "gauge", "Blocks in the KV pools.",
                   (double)bs.kv_blocks) ||
            scalar(b, "realm_kv_prefix_hit_blocks_total", "counter",
                   "KV blocks attached from a tenant's prefix cache.", (double)bs.kv_prefix_hits) ||
            scalar(b, "realm_kv_cow_copies_total", "counter",
                   "Shared KV blocks copied before a write.", (double)bs.kv_cow) ||
            scalar(b, "realm_kv_evictions_total", "counter",
                   "Cached KV blocks reclaimed for new use.", (double)bs.kv_evictions) ||
            scalar(b, "realm_kv_resident_bytes", "gauge",
                   "Bytes of KV pool memory ever written (resident; follows the peak number of "
                   "blocks in use).",
                   (double)bs.kv_resident_bytes);
        if (rc) return REALM_E_NOMEM;
    }
    if (s->backend && (scalar(b, "realm_guest_instances", "gauge",
                              "Guest instances alive (idle + busy).", (double)bs.instances) ||
                       scalar(b, "realm_guest_instances_busy", "gauge",
                              "Guest instances running a request.", (double)bs.instances_busy) ||
                       scalar(b, "realm_guest_idle_sessions", "gauge",
                              "Sessions (KV caches) left open by finished requests in idle "
                              "instances; 0 unless a guest leaks.",
                              (double)bs.idle_sessions) ||
                       scalar(b, "realm_guest_idle_kv_bytes", "gauge",
                              "KV cache bytes held by idle instances.", (double)bs.idle_kv_bytes)))
        return REALM_E_NOMEM;
    if (scalar(b, "realm_uptime_seconds", "gauge", "Seconds since the server started.",
               realm_now_s() - s->t_start) ||
        scalar(b, "realm_alloc_bytes", "gauge", "Bytes allocated through realm_malloc.",
               (double)realm_alloc_bytes_in_use()) ||
        scalar(b, "realm_resident_memory_bytes", "gauge", "Resident set size of the process.",
               (double)rss_bytes()))
        return REALM_E_NOMEM;
    return REALM_OK;
}
