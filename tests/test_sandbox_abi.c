/*
 * test_sandbox_abi.c — the realm ABI v1 and the default orchestrator on a real model
 * (stories260K from ../shared; skipped when absent):
 *   - greedy decoding through the sandbox gives the golden ids and text of
 *     stories260K.greedy256.txt;
 *   - one seed gives one output, another seed another; stop strings (across token boundaries),
 *     logit_bias, EOS, penalties, min-p, context length, usage, request validation;
 *   - the adversarial guests (bad pointers, forged/stale/foreign handles, decode abuse,
 *     cancellation, wall-clock limit) get the specific errors they must get;
 *   - per-tenant wall-clock limits that include host work, in realm_generate and realm_init,
 *     also against a decode blocked in the scheduler; a start aborted by its cancel flag;
 *   - the host's measured usage equals what the default guest reports, and is there after a
 *     trap, a guest error and a timeout;
 *   - a tenant's host memory budget: imports over it answer REALM_E_NOMEM while another
 *     tenant with the same inputs succeeds;
 *   - the choice import's bounds and per-choice usage; the default guest's n choices (seed + i,
 *     reproducible, the prompt charged once and its blocks reused from the paged pool);
 *   - input caps of tokenize / chat_format (bytes, JSON values); handle serials that run out
 *     retire their slot and get the instance re-created;
 *   - while each adversary runs in another thread, a well-behaved tenant produces output
 *     byte-identical to its solo run.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "realm/alloc.h"
#include "realm/gguf.h"
#include "realm/model.h"
#include "realm/served.h"
#include "realm/tokenizer.h"
#include "sandbox/sandbox.h" /* sbx_tenant_test_set_serial */
#include "test_sandbox_util.h"

static struct {
    struct realm_gguf *g;
    const struct realm_model *m;
    const struct realm_tokenizer *tok;
    struct realm_served *sv; /* owns m and tok */
    struct realm_sbx_host *h;
    struct realm_sbx_module *def;
} F;

static struct realm_sbx_host *host_with_model(struct realm_sbx_config c) {
    struct realm_sbx_host *h = NULL;
    struct realm_err err;
    if (realm_sbx_host_new(&c, &h, &err)) {
        fprintf(stderr, "host: %s\n", err.msg);
        exit(1);
    }
    struct realm_sbx_model_desc d = {
        .name = "stories260K", .model = F.m, .tok = F.tok, .sched = F.sv->sched};
    if (realm_sbx_host_add_model(h, &d, &err)) {
        fprintf(stderr, "add_model: %s\n", err.msg);
        exit(1);
    }
    return h;
}

static void setup(void) {
    const char *path = tu_shared_path("models/stories260K.gguf");
    if (!path) tu_skip("stories260K.gguf not found");
    struct realm_err err;
    const struct realm_served_params sp = {.threads = 1};
    if (realm_gguf_open(path, &F.g, &err) || realm_served_new(F.g, &sp, &F.sv, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        exit(1);
    }
    F.m = F.sv->model;
    F.tok = F.sv->tok;
    F.h = host_with_model(ts_config());
    F.def = ts_module(F.h, "default");
}

static void teardown(void) {
    realm_sbx_module_free(F.def);
    realm_sbx_host_free(F.h);
    realm_served_free(F.sv);
    realm_gguf_close(F.g);
}

/* The host's measured counts equal what the default guest reported with usage(). */
#define CHECK_MEASURED(u)                                                                          \
    do {                                                                                           \
        CHECK_EQ_INT((u).measured_prompt_tokens, (u).prompt_tokens);                               \
        CHECK_EQ_INT((u).measured_completion_tokens, (u).completion_tokens);                       \
    } while (0)

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- golden data ---- */

static char g_golden_ids[4096];
static char g_golden_text[4096];

/* Reads greedy_ids and the Python-repr text line of stories260K.greedy256.txt. */
static int read_golden(void) {
    const char *path = tu_shared_path("models/stories260K.greedy256.txt");
    if (!path) return -1;
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (!strncmp(line, "greedy_ids: ", 12)) {
            size_t n = strlen(line + 12);
            if (n >= sizeof g_golden_ids) n = sizeof g_golden_ids - 1;
            memcpy(g_golden_ids, line + 12, n);
            g_golden_ids[n] = 0;
        } else if (!strncmp(line, "text: '", 7)) {
            size_t n = strlen(line), k = 0;
            for (size_t i = 7; i + 1 < n && k + 1 < sizeof g_golden_text; i++) {
                char c = line[i];
                if (c == '\\' && i + 2 < n) {
                    c = line[++i];
                    if (c == 'n')
                        c = '\n';
                    else if (c == 't')
                        c = '\t';
                }
                g_golden_text[k++] = c;
            }
            g_golden_text[k] = 0;
        }
    }
    fclose(f);
    return g_golden_ids[0] && g_golden_text[0] ? 0 : -1;
}

static void test_golden(struct realm_sbx_tenant *t) {
    if (read_golden()) {
        CHECKF(0, "cannot read stories260K.greedy256.txt");
        return;
    }
    struct ts_capture out = {0};
    struct realm_sbx_usage u;
    struct realm_err err;
    CHECK_EQ_INT(
        ts_run(
            t,
            "{\"prompt\":\"\",\"max_tokens\":256,\"temperature\":0,\"strip_leading_space\":false}",
            &out, &u, &err),
        REALM_OK);
    CHECKF(!strcmp(out.buf, g_golden_text), "greedy text differs:\n%s\n---\n%s", out.buf,
           g_golden_text);
    CHECK_EQ_INT(u.prompt_tokens, 1);
    CHECK_EQ_INT(u.completion_tokens, 256);
    CHECK_EQ_INT(u.finish_reason, REALM_ABI_FINISH_LENGTH);
    CHECK_EQ_INT(u.decoded_tokens, 256); /* BOS + 255 fed back: the 256th token is not decoded */
    CHECK_EQ_INT(u.decode_calls, 256);
    CHECK_MEASURED(u);
    CHECK(u.guest_ns > 0 && u.host_ns > 0 && u.decode_ns > 0 && u.first_emit_ns > 0);
    /* the default for an empty prompt strips SPM's leading space, as the native CLI prints */
    CHECK_EQ_INT(
        ts_run(t, "{\"prompt\":\"\",\"max_tokens\":256,\"temperature\":0}", &out, NULL, &err),
        REALM_OK);
    CHECK(!strcmp(out.buf, g_golden_text + 1));

    /* the ids themselves, from a guest written against the raw imports */
    struct realm_sbx_module *m = ts_module(F.h, "greedy_ids");
    struct realm_sbx_tenant *gi = ts_tenant(F.h, m, "ids");
    CHECK_EQ_INT(ts_run(gi, "{\"n\":256}", &out, NULL, &err), REALM_OK);
    if (out.len && out.buf[out.len - 1] == ' ') out.buf[--out.len] = 0;
    CHECKF(!strcmp(out.buf, g_golden_ids), "greedy ids differ:\n%s\n---\n%s", out.buf,
           g_golden_ids);
    realm_sbx_tenant_free(gi);
    realm_sbx_module_free(m);
    free(out.buf);
}

static char *run_text(struct realm_sbx_tenant *t, const char *json, struct realm_sbx_usage *u,
                      int *rc) {
    struct ts_capture out = {0};
    struct realm_err err;
    *rc = ts_run(t, json, &out, u, &err);
    if (*rc) tu_log("  error: %s\n", err.msg);
    return out.buf;
}

static void test_sampling(struct realm_sbx_tenant *t) {
    int rc;
    struct realm_sbx_usage u;
    const char *base =
        "{\"prompt\":\"Once upon a "
        "time\",\"max_tokens\":64,\"temperature\":1,\"top_k\":0,\"top_p\":1,\"seed\":";
    char j1[256], j2[256];
    snprintf(j1, sizeof j1, "%s7}", base);
    snprintf(j2, sizeof j2, "%s8}", base);
    char *a = run_text(t, j1, NULL, &rc);
    CHECK_EQ_INT(rc, 0);
    char *b = run_text(t, j1, NULL, &rc);
    char *c = run_text(t, j2, NULL, &rc);
    CHECK(a && b && c && !strcmp(a, b));
    CHECK(a && c && strcmp(a, c) != 0);
    CHECK(a && strlen(a) > 40);
    free(a), free(b), free(c);

    /* the default sampler chain (top-k 40, top-p 0.95) is deterministic too */
    a = run_text(t, "{\"prompt\":\"Once upon a time\",\"max_tokens\":48,\"seed\":3}", NULL, &rc);
    b = run_text(t, "{\"prompt\":\"Once upon a time\",\"max_tokens\":48,\"seed\":3}", NULL, &rc);
    CHECK(a && b && !strcmp(a, b));
    free(a), free(b);

    char *greedy = run_text(
        t, "{\"prompt\":\"\",\"max_tokens\":256,\"temperature\":0,\"strip_leading_space\":false}",
        NULL, &rc);
    CHECK(greedy && rc == 0);
    if (!greedy) return;

    /* stop strings: output ends right before the first match, even one spanning tokens */
    const char *stops[] = {"Lily", "ttle gi", "park.", "\"I want"};
    for (size_t i = 0; i < sizeof stops / sizeof stops[0]; i++) {
        char j[256];
        snprintf(
            j, sizeof j,
            "{\"prompt\":\"\",\"max_tokens\":256,\"temperature\":0,\"strip_leading_space\":false,"
            "\"stop\":[\"zzzz\",\"%s%s\"]}",
            stops[i][0] == '"' ? "\\" : "", stops[i]);
        char *s = run_text(t, j, &u, &rc);
        const char *at = strstr(greedy, stops[i]);
        CHECK(rc == 0 && s && at);
        if (s && at) {
            CHECKF(strlen(s) == (size_t)(at - greedy) && !strncmp(s, greedy, strlen(s)),
                   "stop %s: %s", stops[i], s);
            CHECK_EQ_INT(u.finish_reason, REALM_ABI_FINISH_STOP);
            CHECK(u.completion_tokens < 256);
            CHECK_MEASURED(u);
        }
        free(s);
    }
    /* a single stop string as a plain string */
    char *s = run_text(t,
                       "{\"prompt\":\"\",\"max_tokens\":256,\"temperature\":0,\"strip_leading_"
                       "space\":false,\"stop\":\"red ball\"}",
                       &u, &rc);
    CHECK(s && strstr(greedy, "red ball") &&
          strlen(s) == (size_t)(strstr(greedy, "red ball") - greedy));
    free(s);

    /* EOS forced by logit_bias: nothing emitted, one completion token, finish "stop" */
    char j[256];
    int eos = realm_tokenizer_eos(F.tok);
    snprintf(j, sizeof j,
             "{\"prompt\":\"\",\"max_tokens\":5,\"temperature\":0,\"logit_bias\":{\"%d\":100}}",
             eos);
    s = run_text(t, j, &u, &rc);
    CHECK(rc == 0 && s && s[0] == 0);
    CHECK_EQ_INT(u.completion_tokens, 1);
    CHECK_EQ_INT(u.finish_reason, REALM_ABI_FINISH_STOP);
    CHECK_MEASURED(u);
    free(s);
    snprintf(j, sizeof j,
             "{\"prompt\":\"\",\"max_tokens\":5,\"temperature\":0,\"ignore_eos\":true,\"logit_"
             "bias\":{\"%d\":100}}",
             eos);
    s = run_text(t, j, &u, &rc);
    CHECK_EQ_INT(u.completion_tokens, 5);
    CHECK_EQ_INT(u.finish_reason, REALM_ABI_FINISH_LENGTH);
    free(s);
    /* a -100 bias bans the greedy first token ("Once" = 403) */
    s = run_text(t,
                 "{\"prompt\":\"\",\"max_tokens\":3,\"temperature\":0,\"strip_leading_space\":"
                 "false,\"logit_bias\":{\"403\":-100}}",
                 NULL, &rc);
    CHECK(rc == 0 && s && strncmp(s, " Once", 5) != 0 && s[0]);
    free(s);

    /* penalties change greedy's repetitions, deterministically */
    const char *pen[] = {"\"repeat_penalty\":1.5", "\"frequency_penalty\":1.0",
                         "\"presence_penalty\":1.5"};
    for (int i = 0; i < 3; i++) {
        snprintf(j, sizeof j,
                 "{\"prompt\":\"\",\"max_tokens\":256,\"temperature\":0,\"strip_leading_space\":"
                 "false,%s}",
                 pen[i]);
        a = run_text(t, j, NULL, &rc);
        b = run_text(t, j, NULL, &rc);
        CHECKF(a && b && !strcmp(a, b) && strcmp(a, greedy) != 0, "penalty %s", pen[i]);
        free(a), free(b);
    }
    /* min-p 1: only the most likely token survives, so sampling at any temperature is greedy */
    a = run_text(t,
                 "{\"prompt\":\"\",\"max_tokens\":256,\"temperature\":1.5,\"top_k\":0,\"min_p\":1,"
                 "\"seed\":5,"
                 "\"strip_leading_space\":false}",
                 NULL, &rc);
    CHECK(a && !strcmp(a, greedy));
    free(a);

    /* the context bounds the generation: n_ctx 8 and one prompt token → 8 tokens, "length" */
    a = run_text(t,
                 "{\"prompt\":\"\",\"max_tokens\":100,\"n_ctx\":8,\"temperature\":0,\"strip_"
                 "leading_space\":false}",
                 &u, &rc);
    CHECK_EQ_INT(u.completion_tokens, 8);
    CHECK_EQ_INT(u.finish_reason, REALM_ABI_FINISH_LENGTH);
    CHECK_MEASURED(u);
    CHECK(a && !strncmp(a, greedy, strlen(a)) && strlen(a) > 10);
    free(a);
    /* raw token input */
    a = run_text(t, "{\"tokens\":[1,403,407],\"max_tokens\":4,\"temperature\":0}", &u, &rc);
    CHECK(rc == 0 && u.prompt_tokens == 3 && u.completion_tokens == 4);
    CHECK_MEASURED(u);
    free(a);
    a = run_text(t, "{\"prompt\":\"Once upon a time there was\",\"max_tokens\":20,\"seed\":9}", &u,
                 &rc);
    CHECK(rc == 0 && u.prompt_tokens > 5 && u.completion_tokens == 20);
    CHECK_MEASURED(u);
    free(a);
    free(greedy);
}

static void test_bad_requests(struct realm_sbx_tenant *t) {
    static const struct {
        const char *json;
        int code;
        const char *msg;
    } cases[] = {
        {"not json", REALM_E_INVALID, "json:"},
        {"[1]", REALM_E_INVALID, "JSON object"},
        {"{\"prompt\":1}", REALM_E_INVALID, "prompt"},
        {"{}", REALM_E_INVALID, "exactly one"},
        {"{\"prompt\":\"a\",\"messages\":[]}", REALM_E_INVALID, "exactly one"},
        {"{\"prompt\":\"a\",\"temperature\":\"hot\"}", REALM_E_INVALID, "temperature"},
        {"{\"prompt\":\"a\",\"max_tokens\":-1}", REALM_E_INVALID, "max_tokens"},
        {"{\"prompt\":\"a\",\"max_tokens\":1.5}", REALM_E_INVALID, "max_tokens"},
        {"{\"prompt\":\"a\",\"top_p\":2}", REALM_E_INVALID, "top_p"},
        {"{\"prompt\":\"a\",\"stop\":[1]}", REALM_E_INVALID, "stop"},
        {"{\"prompt\":\"a\",\"stop\":[\"\"]}", REALM_E_INVALID, "stop"},
        {"{\"prompt\":\"a\",\"logit_bias\":{\"x\":1}}", REALM_E_INVALID, "logit_bias"},
        {"{\"prompt\":\"a\",\"logit_bias\":{\"5\":1000}}", REALM_E_INVALID, "logit_bias"},
        {"{\"prompt\":\"a\",\"seed\":-4}", REALM_E_INVALID, "seed"},
        {"{\"prompt\":\"a\",\"ignore_eos\":1}", REALM_E_INVALID, "ignore_eos"},
        {"{\"tokens\":[1,99999]}", REALM_E_INVALID, "tokens"},
        {"{\"prompt\":\"a\",\"model\":\"nope\"}", REALM_E_NOT_FOUND, "model 'nope'"},
        {"{\"prompt\":\"a\",\"model\":\"../shared/models/stories260K.gguf\"}", REALM_E_NOT_FOUND,
         "not found"},
        /* a role the template renderer refuses (stories260K has no template: ChatML stands in) */
        {"{\"messages\":[{\"role\":\"us er\",\"content\":\"hi\"}]}", REALM_E_INVALID,
         "chat template"},
        {"{\"prompt\":\"a\",\"dup\":1,\"dup\":2}", REALM_E_INVALID, "duplicate key"},
    };
    struct ts_capture out = {0};
    struct realm_err err;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = ts_run(t, cases[i].json, &out, NULL, &err);
        CHECKF(rc == cases[i].code && strstr(err.msg, cases[i].msg), "%s -> %d %s", cases[i].json,
               rc, err.msg);
    }
    /* a model addressed by its configured name works */
    CHECK_EQ_INT(ts_run(t, "{\"prompt\":\"a\",\"model\":\"stories260K\",\"max_tokens\":2}", &out,
                        NULL, &err),
                 REALM_OK);
    free(out.buf);
}

/* ---- adversarial guests, alone ---- */

static int run_guest(const char *guest, const char *json, struct ts_capture *out,
                     struct realm_err *err) {
    struct realm_sbx_module *m = ts_module(F.h, guest);
    struct realm_sbx_tenant *t = ts_tenant(F.h, m, guest);
    int rc = ts_run(t, json, out, NULL, err);
    realm_sbx_tenant_free(t);
    realm_sbx_module_free(m);
    return rc;
}

struct canceller {
    struct realm_sbx_request *req;
    int delay_ms;
    atomic_int started; /* set by the first emit: the guest is running its request */
    struct ts_capture out;
};

static int emit_started(void *user, const char *text, size_t len) {
    struct canceller *c = user;
    atomic_store(&c->started, 1);
    return ts_emit(&c->out, text, len);
}

static void *cancel_later(void *arg) {
    struct canceller *c = arg;
    struct timespec ms = {0, 1000000L};
    /* wait until the guest has started (its first emit), however slow the machine is */
    for (int i = 0; i < 60000 && !atomic_load(&c->started); i++)
        nanosleep(&ms, NULL);
    struct timespec ts = {0, (long)c->delay_ms * 1000000L};
    nanosleep(&ts, NULL);
    realm_sbx_request_cancel(c->req);
    return NULL;
}

/* Runs a request of the after_cancel guest and cancels it from another thread delay_ms after
 * the guest has started. */
static int run_cancelled(struct realm_sbx_tenant *t, const char *json, int delay_ms,
                         struct realm_err *err) {
    struct realm_sbx_request r;
    struct canceller c = {&r, delay_ms, 0, {0}};
    realm_sbx_request_init(&r, json, strlen(json), emit_started, &c);
    pthread_t th;
    pthread_create(&th, NULL, cancel_later, &c);
    int rc = realm_sbx_tenant_generate(t, &r, err);
    atomic_store(&c.started, 1); /* releases the canceller if the guest never emitted */
    pthread_join(th, NULL);
    tu_log("  %s (cancelled) -> %d %s\n", json, rc, err->msg);
    free(c.out.buf);
    return rc;
}

static int emit_then_gone(void *user, const char *text, size_t len) {
    (void)user, (void)text, (void)len;
    return -1; /* the client went away */
}

static void test_adversaries_alone(void) {
    struct ts_capture out = {0};
    struct realm_err err;
    CHECKF(run_guest("bad_pointers", "{}", &out, &err) == REALM_OK, "%s", err.msg);
    CHECK(atoi(out.buf) > 50 && strstr(out.buf, "checks"));
    CHECKF(run_guest("decode_abuse", "{}", &out, &err) == REALM_OK, "%s", err.msg);
    CHECK(!strcmp(out.buf, "ok"));
    CHECKF(run_guest("handles", "{\"op\":\"forge\"}", &out, &err) == REALM_OK, "%s", err.msg);
    CHECK(!strcmp(out.buf, "ok"));

    /* a handle from tenant A is a bad handle in tenant B, and stale in A once closed */
    struct realm_sbx_module *m = ts_module(F.h, "handles");
    struct realm_sbx_tenant *a = ts_tenant(F.h, m, "A"), *b = ts_tenant(F.h, m, "B");
    CHECK_EQ_INT(ts_run(a, "{\"op\":\"open\"}", &out, NULL, &err), REALM_OK);
    int handle = atoi(out.buf);
    CHECK(handle > 0);
    char j[128];
    snprintf(j, sizeof j, "{\"op\":\"use\",\"handle\":%d}", handle);
    CHECK_EQ_INT(ts_run(b, "{\"op\":\"open\"}", &out, NULL, &err),
                 REALM_OK); /* B has a session too */
    CHECK_EQ_INT(ts_run(b, j, &out, NULL, &err), REALM_OK);
    CHECKF(!strcmp(out.buf, "-9 -9"), "%s", out.buf);
    struct realm_sbx_tenant_stats st;
    realm_sbx_tenant_get_stats(b, &st);
    CHECK_EQ_INT(st.handle_errors, 2);
    CHECK_EQ_INT(ts_run(a, j, &out, NULL, &err), REALM_OK);
    CHECKF(!strcmp(out.buf, "0 0"), "%s", out.buf);
    CHECK_EQ_INT(ts_run(a, j, &out, NULL, &err), REALM_OK);
    CHECKF(!strcmp(out.buf, "-9 -9"), "%s", out.buf);
    realm_sbx_tenant_get_stats(b, &st);
    CHECK_EQ_INT(st.sessions, 1); /* B's own session is untouched */
    /* the host closes what a guest left open (a server does between requests): stale after */
    CHECK_EQ_INT(realm_sbx_tenant_close_sessions(b), 1);
    realm_sbx_tenant_get_stats(b, &st);
    CHECK_EQ_INT(st.sessions, 0);
    CHECK_EQ_INT(ts_run(b, "{\"op\":\"open\"}", &out, NULL, &err), REALM_OK);
    int hb = atoi(out.buf);
    CHECK_EQ_INT(realm_sbx_tenant_close_sessions(b), 1);
    snprintf(j, sizeof j, "{\"op\":\"use\",\"handle\":%d}", hb);
    CHECK_EQ_INT(ts_run(b, j, &out, NULL, &err), REALM_OK);
    CHECKF(!strcmp(out.buf, "-9 -9"), "%s", out.buf);
    realm_sbx_tenant_free(a);
    realm_sbx_tenant_free(b);
    realm_sbx_module_free(m);

    /* imports after cancellation: a polite guest sees CANCELLED everywhere and unwinds ... */
    m = ts_module(F.h, "after_cancel");
    struct realm_sbx_tenant *t = ts_tenant(F.h, m, "cancel");
    CHECK_EQ_INT(run_cancelled(t, "{\"mode\":\"polite\"}", 30, &err), REALM_E_CANCELLED);
    realm_sbx_tenant_get_stats(t, &st);
    CHECK_EQ_INT(st.restarts, 0);
    CHECK_EQ_INT(st.sessions, 0);
    /* ... the client going away (emit fails) cancels the same way ... */
    struct realm_sbx_request r;
    const char *polite = "{\"mode\":\"polite\"}";
    realm_sbx_request_init(&r, polite, strlen(polite), emit_then_gone, NULL);
    CHECK_EQ_INT(realm_sbx_tenant_generate(t, &r, &err), REALM_E_CANCELLED);
    /* ... and a rude one that keeps computing is stopped by the host */
    CHECK_EQ_INT(run_cancelled(t, "{\"mode\":\"rude\"}", 30, &err), REALM_E_CANCELLED);
    CHECKF(strstr(err.msg, "stopped: request cancelled") != NULL, "%s", err.msg);
    realm_sbx_tenant_get_stats(t, &st);
    CHECK_EQ_INT(st.restarts, 0); /* the restart happens on the next request */
    CHECK_EQ_INT(st.sessions, 0); /* the killed instance's sessions were closed */
    realm_sbx_tenant_free(t);
    realm_sbx_module_free(m);

    /* a guest that spends its time in host calls is stopped by the wall-clock limit */
    struct realm_sbx_config c = ts_config();
    c.wall_limit_ms = 200;
    struct realm_sbx_host *h2 = host_with_model(c);
    m = ts_module(h2, "loop_generate");
    t = ts_tenant(h2, m, "wall");
    CHECK_EQ_INT(ts_run(t, "{\"loop\":\"decode\"}", &out, NULL, &err), REALM_E_TIMEOUT);
    CHECKF(strstr(err.msg, "wall-clock limit of 200 ms") != NULL, "%s", err.msg);
    CHECK_EQ_INT(ts_run(t, "{}", &out, NULL, &err), REALM_OK);
    CHECK(!strcmp(out.buf, "alive 1"));
    realm_sbx_tenant_free(t);
    realm_sbx_module_free(m);
    realm_sbx_host_free(h2);

    /* the KV budget per tenant and the context cap (stories260K: 640 bytes of KV per position) */
    c = ts_config();
    c.max_kv_bytes = 640 * 100;
    c.max_ctx = 150;
    h2 = host_with_model(c);
    struct realm_sbx_tenant *x = NULL;
    CHECK_EQ_INT(realm_sbx_tenant_new(h2, F.def, NULL, &x, &err),
                 REALM_E_INVALID); /* F.h's module */
    m = ts_module(h2, "default");
    t = ts_tenant(h2, m, "kv");
    CHECK_EQ_INT(ts_run(t, "{\"prompt\":\"\",\"max_tokens\":1,\"n_ctx\":100}", &out, NULL, &err),
                 REALM_OK);
    CHECK_EQ_INT(ts_run(t, "{\"prompt\":\"\",\"max_tokens\":1,\"n_ctx\":101}", &out, NULL, &err),
                 REALM_E_KV_FULL);
    CHECKF(strstr(err.msg, "session_open(101)") != NULL, "%s", err.msg);
    CHECK_EQ_INT(ts_run(t, "{\"prompt\":\"\",\"max_tokens\":1,\"n_ctx\":151}", &out, NULL, &err),
                 REALM_E_LIMIT);
    realm_sbx_tenant_free(t);
    realm_sbx_module_free(m);
    realm_sbx_host_free(h2);

    /* a tenant limited to no models sees none of them, by name or by default */
    m = ts_module(F.h, "greedy_ids");
    const char *none[1] = {NULL};
    struct realm_sbx_tenant_params p = {.name = "nomodels", .models = none, .n_models = 0};
    t = NULL;
    CHECK_EQ_INT(realm_sbx_tenant_new(F.h, m, &p, &t, &err), REALM_OK);
    if (t) CHECK_EQ_INT(ts_run(t, "{}", &out, NULL, &err), REALM_E_NOT_FOUND);
    realm_sbx_tenant_free(t);
    realm_sbx_module_free(m);
    free(out.buf);
}

/* ---- wall-clock limits that include host work ---- */

/* A decode path that never finishes on its own: it waits for its cancel flag (a scheduler
 * with a queue that never drains). Gives up after 20 s so that a broken host fails the test
 * instead of hanging it. */
static atomic_int g_blocked_decodes;

static int block_decode(void *ctx, uint32_t tenant, struct realm_session *session,
                        const int32_t *tokens, int32_t n, float *logits, const atomic_bool *cancel,
                        struct realm_err *err) {
    (void)ctx, (void)tenant, (void)session, (void)tokens, (void)n, (void)logits;
    atomic_fetch_add(&g_blocked_decodes, 1);
    struct timespec ms = {0, 1000000L};
    for (int i = 0; i < 20000; i++) {
        if (cancel && atomic_load(cancel)) return REALM_E_CANCELLED;
        nanosleep(&ms, NULL);
    }
    return realm_err_set(err, REALM_E_INTERNAL, "test: decode was never cancelled");
}

struct flag_later {
    atomic_bool *flag;
    int ms;
};

static void *set_flag_later(void *arg) {
    struct flag_later *f = arg;
    struct timespec ts = {f->ms / 1000, (long)(f->ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    atomic_store(f->flag, true);
    return NULL;
}

/* realm_sbx_tenant_new with the given limits; returns its status and the time it took. */
static int timed_new(struct realm_sbx_host *h, struct realm_sbx_module *m,
                     struct realm_sbx_tenant_params *p, double *ms, struct realm_err *err) {
    struct realm_sbx_tenant *t = NULL;
    double t0 = now_ms();
    int rc = realm_sbx_tenant_new(h, m, p, &t, err);
    *ms = now_ms() - t0;
    tu_log("  new %s -> %d %s (%.0f ms)\n", p->name, rc, rc ? err->msg : "", *ms);
    if (rc) CHECK(t == NULL);
    realm_sbx_tenant_free(t);
    return rc;
}

static void test_wall_limits(void) {
    struct ts_capture out = {0};
    struct realm_err err;
    struct realm_sbx_usage u;
    double ms;
    /* budgets far away: only the wall clock can stop these guests (they live in the host) */
    struct realm_sbx_config c = ts_config();
    c.init_budget_ms = 30000;
    c.generate_budget_ms = 30000;
    c.init_wall_ms = 400;
    struct realm_sbx_host *h = host_with_model(c);
    struct realm_sbx_module *loop = ts_module(h, "rewind_loop");
    struct realm_sbx_module *loop_init = ts_module(h, "rewind_loop_init");

    /* decode + rewind forever in realm_generate: the tenant's generate_wall_ms ends it (the
     * host sets no wall_limit_ms), and what it decoded is measured */
    struct realm_sbx_tenant_params p = {.name = "rewind", .generate_wall_ms = 300};
    struct realm_sbx_tenant *t = NULL;
    CHECK_EQ_INT(realm_sbx_tenant_new(h, loop, &p, &t, &err), REALM_OK);
    if (t) {
        double t0 = now_ms();
        CHECK_EQ_INT(ts_run(t, "{}", &out, &u, &err), REALM_E_TIMEOUT);
        ms = now_ms() - t0;
        CHECKF(ms >= 290 && ms < 1300, "rewind loop ended after %.0f ms", ms);
        CHECKF(strstr(err.msg, "realm_generate stopped: wall-clock limit of 300 ms") != NULL, "%s",
               err.msg);
        CHECK(u.decoded_tokens > 0 && u.measured_completion_tokens > 0 &&
              u.measured_prompt_tokens > 0);
        CHECK_EQ_INT(u.measured_prompt_tokens + u.measured_completion_tokens, u.decoded_tokens + 1);
        CHECK_EQ_INT(u.prompt_tokens, -1); /* nothing reported: the charge is what was measured */
        /* a fresh instance serves the next request */
        CHECK_EQ_INT(ts_run(t, "{\"n\":2}", &out, &u, &err), REALM_OK);
        CHECK(!strcmp(out.buf, "startdone"));
        struct realm_sbx_tenant_stats st;
        realm_sbx_tenant_get_stats(t, &st);
        CHECK_EQ_INT(st.restarts, 1);
        realm_sbx_tenant_free(t);
    }
    /* the same loop in realm_init: the host's init_wall_ms, or the tenant's; no tenant */
    p = (struct realm_sbx_tenant_params){.name = "rewind_init"};
    CHECK_EQ_INT(timed_new(h, loop_init, &p, &ms, &err), REALM_E_TIMEOUT);
    CHECKF(strstr(err.msg, "realm_init stopped: wall-clock limit of 400 ms") != NULL, "%s",
           err.msg);
    CHECKF(ms >= 390 && ms < 1400, "init ended after %.0f ms", ms);
    p.init_wall_ms = 250;
    CHECK_EQ_INT(timed_new(h, loop_init, &p, &ms, &err), REALM_E_TIMEOUT);
    CHECKF(strstr(err.msg, "wall-clock limit of 250 ms") != NULL, "%s", err.msg);
    CHECKF(ms >= 240 && ms < 1250, "init ended after %.0f ms", ms);
    /* ... or its cancel flag */
    atomic_bool cancel;
    atomic_init(&cancel, false);
    struct flag_later fl = {&cancel, 200};
    pthread_t th;
    p = (struct realm_sbx_tenant_params){
        .name = "rewind_init", .init_wall_ms = 30000, .cancel = &cancel};
    CHECK(pthread_create(&th, NULL, set_flag_later, &fl) == 0);
    CHECK_EQ_INT(timed_new(h, loop_init, &p, &ms, &err), REALM_E_CANCELLED);
    pthread_join(th, NULL);
    CHECKF(strstr(err.msg, "cancelled") != NULL, "%s", err.msg);
    CHECKF(ms >= 190 && ms < 1200, "cancelled init ended after %.0f ms", ms);
    /* a flag already set: the start does no work */
    CHECK_EQ_INT(timed_new(h, loop_init, &p, &ms, &err), REALM_E_CANCELLED);
    realm_sbx_module_free(loop);
    realm_sbx_module_free(loop_init);
    realm_sbx_host_free(h);

    /* a decode that waits in the scheduler ends at the deadline too: the ticker raises the
     * flag decode hands the scheduler */
    h = NULL;
    CHECK_EQ_INT(realm_sbx_host_new(&c, &h, &err), REALM_OK);
    if (!h) return;
    struct realm_sbx_model_desc d = {
        .name = "blocking", .model = F.m, .tok = F.tok, .decode = block_decode};
    CHECK_EQ_INT(realm_sbx_host_add_model(h, &d, &err), REALM_OK);
    loop = ts_module(h, "rewind_loop");
    loop_init = ts_module(h, "rewind_loop_init");
    p = (struct realm_sbx_tenant_params){.name = "blocked", .generate_wall_ms = 300};
    t = NULL;
    CHECK_EQ_INT(realm_sbx_tenant_new(h, loop, &p, &t, &err), REALM_OK);
    if (t) {
        atomic_store(&g_blocked_decodes, 0);
        double t0 = now_ms();
        CHECK_EQ_INT(ts_run(t, "{}", &out, &u, &err), REALM_E_TIMEOUT);
        ms = now_ms() - t0;
        CHECKF(strstr(err.msg, "wall-clock limit of 300 ms") != NULL, "%s", err.msg);
        CHECKF(ms >= 290 && ms < 1300, "blocked decode ended after %.0f ms", ms);
        CHECK(atomic_load(&g_blocked_decodes) >= 1);
        CHECK_EQ_INT(u.decoded_tokens, 0); /* the blocked decode failed: nothing to charge */
        CHECK_EQ_INT(u.measured_prompt_tokens, 0);
        CHECK_EQ_INT(u.measured_completion_tokens, 0);
        realm_sbx_tenant_free(t);
    }
    /* the request's cancel flag reaches a blocked decode as CANCELLED, not TIMEOUT */
    p.generate_wall_ms = 30000;
    t = NULL;
    CHECK_EQ_INT(realm_sbx_tenant_new(h, loop, &p, &t, &err), REALM_OK);
    if (t) {
        double t0 = now_ms();
        CHECK_EQ_INT(run_cancelled(t, "{}", 100, &err), REALM_E_CANCELLED);
        ms = now_ms() - t0;
        CHECKF(ms < 1500, "cancelled blocked decode ended after %.0f ms", ms);
        realm_sbx_tenant_free(t);
    }
    p = (struct realm_sbx_tenant_params){.name = "blocked_init", .init_wall_ms = 300};
    atomic_store(&g_blocked_decodes, 0);
    CHECK_EQ_INT(timed_new(h, loop_init, &p, &ms, &err), REALM_E_TIMEOUT);
    CHECKF(strstr(err.msg, "realm_init stopped: wall-clock limit of 300 ms") != NULL, "%s",
           err.msg);
    CHECKF(ms >= 290 && ms < 1300, "blocked init ended after %.0f ms", ms);
    CHECK(atomic_load(&g_blocked_decodes) >= 1);
    atomic_store(&cancel, false);
    p = (struct realm_sbx_tenant_params){
        .name = "blocked_init", .init_wall_ms = 30000, .cancel = &cancel};
    CHECK(pthread_create(&th, NULL, set_flag_later, &fl) == 0);
    CHECK_EQ_INT(timed_new(h, loop_init, &p, &ms, &err), REALM_E_CANCELLED);
    pthread_join(th, NULL);
    CHECKF(ms >= 190 && ms < 1200, "cancelled blocked init ended after %.0f ms", ms);
    realm_sbx_module_free(loop);
    realm_sbx_module_free(loop_init);
    realm_sbx_host_free(h);
    free(out.buf);
}

/* Measured usage is there whatever the outcome, and is reset by each call. */
static void test_measured_usage(void) {
    struct realm_sbx_module *m = ts_module(F.h, "rewind_loop");
    struct realm_sbx_tenant *t = ts_tenant(F.h, m, "measured");
    struct ts_capture out = {0};
    struct realm_sbx_usage u;
    struct realm_err err;
    /* N rounds of 4 + 1 tokens: prompt 1 + 4N, completion N */
    CHECK_EQ_INT(ts_run(t, "{\"n\":5,\"then\":\"trap\"}", &out, &u, &err), REALM_E_TRAP);
    CHECK_EQ_INT(u.decoded_tokens, 25);
    CHECK_EQ_INT(u.measured_prompt_tokens, 21);
    CHECK_EQ_INT(u.measured_completion_tokens, 5);
    CHECK_EQ_INT(ts_run(t, "{\"n\":3,\"then\":\"fail\"}", &out, &u, &err), REALM_E_INVALID);
    CHECKF(strstr(err.msg, "failing on purpose") != NULL, "%s", err.msg);
    CHECK_EQ_INT(u.measured_prompt_tokens, 13);
    CHECK_EQ_INT(u.measured_completion_tokens, 3);
    /* one request struct used twice: the second call starts from zero */
    const char *json = "{\"n\":2}";
    struct realm_sbx_request r;
    ts_capture_reset(&out);
    realm_sbx_request_init(&r, json, strlen(json), ts_emit, &out);
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(realm_sbx_tenant_generate(t, &r, &err), REALM_OK);
        CHECK_EQ_INT(r.usage.decoded_tokens, 10);
        CHECK_EQ_INT(r.usage.measured_prompt_tokens, 9);
        CHECK_EQ_INT(r.usage.measured_completion_tokens, 2);
    }
    free(out.buf);
    realm_sbx_tenant_free(t);
    realm_sbx_module_free(m);
}

/* ---- choices (the request's n) ---- */

/* Emitted text per choice: the emit callback reads the request's current choice. */
struct choice_capture {
    struct realm_sbx_request *r;
    struct ts_capture text[4];
};

static int choice_emit(void *user, const char *text, size_t len) {
    struct choice_capture *c = user;
    int32_t i = c->r->choice;
    if (i < 0 || i >= 4) return -1;
    return ts_emit(&c->text[i], text, len);
}

static int run_choices(struct realm_sbx_tenant *t, const char *json, int32_t n,
                       struct choice_capture *cc, struct realm_sbx_request *r,
                       struct realm_err *err) {
    for (int i = 0; i < 4; i++) {
        ts_capture_reset(&cc->text[i]);
        ts_emit(&cc->text[i], "", 0);
    }
    realm_sbx_request_init(r, json, strlen(json), choice_emit, cc);
    r->n_choices = n;
    cc->r = r;
    int rc = realm_sbx_tenant_generate(t, r, err);
    tu_log("  %s (n_choices %d) -> %d %s [%.60s|%.60s|%.60s]\n", json, n, rc, rc ? err->msg : "",
           cc->text[0].buf, cc->text[1].buf, cc->text[2].buf);
    return rc;
}

/* The choice import's bounds and per-choice usage (tests/guests/choices.c); the default guest's
 * n choices: one output per choice, seed + i streams, the prompt charged once in a paged pool. */
static void test_choices(void) {
    struct choice_capture cc = {0};
    struct realm_sbx_request r;
    struct realm_err err;
    char want[160];
    struct realm_sbx_module *m = ts_module(F.h, "choices");
    struct realm_sbx_tenant *t = ts_tenant(F.h, m, "choices");
    CHECK_EQ_INT(run_choices(t, "{\"n\":3}", 3, &cc, &r, &err), REALM_OK);
    snprintf(want, sizeof want, "init=%d neg=%d n=%d max=%d last=0 first=0", REALM_E_STATE,
             REALM_E_RANGE, REALM_E_RANGE, REALM_E_RANGE);
    CHECKF(cc.text[0].buf && !strcmp(cc.text[0].buf, want), "%s", cc.text[0].buf);
    CHECK(cc.text[1].len == 0);
    CHECK(cc.text[2].buf && !strcmp(cc.text[2].buf, "last"));
    CHECK_EQ_INT(r.usage.completion_tokens, 5); /* 2 + 3: summed over choices */
    CHECK_EQ_INT(r.usage.prompt_tokens, 4);
    CHECK_EQ_INT(r.usage.finish_reason, REALM_ABI_FINISH_STOP);
    CHECK_EQ_INT(r.choice_finish[0], REALM_ABI_FINISH_STOP);
    CHECK_EQ_INT(r.choice_finish[1], -1);
    CHECK_EQ_INT(r.choice_finish[2], REALM_ABI_FINISH_LENGTH);
    /* a request without n has one choice: choice(1) is out of range, everything is choice 0 */
    CHECK_EQ_INT(run_choices(t, "{\"n\":2}", 0, &cc, &r, &err), REALM_OK);
    snprintf(want, sizeof want, "init=%d neg=%d n=%d max=%d last=%d first=0", REALM_E_STATE,
             REALM_E_RANGE, REALM_E_RANGE, REALM_E_RANGE, REALM_E_RANGE);
    CHECKF(cc.text[0].buf && !strcmp(cc.text[0].buf, want), "%s", cc.text[0].buf);
    CHECK_EQ_INT(r.usage.completion_tokens, 3);
    /* n above the ABI's cap is cut to it */
    CHECK_EQ_INT(run_choices(t, "{\"n\":65}", 1000, &cc, &r, &err), REALM_OK);
    CHECKF(cc.text[0].buf && strstr(cc.text[0].buf, "last=-") != NULL, "%s", cc.text[0].buf);
    realm_sbx_tenant_free(t);
    realm_sbx_module_free(m);

    /* the default guest on a paged pool: its sessions attach the first one's prompt blocks */
    struct realm_sbx_host *h = NULL;
    struct realm_sbx_config c = ts_config();
    c.generate_budget_ms = 5000;
    CHECK_EQ_INT(realm_sbx_host_new(&c, &h, &err), REALM_OK);
    if (!h) return;
    struct realm_sbx_model_desc d = {.name = "stories260K",
                                     .model = F.m,
                                     .tok = F.tok,
                                     .sched = F.sv->sched,
                                     .kv_pool = F.sv->kv};
    CHECK_EQ_INT(realm_sbx_host_add_model(h, &d, &err), REALM_OK);
    struct realm_sbx_module *def = ts_module(h, "default");
    t = ts_tenant(h, def, "choices_default");
    const char *one =
        "{\"prompt\":\"Once upon a time, there was a little girl named Lily. She loved to play "
        "outside in the park with her friends.\",\"max_tokens\":6,\"ignore_eos\":true,"
        "\"temperature\":1,\"seed\":11}";
    const char *three =
        "{\"prompt\":\"Once upon a time, there was a little girl named Lily. She loved to play "
        "outside in the park with her friends.\",\"max_tokens\":6,\"ignore_eos\":true,"
        "\"temperature\":1,\"seed\":11,\"n\":3}";
    CHECK_EQ_INT(run_choices(t, one, 1, &cc, &r, &err), REALM_OK);
    char solo[512];
    snprintf(solo, sizeof solo, "%s", cc.text[0].buf ? cc.text[0].buf : "");
    int64_t p1 = r.usage.prompt_tokens;
    CHECK(p1 > 32);
    struct realm_sched_stats s0, s1;
    realm_sched_get_stats(F.sv->sched, &s0);
    CHECK_EQ_INT(run_choices(t, three, 3, &cc, &r, &err), REALM_OK);
    realm_sched_get_stats(F.sv->sched, &s1);
    char first[3][512];
    for (int i = 0; i < 3; i++)
        snprintf(first[i], sizeof first[i], "%s", cc.text[i].buf ? cc.text[i].buf : "");
    CHECKF(!strcmp(first[0], solo), "choice 0 [%s] vs n=1 [%s]", first[0], solo); /* seed + 0 */
    CHECK(first[1][0] && first[2][0]);
    CHECK(strcmp(first[0], first[1]) || strcmp(first[1], first[2])); /* seed + i: not all equal */
    CHECK_EQ_INT(r.usage.completion_tokens, 18);
    CHECK_EQ_INT(r.usage.prompt_tokens, p1);
    CHECK_MEASURED(r.usage); /* the prompt charged once, every choice's tokens */
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(r.choice_finish[i], REALM_ABI_FINISH_LENGTH);
    /* the 2nd and 3rd choice attached the whole blocks of the prompt (at most p1 - 1 tokens) */
    int64_t blocks = ((p1 - 1) / F.sv->kv_block_tokens) * F.sv->kv_block_tokens;
    CHECKF(s1.prefix_tokens - s0.prefix_tokens >= 2 * blocks, "prefix tokens %lld, want >= %lld",
           (long long)(s1.prefix_tokens - s0.prefix_tokens), (long long)(2 * blocks));
    /* the same seed again: the same three texts */
    CHECK_EQ_INT(run_choices(t, three, 3, &cc, &r, &err), REALM_OK);
    for (int i = 0; i < 3; i++)
        CHECKF(cc.text[i].buf && !strcmp(cc.text[i].buf, first[i]), "choice %d", i);
    realm_sbx_tenant_free(t);
    realm_sbx_module_free(def);
    realm_sbx_host_free(h);
    for (int i = 0; i < 4; i++)
        free(cc.text[i].buf);
}

/* ---- input caps ---- */

/* chat_bomb's report against the expected codes; a code of 1 stands for "a length > 0" (the
 * rendering succeeded: stories260K chats with the ChatML fallback). */
static bool bomb_report_is(const char *report, const int want[7]) {
    int v[7];
    if (!report ||
        sscanf(report,
               "big=%d values_at=%d values_over=%d strings=%d small=%d tok_over=%d tok_at=%d",
               &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6]) != 7)
        return false;
    for (int i = 0; i < 7; i++)
        if (want[i] == 1 ? v[i] <= 0 : v[i] != want[i]) return false;
    return true;
}

static void test_input_caps(void) {
    struct ts_capture out = {0};
    struct realm_err err;
    /* the defaults: 4 MiB, 65536 JSON values. What passes the caps is rendered (stories260K has no
     * chat template: ChatML); the array of numbers at the value cap is parsed, then INVALID */
    struct realm_sbx_module *m = ts_module(F.h, "chat_bomb");
    struct realm_sbx_tenant *t = ts_tenant(F.h, m, "bomb");
    CHECKF(ts_run(t, "{}", &out, NULL, &err) == REALM_OK, "%s", err.msg);
    const int want_default[7] = {
        REALM_E_LIMIT, REALM_E_INVALID, REALM_E_LIMIT, 1, 1, REALM_E_LIMIT, 0};
    CHECKF(bomb_report_is(out.buf, want_default), "%s", out.buf);
    /* the guest gives up on the refusal: the error says why the host refused */
    CHECK_EQ_INT(ts_run(t, "{\"return_big\":true}", &out, NULL, &err), REALM_E_LIMIT);
    CHECKF(strstr(err.msg,
                  "chat_format: input of 4194305 bytes exceeds max_input_bytes (4194304)") != NULL,
           "%s", err.msg);
    realm_sbx_tenant_free(t);
    realm_sbx_module_free(m);

    /* caps from the configuration; exactly max_input_bytes is tokenized */
    struct realm_sbx_config c = ts_config();
    c.max_input_bytes = 65536;
    c.max_json_values = 1000;
    struct realm_sbx_host *h = host_with_model(c);
    m = ts_module(h, "chat_bomb");
    t = ts_tenant(h, m, "bomb");
    CHECKF(ts_run(t, "{\"max\":65536,\"max_values\":1000,\"tok_at\":true}", &out, NULL, &err) ==
               REALM_OK,
           "%s", err.msg);
    const int want_caps[7] = {
        REALM_E_LIMIT, REALM_E_INVALID, REALM_E_LIMIT, 1, 1, REALM_E_LIMIT, 1};
    CHECKF(bomb_report_is(out.buf, want_caps), "%s", out.buf);
    realm_sbx_tenant_free(t);
    realm_sbx_module_free(m);
    realm_sbx_host_free(h);
    free(out.buf);
}

/* ---- host memory budgets ---- */

/* The "tok_at=<rc>" field of chat_bomb's report. */
static int tok_at_of(const char *report) {
    const char *f = report ? strstr(report, "tok_at=") : NULL;
    return f ? atoi(f + 7) : -1000;
}

/* chat_bomb in two tenants: one charged to a 64 KiB host budget, one to a budget without limit.
 * What the host builds for a big-but-allowed input (65535 JSON values: ~4 MiB of cJSON nodes; a
 * ~110 KB message; 200 KB to tokenize) makes the small tenant's imports answer REALM_E_NOMEM
 * while the other tenant gets its normal answers; small inputs still work; every byte is given
 * back after each call. */
static void test_host_budget(void) {
    struct ts_capture out = {0};
    struct realm_err err;
    struct realm_alloc_budget small = {.limit = 64 << 10}, unlimited = {0};
    struct realm_sbx_module *m = ts_module(F.h, "chat_bomb");
    struct realm_sbx_tenant *ts = NULL, *tu = NULL;
    struct realm_sbx_tenant_params p = {.name = "small", .host_budget = &small};
    CHECKF(realm_sbx_tenant_new(F.h, m, &p, &ts, &err) == REALM_OK, "%s", err.msg);
    p = (struct realm_sbx_tenant_params){.name = "unlimited", .host_budget = &unlimited};
    CHECKF(realm_sbx_tenant_new(F.h, m, &p, &tu, &err) == REALM_OK, "%s", err.msg);
    if (!ts || !tu) goto done;

    CHECKF(ts_run(tu, "{}", &out, NULL, &err) == REALM_OK, "%s", err.msg);
    const int want_unlimited[7] = {
        REALM_E_LIMIT, REALM_E_INVALID, REALM_E_LIMIT, 1, 1, REALM_E_LIMIT, 0};
    CHECKF(bomb_report_is(out.buf, want_unlimited), "%s", out.buf);
    CHECKF(atomic_load(&unlimited.peak) > (1 << 20), "peak %lld",
           (long long)atomic_load(&unlimited.peak));
    CHECK_EQ_INT(atomic_load(&unlimited.used), 0);
    CHECK_EQ_INT(atomic_load(&unlimited.refused), 0);

    CHECKF(ts_run(ts, "{}", &out, NULL, &err) == REALM_OK, "%s", err.msg);
    const int want_small[7] = {
        REALM_E_LIMIT, REALM_E_NOMEM, REALM_E_LIMIT, REALM_E_NOMEM, 1, REALM_E_LIMIT, 0};
    CHECKF(bomb_report_is(out.buf, want_small), "%s", out.buf);
    CHECK(atomic_load(&small.refused) >= 2);
    CHECK(atomic_load(&small.peak) > 0 && atomic_load(&small.peak) <= small.limit);
    CHECK_EQ_INT(atomic_load(&small.used), 0);

    /* tokenize 200 KB of text: allowed by max_input_bytes, over the small budget */
    const char *tok_req = "{\"max\":200000,\"tok_at\":true}";
    CHECKF(ts_run(tu, tok_req, &out, NULL, &err) == REALM_OK, "%s", err.msg);
    CHECKF(tok_at_of(out.buf) > 0, "%s", out.buf);
    CHECKF(ts_run(ts, tok_req, &out, NULL, &err) == REALM_OK, "%s", err.msg);
    CHECKF(tok_at_of(out.buf) == REALM_E_NOMEM, "%s", out.buf);
    CHECK_EQ_INT(atomic_load(&small.used), 0);
    CHECK_EQ_INT(atomic_load(&unlimited.used), 0);
done:
    realm_sbx_tenant_free(ts);
    realm_sbx_tenant_free(tu);
    realm_sbx_module_free(m);
    free(out.buf);
}

/* ---- out of memory at every host allocation of an instance (fail-after-N) ---- */

/* realm_sbx_tenant_new (instantiate + realm_init) with the n-th host allocation failing, for every
 * n until it succeeds: each try fails cleanly (an error with a message, *out untouched, nothing of
 * the host's leaked) and the instance that finally starts serves a request like any other.
 * Wasmtime's own allocations are not counted here; its pooling allocator bounds them. */
static void test_instance_alloc_failures(void) {
    struct ts_capture out = {0};
    struct realm_err err;
    const int64_t before = realm_alloc_bytes_in_use();
    int n_fail = 0, ok = 0;
    for (int64_t f = 0; f < 2000 && !ok; f++) {
        static char untouched;
        struct realm_sbx_tenant *const sentinel = (struct realm_sbx_tenant *)&untouched;
        struct realm_sbx_tenant *t = sentinel;
        struct realm_sbx_tenant_params p = {.name = "oom"};
        err = (struct realm_err){0};
        realm_alloc_fail_after(f);
        const int rc = realm_sbx_tenant_new(F.h, F.def, &p, &t, &err);
        realm_alloc_fail_after(-1);
        if (rc != REALM_OK) {
            n_fail++;
            CHECKF(err.msg[0] != 0, "fail after %lld: rc %d without a message", (long long)f, rc);
            CHECKF(t == sentinel, "fail after %lld: *out written on failure", (long long)f);
            CHECKF(realm_alloc_bytes_in_use() == before, "fail after %lld: %lld bytes leaked",
                   (long long)f, (long long)(realm_alloc_bytes_in_use() - before));
            continue;
        }
        ok = 1;
        CHECKF(ts_run(t, "{\"prompt\":\"Once upon\",\"max_tokens\":4,\"temperature\":0}", &out,
                      NULL, &err) == REALM_OK,
               "%s", err.msg);
        CHECK(out.len > 0);
        realm_sbx_tenant_free(t);
    }
    CHECK(ok);
    CHECKF(n_fail >= 2, "only %d injected failures seen",
           n_fail); /* the instance record and its handle table */
    tu_log("tenant_new: %d injected failures before success", n_fail);
    free(out.buf);
}

/* ---- handle serials ---- */

static void test_handle_serials(void) {
    struct realm_sbx_module *m = ts_module(F.h, "handle_churn");
    struct realm_sbx_tenant *t = ts_tenant(F.h, m, "churn");
    struct ts_capture out = {0};
    struct realm_err err;
    char want[128];
    /* every slot one serial away from the end: each issues its last serial once, then retires;
     * the model keeps slot 0, so 63 sessions open and the 64th finds only retired slots */
    for (int32_t i = 0; i < SBX_MAX_HANDLES; i++)
        CHECK_EQ_INT(sbx_tenant_test_set_serial(t, i, SBX_SERIAL_MASK - 1), REALM_OK);
    CHECK_EQ_INT(sbx_tenant_test_set_serial(t, SBX_MAX_HANDLES, 1), REALM_E_RANGE);
    CHECK_EQ_INT(ts_run(t, "{\"n\":100}", &out, NULL, &err), REALM_OK);
    snprintf(want, sizeof want, "63 %d %d %d", REALM_E_LIMIT, (int)(1u << 24 | SBX_SERIAL_MASK),
             (int)(63u << 24 | SBX_SERIAL_MASK));
    CHECKF(out.buf && !strcmp(out.buf, want), "%s, expected %s", out.buf, want);
    struct realm_sbx_tenant_stats st;
    realm_sbx_tenant_get_stats(t, &st);
    CHECK_EQ_INT(st.restarts, 0);
    /* the next request runs on a fresh instance whose slots start over (slot 1 again, from the
     * new instance's first serial, at most 2^23) */
    CHECK_EQ_INT(ts_run(t, "{\"n\":3}", &out, NULL, &err), REALM_OK);
    int opened = 0, code = 0, first = 0, last = 0;
    CHECKF(sscanf(out.buf, "%d %d %d %d", &opened, &code, &first, &last) == 4, "%s", out.buf);
    CHECK(opened == 3 && code == 0 && first >> 24 == 1 && last == first + 2);
    CHECK((first & SBX_SERIAL_MASK) >= 1 && (first & SBX_SERIAL_MASK) <= (1 << 23));
    realm_sbx_tenant_get_stats(t, &st);
    CHECK_EQ_INT(st.restarts, 1);
    /* the same instance: slot 1 goes on counting, nothing is re-created */
    CHECK_EQ_INT(ts_run(t, "{\"n\":3}", &out, NULL, &err), REALM_OK);
    snprintf(want, sizeof want, "3 0 %d %d", last + 1, last + 3);
    CHECKF(out.buf && !strcmp(out.buf, want), "%s, expected %s", out.buf, want);
    realm_sbx_tenant_get_stats(t, &st);
    CHECK_EQ_INT(st.restarts, 1);
    free(out.buf);
    realm_sbx_tenant_free(t);
    realm_sbx_module_free(m);
}

/* ---- adversarial guests beside a well-behaved tenant ---- */

static const char *g_good_json =
    "{\"prompt\":\"Once upon a "
    "time\",\"max_tokens\":200,\"temperature\":1,\"top_k\":0,\"seed\":42}";

struct attack {
    const char *guest;
    const char *json; /* NULL: the attack is in realm_init */
    int expect;
    int cancel_after_ms; /* > 0: cancel the request from a third thread */
    int got;
    char msg[REALM_ERR_MSG_MAX];
};

static void *attack_main(void *arg) {
    struct attack *a = arg;
    struct realm_sbx_module *m = ts_module(F.h, a->guest);
    struct realm_sbx_tenant *t = NULL;
    struct realm_err err;
    realm_err_clear(&err);
    a->got = realm_sbx_tenant_new(F.h, m, NULL, &t, &err);
    if (a->got == REALM_OK && a->json) {
        if (a->cancel_after_ms > 0) {
            a->got = run_cancelled(t, a->json, a->cancel_after_ms, &err);
        } else {
            struct ts_capture out = {0};
            a->got = ts_run(t, a->json, &out, NULL, &err);
            free(out.buf);
        }
    }
    snprintf(a->msg, sizeof a->msg, "%s", err.msg);
    realm_sbx_tenant_free(t);
    realm_sbx_module_free(m);
    return NULL;
}

static void test_isolation(void) {
    struct realm_sbx_tenant *good = ts_tenant(F.h, F.def, "good");
    int rc;
    char *solo = run_text(good, g_good_json, NULL, &rc);
    CHECK(rc == 0 && solo && strlen(solo) > 100);
    if (!solo) return;
    struct attack attacks[] = {
        {"loop_generate", "{\"loop\":true}", REALM_E_TIMEOUT, 0, 0, ""},
        {"loop_init", NULL, REALM_E_TIMEOUT, 0, 0, ""},
        {"init_fail", NULL, REALM_E_NOT_FOUND, 0, 0, ""},
        {"memory_bomb", "{\"how\":\"malloc\"}", REALM_E_NOMEM, 0, 0, ""},
        {"memory_bomb", "{\"how\":\"grow\"}", REALM_E_NOMEM, 0, 0, ""},
        {"stack_overflow", "{\"kind\":\"wasm\"}", REALM_E_TRAP, 0, 0, ""},
        {"stack_overflow", "{\"kind\":\"shadow\"}", REALM_E_TRAP, 0, 0, ""},
        {"bad_pointers", "{}", REALM_OK, 0, 0, ""},
        {"handles", "{\"op\":\"forge\"}", REALM_OK, 0, 0, ""},
        {"emit_flood", "{\"how\":\"one\"}", REALM_E_RANGE, 0, 0, ""},
        {"emit_flood", "{\"how\":\"chunks\"}", REALM_E_LIMIT, 0, 0, ""},
        {"decode_abuse", "{}", REALM_OK, 0, 0, ""},
        {"after_cancel", "{\"mode\":\"rude\"}", REALM_E_CANCELLED, 40, 0, ""},
        {"after_cancel", "{\"mode\":\"polite\"}", REALM_E_CANCELLED, 40, 0, ""},
    };
    for (size_t i = 0; i < sizeof attacks / sizeof attacks[0]; i++) {
        struct attack *a = &attacks[i];
        pthread_t th;
        CHECK(pthread_create(&th, NULL, attack_main, a) == 0);
        /* the well-behaved tenant keeps serving while the attack runs */
        for (int k = 0; k < 2; k++) {
            char *o = run_text(good, g_good_json, NULL, &rc);
            CHECKF(rc == 0 && o && !strcmp(o, solo), "next to %s %s: output differs", a->guest,
                   a->json ? a->json : "(init)");
            free(o);
        }
        pthread_join(th, NULL);
        CHECKF(a->got == a->expect, "%s %s: got %d (%s), expected %d", a->guest,
               a->json ? a->json : "(init)", a->got, a->msg, a->expect);
    }
    struct realm_sbx_tenant_stats st;
    realm_sbx_tenant_get_stats(good, &st);
    CHECK_EQ_INT(st.restarts, 0);
    CHECK_EQ_INT(st.handle_errors, 0);
    free(solo);
    realm_sbx_tenant_free(good);
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    setup();
    struct realm_sbx_tenant *t = ts_tenant(F.h, F.def, "default");
    test_golden(t);
    test_sampling(t);
    test_bad_requests(t);
    realm_sbx_tenant_free(t);
    test_adversaries_alone();
    test_wall_limits();
    test_measured_usage();
    test_choices();
    test_input_caps();
    test_host_budget();
    test_instance_alloc_failures();
    test_handle_serials();
    test_isolation();
    teardown();
    return tu_finish("test_sandbox_abi");
}
