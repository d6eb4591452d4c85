/*
 * srv.h — internals of the HTTP server (src/server/): byte buffers and JSON output helpers,
 * OpenAI error values, the parsed request, tenants (auth + limits), metrics, the generation job
 * and the server object. The public surface is include/realm/server.h.
 *
 * Thread rule: stated per struct below. Counters are atomics; everything else that several
 * threads touch is behind the mutex named next to it.
 */
#ifndef REALM_SERVER_SRV_H
#define REALM_SERVER_SRV_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "realm/buf.h"
#include "realm/clock.h"
#include "realm/sandbox.h"
#include "realm/server.h"
#include "server/backend.h"

struct MHD_Connection;

/* ---- util.c: clocks, error bodies (buffers: realm_buf, include/realm/buf.h) ---- */
int64_t srv_unix_time(void); /* wall-clock seconds (the "created" field) */

/* ---- an OpenAI-shaped error: {"error": {"message", "type", "param", "code"}} ---- */
struct srv_error {
    int http;         /* status code */
    const char *type; /* "invalid_request_error", "authentication_error", ... (static) */
    const char *code; /* static or NULL */
    char param[64];   /* the parameter at fault, copied ("" for none: param null) */
    int retry_after;  /* seconds for 429/503 (0: no header) */
    char message[512];
};
/* Fills e and returns -1 (so callers can `return srv_error_set(...)`). */
int srv_error_set(struct srv_error *e, int http, const char *type, const char *code,
                  const char *param, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* The error's JSON body (malloc'd through realm_malloc, NUL-terminated) or NULL on NOMEM. */
char *srv_error_json(const struct srv_error *e, size_t *len);

/* ---- openai.c: request validation and response bodies ---- */
enum srv_kind { SRV_CHAT = 0, SRV_COMPLETION = 1 };

struct srv_request {
    enum srv_kind kind;
    size_t model; /* index into cfg->models */
    bool stream;
    bool include_usage; /* stream_options.include_usage */
    int32_t max_tokens; /* resolved: request, else the tenant cap, else 0 (= up to the context) */
    bool tools; /* a chat that offered tools (tool_choice not "none"): may answer with tool calls */
    bool logprobs;        /* the client asked for each token's log-probability */
    int32_t top_logprobs; /* and this many alternatives per token */
    int32_t n;            /* choices (1..cfg->max_choices; no logprobs or tools with n > 1) */
    char *guest_json;     /* what the guest reads with request_read (realm_malloc'd) */
    size_t guest_len;
    char key_label[129]; /* state mode: the label of the key that made the request (for the ledger)
                          */
};

/* Parses and validates an OpenAI request body for `kind` on behalf of tenant `t` (model access,
 * max_tokens cap) and builds the guest request. Unknown fields, and known ones this server does not
 * honour yet, are refused (400 naming the field) rather than ignored.
 * Returns 0, or -1 with *e set (400 bad JSON/types/values, 404 unknown model, 403 model not
 * allowed, 500 out of memory). */
int srv_request_parse(const struct realm_server_config *cfg, const struct realm_tenant_spec *t,
                      enum srv_kind kind, const char *body, size_t len, struct srv_request *out,
                      struct srv_error *e);
void srv_request_free(struct srv_request *r);

/* ---- keys.c ---- */
/* Decodes 64 hex characters into 32 bytes; -1 if malformed. */
int srv_hex_decode32(const char *hex, unsigned char out[32]);
/* True if sha256(key) equals one of the n digests; every digest is compared (CRYPTO_memcmp), so
 * the time taken does not depend on which one matched or where a mismatch starts. */
bool srv_key_matches(const unsigned char digest[32], const unsigned char (*hashes)[32], size_t n);
void srv_sha256(const void *data, size_t len, unsigned char out[32]);

/* ---- metrics.c ---- */
#define SRV_HIST_BUCKETS 14
struct srv_hist {
    _Atomic int64_t counts[SRV_HIST_BUCKETS + 1]; /* the last is +Inf */
    _Atomic int64_t sum_us;
    _Atomic int64_t n;
};
void srv_hist_observe(struct srv_hist *h, double seconds);

enum srv_endpoint {
    SRV_EP_CHAT,
    SRV_EP_COMPLETIONS,
    SRV_EP_MODELS,
    SRV_EP_HEALTH,
    SRV_EP_METRICS,
    SRV_EP_TOKENIZE,
    SRV_EP_DETOKENIZE,
    SRV_EP_ADMIN,
    SRV_EP_GUEST,
    SRV_EP_EMBEDDINGS, /* /v1/embeddings */
    SRV_EP_INFER,      /* Spin's /infer */
    SRV_EP_EMBED,      /* Spin's /embed */
    SRV_EP_OTHER,
    SRV_EP_COUNT
};
#define SRV_CODES_N 12 /* 200 400 401 403 404 405 413 429 499 500 503 other */

struct srv_tenant_stats {
    _Atomic int64_t requests; /* admitted (passed auth, validation and limits) */
    _Atomic int64_t succeeded, failed, cancelled;
    _Atomic int64_t rejected_limit; /* 429 */
    _Atomic int64_t prompt_tokens, completion_tokens;
};

struct srv_metrics {
    _Atomic int64_t http[SRV_EP_COUNT][SRV_CODES_N];
    _Atomic int64_t active;       /* admitted requests not finished (queued + running) */
    _Atomic int64_t running;      /* on a worker now */
    _Atomic int64_t queued;       /* waiting for a worker */
    _Atomic int64_t streams_open; /* SSE responses being written */
    _Atomic int64_t tokens_in, tokens_out;
    _Atomic int64_t cancelled, disconnects, rejected_busy;
    _Atomic int64_t stalled;    /* streams cancelled because their client stopped reading */
    struct srv_hist ttft;       /* admission → first emitted text */
    struct srv_hist duration;   /* admission → done */
    struct srv_hist queue_wait; /* admission → worker start */
};
void srv_metrics_http(struct srv_metrics *m, enum srv_endpoint ep, int status);

/* ---- tenants.c ---- */
/* Thread rule: mu guards active and the token window; stats are atomics. */
struct srv_tenant {
    /* config mode: the config's entry, fixed. State mode: built from the registry and replaced
     * whole (an atomic store) when the registry changes; a replaced spec is retired, not freed,
     * until the server stops (readers may still hold it) — see state.c. */
    const struct realm_tenant_spec *_Atomic spec;
    atomic_bool removed; /* state mode: deleted from the registry (keys no longer match) */
    size_t index;
    unsigned char (*keys)[32]; /* decoded key_hashes */
    size_t n_keys;
    pthread_mutex_t mu;
    int32_t active;      /* admitted, response not closed yet */
    int64_t reserved;    /* tokens reserved by admitted requests not settled yet */
    int64_t win_sec[60]; /* tokens charged per monotonic second (ring indexed by sec % 60) */
    int64_t win_tok[60];
    struct srv_tenant_stats st;
};

/* The tenant slots: config mode one per config tenant (all filled); state mode
 * cfg->max_tenants, filled as the registry's tenants appear (state.c, srv_tenant_slot_init). */
int srv_tenants_init(struct srv_tenant **out, const struct realm_server_config *cfg,
                     struct realm_err *err);
void srv_tenant_slot_init(struct srv_tenant *t, size_t index, const struct realm_tenant_spec *spec);
void srv_tenants_free(struct srv_tenant *t, size_t n);
/* The tenant whose key is `key` (from "Authorization: Bearer <key>"), or NULL. */
struct srv_tenant *srv_tenant_auth(struct srv_tenant *t, size_t n, const char *key, size_t key_len);
/* Admission: takes a concurrency slot and reserves `want` tokens (the request's max_tokens,
 * clamped to tokens_per_minute) unless the tenant is at max_concurrent or the tokens charged in
 * the last minute plus those reserved by its requests in flight plus `want` exceed
 * tokens_per_minute. On success *reserved is what was reserved (settle it with
 * srv_tenant_settle). Returns 0, or -1 with a 429 in *e (Retry-After set). */
int srv_tenant_admit(struct srv_tenant *t, int64_t want, int64_t *reserved, struct srv_error *e);
/* A request ended: drops its reservation and charges what it really used to the minute window. */
void srv_tenant_settle(struct srv_tenant *t, int64_t reserved, int64_t tokens);
/* Gives the concurrency slot back (the request's response is closed). */
void srv_tenant_slot_release(struct srv_tenant *t);

/* ---- server.c: jobs and the server ---- */
struct realm_server;

/* One admitted generation request. Shared by the connection thread (HTTP side), a worker
 * thread (guest side) and, for streams, MHD's content reader: refs counts them; the last
 * unref frees. mu/cv guard everything below them. */
/* One sampled token's logprobs() record (ids[0] the token, then the alternatives best first). */
struct srv_logprob {
    const struct realm_tokenizer *tok;
    int32_t n;
    int32_t ids[REALM_ABI_MAX_TOP_LOGPROBS + 1];
    float lps[REALM_ABI_MAX_TOP_LOGPROBS + 1];
};

struct srv_job {
    atomic_int refs;
    struct realm_sbx_request sreq; /* what the guest runs on; its cancel flag is the job's */
    atomic_bool client_gone;       /* the client left before its response ended (counted once) */
    atomic_bool stalled; /* cut because its reader stopped taking the stream (counted once) */
    struct realm_server *srv;
    struct srv_tenant *tenant;
    int64_t reserved; /* tokens reserved at admission, settled when the guest is done */
    bool holds_slot;  /* admitted: job_free releases the tenant's concurrency slot */
    struct srv_request req;
    char id[48];
    int64_t created;
    double t_admit, t_start, t_first, t_end;
    int fd;                        /* the client's socket, polled for hang-up while we wait */
    struct srv_job *qnext;         /* worker queue link (under the server's qmu) */
    struct srv_job *lprev, *lnext; /* live list (under the server's live_mu) */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct realm_buf pending; /* emitted text not yet taken by the HTTP side; with n > 1
                                 choice records (srv_choice_record_append) */
    struct srv_logprob *lp;   /* the guest's logprobs() records (only when req.logprobs) */
    size_t lp_len, lp_cap;
    size_t lp_sent;      /* records already sent in stream chunks */
    char *tool_calls;    /* the guest's tool_calls() report (a JSON array), or NULL */
    int64_t lp_text_off; /* completions' text_offset of the next record */
    bool started, done, any_output;
    struct srv_gen_result result;

    /* SSE writer state (content reader thread only) */
    struct MHD_Connection
        *conn; /* the stream's connection (its stall timer is re-armed per chunk) */
    struct realm_buf sse;
    size_t sse_off;
    int sse_phase; /* 0: role chunk next, 1: streaming, 2: trailer queued, 3: end */
};

struct realm_server {
    const struct realm_server_config *cfg;
    unsigned char (*admin_keys)[32]; /* decoded admin_key_hashes */
    size_t n_admin_keys;
    struct MHD_Daemon *mhd;
    int listen_fd; /* after quiesce: closed once the daemon is stopped */
    uint16_t port;
    struct srv_backend *backend;
    struct srv_tenant *tenants; /* cap_tenants slots; the first n_tenants are in use */
    _Atomic size_t n_tenants;   /* grows in state mode (a slot is ready before it is counted) */
    size_t cap_tenants;
    struct srv_state *state; /* state mode (state.c); NULL in config mode */
    struct srv_metrics metrics;
    double t_start;
    atomic_bool draining; /* shutdown started: new requests get 503 */
    bool quiesced;        /* MHD stopped accepting (we then own listen_fd) */
    bool shut;

    /* worker pool; qmu guards the queue and stop */
    pthread_t *workers;
    int n_workers;
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    double last_trim;           /* when an idle worker last ran trim_idle (realm_now_s) */
    atomic_bool ran_since_trim; /* a request ran since then */
    struct srv_job *qhead, *qtail;
    int32_t qlen;
    int32_t n_idle; /* workers waiting for a job */
    bool stop_workers;

    /* every admitted job not yet finished (for shutdown); live_mu guards it */
    pthread_mutex_t live_mu;
    pthread_cond_t live_cv;
    struct srv_job *live;
    int64_t n_live;
    /* admitted jobs whose HTTP response has not completed yet: a finished job's stream may still
     * hold its last chunks and [DONE], so graceful shutdown waits for these too */
    int64_t n_replying;
};

/* ---- state.c: state mode — tenants, keys, guests and the usage ledger in the registry ---- */
struct srv_state;
struct srv_job;
/* Opens the registry of cfg->state_dir and loads its tenants into slots and backend pools.
 * Errors: the registry's (the message names the directory). */
int srv_state_open(struct realm_server *s, struct realm_err *err);
void srv_state_free(struct srv_state *st);
/* Brings the tenant slots, their limits, grants and active guests up to date with the registry
 * when it changed (its generation moved) since the last look; cheap otherwise. Any thread.
 * Errors: the registry's. */
int srv_state_sync(struct realm_server *s, struct realm_err *err);
/* Who is calling: an admin key (*admin) or a tenant key (*tenant, and its label in label[cap]).
 * Returns false with *e set: 401 for an unknown key, 503 when the registry cannot be read. */
bool srv_state_auth(struct realm_server *s, const char *key, size_t len, struct srv_tenant **tenant,
                    bool *admin, char *label, size_t cap, struct srv_error *e);
/* Appends the finished job to the usage ledger (what the host measured, on every outcome);
 * a failure is logged (the request's outcome does not change). */
void srv_state_record(struct realm_server *s, const struct srv_job *j, int status,
                      int64_t prompt_tokens, int64_t completion_tokens, double host_s);
/* The same for a host-only request (embeddings: no job, no guest): prompt tokens only, `outcome`
 * as the ledger spells it ("ok", "kv_full", "cancelled", "error"). */
void srv_state_record_host(struct realm_server *s, struct srv_tenant *t, size_t model,
                           const char *key_label, const char *outcome, int64_t prompt_tokens,
                           double host_s, double t_admit);
/* The registry (state mode; NULL otherwise). */
struct realm_registry *srv_state_registry(struct realm_server *s);

/* ---- config.c ---- */
struct cJSON;
/* Reads the limit fields present in o (realm.json's names: max_concurrent, tokens_per_minute,
 * max_tokens_per_request, guest_memory_mb, kv_blocks, init_wall_ms, generate_wall_ms,
 * host_memory_mb) into l, leaving the others; unknown names are errors. `what` names o in
 * messages. Errors: REALM_E_FORMAT. */
int srv_config_parse_limits(struct realm_tenant_limits *l, const struct cJSON *o, const char *what,
                            struct realm_err *err);

/* ---- admin.c: the admin API (/admin/v1/...) and tenants' guest deployment (/v1/guest) ---- */
struct srv_admin_args {
    const char *tenant, *since, *until, *format; /* query arguments (NULL when absent) */
};
/* Handles one admin-API or guest route. `tenant` is the caller's tenant (tenant key) or NULL
 * for an admin key (`admin`). Writes the body to out (its type to *ctype) and returns the HTTP
 * status, or -1 with *e set. */
int srv_admin_route(struct realm_server *s, const char *method, const char *url,
                    struct srv_tenant *tenant, bool admin, const char *body, size_t len,
                    const struct srv_admin_args *args, struct realm_buf *out, const char **ctype,
                    struct srv_error *e);

/* http.c */
int http_start(struct realm_server *s, struct realm_err *err);
void http_quiesce(struct realm_server *s);
void http_stop(struct realm_server *s);

/* metrics text (metrics.c) into b */
/* All series (only == NULL: an admin or a public /metrics), or only tenant `only`'s own series. */
int srv_metrics_render(struct realm_server *s, struct realm_buf *b, const struct srv_tenant *only);

/* server.c: admits, queues and runs jobs */
/* Creates a job holding two references (the caller's and the worker's) and queues it. On success
 * the job owns *req (the caller must not free it) and *out is the caller's reference (release
 * with srv_job_unref). Returns 0, or -1 with a 503 in *e when the queue is full or the server is
 * draining; *req then stays the caller's. `reserved` is the tenant's token reservation (settled
 * when the guest is done); once submitted, the job also owns the tenant's concurrency slot and
 * releases it when its last reference goes (the response is closed). On failure both stay the
 * caller's. */
int srv_job_submit(struct realm_server *s, struct srv_tenant *t, int64_t reserved,
                   struct srv_request *req, int fd, struct srv_job **out, struct srv_error *e);
void srv_job_unref(struct srv_job *j);
/* Counts j in realm_streams_stalled_total, once per job whichever side (emit back-pressure or
 * the HTTP stall timer) noticed the stall. Any thread. */
void srv_job_count_stall(struct srv_job *j);
/* The HTTP response of an admitted job has completed (sent, failed or aborted). */
void srv_reply_done(struct realm_server *s);

/* ---- openai.c: response bodies (the transport, MHD and SSE framing, is http.c's) ---- */
/* A request of n > 1 choices keeps its emitted text as records, each a choice index (int32) and
 * a length (uint32) in host byte order, then the bytes: the pending buffer still only grows, and
 * the HTTP side hands it to srv_openai_chunk / srv_openai_response as before.
 * Errors: REALM_E_NOMEM, REALM_E_LIMIT (len above 4 GiB). */
int srv_choice_record_append(struct realm_buf *b, int32_t choice, const char *text, size_t len);
/* Maps a failed generation (nothing sent yet) to an HTTP error in *e. */
void srv_openai_error(const struct srv_job *j, struct srv_error *e);
/* The whole non-streamed response of a finished job (chat.completion or text_completion). */
int srv_openai_response(struct realm_buf *b, const struct srv_job *j);
/* One SSE event: `text` (n bytes), or the role-only first chat chunk (role), or the final choice
 * (finish != NULL). For n > 1, `text` is the pending choice records and makes one event per
 * record (role: one per choice); the final chunks come from srv_openai_trailer. Text and final
 * chunks carry the logprobs records made since the previous chunk (j->lp_sent advances). Caller
 * holds j->mu. */
int srv_openai_chunk(struct realm_buf *b, struct srv_job *j, const char *text, size_t n,
                     const char *finish, bool role);
/* The end of a stream: the final choice, usage (if asked), an error event if the guest failed
 * after output started, then [DONE]. Caller holds j->mu. */
int srv_openai_trailer(struct realm_buf *b, struct srv_job *j);
/* POST /tokenize (detokenize false) or /detokenize on behalf of tenant t: llama-server's request
 * and response shapes ({"content", "add_special" (false), "parse_special" (true), "with_pieces"
 * (false)} → {"tokens": [...]}; {"tokens"} → {"content"}), plus an optional "model" (default:
 * the first model t may use). Unknown fields are refused. tok_of(ctx, i) gives model i's
 * tokenizer. Returns 0 with the response body in out, or -1 with *e set (400, 403, 404, 500). */
int srv_tokenize(const struct realm_server_config *cfg, const struct realm_tenant_spec *t,
                 const struct realm_tokenizer *(*tok_of)(void *ctx, size_t model), void *ctx,
                 bool detokenize, const char *body, size_t len, struct realm_buf *out,
                 struct srv_error *e);
/* One /v1/models entry. */
int srv_openai_model(struct realm_buf *b, const struct realm_model_spec *m, int64_t created);
/* All append to b; each returns 0 or REALM_E_NOMEM (b then holds a partial body to discard). */

#endif
