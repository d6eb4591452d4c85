/*
 * tpl.h — internals of the template module: arenas, values, the syntax tree.
 *
 * Memory: the parser allocates the tree in the template's arena; a render allocates every value
 * in a per-render arena that is freed as a whole at the end, so values never need reference
 * counts and an error can unwind from anywhere by a longjmp to the render's entry point.
 */
#ifndef REALM_TEMPLATE_TPL_H
#define REALM_TEMPLATE_TPL_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realm/err.h"

/* ---- arena ---- */
struct tpl_chunk;
struct tpl_arena {
    struct tpl_chunk *head;
    size_t used;  /* bytes handed out, for the memory limit */
    size_t limit; /* 0: none */
    bool limited; /* an allocation was refused for the limit */
};
/* NULL when the limit is reached or memory runs out. */
void *tpl_alloc(struct tpl_arena *a, size_t n);
void tpl_arena_free(struct tpl_arena *a);

/* ---- values ---- */
enum tv_kind {
    TV_UNDEF,
    TV_NONE,
    TV_BOOL,
    TV_INT,
    TV_FLOAT,
    TV_STR,
    TV_LIST,
    TV_DICT,
    TV_NS,    /* namespace(): a mutable dict reached through attributes */
    TV_MACRO, /* a {% macro %} */
    TV_FUNC,  /* a global function (range, namespace, raise_exception, strftime_now, ...) */
    TV_METHOD /* a method bound to a value: obj.name(...) */
};
struct tv_list;
struct tv_dict;
struct tpl_node;
struct tv {
    enum tv_kind k;
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *s;
            size_t n;
        } s;
        struct tv_list *l;
        struct tv_dict *d; /* TV_DICT and TV_NS */
        struct {
            const struct tpl_node *n;
            void *env;
        } mac;
        int func; /* TV_FUNC: a TF_* id */
        struct {
            struct tv *self;
            const char *name;
        } m;
    } u;
};
struct tv_list {
    struct tv *v;
    size_t n, cap;
    bool tuple; /* repr as (a, b) */
};
/* Nesting past this makes repr/equality/json give up (lists built in a loop can nest deeply). */
#define TV_MAX_NEST 1000
struct tv_dict {
    struct tv *keys, *vals;
    size_t n, cap;
};

/* ---- syntax tree ---- */
enum tpl_nk {
    /* statements */
    N_TEXT,
    N_OUT,
    N_IF,
    N_FOR,
    N_SET,
    N_SETBLOCK,
    N_MACRO,
    N_BREAK,
    N_CONTINUE,
    N_BODY,
    /* expressions */
    N_LIT,
    N_NAME,
    N_LIST,
    N_DICT,
    N_ATTR,
    N_ITEM,
    N_SLICE,
    N_CALL,
    N_FILTER,
    N_TEST,
    N_UNARY,
    N_BIN,
    N_AND,
    N_OR,
    N_NOT,
    N_COND,
    N_TUPLE
};
struct tpl_node {
    enum tpl_nk k;
    int line, col;
    int op;                     /* N_BIN / N_UNARY: a token id; N_TEST: 1 when negated */
    const char *name;           /* N_NAME, N_ATTR, N_FILTER, N_TEST, N_SET (target), N_MACRO,
                                   N_FOR (first target) */
    const char *name2;          /* N_SET: attribute of ns.attr; N_FOR: second target */
    struct tv lit;              /* N_LIT, N_TEXT */
    struct tpl_node *a, *b, *c; /* operands / condition / bodies */
    struct tpl_node **kids;     /* N_BODY statements, N_LIST/N_TUPLE items, N_DICT k,v pairs,
                                   N_CALL/N_FILTER/N_TEST positional args, N_MACRO params */
    size_t n_kids;
    const char **kw_names; /* keyword args (N_CALL/N_FILTER/N_TEST) or N_MACRO defaults */
    struct tpl_node **kw_vals;
    size_t n_kw;
    const char **targets; /* N_SET tuple unpack / N_FOR more than two targets */
    size_t n_targets;
};

/* Token ids used as operators. */
enum {
    T_ADD = 1,
    T_SUB,
    T_MUL,
    T_DIV,
    T_FLOORDIV,
    T_MOD,
    T_POW,
    T_TILDE,
    T_EQ,
    T_NE,
    T_LT,
    T_LE,
    T_GT,
    T_GE,
    T_IN,
    T_NOTIN
};

struct realm_template {
    struct tpl_arena arena;
    struct tpl_node *root;
};

/* Parses into t->root (parse.c). */
int tpl_parse(struct realm_template *t, const char *src, size_t len, struct realm_err *err);

/* ---- value helpers (value.c) used by the renderer ---- */
struct tpl_buf {
    char *p;
    size_t n, cap;
    size_t max;
    struct tpl_arena *a;
};
/* false when the buffer would exceed max or memory runs out. */
bool tb_put(struct tpl_buf *b, const char *s, size_t n);
bool tb_putc(struct tpl_buf *b, char c);

bool tv_truthy(const struct tv *v);
bool tv_equal(const struct tv *a, const struct tv *b);
/* Python str() / repr() of a value appended to b. */
bool tv_str(struct tpl_buf *b, const struct tv *v);
bool tv_repr(struct tpl_buf *b, const struct tv *v);
/* json.dumps(v, ensure_ascii=False, indent, separators) as transformers' tojson. indent < 0:
 * none. false on a value JSON cannot hold (set *bad). */
bool tv_json(struct tpl_buf *b, const struct tv *v, int indent, const char *item_sep,
             const char *key_sep, int depth, bool sort_keys);
const char *tv_type_name(const struct tv *v);
void tv_float_repr(char *out, size_t cap, double f);
/* Number of code points of a UTF-8 string. */
size_t tv_utf8_len(const char *s, size_t n);
/* Byte offset of code point index i (clamped to n). */
size_t tv_utf8_off(const char *s, size_t n, size_t i);

#endif
