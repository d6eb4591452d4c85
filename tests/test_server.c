/*
 * test_server.c — unit tests of the server's pure parts (no sockets, no models): the config
 * parser (each rejection), API keys (SHA-256 vector, generation, constant-time match), JSON
 * string escaping, OpenAI error bodies, request validation into the guest request, and the
 * tenant limits (concurrency and the tokens-per-minute window). HTTP end to end is in
 * tests/py/test_server.py.
 */
#include <unistd.h>

#include <cjson/cJSON.h>

#include "realm/alloc.h"
#include "realm/server.h"
#include "realm/status.h"
#include "server/srv.h"
#include "testutil.h"

#define HASH_A                                                                                     \
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" /* sha256("abc") */

static struct realm_server_config *parse(const char *json, int expect_rc, const char *expect_msg) {
    struct realm_server_config *c = NULL;
    struct realm_err err = {0};
    int rc = realm_server_config_parse(json, strlen(json), "/base", &c, &err);
    CHECKF(rc == expect_rc, "%s: rc %d (%s), expected %d", json, rc, err.msg, expect_rc);
    if (expect_msg)
        CHECKF(strstr(err.msg, expect_msg) != NULL, "%s: message '%s' lacks '%s'", json, err.msg,
               expect_msg);
    if (rc) CHECK(c == NULL);
    return c;
}

static void test_config(void) {
    struct realm_server_config *c =
        parse("{\"host\": \"0.0.0.0\", \"port\": 9000, \"max_inflight\": 8, \"_comment\": "
              "\"ignored\", \"kv_memory_mb\": 96,"
              " \"models\": [{\"name\": \"m\", \"path\": \"models/m.gguf\", \"n_ctx\": 512}, "
              "{\"name\": \"n\", \"path\": \"/abs.gguf\"}],"
              " \"tenants\": [{\"id\": \"a\", \"key_hashes\": [\"" HASH_A
              "\"], \"models\": [\"m\"], \"guest\": \"g.wasm\", \"weight\": 3,"
              "   \"limits\": {\"max_concurrent\": 2, \"tokens_per_minute\": 1000, "
              "\"max_tokens_per_request\": 64,"
              "   \"guest_memory_mb\": 32, \"kv_blocks\": 10, \"init_wall_ms\": 500, "
              "\"generate_wall_ms\": 7000,"
              "   \"host_memory_mb\": 16}},"
              "  {\"id\": \"b\", \"key_hashes\": [\"" HASH_A "\"], \"guest\": \"default\"}]}",
              REALM_OK, NULL);
    if (c) {
        CHECK(!strcmp(c->host, "0.0.0.0") && c->port == 9000 && c->max_inflight == 8 &&
              c->max_queue == 256);
        CHECK(c->kv_memory_bytes == (int64_t)96 << 20);
        CHECK_EQ_INT(c->n_models, 2);
        CHECK(!strcmp(c->models[0].path, "/base/models/m.gguf") && c->models[0].n_ctx == 512);
        CHECK(!strcmp(c->models[1].path, "/abs.gguf"));
        CHECK_EQ_INT(c->n_tenants, 2);
        const struct realm_tenant_spec *a = &c->tenants[0];
        CHECK(!a->all_models && a->n_models == 1 && !strcmp(a->models[0], "m"));
        CHECK(a->guest && !strcmp(a->guest, "/base/g.wasm"));
        CHECK(a->limits.max_concurrent == 2 && a->limits.tokens_per_minute == 1000 &&
              a->limits.max_tokens_per_request == 64 &&
              a->limits.guest_memory_bytes == (32 << 20) && a->limits.kv_blocks == 10);
        CHECK(a->limits.init_wall_ms == 500 && a->limits.generate_wall_ms == 7000 &&
              a->limits.host_memory_bytes == (16 << 20));
        /* 0 in the limits: the server's defaults apply */
        CHECK(c->tenants[1].limits.init_wall_ms == 0 && c->tenants[1].limits.generate_wall_ms == 0);
        CHECK(c->tenants[1].all_models && c->tenants[1].guest == NULL);
        CHECK(a->weight == 3 && c->tenants[1].weight == 1); /* step share; default 1 */
        CHECK(c->prefill_reserve_rows == 0 && c->max_active_sequences == 0); /* the defaults */
        /* secure defaults: /metrics needs a key, per-IP and read limits on, max_tokens never
         * unbounded */
        CHECK(!c->metrics_public && c->n_admin_keys == 0 && c->max_connections_per_ip == 32);
        CHECK(c->read_timeout_s == 30.0 && c->stream_stall_s == 30.0 &&
              c->default_max_tokens == 2048);
        CHECK(c->tenant_step_share == 1 &&
              c->contended_prefill_rows == 8); /* fair steps, prompts capped under contention */
        CHECK(c->max_choices == 8);
        struct realm_err err = {0};
        CHECK(realm_server_config_check(c, &err) == REALM_OK);
        realm_server_config_free(c);
    }
    parse("{", REALM_E_FORMAT, "invalid JSON");
    parse("[]", REALM_E_FORMAT, "JSON object");
    parse("{\"prot\": 1}", REALM_E_FORMAT, "unknown field 'prot'");
    parse("{\"port\": 70000}", REALM_E_FORMAT, "port");
    parse("{\"port\": \"80\"}", REALM_E_FORMAT, "port");
    parse("{\"max_inflight\": 0}", REALM_E_FORMAT, "max_inflight");
    parse("{\"shutdown_grace_s\": -1}", REALM_E_FORMAT, "shutdown_grace_s");
    parse("{\"kv_memory_mb\": 0}", REALM_E_FORMAT, "kv_memory_mb");
    parse("{\"read_timeout_s\": 0}", REALM_E_FORMAT, "read_timeout_s");
    parse("{\"stream_stall_s\": \"5\"}", REALM_E_FORMAT, "stream_stall_s");
    parse("{\"max_connections_per_ip\": 0}", REALM_E_FORMAT, "max_connections_per_ip");
    parse("{\"default_max_tokens\": 0}", REALM_E_FORMAT, "default_max_tokens");
    parse("{\"tenant_step_share\": -1}", REALM_E_FORMAT, "tenant_step_share");
    parse("{\"max_choices\": 0}", REALM_E_FORMAT, "max_choices");
    parse("{\"max_choices\": 65}", REALM_E_FORMAT, "max_choices");
    parse("{\"contended_prefill_rows\": 5000}", REALM_E_FORMAT, "contended_prefill_rows");
    parse("{\"prefill_reserve_rows\": -2}", REALM_E_FORMAT, "prefill_reserve_rows");
    parse("{\"max_active_sequences\": -1}", REALM_E_FORMAT, "max_active_sequences");
    parse("{\"tenants\": [{\"id\": \"a\", \"weight\": 0}]}", REALM_E_FORMAT, "weight");
    parse("{\"tenants\": [{\"id\": \"a\", \"weight\": 10001}]}", REALM_E_FORMAT, "weight");
    parse("{\"admin_key_hashes\": [\"abc\"]}", REALM_E_FORMAT, "64 hex");
    parse("{\"admin_key_hashes\": \"" HASH_A "\"}", REALM_E_FORMAT, "admin_key_hashes");
    parse("{\"tenants\": [{\"id\": \"a\", \"limits\": {\"generate_wall_ms\": -1}}]}",
          REALM_E_FORMAT, "generate_wall_ms");
    {
        struct realm_server_config *ac =
            parse("{\"admin_key_hashes\": [\"" HASH_A "\"], \"read_timeout_s\": 2.5,"
                  " \"stream_stall_s\": 4, \"max_connections_per_ip\": 3,"
                  " \"default_max_tokens\": 77, \"metrics_public\": true,"
                  " \"tenant_step_share\": 0}",
                  REALM_OK, NULL);
        if (ac) {
            CHECK(ac->n_admin_keys == 1 && !strcmp(ac->admin_key_hashes[0], HASH_A));
            CHECK(ac->read_timeout_s == 2.5 && ac->stream_stall_s == 4.0 &&
                  ac->max_connections_per_ip == 3 && ac->default_max_tokens == 77 &&
                  ac->metrics_public && ac->tenant_step_share == 0);
            realm_server_config_free(ac);
        }
    }
    parse("{\"models\": {}}", REALM_E_FORMAT, "models");
    parse("{\"models\": [{\"name\": \"m\"}]}", REALM_E_FORMAT, "path");
    parse("{\"models\": [{\"name\": \"m\", \"path\": \"x\"}, {\"name\": \"m\", \"path\": \"y\"}]}",
          REALM_E_FORMAT, "twice");
    parse("{\"models\": [{\"name\": \"m\", \"path\": \"x\", \"n_ctx\": -1}]}", REALM_E_FORMAT,
          "n_ctx");
    parse("{\"tenants\": [{\"key_hashes\": []}]}", REALM_E_FORMAT, "id");
    parse("{\"tenants\": [{\"id\": \"a\", \"key_hashes\": [\"abc\"]}]}", REALM_E_FORMAT, "64 hex");
    parse("{\"tenants\": [{\"id\": \"a\", \"key_hashes\": \"" HASH_A "\"}]}", REALM_E_FORMAT,
          "key_hashes");
    parse("{\"tenants\": [{\"id\": \"a\", \"limits\": {\"max_concurrent\": 1.5}}]}", REALM_E_FORMAT,
          "max_concurrent");
    parse("{\"tenants\": [{\"id\": \"a\", \"limits\": {\"rpm\": 1}}]}", REALM_E_FORMAT, "rpm");
    parse("{\"tenants\": [{\"id\": \"a\"}, {\"id\": \"a\"}]}", REALM_E_FORMAT, "twice");

    /* cross-checks */
    struct realm_err err = {0};
    c = parse("{\"models\": [{\"name\": \"m\", \"path\": \"x\"}], \"tenants\": [{\"id\": \"a\"}]}",
              REALM_OK, NULL);
    if (c) {
        CHECK(realm_server_config_check(c, &err) == REALM_E_INVALID &&
              strstr(err.msg, "no API key"));
        realm_server_config_free(c);
    }
    c = parse("{\"models\": [{\"name\": \"m\", \"path\": \"x\"}], \"tenants\": [{\"id\": \"a\", "
              "\"key_hashes\": [\"" HASH_A "\"], \"models\": [\"zz\"]}]}",
              REALM_OK, NULL);
    if (c) {
        CHECK(realm_server_config_check(c, &err) == REALM_E_INVALID && strstr(err.msg, "'zz'"));
        realm_server_config_free(c);
    }
    /* programmatic building */
    CHECK(realm_server_config_new(&c) == REALM_OK);
    struct realm_tenant_spec *t = NULL;
    CHECK(realm_server_config_check(c, &err) == REALM_E_INVALID);
    CHECK(realm_server_config_add_model(c, "m", "/x.gguf", 0, &err) == REALM_OK);
    CHECK(realm_server_config_add_model(c, "m", "/y.gguf", 0, &err) == REALM_E_INVALID);
    CHECK(realm_server_config_add_tenant(c, "t", &t, &err) == REALM_OK && t->all_models);
    CHECK(realm_tenant_add_key_hash(t, "XYZ", &err) == REALM_E_INVALID);
    CHECK(realm_tenant_add_key_hash(
              t, "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD", &err) ==
          REALM_OK);
    CHECK(!strcmp(t->key_hashes[0], HASH_A)); /* stored lower-case */
    CHECK(realm_server_config_check(c, &err) == REALM_OK);
    realm_server_config_free(c);
}

static void test_keys(void) {
    char hex[REALM_KEY_HASH_HEX + 1];
    realm_key_hash("abc", 3, hex);
    CHECK(!strcmp(hex, HASH_A));
    char k1[REALM_KEY_LEN + 1], k2[REALM_KEY_LEN + 1];
    CHECK(realm_key_generate(k1, sizeof k1 - 1) == REALM_E_TOO_SMALL);
    CHECK(realm_key_generate(k1, sizeof k1) == REALM_OK &&
          realm_key_generate(k2, sizeof k2) == REALM_OK);
    CHECK_EQ_INT(strlen(k1), REALM_KEY_LEN);
    CHECK(!strncmp(k1, "realm-", 6) && strcmp(k1, k2));
    for (const char *p = k1 + 6; *p; p++)
        CHECK((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_');
    unsigned char d[32], hashes[3][32];
    CHECK(srv_hex_decode32(HASH_A, hashes[1]) == 0);
    CHECK(srv_hex_decode32("zz", hashes[0]) == -1);
    memset(hashes[0], 0, 32);
    memset(hashes[2], 0xff, 32);
    srv_sha256("abc", 3, d);
    CHECK(srv_key_matches(d, (const unsigned char(*)[32])hashes, 3));
    CHECK(!srv_key_matches(d, (const unsigned char(*)[32])hashes, 1));
    srv_sha256("abd", 3, d);
    CHECK(!srv_key_matches(d, (const unsigned char(*)[32])hashes, 3));
}

static void test_error_json(void) {
    struct srv_error e;
    srv_error_set(&e, 400, "invalid_request_error", NULL, "model", "bad \"%s\"", "x");
    size_t len;
    char *body = srv_error_json(&e, &len);
    CHECK(body && strlen(body) == len);
    cJSON *j = body ? cJSON_Parse(body) : NULL;
    const cJSON *err = cJSON_GetObjectItem(j, "error");
    CHECK(err && !strcmp(cJSON_GetObjectItem(err, "message")->valuestring, "bad \"x\""));
    CHECK(err && !strcmp(cJSON_GetObjectItem(err, "param")->valuestring, "model"));
    CHECK(err && cJSON_IsNull(cJSON_GetObjectItem(err, "code")));
    cJSON_Delete(j);
    realm_free(body);
}

/* Validates `body` for tenant t; returns the HTTP status (200 = accepted) and the guest JSON. */
static int req(const struct realm_server_config *c, const struct realm_tenant_spec *t,
               enum srv_kind kind, const char *body, cJSON **guest) {
    struct srv_request r;
    struct srv_error e;
    if (srv_request_parse(c, t, kind, body, strlen(body), &r, &e)) {
        tu_log("%d %s", e.http, e.message);
        return e.http;
    }
    if (guest) *guest = cJSON_Parse(r.guest_json);
    srv_request_free(&r);
    return 200;
}

/* No field is silently ignored: an unknown one, or one not built yet, is a 400 naming it. */
static void test_no_ignored_fields(const struct realm_server_config *c,
                                   const struct realm_tenant_spec *a) {
    struct srv_request r;
    struct srv_error e;
    const char *unknown = "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": "
                          "\"x\"}], \"unknown\": [1]}";
    CHECK(srv_request_parse(c, a, SRV_CHAT, unknown, strlen(unknown), &r, &e) == -1 &&
          e.http == 400 && !strcmp(e.param, "unknown") && strstr(e.message, "Unrecognized"));
    const char *tools =
        "{\"model\": \"m\", \"prompt\": \"x\", \"tools\": [{\"type\": \"function\"}]}";
    CHECK(srv_request_parse(c, a, SRV_COMPLETION, tools, strlen(tools), &r, &e) == -1 &&
          e.http == 400 && !strcmp(e.param, "tools") && strstr(e.message, "not supported"));
    const char *nulls =
        "{\"model\": \"m\", \"prompt\": \"x\", \"tools\": [], \"response_format\": null}";
    CHECK(srv_request_parse(c, a, SRV_COMPLETION, nulls, strlen(nulls), &r, &e) == 0);
    srv_request_free(&r);
    /* n: 1..max_choices (the guest reads it only above 1); not with logprobs or tools */
    const char *n_ok = "{\"model\": \"m\", \"prompt\": \"x\", \"n\": 8}";
    CHECK(srv_request_parse(c, a, SRV_COMPLETION, n_ok, strlen(n_ok), &r, &e) == 0 && r.n == 8 &&
          strstr(r.guest_json, "\"n\":8"));
    srv_request_free(&r);
    const char *n_one = "{\"model\": \"m\", \"prompt\": \"x\", \"n\": 1}";
    CHECK(srv_request_parse(c, a, SRV_COMPLETION, n_one, strlen(n_one), &r, &e) == 0 && r.n == 1 &&
          !strstr(r.guest_json, "\"n\""));
    srv_request_free(&r);
    const char *n_over = "{\"model\": \"m\", \"prompt\": \"x\", \"n\": 9}";
    CHECK(srv_request_parse(c, a, SRV_COMPLETION, n_over, strlen(n_over), &r, &e) == -1 &&
          e.http == 400 && !strcmp(e.param, "n") && strstr(e.message, "max_choices"));
    const char *n_lp = "{\"model\": \"m\", \"prompt\": \"x\", \"n\": 2, \"logprobs\": 1}";
    CHECK(srv_request_parse(c, a, SRV_COMPLETION, n_lp, strlen(n_lp), &r, &e) == -1 &&
          e.http == 400 && !strcmp(e.param, "logprobs"));
    const char *n_tools =
        "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"n\": 2,"
        " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]}";
    CHECK(srv_request_parse(c, a, SRV_CHAT, n_tools, strlen(n_tools), &r, &e) == -1 &&
          e.http == 400 && !strcmp(e.param, "n"));
}

static void test_requests(void) {
    struct realm_server_config *c =
        parse("{\"models\": [{\"name\": \"m\", \"path\": \"x\"}, {\"name\": \"small\", \"path\": "
              "\"x\", \"n_ctx\": 64}],"
              " \"tenants\": [{\"id\": \"a\", \"key_hashes\": [\"" HASH_A "\"]},"
              "  {\"id\": \"b\", \"key_hashes\": [\"" HASH_A
              "\"], \"models\": [\"small\"], \"limits\": {\"max_tokens_per_request\": 10}}]}",
              REALM_OK, NULL);
    if (!c) return;
    const struct realm_tenant_spec *a = &c->tenants[0], *b = &c->tenants[1];
    test_no_ignored_fields(c, a);
    cJSON *g = NULL;
    CHECK_EQ_INT(req(c, a, SRV_CHAT,
                     "{\"model\": \"m\", \"messages\": [{\"role\": \"developer\", \"content\": "
                     "\"be brief\"},"
                     " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"hi \"}, "
                     "{\"type\": \"text\", \"text\": \"there\"}]}],"
                     " \"max_completion_tokens\": 5, \"stop\": \"END\", \"seed\": -1, "
                     "\"temperature\": 0, \"top_k\": 3,"
                     " \"logit_bias\": {\"7\": -100}, \"stream\": true, \"stream_options\": "
                     "{\"include_usage\": true},"
                     " \"user\": \"u-1\"}",
                     &g),
                 200);
    if (g) {
        const cJSON *msgs = cJSON_GetObjectItem(g, "messages");
        CHECK(cJSON_GetArraySize(msgs) == 2);
        CHECK(!strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 0), "role")->valuestring,
                      "system"));
        CHECK(!strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 1), "content")->valuestring,
                      "hi there"));
        CHECK(cJSON_GetObjectItem(g, "max_tokens")->valuedouble == 5);
        CHECK(cJSON_IsArray(cJSON_GetObjectItem(g, "stop")));
        CHECK(cJSON_GetObjectItem(g, "seed")->valuedouble ==
              9007199254740991.0); /* -1 folded to 2^53 - 1 */
        CHECK(cJSON_GetObjectItem(g, "top_k")->valuedouble == 3);
        CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(g, "logit_bias"), "7")->valuedouble == -100);
        CHECK(!cJSON_GetObjectItem(g, "unknown") && !cJSON_GetObjectItem(g, "n_ctx"));
        cJSON_Delete(g);
        g = NULL;
    }
    CHECK_EQ_INT(req(c, b, SRV_COMPLETION, "{\"model\": \"small\", \"prompt\": [\"hello\"]}", &g),
                 200);
    if (g) { /* the tenant's cap becomes max_tokens; the model's n_ctx goes to the guest */
        CHECK(cJSON_GetObjectItem(g, "max_tokens")->valuedouble == 10);
        CHECK(cJSON_GetObjectItem(g, "n_ctx")->valuedouble == 64);
        CHECK(!strcmp(cJSON_GetObjectItem(g, "prompt")->valuestring, "hello"));
        cJSON_Delete(g);
    }
    CHECK_EQ_INT(req(c, b, SRV_COMPLETION,
                     "{\"model\": \"small\", \"prompt\": \"x\", \"max_tokens\": 11}", NULL),
                 400);
    /* no max_tokens and no tenant cap: the server's default, never unbounded */
    CHECK_EQ_INT(req(c, a, SRV_COMPLETION,
                     "{\"model\": \"m\", \"prompt\": \"x\", \"parse_special\": false}", &g),
                 200);
    if (g) {
        CHECK(cJSON_GetObjectItem(g, "max_tokens")->valuedouble == c->default_max_tokens);
        CHECK(cJSON_IsFalse(cJSON_GetObjectItem(g, "parse_special")));
        cJSON_Delete(g);
        g = NULL;
    }
    /* parse_special is for raw prompts: chat content is never parsed */
    CHECK_EQ_INT(req(c, a, SRV_CHAT,
                     "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], "
                     "\"parse_special\": true}",
                     NULL),
                 400);
    /* a NUL inside a string is refused, never silently cut; an escaped backslash before "u0000" is
     * text */
    CHECK_EQ_INT(req(c, a, SRV_COMPLETION, "{\"model\": \"m\", \"prompt\": \"a\\u0000b\"}", NULL),
                 400);
    CHECK_EQ_INT(
        req(c, a, SRV_CHAT,
            "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"x\\u0000\"}]}",
            NULL),
        400);
    CHECK_EQ_INT(req(c, a, SRV_COMPLETION, "{\"model\": \"m\", \"prompt\": \"a\\\\u0000b\"}", &g),
                 200);
    if (g) {
        CHECK(!strcmp(cJSON_GetObjectItem(g, "prompt")->valuestring, "a\\u0000b"));
        cJSON_Delete(g);
        g = NULL;
    }
    CHECK_EQ_INT(req(c, b, SRV_COMPLETION, "{\"model\": \"m\", \"prompt\": \"x\"}", NULL), 403);
    CHECK_EQ_INT(req(c, a, SRV_COMPLETION, "{\"model\": \"zz\", \"prompt\": \"x\"}", NULL), 404);
    static const char *const bad[] = {
        "",
        "{",
        "[]",
        "null",
        "{\"model\": \"m\"}",
        "{\"model\": [], \"messages\": []}",
        "{\"model\": \"m\", \"messages\": []}",
        "{\"model\": \"m\", \"messages\": [{\"role\": \"user\"}]}",
        "{\"model\": \"m\", \"messages\": [{\"role\": 1, \"content\": \"x\"}]}",
        "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"n\": 9}",
        "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"top_p\": "
        "1.5}",
        "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], "
        "\"max_tokens\": -5}",
        "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], "
        "\"logit_bias\": {\"-1\": 1}}",
        "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"stop\": "
        "[1]}",
        "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"echo\": "
        "true}",
        NULL};
    for (int i = 0; bad[i]; i++)
        CHECKF(req(c, a, SRV_CHAT, bad[i], NULL) == 400, "%s", bad[i]);
    CHECK_EQ_INT(req(c, a, SRV_COMPLETION, "{\"model\": \"m\", \"prompt\": [[1, 2]]}", NULL), 400);
    CHECK_EQ_INT(req(c, a, SRV_COMPLETION, "{\"model\": \"m\", \"prompt\": 5}", NULL), 400);
    realm_server_config_free(c);
}

static void test_limits(void) {
    struct realm_server_config *c =
        parse("{\"tenants\": [{\"id\": \"a\", \"key_hashes\": [\"" HASH_A
              "\"], \"limits\": {\"max_concurrent\": 2, \"tokens_per_minute\": 100}}]}",
              REALM_OK, NULL);
    if (!c) return;
    struct srv_tenant *ts = NULL;
    struct realm_err err = {0};
    CHECK(srv_tenants_init(&ts, c, &err) == REALM_OK);
    if (ts) {
        CHECK(srv_tenant_auth(ts, 1, "abc", 3) == &ts[0]);
        CHECK(srv_tenant_auth(ts, 1, "abd", 3) == NULL);
        CHECK(srv_tenant_auth(ts, 1, "", 0) == NULL);
        struct srv_error e;
        int64_t r1 = -1, r2 = -1, r3 = -1;
        /* concurrency: two slots */
        CHECK(srv_tenant_admit(&ts[0], 10, &r1, &e) == 0 &&
              srv_tenant_admit(&ts[0], 10, &r2, &e) == 0);
        CHECK_EQ_INT(r1, 10);
        CHECK_EQ_INT(ts[0].reserved, 20);
        CHECK(srv_tenant_admit(&ts[0], 10, &r3, &e) == -1 && e.http == 429 && e.retry_after >= 1);
        CHECK_EQ_INT(r3, -1); /* nothing reserved on refusal */
        /* settling replaces the reservation by the tokens really used; the slot stays until
         * released */
        srv_tenant_settle(&ts[0], r1, 60);
        srv_tenant_settle(&ts[0], r2, 0);
        CHECK_EQ_INT(ts[0].reserved, 0);
        CHECK_EQ_INT(ts[0].active, 2);
        srv_tenant_slot_release(&ts[0]);
        srv_tenant_slot_release(&ts[0]);
        /* 60 of 100 used: a request reserving 50 would overshoot, one reserving 40 fits */
        CHECK(srv_tenant_admit(&ts[0], 50, &r1, &e) == -1 && e.http == 429 && e.retry_after >= 1 &&
              e.retry_after <= 60);
        CHECK(strstr(e.message, "60") != NULL && strstr(e.message, "100") != NULL);
        CHECK(srv_tenant_admit(&ts[0], 40, &r1, &e) == 0);
        /* everything reserved: even a 1-token request waits until the reservation is settled */
        CHECK(srv_tenant_admit(&ts[0], 1, &r2, &e) == -1 && e.http == 429);
        CHECK(strstr(e.message, "reserved") != NULL);
        srv_tenant_settle(&ts[0], r1, 5);
        srv_tenant_slot_release(&ts[0]);
        /* a reservation larger than the whole quota is clamped to it (the request is admissible
         * on an idle minute): 65 used, so nothing more fits */
        CHECK(srv_tenant_admit(&ts[0], 1000, &r1, &e) == -1);
        /* the message names no tenant id (a key's owner learns nothing it did not know) */
        CHECK(strstr(e.message, "\"a\"") == NULL);
        CHECK_EQ_INT(ts[0].active, 0);
        srv_tenants_free(ts, 1);
    }
    realm_server_config_free(c);
}

static void test_key_file(void) {
    char dir[] = "/tmp/realm-test-server-XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0);
        return;
    }
    char path[256];
    snprintf(path, sizeof path, "%s/realm.json", dir);
    char key[REALM_KEY_LEN + 1];
    bool created = false;
    struct realm_err err = {0};
    CHECK(realm_config_add_key(path, "t1", key, sizeof key, &created, &err) == REALM_OK && created);
    CHECK(realm_config_add_key(path, "t1", key, sizeof key, &created, &err) == REALM_OK &&
          !created);
    struct realm_server_config *c = NULL;
    CHECK(realm_server_config_load(path, &c, &err) == REALM_OK);
    if (c) {
        char hex[REALM_KEY_HASH_HEX + 1];
        realm_key_hash(key, strlen(key), hex);
        CHECK(c->n_tenants == 1 && c->tenants[0].n_keys == 2 &&
              !strcmp(c->tenants[0].key_hashes[1], hex));
        realm_server_config_free(c);
    }
    size_t n;
    unsigned char *text = tu_read_file(path, &n);
    CHECK(text && !memmem(text, n, key, strlen(key)));
    free(text);
    tu_write_file(path, "{\"bogus\": 1}", 12);
    CHECK(realm_config_add_key(path, "t1", key, sizeof key, &created, &err) == REALM_E_FORMAT);
    text = tu_read_file(path, &n);
    CHECK(text && n == 12); /* left as it was */
    free(text);
    unlink(path);
    rmdir(dir);
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    test_config();
    test_keys();
    test_error_json();
    test_requests();
    test_limits();
    test_key_file();
    return tu_finish("test_server");
}
