/*
 * tenants.c — tenants at run time: API key lookup (SHA-256 of the presented key compared in
 * constant time against every stored hash of every tenant), and the per-tenant admission limits
 * (concurrent requests; tokens per minute over a sliding window of 60 one-second buckets).
 *
 * Thread rule: srv_tenant_auth reads immutable data; admit/release take the tenant's mutex.
 */
#include <string.h>
#include <time.h>

#include "realm/alloc.h"
#include "realm/status.h"
#include "server/srv.h"

void srv_tenant_slot_init(struct srv_tenant *t, size_t index,
                          const struct realm_tenant_spec *spec) {
    memset(t, 0, sizeof *t);
    atomic_store(&t->spec, spec);
    t->index = index;
    pthread_mutex_init(&t->mu, NULL);
}

int srv_tenants_init(struct srv_tenant **out, const struct realm_server_config *cfg,
                     struct realm_err *err) {
    /* state mode: every slot a tenant may ever take, so that slots never move (connections and
     * jobs hold pointers to them) */
    size_t cap = cfg->state_dir ? (size_t)cfg->max_tenants : cfg->n_tenants;
    struct srv_tenant *ts = realm_calloc(cap ? cap : 1, sizeof *ts);
    if (!ts) return realm_err_set(err, REALM_E_NOMEM, "server: out of memory");
    size_t i;
    for (i = 0; i < cfg->n_tenants; i++) {
        struct srv_tenant *t = &ts[i];
        const struct realm_tenant_spec *sp = &cfg->tenants[i];
        srv_tenant_slot_init(t, i, sp);
        t->n_keys = sp->n_keys;
        t->keys = realm_calloc(sp->n_keys ? sp->n_keys : 1, sizeof *t->keys);
        if (!t->keys) goto nomem;
        for (size_t k = 0; k < sp->n_keys; k++)
            if (srv_hex_decode32(sp->key_hashes[k], t->keys[k])) {
                srv_tenants_free(ts, i + 1);
                return realm_err_set(err, REALM_E_INVALID, "server: tenant %s: malformed key hash",
                                     sp->id);
            }
    }
    *out = ts;
    return REALM_OK;
nomem:
    srv_tenants_free(ts, i + 1);
    return realm_err_set(err, REALM_E_NOMEM, "server: out of memory");
}

void srv_tenants_free(struct srv_tenant *ts, size_t n) {
    if (!ts) return;
    for (size_t i = 0; i < n; i++) {
        realm_free(ts[i].keys);
        pthread_mutex_destroy(&ts[i].mu);
    }
    realm_free(ts);
}

struct srv_tenant *srv_tenant_auth(struct srv_tenant *ts, size_t n, const char *key,
                                   size_t key_len) {
    unsigned char d[32];
    srv_sha256(key, key_len, d);
    struct srv_tenant *found = NULL;
    /* every tenant is checked, so the time taken does not tell which tenant (if any) matched */
    for (size_t i = 0; i < n; i++)
        if (srv_key_matches(d, (const unsigned char(*)[32])ts[i].keys, ts[i].n_keys) && !found)
            found = &ts[i];
    return found;
}

static int64_t now_sec(void) {
    return (int64_t)realm_now_s();
}

/* Tokens charged in the last 60 seconds, and in *oldest_age_out the age of the oldest
 * non-empty bucket; caller holds t->mu. */
static int64_t window_tokens(const struct srv_tenant *t, int64_t now, int64_t *expire_in) {
    int64_t sum = 0, oldest = -1;
    for (int i = 0; i < 60; i++) {
        int64_t age = now - t->win_sec[i];
        if (t->win_tok[i] > 0 && age >= 0 && age < 60) {
            sum += t->win_tok[i];
            if (age > oldest) oldest = age;
        }
    }
    if (expire_in) *expire_in = oldest < 0 ? 1 : 60 - oldest;
    return sum;
}

int srv_tenant_admit(struct srv_tenant *t, int64_t want, int64_t *reserved, struct srv_error *e) {
    const struct realm_tenant_limits *l = &t->spec->limits;
    pthread_mutex_lock(&t->mu);
    if (l->max_concurrent > 0 && t->active >= l->max_concurrent) {
        pthread_mutex_unlock(&t->mu);
        srv_error_set(e, 429, "requests", "rate_limit_exceeded", NULL,
                      "This API key has %d requests in flight, its limit; retry when one finishes.",
                      l->max_concurrent);
        e->retry_after = 1;
        return -1;
    }
    int64_t reserve = 0;
    if (l->tokens_per_minute > 0) {
        /* the reservation bounds how far requests running at once can overshoot the quota: each
         * may use at most what it reserved (plus its prompt) before it is settled */
        reserve = want < 0 ? 0 : want > l->tokens_per_minute ? l->tokens_per_minute : want;
        int64_t expire_in;
        int64_t used = window_tokens(t, now_sec(), &expire_in);
        if (used + t->reserved + reserve > l->tokens_per_minute) {
            int64_t in_flight = t->reserved;
            pthread_mutex_unlock(&t->mu);
            srv_error_set(e, 429, "tokens", "rate_limit_exceeded", NULL,
                          "This API key used %lld tokens in the last minute and has %lld reserved "
                          "by requests in "
                          "flight; this request's max_tokens (%lld) would exceed its limit of %lld "
                          "per minute.",
                          (long long)used, (long long)in_flight, (long long)reserve,
                          (long long)l->tokens_per_minute);
            e->retry_after = (int)(used == 0 || expire_in < 1 ? 1 : expire_in);
            return -1;
        }
    }
    t->active++;
    t->reserved += reserve;
    pthread_mutex_unlock(&t->mu);
    *reserved = reserve;
    return 0;
}

void srv_tenant_settle(struct srv_tenant *t, int64_t reserved, int64_t tokens) {
    int64_t now = now_sec();
    pthread_mutex_lock(&t->mu);
    t->reserved -= reserved;
    if (tokens > 0) {
        int i = (int)(now % 60);
        if (t->win_sec[i] != now) {
            t->win_sec[i] = now;
            t->win_tok[i] = 0;
        }
        t->win_tok[i] += tokens;
    }
    pthread_mutex_unlock(&t->mu);
}

void srv_tenant_slot_release(struct srv_tenant *t) {
    pthread_mutex_lock(&t->mu);
    t->active--;
    pthread_mutex_unlock(&t->mu);
}
