/* test_util.c — status text, detailed errors, accounted allocation and its failure hook, and
 * per-thread allocation budgets (charge, refusal over the limit, frees from another thread,
 * nesting, realloc, aligned blocks, cJSON through the hooks). */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <pthread.h>

#include "realm/alloc.h"
#include "realm/buf.h"
#include "realm/err.h"
#include "realm/json.h"

static void *free_in_thread(void *p) {
    realm_free(p);
    return NULL;
}

/* Allocates under budget b on its own thread (a budget is current per thread). */
struct alloc_arg {
    struct realm_alloc_budget *b;
    size_t n;
    void *p;
    struct realm_alloc_budget *seen; /* current budget on the new thread before entering */
};
static void *alloc_in_thread(void *arg) {
    struct alloc_arg *a = arg;
    a->seen = realm_alloc_budget_current();
    struct realm_alloc_budget *prev = realm_alloc_budget_enter(a->b);
    a->p = realm_malloc(a->n);
    realm_alloc_budget_leave(prev);
    return NULL;
}

static void test_budgets(void) {
    int64_t base = realm_alloc_bytes_in_use();
    struct realm_alloc_budget b = {.limit = 1000}, inner = {0};
    CHECK(realm_alloc_budget_current() == NULL);

    /* charge and refuse */
    struct realm_alloc_budget *prev = realm_alloc_budget_enter(&b);
    CHECK(prev == NULL && realm_alloc_budget_current() == &b);
    void *p1 = realm_malloc(600);
    CHECK(p1 && ((uintptr_t)p1 % 16) == 0);
    CHECK_EQ_INT(atomic_load(&b.used), 600);
    void *p2 = realm_malloc(401); /* 1001 > 1000 */
    CHECK(p2 == NULL);
    CHECK_EQ_INT(atomic_load(&b.refused), 1);
    CHECK_EQ_INT(atomic_load(&b.used), 600);
    CHECK(realm_calloc(100, 5) == NULL); /* 500 more: refused too */
    CHECK_EQ_INT(atomic_load(&b.refused), 2);
    p2 = realm_calloc(100, 4); /* exactly up to the limit */
    CHECK(p2 && atomic_load(&b.used) == 1000);
    CHECK(realm_strndup("x", 1) == NULL);
    CHECK_EQ_INT(atomic_load(&b.refused), 3);
    realm_free(p2);
    CHECK_EQ_INT(atomic_load(&b.used), 600);
    CHECK_EQ_INT(atomic_load(&b.peak), 1000);

    /* realloc: growth charged (refused past the limit, the block intact), shrink credited */
    memset(p1, 0x5a, 600);
    CHECK(realm_realloc(p1, 1200) == NULL);
    CHECK_EQ_INT(atomic_load(&b.used), 600);
    CHECK(((unsigned char *)p1)[599] == 0x5a);
    p1 = realm_realloc(p1, 900);
    CHECK(p1 && atomic_load(&b.used) == 900 && ((unsigned char *)p1)[599] == 0x5a);
    p1 = realm_realloc(p1, 100);
    CHECK(p1 && atomic_load(&b.used) == 100);

    /* aligned blocks: charged, refused, 64-byte aligned */
    void *al = realm_malloc_aligned(64, 800);
    CHECK(al && ((uintptr_t)al % 64) == 0 && atomic_load(&b.used) == 900);
    CHECK(realm_malloc_aligned(64, 200) == NULL);

    /* nested scopes: the inner budget (no limit) takes the charges, the outer is untouched; a
     * NULL scope charges nobody */
    struct realm_alloc_budget *prev2 = realm_alloc_budget_enter(&inner);
    CHECK(prev2 == &b);
    void *q = realm_malloc(5000);
    CHECK(q && atomic_load(&inner.used) == 5000 && atomic_load(&b.used) == 900);
    struct realm_alloc_budget *prev3 = realm_alloc_budget_enter(NULL);
    void *u = realm_malloc(5000);
    CHECK(u && atomic_load(&inner.used) == 5000 && atomic_load(&b.used) == 900);
    realm_alloc_budget_leave(prev3);
    CHECK(realm_alloc_budget_current() == &inner);
    /* a block keeps its budget: realloc grows the charge of the budget it came from */
    q = realm_realloc(q, 6000);
    CHECK(q && atomic_load(&inner.used) == 6000 && atomic_load(&b.used) == 900);
    realm_alloc_budget_leave(prev2);
    CHECK(realm_alloc_budget_current() == &b);
    realm_free(u); /* uncharged: no budget changes */
    CHECK(atomic_load(&inner.used) == 6000 && atomic_load(&b.used) == 900);

    /* freed from another thread (no budget current there): credits the block's own budget */
    pthread_t th;
    CHECK(pthread_create(&th, NULL, free_in_thread, q) == 0);
    pthread_join(th, NULL);
    CHECK_EQ_INT(atomic_load(&inner.used), 0);
    CHECK_EQ_INT(atomic_load(&inner.peak), 6000);
    realm_alloc_budget_leave(prev);
    CHECK(realm_alloc_budget_current() == NULL);
    realm_free_aligned(al);
    CHECK_EQ_INT(atomic_load(&b.used), 100);

    /* outside any scope nothing is charged; the scope is per thread */
    void *o = realm_malloc(10000);
    CHECK(o && atomic_load(&b.used) == 100);
    realm_free(o);
    struct alloc_arg aa = {.b = &b, .n = 300};
    prev = realm_alloc_budget_enter(&inner);
    CHECK(pthread_create(&th, NULL, alloc_in_thread, &aa) == 0);
    pthread_join(th, NULL);
    realm_alloc_budget_leave(prev);
    CHECK(aa.seen == NULL && aa.p && atomic_load(&b.used) == 400 && atomic_load(&inner.used) == 0);
    realm_free(aa.p); /* on this thread, under no scope */
    realm_free(p1);
    CHECK_EQ_INT(atomic_load(&b.used), 0);

    /* cJSON allocates through realm_malloc: a parse is charged, a big one refused */
    struct realm_alloc_budget jb = {.limit = 4096};
    prev = realm_alloc_budget_enter(&jb);
    cJSON *j = cJSON_Parse("{\"a\": [1, 2, 3], \"b\": \"text\"}");
    CHECK(j != NULL);
    int64_t charged = atomic_load(&jb.used);
    CHECKF(charged >= 6 * (int64_t)sizeof(cJSON), "cJSON tree of 6 nodes charged %lld bytes",
           (long long)charged);
    char *printed = cJSON_PrintUnformatted(j);
    CHECK(printed && !strcmp(printed, "{\"a\":[1,2,3],\"b\":\"text\"}"));
    cJSON_free(printed);
    char big_json[8192];
    size_t k = 0;
    big_json[k++] = '[';
    while (k < sizeof big_json - 8) {
        memcpy(big_json + k, "[],", 3);
        k += 3;
    }
    memcpy(big_json + k, "[]]", 4);
    CHECK(cJSON_Parse(big_json) == NULL); /* ~2700 nodes do not fit in 4 KiB */
    CHECK(atomic_load(&jb.refused) >= 1);
    CHECK_EQ_INT(atomic_load(&jb.used), charged); /* the failed parse gave back what it took */
    realm_alloc_budget_leave(prev);
    cJSON_Delete(j); /* outside the scope: still credits jb */
    CHECK_EQ_INT(atomic_load(&jb.used), 0);
    CHECK_EQ_INT(realm_alloc_bytes_in_use(), base);
    realm_alloc_install_cjson_hooks(); /* idempotent: already installed at start-up */
    j = cJSON_Parse("[1]");
    CHECK(j && realm_alloc_bytes_in_use() > base);
    cJSON_Delete(j);
    CHECK_EQ_INT(realm_alloc_bytes_in_use(), base);
}

/* realm_buf's JSON strings: escapes, and every invalid UTF-8 byte as U+FFFD (always valid JSON). */
static void test_buf_json_string(void) {
    struct realm_buf b = {0};
    const char in[] =
        "a\"b\\c\n\t\x01\x7f\xc3\xa9\xff\xe2\x82"; /* é valid; 0xff and a cut sequence not */
    CHECK(realm_buf_json_string(&b, in, sizeof in - 1) == REALM_OK);
    CHECKF(
        !strcmp(b.data,
                "\"a\\\"b\\\\c\\n\\t\\u0001\\u007f\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""),
        "%s", b.data);
    cJSON *j = cJSON_Parse(b.data);
    CHECK(j && cJSON_IsString(j));
    cJSON_Delete(j);
    realm_buf_free(&b);
    /* surrogates and overlong forms are invalid too */
    CHECK(realm_buf_json_string(&b, "\xed\xa0\x80\xc0\xaf", 5) == REALM_OK);
    CHECKF(!strcmp(b.data, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""),
           "%s", b.data);
    realm_buf_free(&b);

    CHECK(realm_buf_printf(&b, "%d-%s", 7, "x") == REALM_OK && !strcmp(b.data, "7-x") &&
          b.len == 3);
    realm_buf_reset(&b);
    CHECK(b.len == 0 && realm_buf_puts(&b, "ab") == REALM_OK &&
          realm_buf_append(&b, "c", 1) == REALM_OK);
    CHECK(!strcmp(b.data, "abc"));
    realm_buf_free(&b);
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
}

/* The pre-parse bound of JSON values: exact for plain containers, strings and escapes honoured,
 * capped at max + 1. */
static void test_json_values_bound(void) {
    CHECK_EQ_INT(realm_json_values_bound("1", 1, 100), 1);
    CHECK_EQ_INT(realm_json_values_bound("[1,2,3]", 7, 100), 4);
    CHECK_EQ_INT(realm_json_values_bound("{\"a\":[1,{\"b\":2}]}", 17, 100), 5);
    CHECK_EQ_INT(realm_json_values_bound("[\"a,b[{\"]", 9, 100), 2);      /* inside a string */
    CHECK_EQ_INT(realm_json_values_bound("[\"a\\\",b\",1]", 11, 100), 3); /* an escaped quote */
    CHECK_EQ_INT(realm_json_values_bound("[1,1,1,1,1,1]", 13, 3), 4);     /* capped */
    CHECK_EQ_INT(realm_json_values_bound("", 0, 10), 1);
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    test_json_values_bound();
    test_buf_json_string();
    CHECK(!strcmp(realm_strerror(REALM_OK), "ok"));
    CHECK(!strcmp(realm_strerror(REALM_E_BAD_HANDLE), "bad handle"));
    CHECK(!strcmp(realm_strerror(12345), "unknown error"));
    for (int c = 0; c >= REALM_E_STATE; c--)
        CHECK(strcmp(realm_strerror(c), "unknown error") != 0);

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

    test_budgets();
    return tu_finish("test_util");
}
