/*
 * cmd_tokenize.c — `realm tokenize` and `realm detokenize`: the model's tokenizer on the command
 * line. Both need only the tokenizer metadata, so vocab-only GGUF files work.
 *
 *   realm tokenize -m MODEL [--no-bos] [--special] [--pieces] [--timing] TEXT... | - | --file F
 *   realm detokenize -m MODEL [--special] ID... | -
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "realm/alloc.h"
#include "realm/gguf.h"
#include "realm/tokenizer.h"

static void tokenize_usage(FILE *f) {
    fprintf(
        f, "usage: realm tokenize -m MODEL [--no-bos] [--special] [--pieces] [--timing]\n"
           "                      TEXT... | - | --file FILE\n\n"
           "Prints the token ids of TEXT (several arguments are joined with spaces; '-' reads\n"
           "standard input and --file a file, byte for byte) separated by spaces. Put -- before a\n"
           "TEXT that starts with '-'.\n\n"
           "  -m, --model MODEL  a GGUF file (vocab-only files work)\n"
           "  --no-bos           do not add the BOS/EOS tokens the vocabulary asks for\n"
           "  --special          parse special-token text such as <|im_start|> into its token\n"
           "  --pieces           print one token per line: id, a tab, its text (escaped)\n"
           "  --timing           report load and tokenization time on standard error\n"
           "  -h, --help         this help\n");
}

static void detokenize_usage(FILE *f) {
    fprintf(f, "usage: realm detokenize -m MODEL [--special] ID... | -\n\n"
               "Prints the text of the token ids (separated by spaces or commas; '-' reads them\n"
               "from standard input). Incomplete UTF-8 at the end becomes U+FFFD.\n\n"
               "  -m, --model MODEL  a GGUF file (vocab-only files work)\n"
               "  --special          print control tokens (BOS, <|im_end|>, ...) as their text\n"
               "  -h, --help         this help\n");
}

static struct realm_tokenizer *open_tokenizer(const char *path) {
    struct realm_gguf *g;
    struct realm_err err = {0};
    if (realm_gguf_open(path, &g, &err) != REALM_OK) {
        cli_error("%s", err.msg);
        return NULL;
    }
    struct realm_tokenizer *t = NULL;
    if (realm_tokenizer_load(g, &t, &err) != REALM_OK) cli_error("%s: %s", path, err.msg);
    realm_gguf_close(g);
    return t;
}

/* Reads all of f; NULL (message printed) on failure. */
static char *read_all(FILE *f, const char *name, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = realm_malloc(cap);
    if (!buf) {
        cli_error("out of memory");
        return NULL;
    }
    for (;;) {
        if (n == cap) {
            char *b = cap <= SIZE_MAX / 2 ? realm_realloc(buf, cap * 2) : NULL;
            if (!b) {
                realm_free(buf);
                cli_error("%s: out of memory", name);
                return NULL;
            }
            buf = b;
            cap *= 2;
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0) break;
    }
    if (ferror(f)) {
        cli_error("%s: read error: %s", name, strerror(errno));
        realm_free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Length of a valid UTF-8 sequence at s[0..n), or 0. */
static size_t utf8_valid(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c >= 0xE0 && c <= 0xEF)
        need = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
        need = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else
        return 0;
    if (need >= n) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t k = 2; k <= need; k++)
        if ((s[k] & 0xC0) != 0x80) return 0;
    return need + 1;
}

/* Escapes a piece for --pieces: valid UTF-8 text as is; \n \t \r \\ and \xNN for control
 * characters and for bytes that are not complete UTF-8 (byte-fallback tokens). */
static void print_escaped(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = u[i];
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c == '\\')
            fputs("\\\\", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else if (c < 0x80)
            putchar(c);
        else {
            size_t l = utf8_valid(u + i, n - i);
            if (l) {
                fwrite(u + i, 1, l, stdout);
                i += l - 1;
            } else {
                printf("\\x%02x", c);
            }
        }
    }
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *file = NULL;
    bool no_bos = false, special = false, show_pieces = false, timing = false, from_stdin = false;
    size_t text_len = 0;
    char *joined = NULL; /* TEXT arguments joined with spaces */
    int n_text = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            tokenize_usage(stdout);
            realm_free(joined);
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(a, "--file") && i + 1 < argc) {
            file = argv[++i];
        } else if (!strcmp(a, "--no-bos")) {
            no_bos = true;
        } else if (!strcmp(a, "--special")) {
            special = true;
        } else if (!strcmp(a, "--pieces")) {
            show_pieces = true;
        } else if (!strcmp(a, "--timing")) {
            timing = true;
        } else if (!strcmp(a, "-")) {
            from_stdin = true;
        } else if (a[0] == '-' && a[1] && strcmp(a, "--") != 0) {
            cli_error("tokenize: unknown option '%s' (see realm tokenize --help)", a);
            realm_free(joined);
            return 2;
        } else {
            if (!strcmp(a, "--")) {
                if (++i >= argc) break;
                a = argv[i];
            }
            size_t l = strlen(a);
            char *j = realm_realloc(joined, text_len + l + 2);
            if (!j) {
                cli_error("out of memory");
                realm_free(joined);
                return 1;
            }
            joined = j;
            if (n_text++) joined[text_len++] = ' ';
            memcpy(joined + text_len, a, l);
            text_len += l;
            joined[text_len] = 0;
        }
    }
    if (!model || (n_text > 0) + (file != NULL) + from_stdin != 1) {
        if (!model)
            cli_error("tokenize: -m MODEL is required");
        else
            cli_error("tokenize: give exactly one of TEXT, '-' or --file FILE");
        tokenize_usage(stderr);
        realm_free(joined);
        return 2;
    }
    char *text = joined;
    if (file) {
        FILE *f = fopen(file, "rb");
        if (!f) {
            cli_error("%s: %s", file, strerror(errno));
            return 1;
        }
        text = read_all(f, file, &text_len);
        fclose(f);
        if (!text) return 1;
    } else if (from_stdin) {
        text = read_all(stdin, "stdin", &text_len);
        if (!text) return 1;
    }

    double t0 = realm_now_s();
    struct realm_tokenizer *t = open_tokenizer(model);
    if (!t) {
        realm_free(text);
        return 1;
    }
    double t1 = realm_now_s();
    uint32_t flags =
        (no_bos ? 0 : REALM_TOKENIZE_ADD_BOS) | (special ? REALM_TOKENIZE_PARSE_SPECIAL : 0);
    int64_t cap = (int64_t)text_len + 8, n = 0;
    int32_t *ids = realm_malloc((size_t)cap * sizeof *ids);
    int rc = ids ? realm_tokenize(t, text, text_len, flags, ids, cap, &n) : REALM_E_NOMEM;
    if (rc == REALM_E_TOO_SMALL) {
        realm_free(ids);
        cap = n;
        ids = realm_malloc((size_t)cap * sizeof *ids);
        rc = ids ? realm_tokenize(t, text, text_len, flags, ids, cap, &n) : REALM_E_NOMEM;
    }
    double t2 = realm_now_s();
    int status = 0;
    if (rc != REALM_OK) {
        cli_error("tokenize: %s", realm_strerror(rc));
        status = 1;
    } else if (show_pieces) {
        char buf[1024];
        for (int64_t i = 0; i < n; i++) {
            int64_t l = realm_token_piece(t, ids[i], true, buf, sizeof buf);
            printf("%d\t", ids[i]);
            print_escaped(buf, l > (int64_t)sizeof buf ? sizeof buf : (size_t)l);
            putchar('\n');
        }
    } else {
        for (int64_t i = 0; i < n; i++)
            printf(i ? " %d" : "%d", ids[i]);
        putchar('\n');
    }
    if (timing && rc == REALM_OK) {
        double dt = t2 - t1;
        fprintf(stderr, "tokenize: %zu bytes -> %lld tokens in %.3f ms (%.2f MB/s); load %.1f ms\n",
                text_len, (long long)n, dt * 1e3, dt > 0 ? (double)text_len / dt / 1e6 : 0.0,
                (t1 - t0) * 1e3);
    }
    if (fflush(stdout) != 0) status = 1;
    realm_free(ids);
    realm_free(text);
    realm_tokenizer_free(t);
    return status;
}

/* Parses ids separated by spaces, commas or newlines into *ids; returns the count or -1. */
static int64_t parse_ids(const char *s, int32_t **ids, int64_t *cap, int64_t n) {
    while (*s) {
        while (*s == ' ' || *s == ',' || *s == '\n' || *s == '\t' || *s == '\r')
            s++;
        if (!*s) break;
        char *e;
        errno = 0;
        long long v = strtoll(s, &e, 10);
        if (e == s || errno || v < INT32_MIN || v > INT32_MAX ||
            (*e && *e != ' ' && *e != ',' && *e != '\n' && *e != '\t' && *e != '\r')) {
            cli_error("detokenize: '%.20s' is not a token id", s);
            return -1;
        }
        if (n == *cap) {
            int64_t c = *cap ? *cap * 2 : 64;
            int32_t *p = realm_realloc(*ids, (size_t)c * sizeof *p);
            if (!p) {
                cli_error("out of memory");
                return -1;
            }
            *ids = p;
            *cap = c;
        }
        (*ids)[n++] = (int32_t)v;
        s = e;
    }
    return n;
}

int cmd_detokenize(int argc, char **argv) {
    const char *model = NULL;
    bool special = false, from_stdin = false;
    int32_t *ids = NULL;
    int64_t n = 0, cap = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            detokenize_usage(stdout);
            realm_free(ids);
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(a, "--special")) {
            special = true;
        } else if (!strcmp(a, "-")) {
            from_stdin = true;
        } else if (a[0] == '-' && !(a[1] >= '0' && a[1] <= '9')) {
            cli_error("detokenize: unknown option '%s' (see realm detokenize --help)", a);
            realm_free(ids);
            return 2;
        } else if ((n = parse_ids(a, &ids, &cap, n)) < 0) {
            realm_free(ids);
            return 2;
        }
    }
    if (from_stdin) {
        size_t len;
        char *s = read_all(stdin, "stdin", &len);
        if (!s) {
            realm_free(ids);
            return 1;
        }
        char *z = realm_realloc(s, len + 1);
        if (!z) {
            realm_free(s);
            realm_free(ids);
            cli_error("out of memory");
            return 1;
        }
        z[len] = 0;
        if (strlen(z) != len) {
            cli_error("detokenize: NUL byte in the id list");
            n = -1;
        } else {
            n = parse_ids(z, &ids, &cap, n);
        }
        realm_free(z);
        if (n < 0) {
            realm_free(ids);
            return 2;
        }
    }
    if (!model) {
        cli_error("detokenize: -m MODEL is required");
        detokenize_usage(stderr);
        realm_free(ids);
        return 2;
    }
    struct realm_tokenizer *t = open_tokenizer(model);
    if (!t) {
        realm_free(ids);
        return 1;
    }
    int status = 0;
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= realm_tokenizer_n_vocab(t)) {
            cli_error("detokenize: token %d is outside the vocabulary (0..%d)", ids[i],
                      realm_tokenizer_n_vocab(t) - 1);
            status = 1;
            break;
        }
    }
    if (status == 0) {
        struct realm_detok d;
        realm_detok_init(&d, t, special);
        char stackbuf[4096];
        for (int64_t i = 0; i < n && status == 0; i++) {
            int64_t k = realm_detok_push(&d, ids[i], stackbuf, sizeof stackbuf);
            if (k == REALM_E_TOO_SMALL) { /* a piece longer than ~1 KiB */
                int64_t need = 3 * (realm_token_piece(t, ids[i], special, NULL, 0) + 8);
                char *big = realm_malloc((size_t)need);
                k = big ? realm_detok_push(&d, ids[i], big, (size_t)need) : REALM_E_NOMEM;
                if (k >= 0) fwrite(big, 1, (size_t)k, stdout);
                realm_free(big);
            } else if (k >= 0) {
                fwrite(stackbuf, 1, (size_t)k, stdout);
            }
            if (k < 0) {
                cli_error("detokenize: %s", realm_strerror((int)k));
                status = 1;
            }
        }
        int64_t k = realm_detok_flush(&d, stackbuf, sizeof stackbuf);
        if (k > 0) fwrite(stackbuf, 1, (size_t)k, stdout);
        if (isatty(STDOUT_FILENO)) putchar('\n');
    }
    if (fflush(stdout) != 0) status = 1;
    realm_free(ids);
    realm_tokenizer_free(t);
    return status;
}
