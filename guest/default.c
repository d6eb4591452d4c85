/*
 * default.c — the default orchestrator guest. One request (docs/abi.md, "Request JSON"):
 *   1. read and strictly parse the request;
 *   2. open the model (by name, "" = the tenant's default) and read its info;
 *   3. build the prompt: `tokens` as given, or `messages` rendered with the model's chat template
 *      and tokenized by the host (chat_tokenize: message text never becomes control tokens), or
 *      the raw `prompt` tokenized through the host;
 *   4. open a session, decode the prompt, then sample in the guest (logit_bias, penalties,
 *      greedy or top-k/top-p/min-p/temperature, seeded) and decode each new token;
 *   5. stream text with emit: the first SPM space stripped as the native CLI does, UTF-8 fixed
 *      up across token boundaries, stop strings held back so that none is ever emitted in part;
 *   6. stop at EOG (unless ignore_eos), a stop string, max_tokens or the context length; report
 *      usage (prompt and completion tokens, finish reason).
 * n > 1 choices: one session per choice, the prompt decoded in each in turn (the paged KV pool's
 * prefix cache serves the 2nd..nth), each with its own sampler stream (seed + i), then decoded
 * round-robin one token per choice, output tagged with the choice import. n == 1 makes exactly
 * the calls it always made.
 * Tools (docs/abi.md, "Tool calls"): the template renders `tools`; output from the format's call
 * marker on is held back and reported with the tool_calls import when it parses as calls;
 * tool_choice "required" or a named function makes a grammar force a call whose arguments follow
 * the function's schema.
 * Errors are returned as REALM_E_* codes after logging one line that says what was wrong.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "realm_grammar.h"
#include "realm_guest.h"
#include "realm_tools.h"

#define MAX_STOPS 16
#define MAX_STOP_LEN 256
#define MAX_BIAS 1024

/* The host reports a failed request with the guest's last log line: log each error once, where
 * it is understood, and nothing generic after it. */
static bool g_logged;
#define elog(...) (g_logged = true, rg_logf(REALM_ABI_LOG_ERROR, __VA_ARGS__))

RG_EXPORT(realm_init) int32_t realm_init(void) {
    return REALM_OK;
}

/* ---- the request ---- */

struct req {
    const struct rj_value *root;
    const char *model;
    const struct rj_value *prompt, *messages, *tokens;
    int64_t max_tokens; /* -1: until the context is full */
    int32_t n_ctx;
    struct rg_sampler_params sp;
    bool seed_set;
    bool ignore_eos, add_bos, parse_special;
    bool echo;     /* emit the raw prompt before the completion */
    bool logprobs; /* report each sampled token's log-probability (logprobs import) */
    char *gbnf;    /* the output constraint (response_format / grammar / json_schema) or NULL */
    const struct rj_value
        *tools;      /* OpenAI tools offered to the model (NULL: none, or tool_choice "none") */
    bool force_call; /* tool_choice "required" or a named function: the grammar forces a call */
    const char *force_name; /* the named function, or NULL */
    bool parallel; /* parallel_tool_calls: a forced call may be followed by more (default false,
                      as llama-server: small models repeat calls until max_tokens otherwise) */
    int32_t top_logprobs; /* and this many alternatives (0..REALM_ABI_MAX_TOP_LOGPROBS) */
    int32_t n;            /* choices (1..REALM_ABI_MAX_CHOICES): sessions decoded round-robin */
    int strip_space;      /* -1: the default */
    const char *stops[MAX_STOPS];
    size_t stop_lens[MAX_STOPS];
    int n_stops;
    struct rg_bias bias[MAX_BIAS];
};

static int32_t bad(const char *field, const char *want) {
    elog("request: %s: expected %s", field, want);
    return REALM_E_INVALID;
}

/* Reads an optional number field in [lo, hi]; `integer` also requires an integral value. */
static int32_t num_field(const struct rj_value *root, const char *key, double lo, double hi,
                         bool integer, double *out) {
    const struct rj_value *v = rj_get(root, key);
    if (!v || v->type == RJ_NULL) return REALM_OK;
    if (v->type != RJ_NUMBER || v->num < lo || v->num > hi ||
        (integer && v->num != floor(v->num))) {
        char want[96];
        rg_fmt(want, sizeof want, "%s in [%f, %f]", integer ? "an integer" : "a number", lo, hi);
        return bad(key, want);
    }
    *out = v->num;
    return REALM_OK;
}

static int32_t bool_field(const struct rj_value *root, const char *key, bool *out) {
    const struct rj_value *v = rj_get(root, key);
    if (!v || v->type == RJ_NULL) return REALM_OK;
    if (v->type != RJ_TRUE && v->type != RJ_FALSE) return bad(key, "true or false");
    *out = v->type == RJ_TRUE;
    return REALM_OK;
}

/* tools, tool_choice ("none", "auto", "required" or {"type": "function", "function": {"name"}})
 * and parallel_tool_calls; tools only with messages. */
static int32_t parse_tools(const struct rj_value *root, struct req *r) {
    const struct rj_value *tools = rj_get(root, "tools"), *choice = rj_get(root, "tool_choice");
    r->parallel = false;
    int32_t rc = bool_field(root, "parallel_tool_calls", &r->parallel);
    if (rc) return rc;
    if (tools && tools->type == RJ_NULL) tools = NULL;
    if (choice && choice->type == RJ_NULL) choice = NULL;
    if (tools && tools->type != RJ_ARRAY) return bad("tools", "an array of tools");
    if (tools && tools->n == 0) tools = NULL;
    if (tools && !r->messages) return bad("tools", "messages (tools apply to chats)");
    for (size_t i = 0; tools && i < tools->n; i++) {
        const struct rj_value *fn = rj_get(&tools->items[i], "function");
        const struct rj_value *name = rj_get(fn, "name");
        if (!fn || fn->type != RJ_OBJECT || !name || name->type != RJ_STRING)
            return bad(
                "tools",
                "[{\"type\": \"function\", \"function\": {\"name\": ..., \"parameters\": {...}}}]");
    }
    const char *mode = "auto";
    if (choice && choice->type == RJ_STRING) {
        mode = choice->str;
        if (strcmp(mode, "none") && strcmp(mode, "auto") && strcmp(mode, "required"))
            return bad("tool_choice", "\"none\", \"auto\", \"required\" or a named function");
    } else if (choice) {
        const struct rj_value *name = rj_get(rj_get(choice, "function"), "name");
        if (choice->type != RJ_OBJECT || !name || name->type != RJ_STRING)
            return bad("tool_choice", "\"none\", \"auto\", \"required\" or a named function");
        mode = "named";
        r->force_name = name->str;
    }
    if (!tools) {
        if (strcmp(mode, "none") && strcmp(mode, "auto"))
            return bad("tool_choice", "tools to choose from");
        return REALM_OK;
    }
    if (!strcmp(mode, "none")) return REALM_OK; /* the model is not shown the tools */
    r->tools = tools;
    r->force_call = !strcmp(mode, "required") || !strcmp(mode, "named");
    if (r->force_call && (rj_get(root, "response_format") || rj_get(root, "grammar") ||
                          rj_get(root, "json_schema"))) {
        const struct rj_value *rf = rj_get(root, "response_format");
        bool text = rf && rf->type == RJ_OBJECT && rj_string(rj_get(rf, "type"), NULL) &&
                    !strcmp(rj_string(rj_get(rf, "type"), ""), "text");
        if (!text && !(rf && rf->type == RJ_NULL))
            return bad("tool_choice",
                       "no response_format, grammar or json_schema beside a forced tool call");
    }
    return REALM_OK;
}

static int32_t parse_request(const struct rj_value *root, struct req *r) {
    memset(r, 0, sizeof *r);
    r->root = root;
    if (root->type != RJ_OBJECT) return bad("request", "a JSON object");
    rg_sampler_params_default(&r->sp);
    /* the defaults of the native CLI and llama.cpp */
    r->sp.temperature = 0.8f;
    r->sp.top_k = 40;
    r->sp.top_p = 0.95f;
    r->max_tokens = -1;
    r->add_bos = true;
    r->parse_special = true;
    r->strip_space = -1;

    const struct rj_value *v = rj_get(root, "model");
    if (v && v->type != RJ_NULL) {
        if (v->type != RJ_STRING || v->str_len != strlen(v->str)) return bad("model", "a string");
        r->model = v->str;
    } else {
        r->model = "";
    }
    r->prompt = rj_get(root, "prompt");
    r->messages = rj_get(root, "messages");
    r->tokens = rj_get(root, "tokens");
    int n_src = (r->prompt != NULL) + (r->messages != NULL) + (r->tokens != NULL);
    if (n_src != 1) return bad("prompt/messages/tokens", "exactly one of them");
    if (r->prompt && r->prompt->type != RJ_STRING) return bad("prompt", "a string");
    if (r->messages && r->messages->type != RJ_ARRAY) return bad("messages", "an array");
    if (r->tokens && r->tokens->type != RJ_ARRAY) return bad("tokens", "an array of token ids");

    double x;
    int32_t rc;
    x = -1;
    if ((rc = num_field(root, "max_tokens", 0, 1 << 30, true, &x))) return rc;
    r->max_tokens = (int64_t)x;
    x = 0;
    if ((rc = num_field(root, "n_ctx", 0, 1 << 30, true, &x))) return rc;
    r->n_ctx = (int32_t)x;
    x = r->sp.temperature;
    if ((rc = num_field(root, "temperature", 0, 100, false, &x))) return rc;
    r->sp.temperature = (float)x;
    x = r->sp.top_k;
    if ((rc = num_field(root, "top_k", 0, 1 << 30, true, &x))) return rc;
    r->sp.top_k = (int32_t)x;
    x = r->sp.top_p;
    if ((rc = num_field(root, "top_p", 0, 1, false, &x))) return rc;
    r->sp.top_p = x > 0 ? (float)x : 1.0f; /* 0 means off, as in the native CLI */
    x = r->sp.min_p;
    if ((rc = num_field(root, "min_p", 0, 1, false, &x))) return rc;
    r->sp.min_p = (float)x;
    x = r->sp.repeat_penalty;
    if ((rc = num_field(root, "repeat_penalty", 0.01, 100, false, &x))) return rc;
    r->sp.repeat_penalty = (float)x;
    x = r->sp.penalty_last_n;
    if ((rc = num_field(root, "repeat_last_n", 0, 1 << 16, true, &x))) return rc;
    r->sp.penalty_last_n = (int32_t)x;
    x = 0;
    if ((rc = num_field(root, "frequency_penalty", -2, 2, false, &x))) return rc;
    r->sp.frequency_penalty = (float)x;
    x = 0;
    if ((rc = num_field(root, "presence_penalty", -2, 2, false, &x))) return rc;
    r->sp.presence_penalty = (float)x;
    x = -1;
    if ((rc = num_field(root, "seed", 0, 9007199254740991.0, true, &x))) return rc;
    if (x >= 0) {
        r->sp.seed = (uint64_t)x;
        r->seed_set = true;
    }
    if ((rc = bool_field(root, "ignore_eos", &r->ignore_eos)) ||
        (rc = bool_field(root, "add_bos", &r->add_bos)) ||
        (rc = bool_field(root, "parse_special", &r->parse_special)) ||
        (rc = bool_field(root, "echo", &r->echo)))
        return rc;
    if (r->echo && !r->prompt) return bad("echo", "a raw prompt to echo");
    if ((rc = bool_field(root, "logprobs", &r->logprobs))) return rc;
    char gerr[256] = "";
    if ((rc = rg_grammar_from_request(root, &r->gbnf, gerr, sizeof gerr))) {
        elog("%s", gerr[0] ? gerr : rg_strerror(rc));
        return rc == REALM_E_NOMEM ? rc : REALM_E_INVALID;
    }
    if ((rc = parse_tools(root, r))) return rc;
    x = 0;
    if ((rc = num_field(root, "top_logprobs", 0, REALM_ABI_MAX_TOP_LOGPROBS, true, &x))) return rc;
    r->top_logprobs = (int32_t)x;
    x = 1;
    if ((rc = num_field(root, "n", 1, REALM_ABI_MAX_CHOICES, true, &x))) return rc;
    r->n = (int32_t)x;
    if (r->n > 1 && r->tools) return bad("n", "1 when tools are offered");
    v = rj_get(root, "strip_leading_space");
    if (v && v->type != RJ_NULL) {
        bool b = false;
        if ((rc = bool_field(root, "strip_leading_space", &b))) return rc;
        r->strip_space = b;
    }

    v = rj_get(root, "stop");
    if (v && v->type != RJ_NULL) {
        const struct rj_value *items = v->type == RJ_STRING ? v : v->items;
        size_t n = v->type == RJ_STRING ? 1 : v->n;
        if ((v->type != RJ_STRING && v->type != RJ_ARRAY) || n > MAX_STOPS)
            return bad("stop", "a string or an array of at most 16 strings");
        for (size_t i = 0; i < n; i++) {
            const struct rj_value *s = &items[i];
            if (s->type != RJ_STRING || s->str_len == 0 || s->str_len > MAX_STOP_LEN)
                return bad("stop", "non-empty strings of at most 256 bytes");
            r->stops[r->n_stops] = s->str;
            r->stop_lens[r->n_stops++] = s->str_len;
        }
    }

    v = rj_get(root, "logit_bias");
    if (v && v->type != RJ_NULL) {
        if (v->type != RJ_OBJECT || v->n > MAX_BIAS)
            return bad("logit_bias", "an object of at most 1024 \"token id\": bias pairs");
        for (size_t i = 0; i < v->n; i++) {
            const char *k = v->keys[i];
            char *end;
            long id = strtol(k, &end, 10);
            const struct rj_value *b = &v->items[i];
            if (!*k || *end || id < 0 || id > INT32_MAX || b->type != RJ_NUMBER || b->num < -100 ||
                b->num > 100)
                return bad("logit_bias", "token ids (as strings) mapped to numbers in [-100, 100]");
            r->bias[i].token = (int32_t)id;
            r->bias[i].bias = (float)b->num;
        }
        r->sp.bias = r->bias;
        r->sp.n_bias = (int32_t)v->n;
    }
    return REALM_OK;
}

/* ---- model info ---- */

struct info {
    char tool_format[16]; /* "hermes" or "llama3" (model_info's tool_format) */
    int32_t n_vocab, n_ctx_train, bos;
    bool add_space_prefix;
    int32_t *eog;
    size_t n_eog;
};

static int32_t read_info(int32_t model, struct info *mi) {
    char *text = NULL;
    size_t len = 0;
    struct rj_value *v = NULL;
    memset(mi, 0, sizeof *mi);
    int32_t rc = rg_model_info_all(model, &text, &len);
    if (rc == REALM_OK) rc = rj_parse(text, len, &v, NULL, 0);
    if (rc == REALM_OK) {
        const struct rj_value *eog = rj_get(v, "eog");
        if (!rj_is_int(rj_get(v, "n_vocab"), 1, INT32_MAX) ||
            !rj_is_int(rj_get(v, "n_ctx_train"), 1, INT32_MAX) || !eog || eog->type != RJ_ARRAY) {
            rc = REALM_E_FORMAT;
        } else {
            mi->n_vocab = (int32_t)rj_number(rj_get(v, "n_vocab"), 0);
            mi->n_ctx_train = (int32_t)rj_number(rj_get(v, "n_ctx_train"), 0);
            mi->bos = (int32_t)rj_number(rj_get(v, "bos"), -1);
            mi->add_space_prefix = rj_bool(rj_get(v, "add_space_prefix"), false);
            rg_fmt(mi->tool_format, sizeof mi->tool_format, "%s",
                   !strcmp(rj_string(rj_get(v, "tool_format"), "hermes"), "llama3") ? "llama3"
                                                                                    : "hermes");
            mi->eog = malloc((eog->n ? eog->n : 1) * sizeof *mi->eog);
            if (!mi->eog) rc = REALM_E_NOMEM;
            for (size_t i = 0; rc == REALM_OK && i < eog->n; i++)
                mi->eog[mi->n_eog++] = (int32_t)eog->items[i].num;
        }
    }
    if (rc) elog("model_info: %s", rg_strerror(rc));
    rj_free(v);
    free(text);
    return rc;
}

static bool is_eog(const struct info *mi, int32_t tok) {
    for (size_t i = 0; i < mi->n_eog; i++)
        if (mi->eog[i] == tok) return true;
    return false;
}

/* ---- output: UTF-8 repair across pieces, stop strings held back ---- */

struct out {
    struct rg_buf text;       /* valid UTF-8 not yet emitted */
    unsigned char pending[8]; /* an incomplete UTF-8 sequence waiting for the next piece */
    size_t n_pending;
    bool strip_space, first;
    const struct req *r;
    bool stopped; /* a stop string was found */
    /* tool calls: text from the format's marker on (or, for a JSON format, an answer that starts
     * with '{') is captured instead of emitted, and parsed at the end */
    const char *marker; /* "<tool_call>", or NULL */
    bool json_calls;    /* llama3: a call is a JSON object at the start of the answer */
    bool capturing, decided;
    struct rg_buf capture;
};

static int32_t emit_upto(struct out *o, size_t n) {
    if (n == 0) return REALM_OK;
    int32_t rc = realm_emit(o->text.data, (int32_t)n);
    if (rc < 0) return rc;
    rg_buf_consume(&o->text, n);
    return REALM_OK;
}

/* needle in haystack[0..hn), or NULL (memmem is not in the guest's libc without _GNU_SOURCE) */
static const char *find(const char *h, size_t hn, const char *needle, size_t nn) {
    for (size_t i = 0; nn <= hn && i <= hn - nn; i++)
        if (!memcmp(h + i, needle, nn)) return h + i;
    return NULL;
}

/* Moves the text from byte `from` on into the capture (a tool call starts there). */
static int32_t start_capture(struct out *o, size_t from) {
    int32_t rc = emit_upto(o, from);
    if (rc) return rc;
    rc = rg_buf_append(&o->capture, o->text.data, o->text.len);
    if (rc) return rc;
    rg_buf_consume(&o->text, o->text.len);
    o->capturing = true;
    return REALM_OK;
}

/* How many bytes at the end of t[0..n) could begin `word` (held back until the next piece). */
static size_t partial_suffix(const char *t, size_t n, const char *word) {
    size_t wl = strlen(word);
    for (size_t h = wl - 1 < n ? wl - 1 : n; h > 0; h--)
        if (!memcmp(t + n - h, word, h)) return h;
    return 0;
}

/* Emits what can no longer become part of a stop string; ends at a stop string if one shows. */
static int32_t flush_text(struct out *o, bool final) {
    const struct req *r = o->r;
    if (o->capturing) { /* everything after a call's start is the call's */
        int32_t rc = rg_buf_append(&o->capture, o->text.data, o->text.len);
        rg_buf_consume(&o->text, o->text.len);
        return rc;
    }
    if (o->json_calls && !o->decided) {
        size_t k = 0;
        while (k < o->text.len && (o->text.data[k] == ' ' || o->text.data[k] == '\n' ||
                                   o->text.data[k] == '\t' || o->text.data[k] == '\r'))
            k++;
        if (k == o->text.len && !final) return REALM_OK; /* only whitespace so far: wait */
        o->decided = true;
        if (k < o->text.len && o->text.data[k] == '{') return start_capture(o, 0);
    }
    if (o->marker) {
        const char *m = find(o->text.data, o->text.len, o->marker, strlen(o->marker));
        if (m) return start_capture(o, (size_t)(m - o->text.data));
    }
    const char *t = o->text.data;
    size_t n = o->text.len;
    size_t first = SIZE_MAX;
    for (int k = 0; k < r->n_stops; k++) {
        size_t sl = r->stop_lens[k];
        for (size_t i = 0; i + sl <= n && i < first; i++)
            if (!memcmp(t + i, r->stops[k], sl)) {
                first = i;
                break;
            }
    }
    if (first != SIZE_MAX) {
        o->stopped = true;
        return emit_upto(o, first);
    }
    size_t hold = 0;
    if (!final && o->marker) hold = partial_suffix(t, n, o->marker);
    if (!final) {
        for (int k = 0; k < r->n_stops; k++) {
            size_t sl = r->stop_lens[k];
            for (size_t h = sl - 1 < n ? sl - 1 : n; h > hold; h--)
                if (!memcmp(t + n - h, r->stops[k], h)) {
                    hold = h;
                    break;
                }
        }
    }
    return emit_upto(o, n - hold);
}

static int32_t push_piece(struct out *o, const char *piece, size_t len) {
    if (len > 0 && o->first) {
        /* SPM puts a space in front of the text: drop it from the first visible piece */
        if (o->strip_space && piece[0] == ' ') piece++, len--;
        o->first = false;
    }
    size_t total = o->n_pending + len;
    unsigned char *in = malloc(total ? total : 1);
    if (!in) return REALM_E_NOMEM;
    memcpy(in, o->pending, o->n_pending);
    memcpy(in + o->n_pending, piece, len);
    size_t done = rg_utf8_complete_prefix((const char *)in, total);
    int32_t rc = rg_utf8_sanitize(&o->text, (const char *)in, done);
    o->n_pending = total - done;
    if (o->n_pending > sizeof o->pending) { /* cannot happen: an incomplete sequence is < 4 bytes */
        free(in);
        return REALM_E_INTERNAL;
    }
    memcpy(o->pending, in + done, o->n_pending);
    free(in);
    if (rc) return rc;
    return flush_text(o, false);
}

static int32_t finish_text(struct out *o) {
    if (o->n_pending) {
        int32_t rc = rg_utf8_sanitize(&o->text, (const char *)o->pending, o->n_pending);
        o->n_pending = 0;
        if (rc) return rc;
    }
    return flush_text(o, true);
}

/* The captured text as tool calls (the realm_tool_calls import), or, when it holds none, as the
 * plain text it is. */
static int32_t report_calls(struct out *o, const char *format) {
    char *report = NULL;
    size_t n_calls = 0;
    int32_t rc = rg_tool_calls_parse(o->capture.data ? o->capture.data : "", o->capture.len, format,
                                     &report, &n_calls);
    if (rc == REALM_OK) {
        rc = realm_tool_calls(report, (int32_t)strlen(report));
        if (rc) elog("tool_calls: %s", rg_strerror(rc));
    } else if (rc == REALM_E_NOT_FOUND) {
        rc = o->capture.len ? realm_emit(o->capture.data, (int32_t)o->capture.len) : REALM_OK;
    }
    free(report);
    return rc;
}

/* ---- generation ---- */

static int32_t build_prompt(int32_t model, const struct req *r, const char *json,
                            const struct info *mi, int32_t **toks, int32_t *n) {
    int32_t rc;
    if (r->tokens) {
        *toks = malloc((r->tokens->n ? r->tokens->n : 1) * sizeof **toks);
        if (!*toks) return REALM_E_NOMEM;
        for (size_t i = 0; i < r->tokens->n; i++) {
            if (!rj_is_int(&r->tokens->items[i], 0, mi->n_vocab - 1)) {
                free(*toks);
                *toks = NULL;
                return bad("tokens", "token ids inside the vocabulary");
            }
            (*toks)[i] = (int32_t)r->tokens->items[i].num;
        }
        *n = (int32_t)r->tokens->n;
        return REALM_OK;
    }
    int32_t flags = r->add_bos ? REALM_ABI_TOKENIZE_ADD_BOS : 0;
    if (r->messages) {
        /* chat_tokenize, not chat_format + tokenize: only the template's markup may become control
         * tokens, so a message cannot close its turn and forge another ("parse_special" is for
         * raw prompts only) */
        if (!r->tools) {
            rc = rg_chat_tokenize_all(model, json + r->messages->src_off, r->messages->src_len,
                                      flags, toks, n);
        } else { /* the template renders the tools too (chat_tokenize's object form) */
            struct rg_buf b = {0};
            rc = rg_buf_append(&b, "{\"messages\":", 12);
            rc = rc ? rc : rg_buf_append(&b, json + r->messages->src_off, r->messages->src_len);
            rc = rc ? rc : rg_buf_append(&b, ",\"tools\":", 9);
            rc = rc ? rc : rg_buf_append(&b, json + r->tools->src_off, r->tools->src_len);
            rc = rc ? rc : rg_buf_append(&b, "}", 1);
            rc = rc ? rc : rg_chat_tokenize_all(model, b.data, b.len, flags, toks, n);
            rg_buf_free(&b);
        }
        if (rc) elog("messages: chat template: %s", rg_strerror(rc));
        return rc;
    }
    if (r->parse_special) flags |= REALM_ABI_TOKENIZE_PARSE_SPECIAL;
    rc = rg_tokenize_all(model, r->prompt->str, r->prompt->str_len, flags, toks, n);
    if (rc) elog("tokenize: %s", rg_strerror(rc));
    return rc;
}

/* ---- constrained output ---- */

/* A grammar's <token> reference: the one token that spells it, or -1. */
static int32_t token_of(void *ctx, const char *text, size_t len) {
    int32_t out[2];
    int32_t n = realm_tokenize(*(const int32_t *)ctx, text, (int32_t)len,
                               REALM_ABI_TOKENIZE_PARSE_SPECIAL, out, 2);
    return n == 1 ? out[0] : -1;
}

/* The vocabulary table of the model, built on the first constrained request of this instance
 * (one token_piece call per token) and kept for the next ones. */
static struct {
    char model[REALM_ABI_MAX_NAME + 1];
    struct rg_vocab *v;
} g_vocab;

static int32_t vocab_for(int32_t model, const char *name, const struct info *mi,
                         const struct rg_vocab **out) {
    if (!g_vocab.v || strcmp(g_vocab.model, name)) {
        rg_vocab_free(g_vocab.v);
        g_vocab.v = NULL;
        int32_t rc = rg_vocab_load(model, mi->n_vocab, mi->eog, mi->n_eog, &g_vocab.v);
        if (rc) {
            elog("grammar: vocabulary: %s", rg_strerror(rc));
            return rc;
        }
        rg_fmt(g_vocab.model, sizeof g_vocab.model, "%s", name);
    }
    *out = g_vocab.v;
    return REALM_OK;
}

/* The request's grammar, parsed, and a matcher at its start. Grammar errors are the client's
 * (400). */
static int32_t grammar_start(const struct req *r, const char *gbnf, const char *root, int32_t model,
                             const struct info *mi, struct rg_grammar **g, struct rg_gmatch **m,
                             const struct rg_vocab **v) {
    char err[256] = "";
    int32_t rc =
        rg_grammar_parse_ex(gbnf, strlen(gbnf), root, token_of, &model, g, err, sizeof err);
    if (rc) {
        elog("%s", err[0] ? err : rg_strerror(rc));
        return rc == REALM_E_FORMAT ? REALM_E_INVALID : rc;
    }
    if ((rc = vocab_for(model, r->model, mi, v))) return rc;
    if ((rc = rg_gmatch_new(*g, m))) elog("grammar: %s", rg_strerror(rc));
    return rc;
}

/* ---- choices ---- */

/* One choice's state (n > 1: each has its own session, sampler stream and output). */
struct choice {
    int32_t session;
    struct rg_sampler smp;
    struct rg_gmatch *gm;
    struct out o;
    float *logits;
    int32_t n_gen, finish, len;
    bool done;
};

/* Makes choice i the one the following emit / logprobs / usage calls belong to. A request of
 * one choice never calls choice(), so guests and hosts without it see the same calls as before. */
static int32_t select_choice(const struct req *r, int32_t i) {
    if (r->n <= 1) return REALM_OK;
    int32_t rc = realm_choice(i);
    if (rc) elog("choice(%d): %s", i, rg_strerror(rc));
    return rc;
}

/* Sets up choice i: its session with the prompt decoded (the 2nd..nth attach the 1st's cached
 * prompt blocks: the scheduler's prefix reuse), its sampler (seed + i when a seed is given), its
 * grammar matcher and its output state. */
static int32_t choice_start(const struct req *r, const struct info *mi, int32_t model,
                            const int32_t *toks, int32_t n_prompt, int64_t want,
                            const struct rg_grammar *gram, int32_t i, struct choice *c) {
    c->session = realm_session_open(model, (int32_t)want);
    if (c->session < 0) {
        int32_t rc = c->session;
        elog("session_open(%lld): %s", (long long)want, rg_strerror(rc));
        return rc;
    }
    struct rg_sampler_params sp = r->sp;
    sp.seed = r->seed_set ? r->sp.seed + (uint64_t)i : (uint64_t)realm_random_seed();
    int32_t rc = rg_sampler_init(&c->smp, &sp, mi->n_vocab);
    if (rc) {
        elog("sampler: %s", rg_strerror(rc));
        return rc;
    }
    for (int32_t k = 0; k < n_prompt; k++)
        rg_sampler_accept(&c->smp, toks[k]);
    if (gram && (rc = rg_gmatch_new(gram, &c->gm))) {
        elog("grammar: %s", rg_strerror(rc));
        return rc;
    }
    c->logits = malloc((size_t)mi->n_vocab * sizeof *c->logits);
    if (!c->logits) return REALM_E_NOMEM;
    c->o.r = r;
    c->o.first = true;
    if (r->tools) {
        c->o.marker = rg_tool_marker(mi->tool_format);
        c->o.json_calls = !c->o.marker;
    }
    c->o.strip_space = r->strip_space >= 0
                           ? r->strip_space
                           : mi->add_space_prefix && r->prompt && r->prompt->str_len == 0;
    c->finish = REALM_ABI_FINISH_LENGTH;
    c->len = n_prompt;
    if ((rc = realm_decode(c->session, toks, n_prompt, c->logits, mi->n_vocab))) {
        elog("decode prompt: %s", rg_strerror(rc));
        return rc;
    }
    return REALM_OK;
}

/* One token of choice c: sample, account, emit, and decode it unless it ends the choice
 * (c->done). */
static int32_t choice_step(const struct req *r, const struct info *mi, int32_t model,
                           const struct rg_vocab *vocab, int64_t max_tokens, int64_t want,
                           struct choice *c) {
    struct rg_gmatch *gm = c->gm;
    int32_t rc;
    int32_t id = gm ? rg_sample_grammar(&c->smp, gm, vocab, c->logits)
                    : rg_sampler_sample(&c->smp, c->logits);
    if (id < 0) {
        if (gm && id == REALM_E_INVALID)
            elog("grammar: no token of the vocabulary can continue the output");
        return id;
    }
    c->n_gen++;
    /* under a grammar an end-of-generation token only comes once the grammar is complete:
     * it ends the output even with ignore_eos */
    if ((!r->ignore_eos || gm) && is_eog(mi, id)) {
        c->finish = REALM_ABI_FINISH_STOP;
        c->done = true;
        return REALM_OK;
    }
    if (gm && (rc = rg_gmatch_accept_token(gm, vocab, id))) {
        elog("grammar: token %d: %s", id, rg_strerror(rc));
        return rc;
    }
    rg_sampler_accept(&c->smp, id);
    if (r->logprobs) { /* of the distribution it was drawn from: logits after bias and penalties */
        int32_t lp_ids[REALM_ABI_MAX_TOP_LOGPROBS + 1];
        float lp_vals[REALM_ABI_MAX_TOP_LOGPROBS + 1];
        int32_t nlp = rg_logprobs(c->logits, mi->n_vocab, id, r->top_logprobs, lp_ids, lp_vals);
        if (nlp < 0) return nlp;
        if ((rc = realm_logprobs(model, lp_ids, lp_vals, nlp)) != REALM_OK) return rc;
    }
    char small[256];
    int32_t pl = realm_token_piece(model, id, small, sizeof small);
    if (pl < 0) return pl;
    char *piece = small;
    if ((size_t)pl > sizeof small) {
        piece = malloc((size_t)pl);
        if (!piece) return REALM_E_NOMEM;
        int32_t pl2 = realm_token_piece(model, id, piece, pl);
        if (pl2 != pl) {
            free(piece);
            return pl2 < 0 ? pl2 : REALM_E_INTERNAL;
        }
    }
    rc = push_piece(&c->o, piece, (size_t)pl);
    if (piece != small) free(piece);
    if (rc) return rc;
    if (c->o.stopped || (gm && rg_gmatch_done(gm))) { /* a finished grammar: nothing may follow */
        c->finish = REALM_ABI_FINISH_STOP;
        c->done = true;
        return REALM_OK;
    }
    if (c->n_gen == max_tokens || c->len >= want) { /* max_tokens, or the context is full */
        c->done = true;
        return REALM_OK;
    }
    if ((rc = realm_decode(c->session, &id, 1, c->logits, mi->n_vocab))) return rc;
    c->len++;
    return REALM_OK;
}

/* The end of choice c: the text held back, its tool calls, its usage. */
static int32_t choice_finish(const struct info *mi, int32_t n_prompt, struct choice *c) {
    int32_t rc;
    if (!c->o.stopped) {
        if ((rc = finish_text(&c->o))) return rc;
        if (c->o.stopped) c->finish = REALM_ABI_FINISH_STOP;
    }
    if (c->o.capturing && (rc = report_calls(&c->o, mi->tool_format))) return rc;
    realm_usage(n_prompt, c->n_gen, c->finish);
    return REALM_OK;
}

static void choice_free(struct choice *c) {
    if (c->session > 0) realm_session_close(c->session);
    rg_sampler_free(&c->smp);
    rg_gmatch_free(c->gm);
    rg_buf_free(&c->o.text);
    rg_buf_free(&c->o.capture);
    free(c->logits);
}

static int32_t generate(const struct req *r, const char *json) {
    int32_t model = realm_model_open(r->model, (int32_t)strlen(r->model));
    if (model < 0) {
        elog("model '%s': %s", r->model, rg_strerror(model));
        return model;
    }
    struct info mi;
    int32_t rc = read_info(model, &mi);
    if (rc) return rc;

    int32_t *toks = NULL, n_prompt = 0;
    struct rg_grammar *gram = NULL;
    struct rg_gmatch *gm0 = NULL;
    const struct rg_vocab *vocab = NULL;
    char *tool_gbnf = NULL;
    struct choice *ch = calloc((size_t)r->n, sizeof *ch);
    if (!ch) {
        free(mi.eog);
        return REALM_E_NOMEM;
    }

    if ((rc = build_prompt(model, r, json, &mi, &toks, &n_prompt))) goto done;
    if (n_prompt == 0) {
        if (mi.bos < 0) {
            rc = bad("prompt", "text or tokens (empty, and the vocabulary has no BOS token)");
            goto done;
        }
        free(toks);
        toks = malloc(sizeof *toks);
        if (!toks) {
            rc = REALM_E_NOMEM;
            goto done;
        }
        toks[n_prompt++] = mi.bos; /* a generation needs one input token */
    }

    int64_t want = r->n_ctx > 0         ? r->n_ctx
                   : r->max_tokens >= 0 ? (int64_t)n_prompt + r->max_tokens
                                        : mi.n_ctx_train;
    if (want > mi.n_ctx_train) want = mi.n_ctx_train;
    if (want < 1) want = 1;
    if (n_prompt > want) {
        elog("prompt of %d tokens exceeds the context of %lld tokens", n_prompt, (long long)want);
        rc = REALM_E_CONTEXT_FULL;
        goto done;
    }
    int64_t max_tokens = r->max_tokens >= 0 ? r->max_tokens : want - n_prompt + 1;
    const char *gbnf = r->gbnf, *groot = NULL;
    if (r->force_call) { /* tool_choice required / named: the call is the grammar's */
        char gerr[256] = "";
        rc = rg_tools_grammar(r->tools, json, r->force_name, mi.tool_format, r->parallel,
                              &tool_gbnf, &groot, gerr, sizeof gerr);
        if (rc) {
            elog("tools: %s", gerr[0] ? gerr : rg_strerror(rc));
            goto done;
        }
        gbnf = tool_gbnf;
    }
    /* the grammar is parsed once; each choice gets its own matcher */
    if (gbnf && (rc = grammar_start(r, gbnf, groot, model, &mi, &gram, &gm0, &vocab))) goto done;
    rg_gmatch_free(gm0);
    gm0 = NULL;
    /* one after the other: each prompt decode ends before the next choice's starts, so the
     * first one's full blocks are in the prefix cache for the others */
    for (int32_t i = 0; i < r->n; i++)
        if ((rc = choice_start(r, &mi, model, toks, n_prompt, want, gram, i, &ch[i]))) goto done;
    /* echo: the prompt as sent, before any completion text (stop strings apply to the completion
     * only); after the prompt decoded, so a prompt that does not fit still fails cleanly */
    for (int32_t i = 0; r->echo && r->prompt->str_len > 0 && i < r->n; i++)
        if ((rc = select_choice(r, i)) ||
            (rc = realm_emit(r->prompt->str, (int32_t)r->prompt->str_len)) != REALM_OK)
            goto done;
    for (int32_t i = 0; i < r->n; i++)
        ch[i].done = max_tokens <= 0;
    /* round-robin, one token per choice per turn: the choices' streams interleave */
    for (bool busy = true; busy;) {
        busy = false;
        for (int32_t i = 0; i < r->n; i++) {
            if (ch[i].done) continue;
            if ((rc = select_choice(r, i)) ||
                (rc = choice_step(r, &mi, model, vocab, max_tokens, want, &ch[i])))
                goto done;
            busy = busy || !ch[i].done;
        }
    }
    for (int32_t i = 0; i < r->n; i++)
        if ((rc = select_choice(r, i)) || (rc = choice_finish(&mi, n_prompt, &ch[i]))) goto done;

done:
    if (rc && rc != REALM_E_CANCELLED && !g_logged) elog("generate: %s", rg_strerror(rc));
    for (int32_t i = 0; i < r->n; i++)
        choice_free(&ch[i]);
    free(ch);
    rg_gmatch_free(gm0);
    rg_grammar_free(gram);
    free(tool_gbnf);
    free(toks);
    free(mi.eog);
    return rc;
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    g_logged = false;
    char *json = NULL;
    size_t len = 0;
    int32_t rc = rg_request_read_all(&json, &len);
    if (rc) return rc;
    struct rj_value *root = NULL;
    char err[160];
    rc = rj_parse(json, len, &root, err, sizeof err);
    if (rc) {
        elog("request: %s", err[0] ? err : rg_strerror(rc));
        free(json);
        return rc == REALM_E_FORMAT ? REALM_E_INVALID : rc;
    }
    struct req *r = malloc(sizeof *r);
    if (!r) {
        rc = REALM_E_NOMEM;
    } else if ((rc = parse_request(root, r)) == REALM_OK) {
        rc = generate(r, json);
    }
    if (r) free(r->gbnf);
    free(r);
    rj_free(root);
    free(json);
    return rc;
}
