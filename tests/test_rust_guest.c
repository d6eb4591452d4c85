/*
 * test_rust_guest.c — the Rust guest SDK's example orchestrator (guest/rust/examples/
 * orchestrator.rs, built to build/guest/rust_example.wasm by cmake/rust_guest.cmake) run through
 * `realm run --guest` (needs stories260K from ../shared; skipped when absent):
 *   - greedy from BOS for 256 tokens prints the golden text of stories260K.greedy256.txt (the
 *     native path's rule: SPM's leading space dropped) and reports the usage the host measured;
 *   - the same bytes as the default C guest, greedy and sampled with a seed (same sampler chain),
 *     on stories260K and, when cached, SmolLM2 (BPE; stops at its end-of-generation token);
 *   - max_tokens from the request is honoured; a request it rejects ends with exit 1 and the
 *     guest's logged reason as the one stderr line.
 * The SDK's own unit tests (JSON reader, errors, sampler, UTF-8) are test_rust_sdk.
 */
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

/* copies: tu_shared_path and tu_model_path answer in a buffer that the next call reuses */
static char g_realm[1024], g_guest[1024], g_model[1024], g_smol[1024];

/* Runs `realm ARGS`; stdout and stderr in malloc'd NUL-terminated strings; returns the exit
 * status (-1 if it did not exit). */
static int run(const char *args, char **out, char **err) {
    char cmd[8192], po[128], pe[128];
    snprintf(po, sizeof po, "/tmp/realm-rust-test.out.%d", (int)getpid());
    snprintf(pe, sizeof pe, "/tmp/realm-rust-test.err.%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "%s %s >%s 2>%s", g_realm, args, po, pe);
    int st = system(cmd);
    const char *paths[2] = {po, pe};
    char **dst[2] = {out, err};
    for (int i = 0; i < 2; i++) {
        size_t n = 0;
        char *s = (char *)tu_read_file(paths[i], &n);
        char *t = s ? realloc(s, n + 1) : NULL;
        if (t)
            t[n] = 0;
        else
            free(s);
        *dst[i] = t;
        unlink(paths[i]);
    }
    tu_log("$ realm %s -> %d\n%s", args, WIFEXITED(st) ? WEXITSTATUS(st) : -1, *err ? *err : "");
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The `text: '...'` line of stories260K.greedy256.txt (a Python repr: \\n and \\' escapes). */
static void golden_text(char *buf, size_t cap) {
    const char *path = tu_shared_path("models/stories260K.greedy256.txt");
    FILE *f = path ? fopen(path, "r") : NULL;
    buf[0] = 0;
    if (!f) return;
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "text: '", 7)) continue;
        size_t n = strlen(line), k = 0;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\''))
            n--;
        for (size_t i = 7; i < n && k + 1 < cap; i++) {
            char c = line[i];
            if (c == '\\' && i + 1 < n) {
                c = line[++i];
                if (c == 'n') c = '\n';
            }
            buf[k++] = c;
        }
        buf[k] = 0;
    }
    fclose(f);
}

/* The Rust guest and the default guest print the same bytes for `run -m MODEL REST`. */
static void same_as_default(const char *model, const char *rest) {
    char args[4096];
    char *out = NULL, *err = NULL, *dout = NULL, *derr = NULL;
    snprintf(args, sizeof args, "run -m %s %s --guest %s", model, rest, g_guest);
    CHECK_EQ_INT(run(args, &out, &err), 0);
    snprintf(args, sizeof args, "run -m %s %s", model, rest);
    CHECK_EQ_INT(run(args, &dout, &derr), 0);
    CHECKF(out && dout && strlen(out) > 1 && !strcmp(out, dout),
           "%s: rust and default guest differ:\n%s\n---\n%s", rest, out ? out : "(none)",
           dout ? dout : "(none)");
    free(out), free(err), free(dout), free(derr);
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    const char *build = getenv("REALM_BUILD");
    const char *model = tu_shared_path("models/stories260K.gguf");
    if (!build || !model) tu_skip("needs REALM_BUILD and stories260K.gguf");
    snprintf(g_model, sizeof g_model, "%s", model);
    model = g_model;
    snprintf(g_realm, sizeof g_realm, "%s/realm", build);
    snprintf(g_guest, sizeof g_guest, "%s/guest/rust_example.wasm", build);
    CHECKF(access(g_guest, R_OK) == 0, "%s missing", g_guest);
    char *out = NULL, *err = NULL, args[4096];

    /* the golden greedy run: 256 tokens from BOS, no leading space, "\n" added by the CLI */
    static char golden[8192];
    golden_text(golden, sizeof golden);
    CHECK(golden[0] == ' ' && strlen(golden) > 200);
    snprintf(args, sizeof args, "run -m %s -p \"\" -n 256 --temp 0 --guest %s", model, g_guest);
    CHECK_EQ_INT(run(args, &out, &err), 0);
    size_t gl = strlen(golden + 1);
    CHECKF(out && strlen(out) == gl + 1 && !strncmp(out, golden + 1, gl) && out[gl] == '\n',
           "got:\n%s", out ? out : "(none)");
    CHECKF(err && strstr(err, "realm: prompt 1 tokens, generated 256 tokens"), "%s", err);
    free(out), free(err);

    /* the default guest's bytes, greedy and sampled (one seed, one output on both) */
    same_as_default(model, "-p \"\" -n 256 --temp 0");
    same_as_default(model, "-p \"Once upon a time\" -n 96 --temp 0");
    same_as_default(model, "-p \"Once upon a time\" -n 96 --seed 1 --temp 1 --top-k 0 --top-p 1");
    same_as_default(model, "-p \"Once upon a time\" -n 96 --seed 2 --temp 0.8");
    same_as_default(model, "-p \"Lily\" -n 96 --seed 3 --temp 1.2 --top-k 10 --top-p 0.9");
    const char *smol = tu_model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    if (smol) {
        snprintf(g_smol, sizeof g_smol, "%s", smol);
        smol = g_smol;
        same_as_default(smol, "-p \"The capital of France is\" -n 40 --temp 0");
        same_as_default(smol, "-p \"The capital of France is\" -n 24 --seed 5 --temp 0.9");
    }

    /* max_tokens from the request */
    snprintf(args, sizeof args, "run -m %s -p \"\" -n 7 --temp 0 --guest %s", model, g_guest);
    CHECK_EQ_INT(run(args, &out, &err), 0);
    CHECKF(out && !strncmp(out, golden + 1, strlen(out) - 1) && strlen(out) > 10 &&
               strlen(out) < 60,
           "%s", out ? out : "(none)");
    CHECKF(err && strstr(err, "realm: prompt 1 tokens, generated 7 tokens"), "%s", err);
    free(out), free(err);

    /* a request the guest rejects: its logged reason is the host's one-line report */
    snprintf(args, sizeof args, "run -m %s --tokens 1,9999 -n 4 --guest %s", model, g_guest);
    CHECK_EQ_INT(run(args, &out, &err), 1);
    CHECKF(err && !strcmp(err, "realm: guest: invalid argument: request: 'tokens' must be an "
                               "array of token ids of the model's vocabulary\n"),
           "%s", err ? err : "(none)");
    CHECK(out && out[0] == 0);
    free(out), free(err);
    return tu_finish("test_rust_guest");
}
