/*
 * cmd_serve.c — `realm serve`: the OpenAI-compatible HTTP server (include/realm/server.h).
 * Builds the configuration from --config and flags (with nothing given: the default model and one
 * default tenant whose fresh API key is printed once), starts the server, waits for SIGINT or
 * SIGTERM, then shuts down gracefully and exits 0.
 */
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "realm/log.h"
#include "realm/registry.h"
#include "realm/server.h"

#define DEFAULT_MODEL_NAME "smollm2"
#define DEFAULT_MODEL_FILE "SmolLM2-135M-Instruct.Q4_1.gguf"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: realm serve [--config FILE.json] [--state DIR|--registry URL] [--host ADDR] "
        "[--port N] [-m NAME=PATH ...]\n"
        "                   [--guest FILE.wasm] [--max-inflight N] [--kv-memory MB] [--verbose]\n"
        "\n"
        "Serves the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models, /health,\n"
        "/metrics). Every request runs in its tenant's WebAssembly guest.\n"
        "\n"
        "  --config FILE   JSON configuration: models, tenants (API key hashes, limits, guests)\n"
        "  --state DIR     tenants, keys, limits, guests and the usage ledger in DIR's registry,\n"
        "                  changed at run time through the admin API (/admin/v1) or `realm "
        "admin`;\n"
        "                  on an empty state an admin key is created and printed once\n"
        "  --registry URL  the same with a shared registry: postgresql://user@host/db "
        "(PostgreSQL,\n"
        "                  several nodes; guest modules cached in $REALM_REGISTRY_CACHE) or a DIR\n"
        "  --host ADDR     bind address (default 127.0.0.1, or the config's)\n"
        "  --port N        port (default 8080, or the config's; 0 picks a free one)\n"
        "  -m NAME=PATH    serve a GGUF model under NAME (repeatable; PATH alone: its file name)\n"
        "  --guest FILE    the default orchestrator guest (default: guest/default.wasm next to\n"
        "                  this executable)\n"
        "  --max-inflight N  requests generating at once (default 64)\n"
        "  --kv-memory MB  paged KV cache pool per model, shared by all tenants (default 1024)\n"
        "  --verbose       log requests and server events to stderr\n"
        "\n"
        "Without a config (or one with no tenants) a tenant \"default\" is created with a fresh "
        "API\n"
        "key, printed once. Without models the default model (~/.cache/realm/models/%s)\n"
        "is served as \"%s\". `realm key add TENANT --config FILE` adds keys to a config.\n",
        DEFAULT_MODEL_FILE, DEFAULT_MODEL_NAME);
}

/* guest/default.wasm beside the executable (build/realm → build/guest/default.wasm). */
static int default_guest_path(char *out, size_t cap) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return -1;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash) return -1;
    *slash = '\0';
    if (snprintf(out, cap, "%s/guest/default.wasm", exe) >= (int)cap) return -1;
    return 0;
}

static int add_model_arg(struct realm_server_config *c, const char *arg) {
    char name[256];
    const char *eq = strchr(arg, '=');
    const char *path = arg;
    if (eq) {
        size_t n = (size_t)(eq - arg);
        if (n == 0 || n >= sizeof name) {
            cli_error("serve: -m %s: expected NAME=PATH", arg);
            return 2;
        }
        memcpy(name, arg, n);
        name[n] = '\0';
        path = eq + 1;
    } else { /* the file name without .gguf */
        const char *base = strrchr(arg, '/');
        base = base ? base + 1 : arg;
        snprintf(name, sizeof name, "%s", base);
        size_t n = strlen(name);
        if (n > 5 && !strcmp(name + n - 5, ".gguf")) name[n - 5] = '\0';
    }
    if (!path[0]) {
        cli_error("serve: -m %s: empty path", arg);
        return 2;
    }
    if (access(path, R_OK) != 0) {
        cli_error("serve: model %s: cannot open %s: %s", name, path, strerror(errno));
        return 1;
    }
    struct realm_err err = {0};
    if (realm_server_config_add_model(c, name, path, 0, &err)) {
        cli_error("%s", err.msg);
        return 2;
    }
    return 0;
}

/* State mode: a state without any admin key gets one, printed once by the caller (out[0] stays
 * '\0' when one exists). Returns 0, or 1 after printing the error. */
static int ensure_admin_key(const char *dir, char *out, size_t cap) {
    struct realm_registry *reg = NULL;
    struct realm_reg_key *ks = NULL;
    size_t n = 0;
    struct realm_err err = {0};
    int rc = realm_registry_open(dir, NULL, &reg, &err);
    if (!rc) rc = realm_registry_admin_key_list(reg, &ks, &n, &err);
    if (!rc && n == 0) rc = realm_registry_admin_key_add(reg, "initial", out, cap, &err);
    if (rc == REALM_E_STATE && n == 0) { /* nodes of one shared registry starting together: */
        rc = REALM_OK;                   /* another one made it (and printed it) first */
        out[0] = '\0';
    }
    realm_reg_keys_free(ks, n);
    realm_registry_close(reg);
    char shown[512];
    if (rc)
        cli_error("serve: state %s: %s", realm_registry_spec_display(dir, shown, sizeof shown),
                  err.msg);
    return rc ? 1 : 0;
}

static int parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || !*s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int cmd_serve(int argc, char **argv) {
    const char *config = NULL, *host = NULL, *guest = NULL, *state = NULL;
    long port = -1, inflight = -1, kv_mb = -1;
    bool verbose = false;
    const char **models = calloc((size_t)argc, sizeof *models);
    int n_models = 0;
    if (!models) {
        cli_error("serve: out of memory");
        return 1;
    }
    int rc = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            free(models);
            return 0;
        } else if (!strcmp(a, "--config") && has_val) {
            config = argv[++i];
        } else if ((!strcmp(a, "--state") || !strcmp(a, "--registry")) && has_val) {
            state = argv[++i]; /* a directory (SQLite) or a postgres:// URL: realm_registry_open */
        } else if (!strcmp(a, "--host") && has_val) {
            host = argv[++i];
        } else if (!strcmp(a, "--port") && has_val) {
            if (parse_int(argv[++i], 0, 65535, &port)) {
                cli_error("serve: --port %s: expected a number in [0, 65535]", argv[i]);
                goto out;
            }
        } else if (!strcmp(a, "--max-inflight") && has_val) {
            if (parse_int(argv[++i], 1, 4096, &inflight)) {
                cli_error("serve: --max-inflight %s: expected a number in [1, 4096]", argv[i]);
                goto out;
            }
        } else if (!strcmp(a, "--kv-memory") && has_val) {
            if (parse_int(argv[++i], 1, 1L << 24, &kv_mb)) {
                cli_error("serve: --kv-memory %s: expected megabytes in [1, 16777216]", argv[i]);
                goto out;
            }
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && has_val) {
            models[n_models++] = argv[++i];
        } else if (!strcmp(a, "--guest") && has_val) {
            guest = argv[++i];
        } else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
            verbose = true;
        } else {
            cli_error("serve: unknown or incomplete option '%s' (see realm serve --help)", a);
            goto out;
        }
    }
    if (verbose) realm_log_set_level(REALM_LOG_INFO);
    /* A fixed mmap threshold: glibc otherwise raises it each time a large block (a session's KV
     * cache, a few MiB) is freed, after which such blocks come from the per-thread arenas and
     * the freed pages stay resident — the process's RSS then creeps up under sustained load
     * (bench/load.py) although nothing leaks. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);

    struct realm_server_config *cfg = NULL;
    struct realm_err err = {0};
    rc = 1;
    if (config ? realm_server_config_load(config, &cfg, &err) : realm_server_config_new(&cfg)) {
        cli_error("%s", config ? err.msg : "serve: out of memory");
        goto out;
    }
    struct realm_server *srv = NULL;
    char key[REALM_KEY_LEN + 1] = "", admin_key[REALM_KEY_LEN + 1] = "";
    if (state && (realm_server_config_set_state_dir(cfg, state) ||
                  ensure_admin_key(state, admin_key, sizeof admin_key)))
        goto out_cfg;
    if (host && realm_server_config_set_host(cfg, host)) {
        cli_error("serve: out of memory");
        goto out_cfg;
    }
    if (port >= 0) cfg->port = (uint16_t)port;
    if (inflight > 0) cfg->max_inflight = (int32_t)inflight;
    if (kv_mb > 0) cfg->kv_memory_bytes = (int64_t)kv_mb << 20;
    for (int i = 0; i < n_models; i++)
        if ((rc = add_model_arg(cfg, models[i]))) goto out_cfg;
    rc = 1;
    if (cfg->n_models == 0) {
        const char *home = getenv("HOME");
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/.cache/realm/models/%s", home ? home : "",
                 DEFAULT_MODEL_FILE);
        if (access(path, R_OK) != 0) {
            cli_error("serve: no model given and the default model %s is missing (run "
                      "scripts/fetch-models.sh "
                      "smollm2, or pass -m NAME=PATH)",
                      path);
            goto out_cfg;
        }
        if (realm_server_config_add_model(cfg, DEFAULT_MODEL_NAME, path, 0, &err)) {
            cli_error("%s", err.msg);
            goto out_cfg;
        }
    }
    if (guest || !cfg->default_guest) {
        char path[PATH_MAX];
        if (!guest && default_guest_path(path, sizeof path) == 0) guest = path;
        if (!guest || access(guest, R_OK) != 0) {
            cli_error(
                "serve: default guest %s not found (build it with make, or pass --guest FILE.wasm)",
                guest ? guest : "guest/default.wasm");
            goto out_cfg;
        }
        if (realm_server_config_set_default_guest(cfg, guest)) {
            cli_error("serve: out of memory");
            goto out_cfg;
        }
    }
    if (cfg->n_tenants == 0 && !state) {
        struct realm_tenant_spec *t;
        char hex[REALM_KEY_HASH_HEX + 1];
        if (realm_key_generate(key, sizeof key) ||
            realm_server_config_add_tenant(cfg, "default", &t, &err)) {
            cli_error("serve: cannot create the default tenant");
            goto out_cfg;
        }
        realm_key_hash(key, strlen(key), hex);
        if (realm_tenant_add_key_hash(t, hex, &err)) {
            cli_error("%s", err.msg);
            goto out_cfg;
        }
    }

    /* every thread the server starts inherits this mask; the main thread takes the signals */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (realm_server_start(cfg, &srv, &err)) {
        cli_error("serve: %s", err.msg);
        goto out_cfg;
    }
    const char *shown = cfg->host;
    bool v6 = strchr(shown, ':') != NULL;
    printf("realm serve: listening on http://%s%s%s:%u\n", v6 ? "[" : "", shown, v6 ? "]" : "",
           (unsigned)realm_server_port(srv));
    printf("  models:");
    for (size_t i = 0; i < cfg->n_models; i++)
        printf(" %s", cfg->models[i].name);
    if (state) {
        char reg_shown[512];
        printf("\n  state: %s (tenants from its registry)\n",
               realm_registry_spec_display(state, reg_shown, sizeof reg_shown));
    } else {
        printf("  tenants:");
        for (size_t i = 0; i < cfg->n_tenants; i++)
            printf(" %s", cfg->tenants[i].id);
        printf("\n");
    }
    if (admin_key[0])
        printf("  admin key (shown once; only its hash is kept): %s\n"
               "  add a tenant: curl http://%s%s%s:%u/admin/v1/tenants -H 'Authorization: Bearer "
               "%s' -d '{\"id\": \"t1\"}'\n",
               admin_key, v6 ? "[" : "", shown, v6 ? "]" : "", (unsigned)realm_server_port(srv),
               admin_key);
    if (key[0]) {
        printf("  API key for tenant \"default\" (shown once; only its hash is kept): %s\n", key);
        printf("  try: curl http://%s%s%s:%u/v1/chat/completions -H 'Authorization: Bearer %s' \\\n"
               "         -H 'Content-Type: application/json' \\\n"
               "         -d '{\"model\": \"%s\", \"messages\": [{\"role\": \"user\", \"content\": "
               "\"Hello!\"}]}'\n",
               v6 ? "[" : "", shown, v6 ? "]" : "", (unsigned)realm_server_port(srv), key,
               cfg->models[0].name);
    }
    fflush(stdout);

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0) {
    }
    fprintf(stderr, "realm serve: %s received, shutting down\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM");
    realm_server_free(srv);
    fprintf(stderr, "realm serve: stopped\n");
    rc = 0;
out_cfg:
    realm_server_config_free(cfg);
out:
    free(models);
    return rc;
}
