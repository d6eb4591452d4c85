/*
 * server.h — the OpenAI-compatible HTTP server of `realm serve`: configuration (models, tenants,
 * API key hashes, limits), the server object (libmicrohttpd, one thread per connection, a bounded
 * pool of generation workers that run each request in its tenant's guest), and API key helpers.
 *
 * Configuration is JSON (docs/server.md has every field). A realm_server_config is a plain struct
 * so that the CLI can build one from flags too; every string in it is owned by the config
 * (realm_malloc'd) and freed by realm_server_config_free.
 *
 * Thread rule: a realm_server_config is built by one thread and then only read. realm_server_*
 * functions are called by one controlling thread (start, then shutdown, then free); the server's
 * own threads do the rest. The key helpers are thread-safe.
 */
#ifndef REALM_SERVER_H
#define REALM_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realm/err.h"

/* SHA-256 hex digest length (without NUL) and the length of a generated key (without NUL). */
#define REALM_KEY_HASH_HEX 64
#define REALM_KEY_LEN 49 /* "realm-" + 43 base64url characters: 256 random bits */

struct realm_model_spec {
    char *name;          /* what clients send as "model" and guests pass to model_open */
    char *path;          /* GGUF file; relative paths were resolved against the config's folder */
    int32_t n_ctx;       /* context of every session on this model (0: the guest sizes each session:
                            prompt + max_tokens, at most the training context) */
    char *chat_template; /* NULL: the GGUF's; else a family name ("chatml", "llama3", ...) or the
                            path of a Jinja file (resolved like path) —
                            realm_tokenizer_set_chat_template */
    int32_t pooling;     /* how /v1/embeddings and /embed pool token states: an enum realm_pooling
                            (include/realm/sched.h), 0 = mean (the default), 1 = last token */
};

struct realm_tenant_limits {
    int32_t max_concurrent;    /* requests in flight at once (0: unlimited) → 429 */
    int64_t tokens_per_minute; /* prompt + completion tokens over a sliding 60 s (0: off) → 429 */
    int32_t max_tokens_per_request; /* cap on max_tokens; larger requests → 400 (0: no cap) */
    int64_t guest_memory_bytes;     /* this tenant's guest linear-memory cap (0: sandbox default);
                                       the sandbox's pooling slots are sized for the largest */
    int32_t kv_blocks;              /* KV cache blocks this tenant's sessions may hold at once, per
                                       model (blocks of 16 positions; 0: the whole pool); a request
                                       that needs more fails with 429 */
    int64_t init_wall_ms;           /* wall time for a guest instance's start (realm_init), host
                                       work included (0: REALM_DEFAULT_INIT_WALL_MS) */
    int64_t
        generate_wall_ms;      /* wall time for one request in the guest, host work (decode,
                                  tokenize, chat_format) included (0: REALM_DEFAULT_GENERATE_WALL_MS) */
    int64_t host_memory_bytes; /* host memory the tenant's guests may hold through imports at
                                  once (0: REALM_DEFAULT_HOST_MEMORY_BYTES) */
};

#define REALM_DEFAULT_INIT_WALL_MS 10000
#define REALM_DEFAULT_GENERATE_WALL_MS 300000
#define REALM_DEFAULT_HOST_MEMORY_BYTES (INT64_C(64) << 20)

struct realm_tenant_spec {
    char *id;
    char **key_hashes; /* n_keys lower-case SHA-256 hex strings of the tenant's API keys */
    size_t n_keys;
    char **models; /* names of allowed models; all_models: every configured model */
    size_t n_models;
    bool all_models;
    char *guest; /* path of the tenant's .wasm; NULL: the default orchestrator */
    struct realm_tenant_limits limits;
    int32_t weight; /* share of the batched steps against other busy tenants (deficit round robin
                       by tokens, realm_sched_set_tenant_weight); 0: 1. Config mode only: the
                       registry (state mode) has no column for it, its tenants weigh 1 */
};

/* Whether tenant t may use the configured model `name` — the one place this is decided (the
 * OpenAI routes ask it; the sandbox enforces the same list, handed over at instance creation). */
bool realm_tenant_may_use(const struct realm_tenant_spec *t, const char *name);

struct realm_server_config {
    char *host;              /* bind address; default "127.0.0.1" */
    uint16_t port;           /* default 8080; 0: any free port (see realm_server_port) */
    size_t max_body_bytes;   /* request bodies above this get 413; default 4 MiB */
    int32_t max_inflight;    /* generation workers (requests running at once); default 64 */
    int32_t max_queue;       /* requests waiting for a worker before 503; default 256 */
    int32_t max_connections; /* open HTTP connections; default 512 */
    double
        shutdown_grace_s; /* in-flight requests get this long to finish on shutdown; default 10 */
    char *default_guest;  /* the default orchestrator's .wasm (NULL: found by the CLI) */
    bool metrics_public;  /* /metrics without any key; default false (a tenant key sees only
                             that tenant's series, an admin key everything) */
    char **admin_key_hashes; /* SHA-256 hex of the operator's keys (full /metrics) */
    size_t n_admin_keys;
    int32_t max_connections_per_ip; /* open HTTP connections from one address; default 32 */
    double
        read_timeout_s;    /* a connection that sends nothing for this long while its headers or
                              body are read is closed; also the limit for a whole body; default 30 */
    double stream_stall_s; /* a stream whose client reads nothing for this long is cancelled
                              (its slot and KV freed); default 30 */
    int32_t default_max_tokens; /* max_tokens of a request that sets none and whose tenant has no
                                   cap; default 2048 */
    int32_t max_choices;        /* the largest "n" (choices) a request may ask for; default 8, at
                                   most REALM_ABI_MAX_CHOICES */
    int32_t tenant_step_share; /* while several tenants have work, the requests one tenant puts in a
                                  batched step (realm_sched_params.tenant_share); 0: no cap;
                                  default 1 */
    int32_t contended_prefill_rows; /* while several tenants have work, the prompt rows a batched
                                       step carries in all (realm_sched_params.contended_prefill);
                                       0: no cap; default 8 (see docs/server.md) */
    int32_t prefill_reserve_rows;   /* rows of each batched step prompt chunks take before decode
                                       rows while a prompt waits (realm_sched_params.
                                       prefill_reserve); 0: the scheduler's default, -1: none */
    int32_t max_active_sequences;   /* sequences (sessions) decoding at once per model; new ones
                                       beyond wait in the scheduler's admission queue
                                       (realm_sched_params.max_active); 0 (default): no limit */
    int64_t kv_memory_bytes;        /* paged KV pool per model (blocks shared by every tenant's
                                       sessions); default 1 GiB */
    int32_t embed_max_inputs;       /* inputs one /v1/embeddings or /embed request may carry (more:
                                       400); default 64 */
    int32_t embed_max_tokens;       /* tokens one embedding input may have (more: 400; never more
                                       than the model's context); default 512 */
    struct realm_model_spec *models;
    size_t n_models;
    struct realm_tenant_spec *tenants;
    size_t n_tenants;
    /* State mode (realm serve --state DIR): tenants, keys, limits, grants and guest versions come
     * from the registry in this directory (include/realm/registry.h) and change while the server
     * runs; `tenants` above must then be empty (seed the registry with `realm admin import`).
     * NULL: config mode, the tenants above, fixed for the server's life. */
    char *state_dir;
    int32_t max_tenants;    /* state mode: tenants the server can hold at once; default 1024 */
    size_t max_guest_bytes; /* state mode: largest guest module a PUT /v1/guest may upload;
                               default 16 MiB */
};

/* A config with the defaults above, no models and no tenants.
 * Ownership: returns owned (*out; realm_server_config_free). Errors: REALM_E_NOMEM. */
int realm_server_config_new(struct realm_server_config **out);
/* Parses a JSON config; relative paths in it are resolved against `base_dir` (NULL: as given)
 * and a leading "~/" against $HOME. Unknown fields are errors (typos in a config must not pass
 * silently). Ownership: returns owned (*out). Nothing on failure.
 * Errors: REALM_E_FORMAT (syntax, wrong type, bad value; the message names the field),
 * REALM_E_NOMEM. */
int realm_server_config_parse(const char *json, size_t len, const char *base_dir,
                              struct realm_server_config **out, struct realm_err *err);
/* Reads and parses a config file (relative paths resolve against the file's folder).
 * Errors: REALM_E_IO (cannot read), as realm_server_config_parse. */
int realm_server_config_load(const char *path, struct realm_server_config **out,
                             struct realm_err *err);
/* Appends a model (copies the strings). Errors: REALM_E_INVALID (empty or duplicate name),
 * REALM_E_NOMEM. */
int realm_server_config_add_model(struct realm_server_config *c, const char *name, const char *path,
                                  int32_t n_ctx, struct realm_err *err);
/* Appends a tenant with the given id, no keys, every model allowed, the default guest and
 * default limits; *out (optional) points at it until the next add. Errors: REALM_E_INVALID
 * (empty or duplicate id), REALM_E_NOMEM. */
int realm_server_config_add_tenant(struct realm_server_config *c, const char *id,
                                   struct realm_tenant_spec **out, struct realm_err *err);
/* Replace the bind address / the default guest path (copies). Errors: REALM_E_NOMEM. */
int realm_server_config_set_host(struct realm_server_config *c, const char *host);
int realm_server_config_set_default_guest(struct realm_server_config *c, const char *path);
/* Turns on state mode with the registry in `dir` (copied). Errors: REALM_E_NOMEM. */
int realm_server_config_set_state_dir(struct realm_server_config *c, const char *dir);
/* Adds a key hash (64 hex characters) to a tenant. Errors: REALM_E_INVALID, REALM_E_NOMEM. */
int realm_tenant_add_key_hash(struct realm_tenant_spec *t, const char *hex, struct realm_err *err);
/* Adds an operator (admin) key hash: such a key sees every series of /metrics. Errors:
 * REALM_E_INVALID (not 64 hex digits), REALM_E_NOMEM. */
int realm_server_config_add_admin_key_hash(struct realm_server_config *c, const char *hex,
                                           struct realm_err *err);
/* Checks cross-references: at least one model; in config mode at least one tenant, tenants'
 * models exist, every tenant has at least one key; in state mode no tenants in the config.
 * Errors: REALM_E_INVALID with the reason. */
int realm_server_config_check(const struct realm_server_config *c, struct realm_err *err);
/* Frees c and everything it owns. NULL is a no-op. */
void realm_server_config_free(struct realm_server_config *c);

/* ---- API keys ---- */
/* Writes a fresh random key (REALM_KEY_LEN characters + NUL) to out (cap > REALM_KEY_LEN).
 * Errors: REALM_E_TOO_SMALL, REALM_E_INTERNAL (no randomness). */
int realm_key_generate(char *out, size_t cap);
/* Lower-case hex SHA-256 of key[0..len) into out (65 bytes with the NUL). */
void realm_key_hash(const char *key, size_t len, char out[REALM_KEY_HASH_HEX + 1]);
/* Adds a new key to tenant `tenant_id` in the JSON config file at `path` (creating the tenant,
 * with access to every model, if it is not there; *created tells which), rewriting the file
 * atomically (temp file + rename, mode 0600) with only the key's hash. The key itself is
 * written to key_out (cap > REALM_KEY_LEN) and stored nowhere.
 * Errors: REALM_E_IO, REALM_E_FORMAT (file is not a valid config), REALM_E_TOO_SMALL. */
int realm_config_add_key(const char *path, const char *tenant_id, char *key_out, size_t cap,
                         bool *created, struct realm_err *err);

/* ---- the server ---- */
struct realm_server;

/* Loads every model and guest of the config and binds the listening socket, then serves on
 * its own threads until realm_server_shutdown.
 * Ownership: borrows cfg (it must outlive the server); returns owned (*out; realm_server_free).
 * Errors: REALM_E_INVALID (config check), REALM_E_IO (bind), the sandbox's errors loading a model
 * or guest (the message names it), REALM_E_NOMEM. */
int realm_server_start(const struct realm_server_config *cfg, struct realm_server **out,
                       struct realm_err *err);
/* The bound port (useful with port 0). */
uint16_t realm_server_port(const struct realm_server *s);
/* Stops accepting connections, answers new requests on open connections with 503, lets
 * in-flight requests run for up to the config's shutdown_grace_s, then cancels the rest and
 * waits for them. Idempotent. */
void realm_server_shutdown(struct realm_server *s);
/* Shuts down (if not yet) and frees everything. NULL is a no-op. */
void realm_server_free(struct realm_server *s);

#endif
