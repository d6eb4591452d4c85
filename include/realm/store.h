/*
 * store.h — the model store: opens each model file once per process and shares the read-only
 * mapping among all users. Opening a file that is already open (same device and inode, whatever
 * the path spelling) returns the same realm_gguf with its reference count raised; the mapping is
 * closed when the last user releases it.
 *
 * One object built from the file (the engine's realm_model) can be attached to the entry so
 * that it is built once and shared too.
 *
 * Thread rule: every function is thread-safe (one mutex per store; building an attachment holds
 * it, so concurrent first users wait instead of building twice).
 */
#ifndef REALM_STORE_H
#define REALM_STORE_H

#include "realm/err.h"
#include "realm/gguf.h"

struct realm_store;

/* Ownership: returns owned (*out; free with realm_store_free). Errors: REALM_E_NOMEM. */
int realm_store_new(struct realm_store **out);
/* Frees the store. Every entry must have been released (an entry still open is an error the
 * store reports through realm_log and then closes anyway). NULL is a no-op. */
void realm_store_free(struct realm_store *s);

/* Opens `path` or returns the already-open mapping of the same file.
 * Ownership: *out is a counted reference; give it back with realm_store_release.
 * Lifetime: valid until released. Errors: as realm_gguf_open. */
int realm_store_open(struct realm_store *s, const char *path, struct realm_gguf **out,
                     struct realm_err *err);
/* Drops one reference; the last one frees the attachment and closes the file. NULL is a no-op. */
void realm_store_release(struct realm_store *s, struct realm_gguf *g);
/* Current reference count of an open file (0 if not in this store). */
int realm_store_refcount(struct realm_store *s, const struct realm_gguf *g);

typedef int (*realm_store_build_fn)(const struct realm_gguf *g, void *ctx, void **obj,
                                    struct realm_err *err);
typedef void (*realm_store_destroy_fn)(void *obj);
/* Returns the object attached to g's entry, building it with build(g, ctx) on first use and
 * destroying it with destroy when the file is closed. Later calls return the same object
 * whatever build/ctx they pass. Ownership: the store owns the object.
 * Errors: REALM_E_NOT_FOUND (g not open in this store) or whatever build returns. */
int realm_store_attach(struct realm_store *s, const struct realm_gguf *g,
                       realm_store_build_fn build, realm_store_destroy_fn destroy, void *ctx,
                       void **out, struct realm_err *err);

#endif
