/* testutil.c — see testutil.h. */
#include "testutil.h"

#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#include "read_all.h"

int tu_failures;
int tu_verbose;

void tu_init(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-v")) tu_verbose = 1;
}

int tu_finish(const char *name) {
    if (tu_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, tu_failures);
        return 1;
    }
    if (tu_verbose) fprintf(stderr, "%s: ok\n", name);
    return 0;
}

void tu_log(const char *fmt, ...) {
    if (!tu_verbose) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static const char *existing(const char *dir, const char *rel) {
    static __thread char buf[4096];
    if (!dir) return NULL;
    snprintf(buf, sizeof buf, "%s/%s", dir, rel);
    struct stat st;
    return stat(buf, &st) == 0 ? buf : NULL;
}

const char *tu_shared_path(const char *rel) {
    const char *d = getenv("REALM_SHARED");
    return existing(d ? d : "../shared", rel);
}

const char *tu_model_path(const char *file) {
    const char *d = getenv("REALM_MODELS");
    if (d) return existing(d, file);
    const char *home = getenv("HOME");
    if (!home) return NULL;
    char dir[2048];
    snprintf(dir, sizeof dir, "%s/.cache/realm/models", home);
    return existing(dir, file);
}

void tu_skip(const char *why) {
    /* a skip must never hide what already failed: checks that ran before the missing data was
     * noticed (model-free parts of a test) still decide the outcome */
    if (tu_failures > 0) {
        fprintf(stderr, "FAILED: %d check(s) failed before skipping (%s)\n", tu_failures, why);
        exit(1);
    }
    fprintf(stderr, "skipped: %s\n", why);
    exit(77);
}

uint64_t tu_rand_u64(tu_rng *r) {
    uint64_t x = r->s ? r->s : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

float tu_rand_float(tu_rng *r) {
    return (float)((tu_rand_u64(r) >> 40) * (1.0 / 8388608.0) - 1.0);
}

unsigned char *tu_read_file(const char *path, size_t *size) {
    return (unsigned char *)tu_read_all(path, size);
}

int tu_write_file(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(data, 1, size, f) == size;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}
