/*
 * cmd_admin.c — `realm admin`: manages a state directory's tenant registry (include/realm/
 * registry.h) directly — tenants, limits and model grants, API keys and admin keys (printed once,
 * only hashes stored), guest versions (deploy, activate, roll back), the usage ledger (summary or
 * CSV), and seeding from a realm.json (`import`). Works on the files while a server runs too:
 * SQLite's locks arbitrate, and a server notices changes through the registry's generation.
 * With --url URL the same commands go through a running server's admin API instead
 * (admin_http.c); the option parsing and output formats below serve both modes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/admin_http.h"
#include "cli/cli.h"
#include "realm/alloc.h"
#include "realm/registry.h"
#include "realm/sandbox.h"
#include "realm/server.h"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: realm admin [--state DIR | --url URL [--admin-key KEY]] COMMAND ...\n"
        "       (--registry postgresql://... : a shared PostgreSQL registry instead of a DIR)\n"
        "\n"
        "  tenant add ID [--model NAME ...] [LIMITS]   create a tenant (no --model: every model)\n"
        "  tenant list                                 tenants, grants, keys, active guest, "
        "limits\n"
        "  tenant rm ID                                delete a tenant, its keys and guest "
        "versions\n"
        "  key add TENANT [--label L]                  print a new API key (alone on stdout; only "
        "its\n"
        "                                              hash is stored)\n"
        "  key revoke TENANT LABEL|KEY-PREFIX          remove a key (it stops working at once)\n"
        "  key list [TENANT]                           labels, prefixes, created / last used\n"
        "  admin-key add [--label L] | revoke LABEL|PREFIX | list   operator keys (not tenant "
        "keys)\n"
        "  limits TENANT [LIMITS] [--model NAME ... | --all-models]  set (or, with no option, "
        "show)\n"
        "  guest deploy TENANT FILE.wasm [--no-activate]  store, compile-check and activate a "
        "guest\n"
        "  guest list TENANT | activate TENANT VERSION | rollback TENANT\n"
        "  usage [--tenant T] [--since TIME] [--until TIME] [--csv]   per-tenant sums, or every "
        "row\n"
        "  import FILE.json                            seed tenants, key hashes, limits, grants, "
        "guests\n"
        "                                              and admin key hashes from a realm.json\n"
        "\n"
        "LIMITS (the names of realm.json's tenant limits; 0 = off / default):\n"
        "  --max-concurrent N --tokens-per-minute N --max-tokens-per-request N --guest-memory-mb "
        "N\n"
        "  --kv-blocks N --init-wall-ms N --generate-wall-ms N --host-memory-mb N\n"
        "TIME: ISO 8601 (2026-12-03, 2026-12-03T16:00:00Z, ...+01:00), UTC when no zone is given.\n"
        "--state DIR: the state directory (default $XDG_DATA_HOME/realm or "
        "~/.local/share/realm).\n"
        "--url URL: a running `realm serve --state` (http://host:port): the commands go through\n"
        "  its admin API (not admin-key, import) with the admin key of --admin-key KEY or\n"
        "  $REALM_ADMIN_KEY (prefer the variable: options show in the process list).\n");
}

/* ---- small helpers ---- */

static int default_state_dir(char *out, size_t cap) {
    const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
    int n;
    if (xdg && xdg[0] == '/')
        n = snprintf(out, cap, "%s/realm", xdg);
    else if (home && home[0])
        n = snprintf(out, cap, "%s/.local/share/realm", home);
    else
        return -1;
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* "2026-12-03[THH:MM[:SS[.fff]]][Z|±HH:MM]" → ms since the epoch; -1 if malformed. */
static int parse_time(const char *s, int64_t *out) {
    int y, mo, d, h = 0, mi = 0, sec = 0, ms = 0, used = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &used) != 3 || used != 10) return -1;
    const char *p = s + used;
    if (*p == 'T' || *p == ' ') {
        int u = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &h, &mi, &u) != 2 || u != 5) return -1;
        p += 1 + u;
        if (*p == ':') {
            if (sscanf(p + 1, "%2d%n", &sec, &u) != 1 || u != 2) return -1;
            p += 1 + u;
            if (*p == '.') {
                int digits = 0;
                for (p++; *p >= '0' && *p <= '9'; p++, digits++)
                    if (digits < 3) ms = ms * 10 + (*p - '0');
                for (; digits > 0 && digits < 3; digits++)
                    ms *= 10;
            }
        }
    }
    int64_t off_min = 0;
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om, u = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &u) != 2 || u != 5) return -1;
        off_min = (*p == '-' ? -1 : 1) * (int64_t)(oh * 60 + om);
        p += 1 + u;
    }
    if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return -1;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    time_t t = timegm(&tm);
    if (t == (time_t)-1) return -1;
    *out = ((int64_t)t - off_min * 60) * 1000 + ms;
    return 0;
}

/* ms since the epoch → "2026-12-03T16:41:02.123Z" (empty for 0). */
static void fmt_time(int64_t ms, char *out, size_t cap) {
    if (ms <= 0) {
        snprintf(out, cap, "%s", "");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static void csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

unsigned char *cli_admin_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 65536;
            if ((int64_t)nc > REALM_REG_GUEST_MAX + 1) nc = (size_t)REALM_REG_GUEST_MAX + 1;
            if (nc == cap) {
                errno = EFBIG;
                break;
            }
            unsigned char *nb = realm_realloc(buf, nc);
            if (!nb) {
                errno = ENOMEM;
                break;
            }
            buf = nb;
            cap = nc;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) break;
            fclose(f);
            *len = n;
            return buf;
        }
    }
    fclose(f);
    realm_free(buf);
    return NULL;
}

/* ---- limits and grants from options ---- */

struct limit_opt {
    const char *name; /* realm.json's name, with '-' for '_' */
    int kind;         /* 0: int32, 1: int64, 2: MiB into bytes */
    size_t off;
    int64_t hi;
};

#define LIM(name, kind, field, hi)                                                                 \
    { name, kind, offsetof(struct realm_tenant_limits, field), hi }
static const struct limit_opt k_limits[] = {
    LIM("max-concurrent", 0, max_concurrent, 1 << 20),
    LIM("tokens-per-minute", 1, tokens_per_minute, INT64_C(1) << 40),
    LIM("max-tokens-per-request", 0, max_tokens_per_request, INT32_MAX),
    LIM("guest-memory-mb", 2, guest_memory_bytes, 4096),
    LIM("kv-blocks", 0, kv_blocks, INT32_MAX),
    LIM("init-wall-ms", 1, init_wall_ms, INT64_C(24) * 3600 * 1000),
    LIM("generate-wall-ms", 1, generate_wall_ms, INT64_C(24) * 3600 * 1000),
    LIM("host-memory-mb", 2, host_memory_bytes, 1 << 20),
};
#define N_LIMITS (sizeof k_limits / sizeof k_limits[0])

/* Matches "--NAME" against the limit options (also with '_' for '-'); returns its index or -1. */
static int limit_index(const char *arg) {
    if (strncmp(arg, "--", 2)) return -1;
    char norm[64];
    size_t n = strlen(arg + 2);
    if (n >= sizeof norm) return -1;
    for (size_t i = 0; i <= n; i++)
        norm[i] = arg[2 + i] == '_' ? '-' : arg[2 + i];
    for (size_t i = 0; i < N_LIMITS; i++)
        if (!strcmp(norm, k_limits[i].name)) return (int)i;
    return -1;
}

static void set_limit(struct realm_tenant_limits *l, int i, int64_t v) {
    char *p = (char *)l + k_limits[i].off;
    if (k_limits[i].kind == 0)
        *(int32_t *)p = (int32_t)v;
    else if (k_limits[i].kind == 1)
        *(int64_t *)p = v;
    else
        *(int64_t *)p = v << 20;
}

static int64_t get_limit(const struct realm_tenant_limits *l, int i) {
    const char *p = (const char *)l + k_limits[i].off;
    if (k_limits[i].kind == 0) return *(const int32_t *)p;
    if (k_limits[i].kind == 1) return *(const int64_t *)p;
    return *(const int64_t *)p >> 20;
}

size_t cli_admin_n_limits(void) {
    return N_LIMITS;
}
const char *cli_admin_limit_name(size_t i) {
    return k_limits[i].name;
}
int64_t cli_admin_limit_get(const struct realm_tenant_limits *l, size_t i) {
    return get_limit(l, (int)i);
}
void cli_admin_limit_set(struct realm_tenant_limits *l, size_t i, int64_t v) {
    set_limit(l, (int)i, v);
}

int cli_admin_tenant_opts(int argc, char **argv, int start, struct realm_reg_tenant *t, bool *any) {
    for (int i = start; i < argc; i++) {
        int li = limit_index(argv[i]);
        int64_t v;
        if (li >= 0) {
            if (i + 1 >= argc || parse_i64(argv[i + 1], 0, k_limits[li].hi, &v)) {
                cli_error("admin: %s needs a number in [0, %lld]", argv[i],
                          (long long)k_limits[li].hi);
                return 2;
            }
            set_limit(&t->limits, li, v);
            i++;
        } else if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            char **nm = realm_realloc(t->models, (t->n_models + 1) * sizeof *nm);
            if (!nm) return 2;
            t->models = nm;
            t->models[t->n_models++] = argv[++i];
            t->all_models = false;
        } else if (!strcmp(argv[i], "--all-models")) {
            t->all_models = true;
        } else {
            cli_error("admin: unknown or incomplete option '%s' (see realm admin --help)", argv[i]);
            return 2;
        }
        *any = true;
    }
    return 0;
}

static int fail(const struct realm_err *err) {
    cli_error("admin: %s", err->msg[0] ? err->msg : realm_strerror(err->code));
    return 1;
}

/* ---- tenants ---- */

static int tenant_add(struct realm_registry *r, int argc, char **argv) {
    if (argc < 3 || argv[2][0] == '-') {
        cli_error("admin tenant add: missing ID");
        return 2;
    }
    struct realm_reg_tenant t = {.id = argv[2], .all_models = true};
    bool any = false;
    int rc = cli_admin_tenant_opts(argc, argv, 3, &t, &any);
    if (t.n_models == 0) t.all_models = true;
    struct realm_err err = {0};
    if (!rc && realm_registry_tenant_create(r, &t, &err)) rc = fail(&err);
    realm_free(t.models);
    if (!rc) fprintf(stderr, "realm: tenant \"%s\" created\n", argv[2]);
    return rc;
}

void cli_admin_print_tenant(const struct realm_reg_tenant *t, size_t n_keys,
                            const struct realm_reg_guest *active) {
    printf("%s\tmodels=", t->id);
    if (t->all_models) printf("*");
    for (size_t i = 0; !t->all_models && i < t->n_models; i++)
        printf("%s%s", i ? "," : "", t->models[i]);
    printf("\tkeys=%zu\tguest=", n_keys);
    if (active)
        printf("v%lld:%.12s", (long long)active->version, active->sha256);
    else
        printf("default");
    for (size_t i = 0; i < N_LIMITS; i++)
        printf("\t%s=%lld", k_limits[i].name, (long long)get_limit(&t->limits, (int)i));
    printf("\n");
}

static void print_tenant(struct realm_registry *r, const struct realm_reg_tenant *t) {
    struct realm_err err = {0};
    struct realm_reg_key *keys = NULL;
    size_t nk = 0;
    struct realm_reg_guest g;
    realm_registry_key_list(r, t->id, &keys, &nk, &err);
    realm_reg_keys_free(keys, nk);
    bool has_guest = realm_registry_guest_active(r, t->id, &g, &err) == REALM_OK;
    cli_admin_print_tenant(t, nk, has_guest ? &g : NULL);
}

static int tenant_cmd(struct realm_registry *r, int argc, char **argv) {
    struct realm_err err = {0};
    if (argc >= 2 && !strcmp(argv[1], "add")) return tenant_add(r, argc, argv);
    if (argc == 2 && !strcmp(argv[1], "list")) {
        struct realm_reg_tenant *ts;
        size_t n;
        if (realm_registry_tenant_list(r, &ts, &n, &err)) return fail(&err);
        for (size_t i = 0; i < n; i++)
            print_tenant(r, &ts[i]);
        realm_reg_tenants_free(ts, n);
        return 0;
    }
    if (argc == 3 && (!strcmp(argv[1], "rm") || !strcmp(argv[1], "delete"))) {
        if (realm_registry_tenant_delete(r, argv[2], &err)) return fail(&err);
        fprintf(stderr, "realm: tenant \"%s\" deleted\n", argv[2]);
        return 0;
    }
    cli_error("admin tenant: expected add ID | list | rm ID");
    return 2;
}

/* ---- keys ---- */

void cli_admin_print_keys(const struct realm_reg_key *k, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char c[80], u[80];
        fmt_time(k[i].created_at, c, sizeof c);
        fmt_time(k[i].last_used_at, u, sizeof u);
        printf("%s\t%s\t%s\tcreated=%s\tlast_used=%s\n", k[i].tenant ? k[i].tenant : "(admin)",
               k[i].label, k[i].prefix ? k[i].prefix : "(imported hash)", c, u[0] ? u : "never");
    }
}

static int key_cmd(struct realm_registry *r, int argc, char **argv, bool admin) {
    struct realm_err err = {0};
    const char *what = admin ? "admin-key" : "key";
    if (argc >= 2 && !strcmp(argv[1], "add")) {
        const char *tenant = NULL, *label = NULL;
        for (int i = 2; i < argc; i++) {
            if (!strcmp(argv[i], "--label") && i + 1 < argc)
                label = argv[++i];
            else if (!admin && !tenant && argv[i][0] != '-')
                tenant = argv[i];
            else {
                cli_error("admin %s add: unexpected '%s'", what, argv[i]);
                return 2;
            }
        }
        if (!admin && !tenant) {
            cli_error("admin key add: missing TENANT");
            return 2;
        }
        char key[REALM_KEY_LEN + 1];
        int rc = admin ? realm_registry_admin_key_add(r, label, key, sizeof key, &err)
                       : realm_registry_key_add(r, tenant, label, key, sizeof key, &err);
        if (rc) return fail(&err);
        printf("%s\n", key);
        fflush(stdout);
        memset(key, 0, sizeof key);
        fprintf(stderr, "realm: added %s key%s%s (shown once; only its hash is stored)\n",
                admin ? "an admin" : "a", admin ? "" : " to tenant ", admin ? "" : tenant);
        return 0;
    }
    if (argc == (admin ? 3 : 4) && !strcmp(argv[1], "revoke")) {
        int rc = admin ? realm_registry_admin_key_revoke(r, argv[2], &err)
                       : realm_registry_key_revoke(r, argv[2], argv[3], &err);
        if (rc) return fail(&err);
        fprintf(stderr, "realm: %s key revoked\n", admin ? "admin" : "tenant");
        return 0;
    }
    if (argc <= (admin ? 2 : 3) && argc >= 2 && !strcmp(argv[1], "list")) {
        struct realm_reg_key *k;
        size_t n;
        int rc = admin ? realm_registry_admin_key_list(r, &k, &n, &err)
                       : realm_registry_key_list(r, argc == 3 ? argv[2] : NULL, &k, &n, &err);
        if (rc) return fail(&err);
        cli_admin_print_keys(k, n);
        realm_reg_keys_free(k, n);
        return 0;
    }
    cli_error("admin %s: expected add%s [--label L] | revoke %sLABEL|PREFIX | list%s", what,
              admin ? "" : " TENANT", admin ? "" : "TENANT ", admin ? "" : " [TENANT]");
    return 2;
}

/* ---- limits ---- */

static int limits_cmd(struct realm_registry *r, int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        cli_error("admin limits: missing TENANT");
        return 2;
    }
    struct realm_err err = {0};
    struct realm_reg_tenant cur;
    if (realm_registry_tenant_get(r, argv[1], &cur, &err)) return fail(&err);
    struct realm_reg_tenant t = {.id = cur.id, .limits = cur.limits, .all_models = cur.all_models};
    bool any = false;
    int rc = cli_admin_tenant_opts(argc, argv, 2, &t, &any);
    if (!rc && !any) {
        print_tenant(r, &cur);
    } else if (!rc) {
        bool models_given = t.n_models > 0;
        if (!models_given && !t.all_models) { /* keep the current grants (borrowed from cur) */
            t.models = cur.models;
            t.n_models = cur.n_models;
        }
        if (realm_registry_tenant_update(r, &t, &err))
            rc = fail(&err);
        else
            fprintf(stderr, "realm: tenant \"%s\" updated\n", cur.id);
    }
    if (t.models != cur.models) realm_free(t.models);
    realm_reg_tenant_clear(&cur);
    return rc;
}

/* ---- guests ---- */

/* Compiles the module in a scratch sandbox host and checks its imports and exports against the
 * ABI. Running its realm_init needs the server's models, so the server does that at activation. */
static int validate_guest(const void *wasm, size_t len, const char *name, struct realm_err *err) {
    struct realm_sbx_config sc = {.max_instances = 1};
    struct realm_sbx_host *h = NULL;
    struct realm_sbx_module *m = NULL;
    int rc = realm_sbx_host_new(&sc, &h, err);
    if (!rc) rc = realm_sbx_module_new(h, wasm, len, name, &m, err);
    realm_sbx_module_free(m);
    realm_sbx_host_free(h);
    return rc;
}

static int guest_deploy(struct realm_registry *r, int argc, char **argv) {
    const char *tenant = NULL, *file = NULL;
    bool activate = true, validate = true;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--no-activate"))
            activate = false;
        else if (!strcmp(argv[i], "--no-validate"))
            validate = false;
        else if (argv[i][0] != '-' && !tenant)
            tenant = argv[i];
        else if (argv[i][0] != '-' && !file)
            file = argv[i];
        else {
            cli_error("admin guest deploy: unexpected '%s'", argv[i]);
            return 2;
        }
    }
    if (!tenant || !file) {
        cli_error("admin guest deploy: expected TENANT FILE.wasm");
        return 2;
    }
    size_t len = 0;
    unsigned char *wasm = cli_admin_read_file(file, &len);
    if (!wasm) {
        cli_error("admin guest deploy: %s: %s", file, strerror(errno));
        return 1;
    }
    struct realm_err err = {0};
    struct realm_reg_guest g;
    int rc = 0;
    if (validate && validate_guest(wasm, len, file, &err))
        rc = fail(&err);
    else if (realm_registry_guest_add(r, tenant, wasm, len, activate, &g, &err))
        rc = fail(&err);
    else
        fprintf(stderr, "realm: tenant \"%s\": guest version %lld (%s, %lld bytes)%s\n", tenant,
                (long long)g.version, g.sha256, (long long)g.size,
                activate ? " is active" : " stored, not active");
    realm_free(wasm);
    return rc;
}

void cli_admin_print_guests(const struct realm_reg_guest *g, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char c[80];
        fmt_time(g[i].created_at, c, sizeof c);
        printf("v%lld\t%s\t%lld\t%s%s\n", (long long)g[i].version, g[i].sha256,
               (long long)g[i].size, c, g[i].active ? "\tactive" : "");
    }
}

static int guest_cmd(struct realm_registry *r, int argc, char **argv) {
    struct realm_err err = {0};
    if (argc >= 2 && !strcmp(argv[1], "deploy")) return guest_deploy(r, argc, argv);
    if (argc == 3 && !strcmp(argv[1], "list")) {
        struct realm_reg_guest *g;
        size_t n;
        if (realm_registry_guest_list(r, argv[2], &g, &n, &err)) return fail(&err);
        cli_admin_print_guests(g, n);
        realm_free(g);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "activate")) {
        int64_t v;
        const char *s = argv[3][0] == 'v' ? argv[3] + 1 : argv[3];
        if (parse_i64(s, 0, INT64_MAX, &v)) {
            cli_error("admin guest activate: VERSION must be a number (0: the default guest)");
            return 2;
        }
        if (realm_registry_guest_activate(r, argv[2], v, &err)) return fail(&err);
        fprintf(stderr, "realm: tenant \"%s\": guest version %lld is active\n", argv[2],
                (long long)v);
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "rollback")) {
        struct realm_reg_guest g;
        if (realm_registry_guest_rollback(r, argv[2], &g, &err)) return fail(&err);
        fprintf(stderr, "realm: tenant \"%s\": rolled back to guest version %lld\n", argv[2],
                (long long)g.version);
        return 0;
    }
    cli_error("admin guest: expected deploy TENANT FILE | list TENANT | activate TENANT VERSION | "
              "rollback TENANT");
    return 2;
}

/* ---- usage ---- */

struct usage_total {
    const char *tenant;
    struct realm_reg_usage_sum s;
};

int cli_admin_usage_opts(int argc, char **argv, const char **tenant, int64_t *since, int64_t *until,
                         bool *csv) {
    *tenant = NULL;
    *since = *until = 0;
    *csv = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tenant") && i + 1 < argc)
            *tenant = argv[++i];
        else if (!strcmp(argv[i], "--csv"))
            *csv = true;
        else if ((!strcmp(argv[i], "--since") || !strcmp(argv[i], "--until")) && i + 1 < argc) {
            bool is_since = argv[i][2] == 's';
            if (parse_time(argv[i + 1], is_since ? since : until)) {
                cli_error("admin usage: %s '%s': expected ISO 8601 (2026-12-03T16:00:00Z)", argv[i],
                          argv[i + 1]);
                return 2;
            }
            i++;
        } else {
            cli_error("admin usage: unknown or incomplete option '%s'", argv[i]);
            return 2;
        }
    }
    return 0;
}

void cli_admin_print_usage_sums(const struct realm_reg_usage *u, size_t n) {
    /* per-tenant sums (rows come ordered by time; tenants are few) */
    struct usage_total *tot = realm_calloc(n ? n : 1, sizeof *tot);
    size_t nt = 0;
    struct realm_reg_usage_sum all = {0};
    for (size_t i = 0; tot && i < n; i++) {
        size_t j = 0;
        while (j < nt && strcmp(tot[j].tenant, u[i].tenant))
            j++;
        if (j == nt) tot[nt++].tenant = u[i].tenant;
        struct realm_reg_usage_sum *s[2] = {&tot[j].s, &all};
        for (int k = 0; k < 2; k++) {
            s[k]->requests++;
            s[k]->prompt_tokens += u[i].prompt_tokens;
            s[k]->completion_tokens += u[i].completion_tokens;
            s[k]->host_ms += u[i].host_ms;
        }
    }
    printf("%-24s %10s %14s %17s %12s\n", "tenant", "requests", "prompt_tokens",
           "completion_tokens", "host_ms");
    for (size_t j = 0; j <= nt; j++) {
        const struct realm_reg_usage_sum *s = j < nt ? &tot[j].s : &all;
        printf("%-24s %10lld %14lld %17lld %12lld\n", j < nt ? tot[j].tenant : "(total)",
               (long long)s->requests, (long long)s->prompt_tokens, (long long)s->completion_tokens,
               (long long)s->host_ms);
    }
    realm_free(tot);
}

static int usage_cmd(struct realm_registry *r, int argc, char **argv) {
    const char *tenant;
    int64_t since, until;
    bool csv;
    if (cli_admin_usage_opts(argc, argv, &tenant, &since, &until, &csv)) return 2;
    struct realm_err err = {0};
    struct realm_reg_usage *u;
    size_t n;
    if (realm_registry_usage_query(r, tenant, since, until, &u, &n, &err)) return fail(&err);
    if (csv) {
        printf("tenant,model,key_label,prompt_tokens,completion_tokens,host_ms,outcome,started_at,"
               "finished_at\n");
        for (size_t i = 0; i < n; i++) {
            char st[80], fin[80];
            fmt_time(u[i].started_at, st, sizeof st);
            fmt_time(u[i].finished_at, fin, sizeof fin);
            csv_field(stdout, u[i].tenant);
            putchar(',');
            csv_field(stdout, u[i].model);
            putchar(',');
            csv_field(stdout, u[i].key_label);
            printf(",%lld,%lld,%lld,", (long long)u[i].prompt_tokens,
                   (long long)u[i].completion_tokens, (long long)u[i].host_ms);
            csv_field(stdout, u[i].outcome);
            printf(",%s,%s\n", st, fin);
        }
    } else {
        cli_admin_print_usage_sums(u, n);
    }
    realm_reg_usages_free(u, n);
    return 0;
}

/* ---- import ---- */

/* A tenant's guest module, read and compile-checked before the import's batch so that the
 * registry's write lock is not held while Wasmtime compiles (a running server waits on it). */
struct import_guest {
    unsigned char *wasm; /* NULL: none, or its file is missing (reported) */
    size_t len;
};

static int load_guests(const struct realm_server_config *c, struct import_guest *g,
                       struct realm_err *err) {
    for (size_t i = 0; i < c->n_tenants; i++) {
        const struct realm_tenant_spec *ts = &c->tenants[i];
        if (!ts->guest) continue;
        if (!(g[i].wasm = cli_admin_read_file(ts->guest, &g[i].len))) {
            fprintf(stderr,
                    "realm: tenant \"%s\": guest %s: %s; the tenant keeps its current guest\n",
                    ts->id, ts->guest, strerror(errno));
            continue;
        }
        int rc = validate_guest(g[i].wasm, g[i].len, ts->guest, err);
        if (rc) return rc;
    }
    return REALM_OK;
}

/* One tenant of a config into the open batch: created or updated, key hashes added (those
 * already stored are skipped), its guest stored and activated unless already active. */
static int import_tenant(struct realm_registry *r, const struct realm_tenant_spec *ts,
                         const struct import_guest *g, struct realm_err *err) {
    struct realm_reg_tenant t = {.id = ts->id,
                                 .limits = ts->limits,
                                 .all_models = ts->all_models,
                                 .models = ts->models,
                                 .n_models = ts->n_models};
    struct realm_reg_tenant cur;
    int rc = realm_registry_tenant_get(r, ts->id, &cur, err);
    if (rc == REALM_OK) {
        realm_reg_tenant_clear(&cur);
        rc = realm_registry_tenant_update(r, &t, err);
    } else if (rc == REALM_E_NOT_FOUND) {
        rc = realm_registry_tenant_create(r, &t, err);
    }
    if (rc) return rc;
    for (size_t k = 0; k < ts->n_keys; k++) {
        rc = realm_registry_key_add_hash(r, ts->id, NULL, ts->key_hashes[k], err);
        if (rc == REALM_E_STATE) {
            fprintf(stderr, "realm: tenant \"%s\": key hash %.12s… is already stored; skipped\n",
                    ts->id, ts->key_hashes[k]);
            rc = REALM_OK;
        }
        if (rc) return rc;
    }
    if (!g->wasm) return REALM_OK;
    struct realm_reg_guest active;
    char sha[REALM_KEY_HASH_HEX + 1];
    realm_key_hash((const char *)g->wasm, g->len, sha);
    if (realm_registry_guest_active(r, ts->id, &active, NULL) == REALM_OK &&
        !strcmp(active.sha256, sha))
        return REALM_OK; /* importing again changes nothing */
    return realm_registry_guest_add(r, ts->id, g->wasm, g->len, true, NULL, err);
}

static int import_cmd(struct realm_registry *r, int argc, char **argv) {
    if (argc != 2) {
        cli_error("admin import: expected FILE.json");
        return 2;
    }
    struct realm_err err = {0};
    struct realm_server_config *c = NULL;
    if (realm_server_config_load(argv[1], &c, &err)) return fail(&err);
    struct import_guest *g = realm_calloc(c->n_tenants ? c->n_tenants : 1, sizeof *g);
    int rc = g ? load_guests(c, g, &err) : realm_err_set(&err, REALM_E_NOMEM, "out of memory");
    /* one batch: the whole file is imported or nothing is */
    bool began = false;
    if (!rc) began = (rc = realm_registry_batch_begin(r, &err)) == REALM_OK;
    for (size_t i = 0; !rc && i < c->n_tenants; i++) {
        rc = import_tenant(r, &c->tenants[i], &g[i], &err);
        if (!rc && c->tenants[i].weight > 1) /* the registry has no field for it */
            fprintf(stderr, "realm: tenant %s: weight %d not imported (state mode weighs 1)\n",
                    c->tenants[i].id, c->tenants[i].weight);
    }
    for (size_t i = 0; !rc && i < c->n_admin_keys; i++) {
        rc = realm_registry_admin_key_add_hash(r, NULL, c->admin_key_hashes[i], &err);
        if (rc == REALM_E_STATE) rc = REALM_OK; /* already there */
    }
    if (began) {
        if (rc == REALM_OK)
            rc = realm_registry_batch_end(r, true, &err);
        else
            realm_registry_batch_end(r, false, NULL);
    }
    size_t nt = c->n_tenants, na = c->n_admin_keys;
    for (size_t i = 0; g && i < nt; i++)
        realm_free(g[i].wasm);
    realm_free(g);
    realm_server_config_free(c);
    if (rc) return fail(&err);
    fprintf(stderr, "realm: imported %zu tenant(s) and %zu admin key hash(es) from %s\n", nt, na,
            argv[1]);
    return 0;
}

/* ---- dispatch ---- */

/* The --url mode: the admin key from --admin-key or $REALM_ADMIN_KEY, then admin_http.c. */
static int run_remote(const char *url, const char *key, bool state_given, int nw, char **words) {
    if (!url) {
        cli_error("admin: --admin-key goes with --url URL (--state needs no key)");
        return 2;
    }
    if (state_given) {
        cli_error("admin: give either --state DIR or --url URL");
        return 2;
    }
    if (!key || !key[0]) key = getenv("REALM_ADMIN_KEY");
    if (!key || !key[0]) {
        cli_error("admin: --url needs an admin key: --admin-key KEY or $REALM_ADMIN_KEY");
        return 2;
    }
    return cli_admin_remote(url, key, nw, words);
}

int cmd_admin(int argc, char **argv) {
    char state[4096] = "";
    const char *url = NULL, *admin_key = NULL;
    /* --state, --url, --admin-key may come anywhere; the rest are the command's words and options
     */
    char **words = realm_calloc((size_t)argc + 1, sizeof *words);
    if (!words) return 1;
    int nw = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            realm_free(words);
            return 0;
        }
        if ((!strcmp(argv[i], "--state") || !strcmp(argv[i], "--registry")) && i + 1 < argc)
            snprintf(state, sizeof state, "%s", argv[++i]);
        else if (!strncmp(argv[i], "--state=", 8))
            snprintf(state, sizeof state, "%s", argv[i] + 8);
        else if (!strcmp(argv[i], "--url") && i + 1 < argc)
            url = argv[++i];
        else if (!strncmp(argv[i], "--url=", 6))
            url = argv[i] + 6;
        else if (!strcmp(argv[i], "--admin-key") && i + 1 < argc)
            admin_key = argv[++i];
        else if (!strncmp(argv[i], "--admin-key=", 12))
            admin_key = argv[i] + 12;
        else
            words[nw++] = argv[i];
    }
    if (nw == 0) {
        usage(stderr);
        realm_free(words);
        return 2;
    }
    if (url || admin_key) {
        int rc = run_remote(url, admin_key, state[0] != '\0', nw, words);
        realm_free(words);
        return rc;
    }
    if (!state[0] && default_state_dir(state, sizeof state)) {
        cli_error("admin: no --state and no $HOME to find the default state directory");
        realm_free(words);
        return 2;
    }
    static const struct {
        const char *name;
        int (*run)(struct realm_registry *r, int argc, char **argv);
    } cmds[] = {{"tenant", tenant_cmd}, {"limits", limits_cmd}, {"guest", guest_cmd},
                {"usage", usage_cmd},   {"import", import_cmd}, {"key", NULL},
                {"admin-key", NULL}};
    int found = -1;
    for (int i = 0; i < (int)(sizeof cmds / sizeof cmds[0]); i++)
        if (!strcmp(words[0], cmds[i].name)) found = i;
    if (found < 0) {
        cli_error("admin: unknown command '%s' (see realm admin --help)", words[0]);
        realm_free(words);
        return 2;
    }
    struct realm_err err = {0};
    struct realm_registry *r = NULL;
    int rc;
    if (realm_registry_open(state, NULL, &r, &err)) { /* DIR or postgres:// */
        rc = fail(&err);
    } else if (cmds[found].run) {
        rc = cmds[found].run(r, nw, words);
    } else {
        rc = key_cmd(r, nw, words, !strcmp(words[0], "admin-key"));
    }
    realm_registry_close(r);
    realm_free(words);
    return rc;
}
