/*
 * cmd_template.c — `realm template`: renders a chat template (the GGUF's tokenizer.chat_template
 * or a file) with messages, tools and extra variables, and prints the prompt byte for byte.
 *
 *   realm template (-m MODEL.gguf | --template-file T.jinja) --messages M.json [--tools T.json]
 *                  [--vars V.json] [--bos S] [--eos S] [--add-generation-prompt] [--name NAME]
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "realm/alloc.h"
#include "realm/gguf.h"
#include "realm/template.h"

#define MAX_INPUT ((size_t)64 << 20)

static void template_usage(FILE *f) {
    fprintf(
        f,
        "usage: realm template (-m MODEL | --template-file FILE) --messages FILE\n"
        "                      [--tools FILE] [--vars FILE] [--bos S] [--eos S]\n"
        "                      [--add-generation-prompt] [--name NAME]\n\n"
        "Renders a Jinja chat template as transformers' apply_chat_template does and prints the\n"
        "prompt to standard output, byte for byte (no newline is added).\n\n"
        "  -m, --model MODEL      take tokenizer.chat_template from a GGUF file (vocab-only "
        "works)\n"
        "  --name NAME            a named template of the GGUF: tokenizer.chat_template.NAME\n"
        "  --template-file FILE   a Jinja template file\n"
        "  --messages FILE        JSON array of messages ({\"role\": ..., \"content\": ...})\n"
        "  --tools FILE           JSON array of tools (default: tools is none)\n"
        "  --vars FILE            JSON object of extra variables (e.g. enable_thinking)\n"
        "  --bos S, --eos S       bos_token / eos_token (default: the GGUF's tokens, else empty)\n"
        "  --add-generation-prompt  end with the assistant prefix\n"
        "  -h, --help             this help\n");
}

/* Reads a whole file; NULL (message printed) on failure. */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_error("%s: cannot open", path);
        return NULL;
    }
    size_t cap = 1 << 14, n = 0;
    char *buf = realm_malloc(cap + 1);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *b = cap < MAX_INPUT ? realm_realloc(buf, cap * 2 + 1) : NULL;
        if (!b) {
            realm_free(buf);
            buf = NULL;
            break;
        }
        buf = b;
        cap *= 2;
    }
    bool bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        realm_free(buf);
        cli_error("%s: %s", path, bad ? "read error" : "too large or out of memory");
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static cJSON *read_json(const char *path, int want_type, const char *what) {
    size_t n;
    char *s = slurp(path, &n);
    if (!s) return NULL;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(s, n + 1, &end, true);
    if (!j) {
        cli_error("%s: malformed JSON near byte %zu", path, end ? (size_t)(end - s) : (size_t)0);
    } else if ((j->type & 0xFF) != want_type) {
        cli_error("%s: expected a JSON %s", path, what);
        cJSON_Delete(j);
        j = NULL;
    }
    realm_free(s);
    return j;
}

/* The text of token id key (tokenizer.ggml.bos_token_id ...) in g, or "". */
static const char *gguf_token(const struct realm_gguf *g, const char *key, size_t *len) {
    uint32_t id;
    const char *s;
    if (realm_gguf_get_u32(g, key, &id) &&
        realm_gguf_arr_str(g, "tokenizer.ggml.tokens", id, &s, len))
        return s;
    *len = 0;
    return "";
}

struct template_opts {
    const char *model, *file, *messages, *tools, *vars, *bos, *eos, *name;
    bool gen;
};

static int parse_opts(int argc, char **argv, struct template_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            template_usage(stdout);
            return -1;
        }
        if (!strcmp(a, "--add-generation-prompt")) {
            o->gen = true;
            continue;
        }
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            dst = &o->model;
        else if (!strcmp(a, "--template-file"))
            dst = &o->file;
        else if (!strcmp(a, "--messages"))
            dst = &o->messages;
        else if (!strcmp(a, "--tools"))
            dst = &o->tools;
        else if (!strcmp(a, "--vars"))
            dst = &o->vars;
        else if (!strcmp(a, "--bos"))
            dst = &o->bos;
        else if (!strcmp(a, "--eos"))
            dst = &o->eos;
        else if (!strcmp(a, "--name"))
            dst = &o->name;
        if (!dst) {
            cli_error("template: unknown option '%s' (see realm template --help)", a);
            return 2;
        }
        if (i + 1 >= argc) {
            cli_error("template: %s needs a value", a);
            return 2;
        }
        *dst = argv[++i];
    }
    if (!o->model == !o->file) {
        cli_error("template: give exactly one of -m MODEL and --template-file FILE");
        return 2;
    }
    if (!o->messages) {
        cli_error("template: --messages FILE is required");
        return 2;
    }
    if (o->name && !o->model) {
        cli_error("template: --name needs -m MODEL");
        return 2;
    }
    return 0;
}

/* Loads the template source and the default bos/eos; 0 or 1 (message printed). */
static int load_source(const struct template_opts *o, char **src, size_t *len, char **bos,
                       char **eos) {
    if (o->file) {
        *src = slurp(o->file, len);
        *bos = realm_strndup("", 0);
        *eos = realm_strndup("", 0);
        return *src && *bos && *eos ? 0 : 1;
    }
    struct realm_gguf *g;
    struct realm_err err = {0};
    if (realm_gguf_open(o->model, &g, &err) != REALM_OK) {
        cli_error("%s", err.msg);
        return 1;
    }
    char key[256];
    snprintf(key, sizeof key, "tokenizer.chat_template%s%s", o->name ? "." : "",
             o->name ? o->name : "");
    const char *s;
    int rc = 0;
    if (!realm_gguf_get_str(g, key, &s, len)) {
        cli_error("%s: no %s in the file", o->model, key);
        rc = 1;
    } else {
        size_t bn, en;
        const char *b = gguf_token(g, "tokenizer.ggml.bos_token_id", &bn);
        const char *e = gguf_token(g, "tokenizer.ggml.eos_token_id", &en);
        *src = realm_strndup(s, *len);
        *bos = realm_strndup(b, bn);
        *eos = realm_strndup(e, en);
        if (!*src || !*bos || !*eos) {
            cli_error("out of memory");
            rc = 1;
        }
    }
    realm_gguf_close(g);
    return rc;
}

int cmd_template(int argc, char **argv) {
    struct template_opts o = {0};
    int rc = parse_opts(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : 1; /* the issue asks for exit 1 on every error, usage included */
    char *src = NULL, *bos = NULL, *eos = NULL, *out = NULL;
    size_t len = 0, out_len = 0;
    struct realm_template *t = NULL;
    cJSON *vars = NULL, *messages = NULL, *tools = NULL, *extra = NULL;
    struct realm_err err = {0};
    rc = 1;
    if (load_source(&o, &src, &len, &bos, &eos)) goto out;
    if (realm_template_parse(src, len, &t, &err) != REALM_OK) {
        cli_error("%s: %s", o.file ? o.file : o.model, err.msg);
        goto out;
    }
    if (!(messages = read_json(o.messages, cJSON_Array, "array of messages"))) goto out;
    if (o.tools && !(tools = read_json(o.tools, cJSON_Array, "array of tools"))) goto out;
    if (o.vars && !(extra = read_json(o.vars, cJSON_Object, "object"))) goto out;
    if (realm_template_chat_vars(messages, tools, o.gen, o.bos ? o.bos : bos, o.eos ? o.eos : eos,
                                 extra, &vars, &err) != REALM_OK) {
        cli_error("%s", err.msg);
        goto out;
    }
    if (realm_template_render(t, vars, NULL, &out, &out_len, &err) != REALM_OK) {
        cli_error("%s", err.msg);
        goto out;
    }
    if (fwrite(out, 1, out_len, stdout) != out_len || fflush(stdout)) {
        cli_error("template: cannot write the output");
        goto out;
    }
    rc = 0;
out:
    realm_free(out);
    cJSON_Delete(vars);
    cJSON_Delete(messages);
    cJSON_Delete(tools);
    cJSON_Delete(extra);
    realm_template_free(t);
    realm_free(src);
    realm_free(bos);
    realm_free(eos);
    return rc;
}
