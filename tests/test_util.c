/* test_util.c — status text, detailed errors, accounted allocation and its failure hook. */
#include "testutil.h"

#include "realm/alloc.h"
#include "realm/err.h"

int main(int argc, char **argv) {
    tu_init(argc, argv);
    CHECK(!strcmp(realm_strerror(REALM_OK), "ok"));
    CHECK(!strcmp(realm_strerror(REALM_E_BAD_HANDLE), "bad handle"));
    CHECK(!strcmp(realm_strerror(12345), "unknown error"));
    for (int c = 0; c >= REALM_E_STATE; c--) CHECK(strcmp(realm_strerror(c), "unknown error") != 0);

    struct realm_err e;
    CHECK(realm_err_set(&e, REALM_E_FORMAT, "x: %d", 5) == REALM_E_FORMAT);
    CHECK(e.code == REALM_E_FORMAT && !strcmp(e.msg, "x: 5"));
    char big[600];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    realm_err_set(&e, REALM_E_INVALID, "%s", big);
    CHECK(strlen(e.msg) == REALM_ERR_MSG_MAX - 1);
    CHECK(realm_err_set(NULL, REALM_E_IO, "ignored") == REALM_E_IO);
    realm_err_clear(&e);
    CHECK(e.code == REALM_OK && e.msg[0] == 0);

    int64_t base = realm_alloc_bytes_in_use();
    void *p = realm_malloc(100);
    CHECK(p && realm_alloc_bytes_in_use() == base + 100);
    p = realm_realloc(p, 300);
    CHECK(p && realm_alloc_bytes_in_use() == base + 300);
    void *a = realm_malloc_aligned(64, 1000);
    CHECK(a && ((uintptr_t)a % 64) == 0);
    CHECK(realm_alloc_bytes_in_use() == base + 1300);
    realm_free_aligned(a);
    realm_free(p);
    realm_free(NULL);
    CHECK(realm_alloc_bytes_in_use() == base);
    CHECK(realm_calloc(SIZE_MAX / 2, 4) == NULL);

    realm_alloc_fail_after(2);
    void *x1 = realm_malloc(1), *x2 = realm_malloc(1), *x3 = realm_malloc(1);
    realm_alloc_fail_after(-1);
    CHECK(x1 && x2 && !x3);
    realm_free(x1);
    realm_free(x2);
    char *s = realm_strndup("hello world", 5);
    CHECK(s && !strcmp(s, "hello"));
    realm_free(s);
    CHECK(realm_alloc_bytes_in_use() == base);

    size_t out = 7;
    CHECK(realm_mul_size(SIZE_MAX, 2, &out) == -1 && out == 7);
    CHECK(realm_add_u64(UINT64_MAX, 1, (uint64_t *)&out) == -1);
    return tu_finish("test_util");
}
