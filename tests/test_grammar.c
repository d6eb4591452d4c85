/*
 * test_grammar.c — the guest SDK's grammar engine (guest/sdk/grammar.c) and JSON schema →
 * GBNF converter (guest/sdk/json_schema.c), built natively: the SDK sources are compiled with the
 * host compiler and the few imports sdk.c references are stubbed below.
 *
 * Needs llama.cpp's own grammars in ~/.cache/realm/gbnf (scripts/fetch-gbnf.sh, run by
 * scripts/setup.sh models): a missing folder is a failure, not a skip.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "read_all.h"
#include "realm_grammar.h"
#include "realm_tools.h"

/* (the imports sdk.c references are stubbed in tests/sdk_native_stubs.c) */

/* ---- harness ---- */
static int failures;
#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);                  \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)
#define CHECKF(c, ...)                                                                             \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #c);                  \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static struct rg_grammar *parse_ok(const char *src, const char *what) {
    struct rg_grammar *g = NULL;
    char err[256];
    int32_t rc = rg_grammar_parse(src, strlen(src), NULL, &g, err, sizeof err);
    CHECKF(rc == REALM_OK, "%s: %s", what, err);
    return g;
}

/* 1: the whole text is a complete sentence; 0: rejected or incomplete. */
static int matches(const struct rg_grammar *g, const char *s, size_t n) {
    struct rg_gmatch *m;
    if (rg_gmatch_new(g, &m) != REALM_OK) return -1;
    int ok = rg_gmatch_advance(m, s, n) == REALM_OK && rg_gmatch_complete(m);
    rg_gmatch_free(m);
    return ok;
}

/* Same, fed one byte at a time (splits every UTF-8 sequence across calls). */
static int matches_bytewise(const struct rg_grammar *g, const char *s, size_t n) {
    struct rg_gmatch *m;
    if (rg_gmatch_new(g, &m) != REALM_OK) return -1;
    int ok = 1;
    for (size_t k = 0; k < n && ok; k++)
        ok = rg_gmatch_advance(m, s + k, 1) == REALM_OK;
    ok = ok && rg_gmatch_complete(m);
    rg_gmatch_free(m);
    return ok;
}

static void expect(const struct rg_grammar *g, const char *name, const char *const *acc,
                   const char *const *rej) {
    if (!g) return;
    for (; acc && *acc; acc++) {
        CHECKF(matches(g, *acc, strlen(*acc)) == 1, "%s should accept \"%s\"", name, *acc);
        CHECKF(matches_bytewise(g, *acc, strlen(*acc)) == 1, "%s should accept \"%s\" bytewise",
               name, *acc);
    }
    for (; rej && *rej; rej++)
        CHECKF(matches(g, *rej, strlen(*rej)) == 0, "%s should reject \"%s\"", name, *rej);
}

/* ---- llama.cpp's grammars ---- */

struct gcase {
    const char *file;
    const char *const *acc, *const *rej;
};

static const char *const json_acc[] = {"{}",
                                       "{\"a\": 1}",
                                       "{\"a\":[1,2,{\"b\":null}],\"c\":\"x\\n\\u00e9\"}",
                                       "{\"k\": true, \"n\": -0.5}",
                                       "{\"é\": \"日本語 😀\"}",
                                       "{\n  \"a\": {\"b\": [true, false, null]}\n}",
                                       "{\"e\": 1e5}",
                                       NULL};
static const char *const json_rej[] = {"[]",
                                       "{\"a\":}",
                                       "{\"a\" 1}",
                                       "{'a':1}",
                                       "{\"a\":01}",
                                       "{\"a\":1,}",
                                       "{\"a\":1",
                                       "{\"a\":\"\x01\"}",
                                       "{\"a\":tru}",
                                       "",
                                       "{\"e\": 1e10}" /* json.gbnf: exponent [0-9] [1-9]{0,15} */,
                                       NULL};
static const char *const jarr_acc[] = {"[\n1,\n2]", "[\n]", "[\n{\"a\": [1, 2]},\n\"x\"]", NULL};
static const char *const jarr_rej[] = {"[1]", "[\n1,2]", "[\n1,\n2] ", "{}", NULL};
static const char *const arith_acc[] = {"1+2=3\n",      "(a+b)*c=d\n",         "x=1\n",
                                        "foo_1 =bar\n", "2*3+4=10\ny=( z )\n", NULL};
static const char *const arith_rej[] = {"1+=2\n", "=1\n", "x=1", "X=1\n", "1=2=3\n", NULL};
static const char *const list_acc[] = {"- milk\n", "- milk\n- eggs and bread\n", "- 日本\n", NULL};
static const char *const list_rej[] = {"- \n", "milk\n",       "- a\r\n", "- a",
                                       "",     "- a\u2028b\n", NULL};
static const char *const chess_acc[] = {"1. e4 e5\n2. Nf3 Nc6\n",
                                        "1. O-O O-O-O\n2. exd5 Qxd8+\n10. a8=Q Kh1#\n", NULL};
static const char *const chess_rej[] = {
    "1. e4 e5\n",           "1. e9 e5\n2. a3 a6\n", "1. Zf3 e5\n2. a3 a6\n",
    "2. e4 e5\n3. a3 a6\n", "1. e4 e5\n0. a3 a6\n", NULL};
static const char *const jp_acc[] = {"こんにちは 世界", "カタカナ。", "日本語\nテスト", NULL};
static const char *const jp_rej[] = {"hello", "こんにちは  世界", "", " 日本", "日本 ", NULL};
static const char *const en_acc[] = {"Hello, world!", "a b\nc", "x=[1]; \"q\" {y}\\", NULL};
static const char *const en_rej[] = {"héllo", "a  b", " a", "", NULL};
static const char *const c_acc[] = {"int main(){return 0;}",
                                    "int add(int a){int b = a+1;return b;}",
                                    "float f(){while(x<1){x = x+1;}}int g(){}",
                                    "",
                                    "char h(){// hi\nreturn 1;}",
                                    NULL};
static const char *const c_rej[] = {"int main(){return 0}", "main(){}", "int main(){x = ;}",
                                    "int main(", NULL};

static const struct gcase gcases[] = {
    {"json.gbnf", json_acc, json_rej},         {"json_arr.gbnf", jarr_acc, jarr_rej},
    {"arithmetic.gbnf", arith_acc, arith_rej}, {"list.gbnf", list_acc, list_rej},
    {"chess.gbnf", chess_acc, chess_rej},      {"japanese.gbnf", jp_acc, jp_rej},
    {"english.gbnf", en_acc, en_rej},          {"c.gbnf", c_acc, c_rej},
};

static void test_llamacpp_grammars(void) {
    const char *home = getenv("HOME");
    const char *cache = getenv("REALM_CACHE");
    char dir[512];
    if (cache)
        snprintf(dir, sizeof dir, "%s/gbnf", cache);
    else
        snprintf(dir, sizeof dir, "%s/.cache/realm/gbnf", home ? home : ".");
    for (size_t k = 0; k < sizeof gcases / sizeof *gcases; k++) {
        char path[700];
        snprintf(path, sizeof path, "%s/%s", dir, gcases[k].file);
        char *src = tu_read_all(path, NULL);
        CHECKF(src != NULL, "%s missing: run scripts/fetch-gbnf.sh (scripts/setup.sh models)",
               path);
        if (!src) continue;
        struct rg_grammar *g = parse_ok(src, gcases[k].file);
        expect(g, gcases[k].file, gcases[k].acc, gcases[k].rej);
        rg_grammar_free(g);
        free(src);
    }
}

/* ---- syntax features and errors ---- */

static void test_features(void) {
    struct rg_grammar *g =
        parse_ok("root ::= \"a\"{2,3} \"b\"{2} \"c\"{1,} \"d\"{0,1} # comment\n", "repeat");
    expect(g, "repeat", (const char *const[]){"aabbc", "aaabbccd", "aabbcccc", NULL},
           (const char *const[]){"abbc", "aaaabbc", "aabc", "aabb", "aabbcdd", NULL});
    rg_grammar_free(g);

    g = parse_ok("root ::= [^a-c\\x41] [\\u00e9-\\u00ea] \"\\U0001F600\" \"\\t\\n\\\\\\\"\" .\n",
                 "escapes");
    expect(
        g, "escapes", (const char *const[]){"dé😀\t\n\\\"x", "zê😀\t\n\\\"日", NULL},
        (const char *const[]){"aé😀\t\n\\\"x", "Aé😀\t\n\\\"x", "dè😀\t\n\\\"x", "dé😀\t\n\\\"", NULL});
    rg_grammar_free(g);

    g = parse_ok("root ::= ( x | y )+ \"!\"?\nx ::= \"ab\" # c\ny ::=\n  [0-9] |\n  \"-\" | (\n "
                 "\"+\"\n | \"=\" )\n",
                 "groups");
    expect(g, "groups", (const char *const[]){"ab", "ab1-ab!", "9", NULL},
           (const char *const[]){"a", "ab!!", "!", "", NULL});
    rg_grammar_free(g);

    g = parse_ok("root ::= item*\nitem ::= [a-z]+ \" \"\n", "empty ok");
    expect(g, "empty ok", (const char *const[]){"", "ab c ", NULL},
           (const char *const[]){"ab", " ", NULL});
    rg_grammar_free(g);

    /* UTF-8 split across calls, invalid and overlong sequences */
    g = parse_ok("root ::= [^\"]*\n", "utf8");
    if (g) {
        struct rg_gmatch *m;
        CHECK(rg_gmatch_new(g, &m) == REALM_OK);
        CHECK(rg_gmatch_advance(m, "\xe6", 1) == REALM_OK);
        CHECK(!rg_gmatch_complete(m));
        CHECK(rg_gmatch_advance(m, "\x97\xa5", 2) == REALM_OK);
        CHECK(rg_gmatch_complete(m));
        CHECK(!rg_gmatch_accepts(m, "\xff", 1));
        CHECK(!rg_gmatch_accepts(m, "\xc0\xaf", 2));
        CHECK(!rg_gmatch_accepts(m, "\xed\xa0\x80", 3)); /* a surrogate */
        CHECK(!rg_gmatch_accepts(m, "\"", 1));
        CHECK(rg_gmatch_advance(m, "\"", 1) == REALM_E_INVALID);
        CHECK(rg_gmatch_complete(m)); /* a rejected advance leaves the state as it was */
        rg_gmatch_free(m);
    }
    rg_grammar_free(g);
    /* a partial sequence that no stack could complete is rejected at its first byte */
    g = parse_ok("root ::= [a-z] | \"é\"\n", "partial");
    if (g) {
        struct rg_gmatch *m;
        CHECK(rg_gmatch_new(g, &m) == REALM_OK);
        CHECK(rg_gmatch_accepts(m, "\xc3", 1));  /* é = C3 A9 */
        CHECK(!rg_gmatch_accepts(m, "\xe6", 1)); /* a 3-byte sequence */
        CHECK(!rg_gmatch_accepts(m, "\xc3\xaa", 2));
        rg_gmatch_free(m);
    }
    rg_grammar_free(g);
    /* done: nothing may follow */
    g = parse_ok("root ::= \"yes\" | \"no\"\n", "yesno");
    if (g) {
        struct rg_gmatch *m;
        CHECK(rg_gmatch_new(g, &m) == REALM_OK);
        CHECK(!rg_gmatch_done(m));
        CHECK(rg_gmatch_advance(m, "ye", 2) == REALM_OK && !rg_gmatch_complete(m));
        CHECK(rg_gmatch_advance(m, "s", 1) == REALM_OK && rg_gmatch_complete(m) &&
              rg_gmatch_done(m));
        CHECK(rg_gmatch_reset(m) == REALM_OK && !rg_gmatch_complete(m) &&
              rg_gmatch_accepts(m, "no", 2));
        rg_gmatch_free(m);
    }
    rg_grammar_free(g);
}

static void expect_error(const char *src, int32_t want, const char *needle) {
    struct rg_grammar *g = NULL;
    char err[256] = "";
    int32_t rc = rg_grammar_parse(src, strlen(src), NULL, &g, err, sizeof err);
    CHECKF(rc == want && g == NULL, "\"%s\": rc %d (%s)", src, rc, err);
    CHECKF(strstr(err, needle) != NULL, "\"%s\": message \"%s\" lacks \"%s\"", src, err, needle);
    rg_grammar_free(g);
}

static void test_errors(void) {
    expect_error("root ::= foo\n", REALM_E_FORMAT, "undefined rule 'foo'");
    expect_error("root ::= \"abc\n", REALM_E_FORMAT, "line 1");
    expect_error("root ::= [a-z", REALM_E_FORMAT, "unterminated character class");
    expect_error("root ::= \"\\q\"\n", REALM_E_FORMAT, "unknown escape");
    expect_error("root ::= \"a\"{3,2}\n", REALM_E_FORMAT, "n < m");
    expect_error("root ::= \"a\"{5000}\n", REALM_E_LIMIT, "too large");
    expect_error("root ::= *\n", REALM_E_FORMAT, "without an item");
    expect_error("root ::= (\"a\"\n", REALM_E_FORMAT, "expected )");
    expect_error("root = \"a\"\n", REALM_E_FORMAT, "expected ::=");
    expect_error("root ::= a\na ::= a \"x\" | \"y\"\n", REALM_E_FORMAT,
                 "left recursion through rule 'a'");
    expect_error("root ::= b \"x\"\nb ::= \"\" | root\n", REALM_E_FORMAT, "left recursion");
    expect_error("root ::= \"a\" root\n", REALM_E_FORMAT, "can never complete");
    expect_error("x ::= \"a\"\n", REALM_E_FORMAT, "no rule named 'root'");
    expect_error("root ::= \"a\"\nroot ::= \"b\"\n", REALM_E_FORMAT, "defined twice");
    expect_error("", REALM_E_FORMAT, "empty grammar");
    expect_error("root ::= \"a\" !<think>*\n", REALM_E_FORMAT, "needs a vocabulary");
    expect_error("root ::= <[x]>\n", REALM_E_FORMAT, "expected a token id");
    expect_error("root ::= <[12]\n", REALM_E_FORMAT, "expected ]>");
    expect_error("root ::= \"a\" ) \n", REALM_E_FORMAT, "line 1 col 14");
    /* elements after expanding repetitions are capped */
    {
        size_t n = 300000;
        char *big = malloc(n + 16);
        memcpy(big, "root ::= \"", 10);
        memset(big + 10, 'a', n);
        memcpy(big + 10 + n, "\"\n", 3);
        expect_error(big, REALM_E_LIMIT, "too large");
        free(big);
    }

    /* too many live stacks: each "x" doubles the distinct continuations */
    struct rg_grammar *g =
        parse_ok("root ::= a\na ::= \"x\" a \"y\" | \"x\" a \"z\" | \"\"\n", "ambiguous");
    if (g) {
        struct rg_gmatch *m;
        CHECK(rg_gmatch_new(g, &m) == REALM_OK);
        int32_t rc = REALM_OK;
        int k = 0;
        for (; k < 20 && rc == REALM_OK; k++)
            rc = rg_gmatch_advance(m, "x", 1);
        CHECKF(rc == REALM_E_LIMIT && k > 8, "rc %d after %d", rc, k);
        rg_gmatch_free(m);
    }
    rg_grammar_free(g);
}

/* ---- tokens: masking against a brute-force check ---- */

static const char *const pieces[] = {
    "{",     "}",    "{\"",  "\"",   "\":",      "\": ", ",",      ", \"",  "[",      "]",   "true",
    "false", "null", "tr",   "ue",   " ",        "\n",   "  ",     "0",     "1",      "12",  "-",
    ".",     "5",    "e",    "a",    "ab",       "name", "\"name", "\\",    "\\n",    "\\u", "00",
    "é",     "\xc3", "\xa9", "日本", "\xe6\x97", "\xa5", "😀",      "Hello", " world", "\"}", "\"]",
    "},",    "{}",   "[]",   ":",    " :",       "x",    "\x01",   "",
};
#define N_PIECES (int32_t)(sizeof pieces / sizeof *pieces)

static struct rg_vocab *make_vocab(int32_t *eog) {
    struct rg_vocab *v;
    if (rg_vocab_new(N_PIECES + 1, &v) != REALM_OK) return NULL;
    for (int32_t t = 0; t < N_PIECES; t++)
        CHECK(rg_vocab_set(v, t, pieces[t], strlen(pieces[t])) == REALM_OK);
    *eog = N_PIECES;
    CHECK(rg_vocab_set_eog(v, *eog) == REALM_OK);
    CHECK(rg_vocab_build(v) == REALM_OK);
    return v;
}

static void check_mask_state(struct rg_gmatch *m, struct rg_vocab *v, const char *where) {
    int32_t n = rg_vocab_size(v);
    float logits[N_PIECES + 1];
    for (int32_t t = 0; t < n; t++)
        logits[t] = (float)((t * 7919) % 101) / 10.0f;
    int32_t allowed = rg_gmatch_mask(m, v, logits), count = 0;
    for (int32_t t = 0; t < n; t++) {
        bool a = rg_gmatch_allows(m, v, t);
        count += a;
        CHECKF(a == (logits[t] > -INFINITY), "%s: token %d \"%s\": allows %d, mask %d", where, t,
               t < N_PIECES ? pieces[t] : "<eog>", a, logits[t] > -INFINITY);
    }
    CHECKF(allowed == count || (count == 0 && allowed == REALM_E_INVALID), "%s: %d vs %d", where,
           allowed, count);
    /* a second mask of the same state (served from the matcher's memo) is the same */
    float again[N_PIECES + 1];
    for (int32_t t = 0; t < n; t++)
        again[t] = 1.0f;
    CHECK(rg_gmatch_mask(m, v, again) == allowed);
    for (int32_t t = 0; t < n; t++)
        CHECKF((again[t] > -INFINITY) == (logits[t] > -INFINITY), "%s: memo, token %d", where, t);
    /* greedy: the best allowed token by logit (ties: lower id) */
    for (int32_t t = 0; t < n; t++)
        logits[t] = (float)((t * 7919) % 101) / 10.0f;
    int32_t best = -1;
    for (int32_t t = 0; t < n; t++)
        if (rg_gmatch_allows(m, v, t) && (best < 0 || logits[t] > logits[best])) best = t;
    int32_t pick = rg_gmatch_pick_greedy(m, v, logits);
    CHECKF(pick == (best < 0 ? REALM_E_INVALID : best), "%s: greedy %d, want %d", where, pick,
           best);
}

static void test_tokens(void) {
    const char *json =
        "root ::= object\nvalue ::= object | array | string | number | (\"true\" | \"false\" | "
        "\"null\") ws\n"
        "object ::= \"{\" ws ( string \":\" ws value (\",\" ws string \":\" ws value)* )? \"}\" "
        "ws\n"
        "array ::= \"[\" ws ( value (\",\" ws value)* )? \"]\" ws\n"
        "string ::= \"\\\"\" ( [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\bfnrt] | \"u\" "
        "[0-9a-fA-F]{4}) )* \"\\\"\" ws\n"
        "number ::= (\"-\"? ([0-9] | [1-9] [0-9]{0,15})) (\".\" [0-9]+)? ([eE] [-+]? [0-9]+)? ws\n"
        "ws ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";
    struct rg_grammar *g = parse_ok(json, "json");
    int32_t eog;
    struct rg_vocab *v = make_vocab(&eog);
    if (!g || !v) goto out;
    struct rg_gmatch *m;
    CHECK(rg_gmatch_new(g, &m) == REALM_OK);
    /* walk a generation token by token, checking the mask at each state */
    const char *steps[] = {"{\"",  "name",     "\":",  " ",  "\"", "Hello", " world", "\\n",
                           "é",    "\xe6\x97", "\xa5", "\"", ",",  " ",     "\"",     "a",
                           "\": ", "[",        "tr",   "ue", ",",  "-",     "1",      ".",
                           "5",    "e",        "1",    "]",  "}"};
    check_mask_state(m, v, "start");
    CHECK(!rg_gmatch_allows(m, v, eog));
    CHECK(!rg_gmatch_allows(m, v, N_PIECES - 1)); /* the empty piece */
    for (size_t k = 0; k < sizeof steps / sizeof *steps; k++) {
        int32_t t = -1;
        for (int32_t j = 0; j < N_PIECES; j++)
            if (!strcmp(pieces[j], steps[k])) t = j;
        CHECKF(t >= 0 && rg_gmatch_accept_token(m, v, t) == REALM_OK, "step %zu \"%s\"", k,
               steps[k]);
        char where[64];
        snprintf(where, sizeof where, "after step %zu \"%s\"", k, steps[k]);
        check_mask_state(m, v, where);
        if (k + 1 < sizeof steps / sizeof *steps)
            CHECKF(!rg_gmatch_allows(m, v, eog), "%s: eog", where);
    }
    CHECK(rg_gmatch_complete(m) && rg_gmatch_allows(m, v, eog));
    CHECK(rg_gmatch_accept_token(m, v, eog) == REALM_OK);

    /* sampling under the grammar only ever yields allowed tokens */
    struct rg_sampler s;
    struct rg_sampler_params sp;
    rg_sampler_params_default(&sp);
    sp.seed = 42;
    CHECK(rg_sampler_init(&s, &sp, N_PIECES + 1) == REALM_OK);
    CHECK(rg_gmatch_reset(m) == REALM_OK);
    int n_tok = 0;
    for (; n_tok < 200; n_tok++) {
        float logits[N_PIECES + 1];
        for (int32_t t = 0; t <= N_PIECES; t++)
            logits[t] = (float)((t * 31 + n_tok * 17) % 13) / 3.0f;
        int32_t t = rg_sample_grammar(&s, m, v, logits);
        CHECKF(t >= 0 && rg_gmatch_allows(m, v, t), "sampled %d at %d", t, n_tok);
        if (t < 0) break;
        if (t == eog) break;
        CHECK(rg_gmatch_accept_token(m, v, t) == REALM_OK);
    }
    rg_sampler_free(&s);
    /* greedy through the sampler: favour a rejected token heavily */
    sp.temperature = 0;
    CHECK(rg_sampler_init(&s, &sp, N_PIECES + 1) == REALM_OK);
    CHECK(rg_gmatch_reset(m) == REALM_OK);
    {
        float logits[N_PIECES + 1];
        for (int32_t t = 0; t <= N_PIECES; t++)
            logits[t] = 0;
        logits[9] = 10; /* "]": rejected at the start */
        logits[2] = 5;  /* "{\"" */
        logits[0] = 4;  /* "{" */
        CHECK(rg_sample_grammar(&s, m, v, logits) == 2);
    }
    rg_sampler_free(&s);
    rg_gmatch_free(m);
out:
    rg_vocab_free(v);
    rg_grammar_free(g);
}

/* ---- partial UTF-8 sequences: a token that ends inside a multi-byte sequence is allowed only
 * when some valid code point could complete it. E0 and F0 leads carry no value bits, so their
 * partial ranges started at 0 and met ASCII classes: at the opening quote of a string the raw byte
 * tokens "\xe0" and "\xf0" were allowed, and three tokens later nothing was (a sampler that drew
 * one, as temperature > 0 does, failed the request with "no token can continue"). ---- */

#define N_BYTE_VOCAB (256 + 2) /* every single byte, "\"ab", and an EOG token */

static struct rg_vocab *make_byte_vocab(void) {
    struct rg_vocab *v;
    if (rg_vocab_new(N_BYTE_VOCAB, &v) != REALM_OK) return NULL;
    for (int32_t b = 0; b < 256; b++) {
        char c = (char)b;
        CHECK(rg_vocab_set(v, b, &c, 1) == REALM_OK);
    }
    CHECK(rg_vocab_set(v, 256, "\"ab", 3) == REALM_OK);
    CHECK(rg_vocab_set_eog(v, 257) == REALM_OK);
    CHECK(rg_vocab_build(v) == REALM_OK);
    return v;
}

/* The mask at the current state: equal to rg_gmatch_allows token by token, and not empty unless
 * the grammar is done. Returns the allowed tokens in ok[]. */
static int32_t check_live_state(struct rg_gmatch *m, struct rg_vocab *v, bool *ok,
                                const char *where) {
    float l[N_BYTE_VOCAB];
    for (int32_t t = 0; t < N_BYTE_VOCAB; t++)
        l[t] = 0;
    int32_t allowed = rg_gmatch_mask(m, v, l), count = 0;
    for (int32_t t = 0; t < N_BYTE_VOCAB; t++) {
        ok[t] = rg_gmatch_allows(m, v, t);
        count += ok[t];
        CHECKF(ok[t] == (l[t] > -INFINITY), "%s: token %d: allows %d, mask %d", where, t, ok[t],
               l[t] > -INFINITY);
    }
    CHECKF(allowed == (count ? count : REALM_E_INVALID), "%s: mask %d, allows %d", where, allowed,
           count);
    CHECKF(count > 0 || rg_gmatch_done(m), "%s: dead end (no token continues the output)", where);
    return count;
}

static void test_partial_utf8(void) {
    struct rg_vocab *v = make_byte_vocab();
    struct rg_grammar *word = parse_ok("root ::= \"\\\"\" [a-z ]{0,8} \"\\\"\"", "quoted word");
    struct rg_grammar *text =
        parse_ok("root ::= \"\\\"\" [^\"\\\\\\x00-\\x1F]{0,4} \"\\\"\"", "quoted text");
    struct rg_gmatch *m = NULL;
    bool ok[N_BYTE_VOCAB];
    if (!v || !word || !text || rg_gmatch_new(word, &m) != REALM_OK) goto out;

    /* the start of "..." takes exactly the quote and the token that begins with it */
    CHECK(check_live_state(m, v, ok, "word start") == 2 && ok['"'] && ok[256]);
    CHECK(!rg_gmatch_accepts(m, "\xe0", 1) && !rg_gmatch_accepts(m, "\xf0", 1));
    CHECK(rg_gmatch_advance(m, "\"", 1) == REALM_OK);
    CHECK(!rg_gmatch_accepts(m, "\xe0", 1) && !rg_gmatch_accepts(m, "\xf0\x80", 2));

    /* where non-ASCII text is allowed: valid partial sequences yes; overlong, surrogate and
     * beyond-U+10FFFF prefixes no */
    rg_gmatch_free(m);
    m = NULL;
    if (rg_gmatch_new(text, &m) != REALM_OK) goto out;
    CHECK(rg_gmatch_advance(m, "\"", 1) == REALM_OK);
    CHECK(rg_gmatch_accepts(m, "\xe0\xa4", 2) && rg_gmatch_accepts(m, "\xf0\x9f\x98", 3));
    CHECK(rg_gmatch_accepts(m, "\xed\x9f", 2) && rg_gmatch_accepts(m, "\xf4\x8f", 2));
    CHECK(!rg_gmatch_accepts(m, "\xe0\x80", 2) && !rg_gmatch_accepts(m, "\xf0\x80", 2));
    CHECK(!rg_gmatch_accepts(m, "\xed\xa0", 2) && !rg_gmatch_accepts(m, "\xf4\x90", 2));

    /* random walks through allowed tokens (raw bytes >= 0x80 preferred, so partial sequences are
     * explored): every state reached has a live mask equal to the token-by-token check; the
     * walks revisit states, so later masks come from the matcher's memo */
    struct rg_grammar *gs[2] = {word, text};
    uint32_t rnd = 12345;
    for (int gi = 0; gi < 2; gi++) {
        for (int walk = 0; walk < 60; walk++) {
            rg_gmatch_free(m);
            m = NULL;
            if (rg_gmatch_new(gs[gi], &m) != REALM_OK) {
                CHECK(!"rg_gmatch_new");
                goto out;
            }
            for (int step = 0; step < 12 && !rg_gmatch_done(m); step++) {
                char where[64];
                snprintf(where, sizeof where, "grammar %d walk %d step %d", gi, walk, step);
                int32_t count = check_live_state(m, v, ok, where), high = 0;
                if (count == 0) break;
                for (int32_t t = 0x80; t < 256; t++)
                    high += ok[t];
                rnd = rnd * 1103515245u + 12345u;
                bool pick_high = high && (rnd >> 16) % 2;
                int32_t nth = (int32_t)((rnd >> 8) % (uint32_t)(pick_high ? high : count)), t = -1;
                for (int32_t c = 0; c < N_BYTE_VOCAB; c++)
                    if (ok[c] && (!pick_high || (c >= 0x80 && c < 256)) && nth-- == 0) t = c;
                if (t == N_BYTE_VOCAB - 1) break; /* EOG: the text is complete */
                CHECKF(t >= 0 && rg_gmatch_accept_token(m, v, t) == REALM_OK, "%s: accept %d",
                       where, t);
            }
        }
    }
out:
    rg_gmatch_free(m);
    rg_grammar_free(word);
    rg_grammar_free(text);
    rg_vocab_free(v);
}

/* ---- token references: <[id]>, <text>, !<...> ---- */

static const char *const tpieces[] = {"a",  "b", "",  "",
                                      "ab", "",  "x", "y"}; /* 2 <think>, 3 </think>, 5 eog */
#define N_TP 8

static int32_t resolve(void *ctx, const char *text, size_t len) {
    (void)ctx;
    if (len == 7 && !memcmp(text, "<think>", 7)) return 2;
    if (len == 8 && !memcmp(text, "</think>", 8)) return 3;
    return -1;
}

static void check_allows_mask(struct rg_gmatch *m, struct rg_vocab *v, const char *where) {
    float l[N_TP];
    for (int32_t t = 0; t < N_TP; t++)
        l[t] = 0;
    int32_t allowed = rg_gmatch_mask(m, v, l), count = 0;
    for (int32_t t = 0; t < N_TP; t++) {
        bool a = rg_gmatch_allows(m, v, t);
        count += a;
        CHECKF(a == (l[t] > -INFINITY), "%s: token %d: allows %d, mask %d", where, t, a,
               l[t] > -INFINITY);
    }
    CHECKF(allowed == (count ? count : REALM_E_INVALID), "%s: %d vs %d", where, allowed, count);
}

static void test_token_refs(void) {
    struct rg_vocab *v;
    if (rg_vocab_new(N_TP, &v) != REALM_OK) return;
    for (int32_t t = 0; t < N_TP; t++)
        rg_vocab_set(v, t, tpieces[t], strlen(tpieces[t]));
    rg_vocab_set_eog(v, 5);
    CHECK(rg_vocab_build(v) == REALM_OK);
    const char *src = "root ::= <think> thinking </think> \"a\"+\nthinking ::= !<[3]>*\n";
    struct rg_grammar *g = NULL;
    char err[256] = "";
    CHECKF(rg_grammar_parse_ex(src, strlen(src), NULL, resolve, NULL, &g, err, sizeof err) ==
               REALM_OK,
           "%s", err);
    const char *bad = "root ::= <nope>\n";
    struct rg_grammar *g2 = NULL;
    CHECK(rg_grammar_parse_ex(bad, strlen(bad), NULL, resolve, NULL, &g2, err, sizeof err) ==
              REALM_E_FORMAT &&
          strstr(err, "not exactly one token"));
    struct rg_gmatch *m = NULL;
    if (g && rg_gmatch_new(g, &m) == REALM_OK) {
        CHECK(rg_gmatch_allows(m, v, 2) && !rg_gmatch_allows(m, v, 0) &&
              !rg_gmatch_allows(m, v, 5));
        CHECK(!rg_gmatch_accepts(m, "a", 1)); /* bytes never match a token element */
        check_allows_mask(m, v, "start");
        CHECK(rg_gmatch_accept_token(m, v, 2) == REALM_OK);
        CHECK(rg_gmatch_allows(m, v, 0) && rg_gmatch_allows(m, v, 4) && rg_gmatch_allows(m, v, 2) &&
              rg_gmatch_allows(m, v, 3));
        check_allows_mask(m, v, "thinking");
        CHECK(rg_gmatch_accept_token(m, v, 4) == REALM_OK &&
              rg_gmatch_accept_token(m, v, 2) == REALM_OK);
        CHECK(rg_gmatch_accept_token(m, v, 3) == REALM_OK);
        CHECK(!rg_gmatch_allows(m, v, 3) && !rg_gmatch_allows(m, v, 4) &&
              rg_gmatch_allows(m, v, 0));
        check_allows_mask(m, v, "answer");
        CHECK(!rg_gmatch_complete(m) && !rg_gmatch_allows(m, v, 5));
        CHECK(rg_gmatch_accept_token(m, v, 0) == REALM_OK && rg_gmatch_complete(m) &&
              rg_gmatch_allows(m, v, 5));
        check_allows_mask(m, v, "complete");
    }
    rg_gmatch_free(m);
    rg_grammar_free(g);
    /* one token taken both as a token element and as text: the union of both ways */
    src = "root ::= <[0]> \"x\" | \"a\" \"y\"\n";
    g = parse_ok(src, "union");
    m = NULL;
    if (g && rg_gmatch_new(g, &m) == REALM_OK) {
        CHECK(rg_gmatch_accept_token(m, v, 0) == REALM_OK);
        CHECK(rg_gmatch_allows(m, v, 6) && rg_gmatch_allows(m, v, 7) && !rg_gmatch_allows(m, v, 0));
        check_allows_mask(m, v, "union");
        CHECK(rg_gmatch_accept_token(m, v, 7) == REALM_OK && rg_gmatch_complete(m));
    }
    rg_gmatch_free(m);
    rg_grammar_free(g);
    rg_vocab_free(v);
}

void test_json_schema(void); /* below, with the schema cases */
void test_request_fields(void);

/* ---- tool calls (realm_tools.h) ---- */

static const char k_tools_json[] = "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                                   "\"parameters\":{\"type\":\"object\","
                                   "\"properties\":{\"city\":{\"type\":\"string\"},\"unit\":{"
                                   "\"enum\":[\"c\",\"f\"]}},\"required\":[\"city\"]}}},"
                                   "{\"type\":\"function\",\"function\":{\"name\":\"now\"}}]";

static struct rg_grammar *tools_grammar(const struct rj_value *tools, const char *only,
                                        const char *format, bool parallel) {
    char *gbnf = NULL, err[256] = "";
    const char *root = NULL;
    int32_t rc = rg_tools_grammar(tools, k_tools_json, only, format, parallel, &gbnf, &root, err,
                                  sizeof err);
    CHECKF(rc == REALM_OK, "%s", err);
    struct rg_grammar *g = NULL;
    if (rc == REALM_OK) {
        rc = rg_grammar_parse(gbnf, strlen(gbnf), root, &g, err, sizeof err);
        CHECKF(rc == REALM_OK, "%s", err);
    }
    free(gbnf);
    return g;
}

#define M(g, s) matches(g, s, strlen(s))

static void test_tools(void) {
    struct rj_value *tools = NULL;
    if (rj_parse(k_tools_json, strlen(k_tools_json), &tools, NULL, 0) != REALM_OK) {
        CHECK(0);
        return;
    }
    /* hermes: a call of either function, arguments per its schema; several only with parallel */
    struct rg_grammar *g = tools_grammar(tools, NULL, "hermes", false);
    const char *one = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
                      "\"Paris\", \"unit\": \"c\"}}\n</tool_call>";
    CHECK(g && M(g, one) == 1);
    CHECK(g && M(g, "<tool_call>\n{\"name\":\"now\",\"arguments\":{}}</tool_call>") == 1);
    CHECK(g && M(g, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"unit\": "
                    "\"c\"}}</tool_call>") == 0);
    CHECK(g && M(g, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"P\", "
                    "\"unit\": \"k\"}}</tool_call>") == 0);
    CHECK(g && M(g, "<tool_call>\n{\"name\": \"other\", \"arguments\": {}}</tool_call>") == 0);
    CHECK(g && M(g, "Sure! <tool_call>\n{\"name\":\"now\",\"arguments\":{}}</tool_call>") == 0);
    rg_grammar_free(g);
    g = tools_grammar(tools, NULL, "hermes", true);
    char two[512];
    rg_fmt(two, sizeof two, "%s\n%s", one, one);
    CHECK(g && M(g, two) == 1);
    rg_grammar_free(g);
    /* a named function only */
    g = tools_grammar(tools, "now", "hermes", false);
    CHECK(g && M(g, one) == 0 &&
          M(g, "<tool_call>\n{\"name\":\"now\",\"arguments\":{}}</tool_call>") == 1);
    rg_grammar_free(g);
    /* llama3: the bare object with "parameters" */
    g = tools_grammar(tools, "get_weather", "llama3", false);
    CHECK(g && M(g, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}") == 1);
    CHECK(g && M(g, "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}") == 0);
    rg_grammar_free(g);
    char *gbnf = NULL, err[128];
    const char *root;
    CHECK(rg_tools_grammar(tools, k_tools_json, "missing", "hermes", false, &gbnf, &root, err,
                           sizeof err) == REALM_E_INVALID &&
          gbnf == NULL);
    rj_free(tools);

    /* parsing generated text */
    static const struct {
        const char *format, *text, *report; /* report NULL: not a call */
    } cases[] = {
        {"hermes",
         "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": \"x\\\"y\", \"b\": [1, "
         "2]}}\n</tool_call>",
         "[{\"name\":\"f\",\"arguments\":\"{\\\"a\\\": \\\"x\\\\\\\"y\\\", \\\"b\\\": [1, 2]}\"}]"},
        {"hermes",
         "<tool_call>{\"name\":\"f\",\"arguments\":{}}</"
         "tool_call>\n<tool_call>{\"name\":\"g\",\"arguments\":\"{}\"}</tool_call>",
         "[{\"name\":\"f\",\"arguments\":\"{}\"},{\"name\":\"g\",\"arguments\":\"{}\"}]"},
        /* the second call cut short by max_tokens is dropped */
        {"hermes",
         "<tool_call>{\"name\":\"f\",\"arguments\":{}}</"
         "tool_call>\n<tool_call>{\"name\":\"g\",\"argu",
         "[{\"name\":\"f\",\"arguments\":\"{}\"}]"},
        {"hermes", "<tool_call>{\"name\":\"f\",\"arguments\":{}}",
         "[{\"name\":\"f\",\"arguments\":\"{}\"}]"},
        {"hermes", "<tool_call>{\"name\":\"f\",\"argu", NULL},
        {"hermes", "<tool_call>not json</tool_call>", NULL},
        {"hermes", "<tool_call>{\"arguments\":{}}</tool_call>", NULL},
        {"hermes", "just text", NULL},
        {"llama3", " {\"name\": \"f\", \"parameters\": {\"x\": 1}}",
         "[{\"name\":\"f\",\"arguments\":\"{\\\"x\\\": 1}\"}]"},
        {"llama3", "{\"name\":\"f\",\"parameters\":{}}; {\"name\":\"g\",\"parameters\":{}}",
         "[{\"name\":\"f\",\"arguments\":\"{}\"},{\"name\":\"g\",\"arguments\":\"{}\"}]"},
        {"llama3", "{\"name\":\"f\",\"parameters\":{", NULL},
        {"llama3", "{\"x\": 1} and text", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *report = NULL;
        size_t n = 0;
        int32_t rc =
            rg_tool_calls_parse(cases[i].text, strlen(cases[i].text), cases[i].format, &report, &n);
        if (cases[i].report)
            CHECKF(rc == REALM_OK && n >= 1 && !strcmp(report, cases[i].report), "case %zu: %d %s",
                   i, rc, report ? report : "(null)");
        else
            CHECKF(rc == REALM_E_NOT_FOUND && !report, "case %zu: %d", i, rc);
        /* every report is valid JSON */
        struct rj_value *v = NULL;
        if (report)
            CHECKF(rj_parse(report, strlen(report), &v, NULL, 0) == REALM_OK, "case %zu: %s", i,
                   report);
        rj_free(v);
        free(report);
    }
}

int main(void) {
    test_features();
    test_tools();
    test_errors();
    test_llamacpp_grammars();
    test_tokens();
    test_token_refs();
    test_partial_utf8();
    test_json_schema();
    test_request_fields();
    if (failures)
        fprintf(stderr, "test_grammar: %d failure(s)\n", failures);
    else
        printf("test_grammar: ok\n");
    return failures ? 1 : 0;
}

/* ---- JSON schema → GBNF ---- */

struct scase {
    const char *schema;
    const char *const *valid, *const *invalid;
};

static const struct scase scases[] = {
    {"{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":"
     "\"integer\"}},"
     "\"required\":[\"name\",\"age\"],\"additionalProperties\":false}",
     (const char *const[]){"{\"name\":\"Bob\",\"age\":42}", "{ \"name\": \"A\\\"b\", \"age\": -3 }",
                           NULL},
     (const char *const[]){"{\"name\":\"Bob\"}", "{\"age\":42,\"name\":\"Bob\"}",
                           "{\"name\":\"Bob\",\"age\":4.5}", "{\"name\":1,\"age\":1}",
                           "{\"name\":\"B\",\"age\":1,\"x\":1}", "[]", NULL}},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"boolean\"},\"b\":{\"type\":\"null\"},"
     "\"c\":{\"type\":\"number\"}},"
     "\"required\":[\"c\"]}",
     (const char *const[]){"{\"c\":1.5e3}", "{\"a\":true,\"c\":0}", "{\"b\":null,\"c\":-1}",
                           "{\"a\":false,\"b\":null,\"c\":2}", NULL},
     (const char *const[]){"{}", "{\"a\":true}", "{\"c\":01}", "{\"a\":1,\"c\":1}", "{,\"c\":1}",
                           "{\"c\":1,}", NULL}},
    {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":2,\"maxItems\":3}",
     (const char *const[]){"[1,2]", "[1, 2, 3]", NULL},
     (const char *const[]){"[]", "[1]", "[1,2,3,4]", "[1,\"a\"]", NULL}},
    {"{\"enum\":[\"red\",\"green\",1,null,{\"k\":[true]}]}",
     (const char *const[]){"\"red\"", "\"green\"", "1", "null", "{\"k\":[true]}", NULL},
     (const char *const[]){"\"blue\"", "2", "\"Red\"", NULL}},
    {"{\"const\":\"fixed\\u00e9\"}", (const char *const[]){"\"fixedé\"", NULL},
     (const char *const[]){"\"fixed\"", NULL}},
    {"{\"anyOf\":[{\"type\":\"string\",\"maxLength\":3},{\"type\":\"integer\",\"minimum\":0}]}",
     (const char *const[]){"\"abc\"", "\"\"", "17", "0", NULL},
     (const char *const[]){"\"abcd\"", "-1", "true", NULL}},
    {"{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
     "\"next\":{\"oneOf\":"
     "[{\"$ref\":\"#/$defs/"
     "node\"},{\"type\":\"null\"}]}},\"required\":[\"v\",\"next\"]}},\"$ref\":\"#/$defs/node\"}",
     (const char *const[]){"{\"v\":1,\"next\":null}", "{\"v\":1,\"next\":{\"v\":2,\"next\":null}}",
                           NULL},
     (const char *const[]){"{\"v\":1}", "{\"v\":1,\"next\":{\"v\":2}}", NULL}},
    {"{\"type\":\"object\",\"properties\":{\"user\":{\"type\":\"object\",\"properties\":{\"tags\":{"
     "\"type\":\"array\","
     "\"items\":{\"type\":\"string\",\"enum\":[\"a\",\"b\"]}}},\"required\":[\"tags\"]}},"
     "\"required\":[\"user\"]}",
     (const char *const[]){"{\"user\":{\"tags\":[]}}", "{\"user\":{\"tags\":[\"a\",\"b\",\"a\"]}}",
                           NULL},
     (const char *const[]){"{\"user\":{}}", "{\"user\":{\"tags\":[\"c\"]}}", NULL}},
    {"{\"type\":[\"string\",\"null\"],\"minLength\":2}",
     (const char *const[]){"\"ab\"", "null", "\"日本\"", NULL},
     (const char *const[]){"\"a\"", "1", NULL}},
    {"{}", (const char *const[]){"1", "\"x\"", "[1,{\"a\":null}]", "{\"b\":[true,false]}", NULL},
     (const char *const[]){"tru", "{a:1}", "[1,]", NULL}},
    {"{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\"}}",
     (const char *const[]){"{}", "{\"x\":1,\"y\":2}", NULL},
     (const char *const[]){"{\"x\":\"1\"}", NULL}},
    {"{\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\"},{\"type\":\"boolean\"}],\"items\":"
     "false}",
     (const char *const[]){"[\"a\",true]", "[\"a\"]", "[]", NULL},
     (const char *const[]){"[\"a\",true,1]", "[true,\"a\"]", "[1]", NULL}},
};

static void schema_errors(void) {
    const char *bad[][2] = {
        {"{\"type\":\"string\",\"pattern\":\"^a\"}", "pattern"},
        {"{\"allOf\":[{}]}", "allOf"},
        {"{\"$ref\":\"#/$defs/missing\"}", "missing"},
        {"{\"type\":\"integer\",\"minimum\":5}", "minimum"},
        {"{\"type\":\"frob\"}", "frob"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"pattern\":\"x\"}}}",
         "/properties/a"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        struct rj_value *s = NULL;
        char err[256] = "";
        CHECK(rj_parse(bad[k][0], strlen(bad[k][0]), &s, err, sizeof err) == REALM_OK);
        char *gbnf = NULL;
        err[0] = 0;
        int32_t rc = rg_json_schema_to_gbnf(s, &gbnf, err, sizeof err);
        CHECKF(rc == REALM_E_FORMAT && strstr(err, bad[k][1]), "%s: rc %d, \"%s\"", bad[k][0], rc,
               err);
        free(gbnf);
        rj_free(s);
    }
    /* a $ref loop converts, and the grammar is refused as left-recursive */
    const char *loop = "{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/b\"},\"b\":{\"$ref\":\"#/$defs/"
                       "a\"}},\"$ref\":\"#/$defs/a\"}";
    struct rj_value *s = NULL;
    char err[256] = "", *gbnf = NULL;
    CHECK(rj_parse(loop, strlen(loop), &s, err, sizeof err) == REALM_OK);
    CHECK(rg_json_schema_to_gbnf(s, &gbnf, err, sizeof err) == REALM_OK);
    if (gbnf) {
        struct rg_grammar *g = NULL;
        CHECK(rg_grammar_parse(gbnf, strlen(gbnf), NULL, &g, err, sizeof err) == REALM_E_FORMAT &&
              strstr(err, "left recursion"));
        rg_grammar_free(g);
    }
    free(gbnf);
    rj_free(s);
    /* nesting deeper than the converter's cap (60 arrays of arrays) */
    char deep[2048] = "";
    for (int k = 0; k < 30; k++)
        strcat(deep, "{\"items\":");
    strcat(deep, "{}");
    for (int k = 0; k < 30; k++)
        strcat(deep, "}");
    s = NULL;
    CHECK(rj_parse(deep, strlen(deep), &s, err, sizeof err) == REALM_OK);
    gbnf = NULL;
    CHECK(rg_json_schema_to_gbnf(s, &gbnf, err, sizeof err) == REALM_OK); /* 31 levels: fine */
    free(gbnf);
    rj_free(s);
    char deeper[2048] = "";
    for (int k = 0; k < 60; k++)
        strcat(deeper, "{\"items\":");
    strcat(deeper, "{}");
    for (int k = 0; k < 60; k++)
        strcat(deeper, "}");
    s = NULL;
    CHECK(rj_parse(deeper, strlen(deeper), &s, err, sizeof err) == REALM_OK);
    gbnf = NULL;
    CHECK(rg_json_schema_to_gbnf(s, &gbnf, err, sizeof err) == REALM_E_FORMAT &&
          strstr(err, "nested too deeply"));
    free(gbnf);
    rj_free(s);
}

void test_json_schema(void) {
    for (size_t k = 0; k < sizeof scases / sizeof *scases; k++) {
        const struct scase *c = &scases[k];
        struct rj_value *s = NULL;
        char err[256] = "";
        CHECKF(rj_parse(c->schema, strlen(c->schema), &s, err, sizeof err) == REALM_OK,
               "schema %zu: %s", k, err);
        char *gbnf = NULL;
        int32_t rc = rg_json_schema_to_gbnf(s, &gbnf, err, sizeof err);
        CHECKF(rc == REALM_OK, "schema %zu: %s", k, err);
        if (rc == REALM_OK) {
            char name[32];
            snprintf(name, sizeof name, "schema %zu", k);
            struct rg_grammar *g = parse_ok(gbnf, name);
            if (!g) fprintf(stderr, "%s\n", gbnf);
            expect(g, name, c->valid, c->invalid);
            rg_grammar_free(g);
        }
        free(gbnf);
        rj_free(s);
    }
    struct rg_grammar *g = parse_ok(rg_json_any_gbnf(), "any json");
    expect(g, "any json",
           (const char *const[]){"1", " [1, -2.5e-3, \"a\\u0041\"] ", "{\"a\":{\"b\":{}}}", "null",
                                 NULL},
           (const char *const[]){"", "[", "01", "\"\\x\"", "nul", NULL});
    /* deep nesting: many frames, compaction of the frame table on the way */
    if (g) {
        size_t depth = 40000;
        char *deep = malloc(2 * depth + 1);
        memset(deep, '[', depth);
        memset(deep + depth, ']', depth);
        struct rg_gmatch *m;
        CHECK(rg_gmatch_new(g, &m) == REALM_OK);
        int32_t rc = REALM_OK;
        for (size_t k = 0; k < 2 * depth && rc == REALM_OK; k += 100)
            rc = rg_gmatch_advance(m, deep + k, 100);
        CHECKF(rc == REALM_OK && rg_gmatch_complete(m), "deep nesting: rc %d", rc);
        CHECK(!rg_gmatch_accepts(m, "]", 1));
        rg_gmatch_free(m);
        free(deep);
    }
    rg_grammar_free(g);
    g = parse_ok(rg_json_object_gbnf(), "json object");
    expect(g, "json object", (const char *const[]){"{}", "{\"a\": [1]}", NULL},
           (const char *const[]){"[]", "1", NULL});
    rg_grammar_free(g);
    schema_errors();
}

/* ---- request fields ---- */

static void request_case(const char *req_json, int32_t want, const char *needle,
                         const char *accept) {
    struct rj_value *req = NULL;
    char err[256] = "", *gbnf = NULL;
    CHECK(rj_parse(req_json, strlen(req_json), &req, err, sizeof err) == REALM_OK);
    int32_t rc = rg_grammar_from_request(req, &gbnf, err, sizeof err);
    CHECKF(rc == want, "%s: rc %d (%s)", req_json, rc, err);
    if (needle)
        CHECKF(strstr(err, needle) != NULL, "%s: message \"%s\" lacks \"%s\"", req_json, err,
               needle);
    if (rc == REALM_OK && !accept) CHECKF(gbnf == NULL, "%s: expected no grammar", req_json);
    if (rc == REALM_OK && accept) {
        CHECKF(gbnf != NULL, "%s: expected a grammar", req_json);
        struct rg_grammar *g = gbnf ? parse_ok(gbnf, req_json) : NULL;
        if (g)
            CHECKF(matches(g, accept, strlen(accept)) == 1, "%s: should accept %s", req_json,
                   accept);
        rg_grammar_free(g);
    }
    free(gbnf);
    rj_free(req);
}

void test_request_fields(void) {
    request_case("{\"prompt\":\"x\"}", REALM_OK, NULL, NULL);
    request_case("{\"response_format\":{\"type\":\"text\"}}", REALM_OK, NULL, NULL);
    request_case("{\"response_format\":null,\"grammar\":null}", REALM_OK, NULL, NULL);
    request_case("{\"response_format\":{\"type\":\"json_object\"}}", REALM_OK, NULL,
                 "{\"a\": [1]}");
    request_case("{\"response_format\":{\"type\":\"json_object\",\"schema\":{\"type\":\"object\","
                 "\"properties\":"
                 "{\"k\":{\"const\":1}},\"required\":[\"k\"]}}}",
                 REALM_OK, NULL, "{\"k\":1}");
    request_case("{\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
                 "\"strict\":true,"
                 "\"schema\":{\"type\":\"array\",\"items\":{\"type\":\"boolean\"}}}}}",
                 REALM_OK, NULL, "[true, false]");
    request_case("{\"grammar\":\"root ::= \\\"yes\\\" | \\\"no\\\"\"}", REALM_OK, NULL, "no");
    request_case("{\"json_schema\":{\"enum\":[\"a\"]}}", REALM_OK, NULL, "\"a\"");
    request_case("{\"response_format\":{\"type\":\"xml\"}}", REALM_E_INVALID,
                 "response_format.type", NULL);
    request_case("{\"response_format\":{\"type\":\"json_schema\"}}", REALM_E_INVALID,
                 "response_format.json_schema", NULL);
    request_case("{\"grammar\":\"root ::= \\\"a\\\"\",\"json_schema\":{}}", REALM_E_INVALID,
                 "at most one", NULL);
    request_case("{\"grammar\":1}", REALM_E_INVALID, "grammar", NULL);
    request_case("{\"json_schema\":{\"type\":\"string\",\"pattern\":\"a\"}}", REALM_E_INVALID,
                 "pattern", NULL);
}
