/* test_store.c — the model store shares one mapping per file, counts references across threads,
 * builds an attachment once, and frees everything with the last release. */
#include "testutil.h"

#include <limits.h>
#include <pthread.h>
#include <unistd.h>

#include "realm/alloc.h"
#include "realm/store.h"

static int g_builds;

static int build_obj(const struct realm_gguf *g, void *ctx, void **obj, struct realm_err *err) {
    (void)g;
    (void)err;
    g_builds++;
    int *p = realm_malloc(sizeof *p);
    if (!p) return REALM_E_NOMEM;
    *p = *(int *)ctx;
    *obj = p;
    return REALM_OK;
}

static void destroy_obj(void *obj) {
    realm_free(obj);
}

struct thr {
    struct realm_store *s;
    const char *path;
    struct realm_gguf *g;
};

static void *opener(void *arg) {
    struct thr *t = arg;
    struct realm_err err;
    if (realm_store_open(t->s, t->path, &t->g, &err)) t->g = NULL;
    return NULL;
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    const char *rel = tu_shared_path("models/stories260K.gguf");
    if (!rel) tu_skip("../shared/models/stories260K.gguf not found");
    char src[4096];
    CHECK(realpath(rel, src) != NULL);
    int64_t base = realm_alloc_bytes_in_use();
    struct realm_store *s;
    CHECK(realm_store_new(&s) == REALM_OK);

    /* the same file through a symlink is the same entry */
    char link[] = "/tmp/realm-store-XXXXXX";
    int fd = mkstemp(link);
    close(fd);
    unlink(link);
    CHECK(symlink(src, link) == 0);

    struct realm_gguf *a, *b;
    struct realm_err err;
    CHECK(realm_store_open(s, src, &a, &err) == REALM_OK);
    CHECK(realm_store_open(s, link, &b, &err) == REALM_OK);
    CHECK(a == b);
    CHECK_EQ_INT(realm_store_refcount(s, a), 2);

    pthread_t th[8];
    struct thr t[8];
    for (int i = 0; i < 8; i++) {
        t[i] = (struct thr){s, src, NULL};
        pthread_create(&th[i], NULL, opener, &t[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        CHECK(t[i].g == a);
    }
    CHECK_EQ_INT(realm_store_refcount(s, a), 10);

    int v1 = 11, v2 = 22;
    void *o1, *o2;
    CHECK(realm_store_attach(s, a, build_obj, destroy_obj, &v1, &o1, &err) == REALM_OK);
    CHECK(realm_store_attach(s, a, build_obj, destroy_obj, &v2, &o2, &err) == REALM_OK);
    CHECK(o1 == o2 && *(int *)o1 == 11 && g_builds == 1);

    for (int i = 0; i < 8; i++)
        realm_store_release(s, t[i].g);
    realm_store_release(s, b);
    CHECK_EQ_INT(realm_store_refcount(s, a), 1);
    realm_store_release(s, a);
    CHECK_EQ_INT(realm_store_refcount(s, a), 0);

    CHECK(realm_store_open(s, "/nonexistent.gguf", &a, &err) == REALM_E_IO);
    realm_store_free(s);
    unlink(link);
    CHECK_EQ_INT(realm_alloc_bytes_in_use(), base);
    return tu_finish("test_store");
}
