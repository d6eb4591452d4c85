/*
 * test_sandbox_cli.c — `realm run` through the sandbox, end to end (needs stories260K from
 * ../shared; skipped when absent):
 *   - `realm run -m stories260K.gguf -p "" -n 256 --temp 0` prints the golden greedy text of
 *     stories260K.greedy256.txt (the native path's leading-space rule: SPM's space dropped);
 *   - the sandboxed and the --native path print the same bytes, greedy and sampled, per seed;
 *   - one seed gives one output, another seed another, at temperature 1;
 *   - --guest runs another guest; a guest whose realm_init fails ends the command with exit 1
 *     and one stderr line carrying the guest's message; a missing guest file is a one-line error.
 */
#include <sys/wait.h>

#include "testutil.h"

static char g_realm[1024], g_model[1024];

/* Runs a shell command; stdout in *out (malloc'd), stderr in *err (malloc'd); returns the exit
 * status (-1 if it did not exit). */
static int run(const char *args, char **out, char **err) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s >/tmp/realm-cli-test.out.%d 2>/tmp/realm-cli-test.err.%d",
             g_realm, args, (int)getpid(), (int)getpid());
    int st = system(cmd);
    char p[128];
    size_t n;
    snprintf(p, sizeof p, "/tmp/realm-cli-test.out.%d", (int)getpid());
    *out = (char *)tu_read_file(p, &n);
    if (*out) *out = realloc(*out, n + 1), (*out)[n] = 0;
    unlink(p);
    snprintf(p, sizeof p, "/tmp/realm-cli-test.err.%d", (int)getpid());
    *err = (char *)tu_read_file(p, &n);
    if (*err) *err = realloc(*err, n + 1), (*err)[n] = 0;
    unlink(p);
    tu_log("$ realm %s -> %d\n%s%s", args, WIFEXITED(st) ? WEXITSTATUS(st) : -1, *err ? *err : "",
           "");
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

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

int main(int argc, char **argv) {
    tu_init(argc, argv);
    const char *build = getenv("REALM_BUILD");
    const char *model = tu_shared_path("models/stories260K.gguf");
    if (!build || !model) tu_skip("needs REALM_BUILD and stories260K.gguf");
    snprintf(g_realm, sizeof g_realm, "%s/realm", build);
    snprintf(g_model, sizeof g_model, "%s", model);
    char *out, *err, *nat, *nerr, args[2048];

    /* the golden greedy run: 256 tokens, the native path's text rule (no leading space), "\n" */
    static char golden[8192];
    golden_text(golden, sizeof golden);
    CHECK(golden[0] == ' ');
    snprintf(args, sizeof args, "run -m %s -p \"\" -n 256 --temp 0", g_model);
    CHECK_EQ_INT(run(args, &out, &err), 0);
    size_t gl = strlen(golden + 1);
    CHECKF(out && strlen(out) == gl + 1 && !strncmp(out, golden + 1, gl) && out[gl] == '\n',
           "got:\n%s", out);
    CHECKF(err && strstr(err, "generated 256 tokens") && strstr(err, "sandbox: guest"), "%s", err);
    snprintf(args, sizeof args, "run --native -m %s -p \"\" -n 256 --temp 0", g_model);
    CHECK_EQ_INT(run(args, &nat, &nerr), 0);
    CHECK(out && nat && !strcmp(out, nat));
    free(out), free(err), free(nat), free(nerr);

    /* sampled: sandbox == native per seed; seeds differ from each other */
    char *by_seed[2] = {NULL, NULL};
    for (int seed = 1; seed <= 2; seed++) {
        const char *sets[] = {"--temp 1 --top-k 0 --top-p 1", "--temp 0.8"};
        for (int k = 0; k < 2; k++) {
            snprintf(args, sizeof args, "run -m %s -p \"Once upon a time\" -n 64 --seed %d %s",
                     g_model, seed, sets[k]);
            CHECK_EQ_INT(run(args, &out, &err), 0);
            char a2[2048];
            snprintf(a2, sizeof a2, "run --native -m %s -p \"Once upon a time\" -n 64 --seed %d %s",
                     g_model, seed, sets[k]);
            CHECK_EQ_INT(run(a2, &nat, &nerr), 0);
            CHECKF(out && nat && !strcmp(out, nat),
                   "seed %d %s: sandbox and native differ:\n%s\n---\n%s", seed, sets[k], out, nat);
            /* the same seed again */
            char *again, *aerr;
            CHECK_EQ_INT(run(args, &again, &aerr), 0);
            CHECK(out && again && !strcmp(out, again));
            free(again), free(aerr);
            if (k == 0) by_seed[seed - 1] = out, out = NULL;
            free(out), free(err), free(nat), free(nerr);
        }
    }
    CHECK(by_seed[0] && by_seed[1] && strcmp(by_seed[0], by_seed[1]) != 0 &&
          strlen(by_seed[0]) > 20);
    free(by_seed[0]), free(by_seed[1]);

    /* --guest: another orchestrator */
    snprintf(args, sizeof args, "run -m %s -p \"\" -n 4 --guest %s/tests/guests/loop_generate.wasm",
             g_model, build);
    CHECK_EQ_INT(run(args, &out, &err), 0);
    CHECK(out && !strcmp(out, "alive 1\n"));
    free(out), free(err);
    /* a failing init: exit 1, one line with the guest's message */
    snprintf(args, sizeof args, "run -m %s -p \"\" --guest %s/tests/guests/init_fail.wasm", g_model,
             build);
    CHECK_EQ_INT(run(args, &out, &err), 1);
    CHECKF(err && !strcmp(err,
                          "realm: guest init failed: not found: config: key 'greeting' missing\n"),
           "%s", err);
    CHECK(out && out[0] == 0);
    free(out), free(err);
    snprintf(args, sizeof args, "run -m %s -p \"\" --guest /nonexistent.wasm", g_model);
    CHECK_EQ_INT(run(args, &out, &err), 1);
    CHECKF(err && strstr(err, "/nonexistent.wasm") && strchr(err, '\n') == err + strlen(err) - 1,
           "%s", err);
    free(out), free(err);
    /* options the sandboxed path does not take */
    snprintf(args, sizeof args, "run -m %s -p \"\" --kv f32", g_model);
    CHECK_EQ_INT(run(args, &out, &err), 2);
    free(out), free(err);
    return tu_finish("test_sandbox_cli");
}
