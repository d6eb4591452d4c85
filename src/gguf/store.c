/*
 * store.c — the model store (see include/realm/store.h): a short list of open files keyed by
 * (device, inode), each with a reference count and an optional attached object. The list is
 * tiny (a handful of models per process), so a linked list under one mutex is the right cost.
 */
#include "realm/store.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>

#include "realm/alloc.h"
#include "realm/log.h"

struct entry {
    struct entry *next;
    dev_t dev;
    ino_t ino;
    struct realm_gguf *g;
    int refs;
    void *obj;
    realm_store_destroy_fn destroy;
};

struct realm_store {
    pthread_mutex_t mu;
    struct entry *head;
};

int realm_store_new(struct realm_store **out) {
    struct realm_store *s = realm_calloc(1, sizeof *s);
    if (!s) return REALM_E_NOMEM;
    pthread_mutex_init(&s->mu, NULL);
    *out = s;
    return REALM_OK;
}

static void entry_close(struct entry *e) {
    if (e->obj && e->destroy) e->destroy(e->obj);
    realm_gguf_close(e->g);
    realm_free(e);
}

void realm_store_free(struct realm_store *s) {
    if (!s) return;
    for (struct entry *e = s->head, *next; e; e = next) {
        next = e->next;
        realm_log(REALM_LOG_WARN, "store", "%s still has %d reference(s) at shutdown",
                  realm_gguf_path(e->g), e->refs);
        entry_close(e);
    }
    pthread_mutex_destroy(&s->mu);
    realm_free(s);
}

int realm_store_open(struct realm_store *s, const char *path, struct realm_gguf **out,
                     struct realm_err *err) {
    struct stat st;
    if (stat(path, &st) != 0)
        return realm_err_set(err, REALM_E_IO, "%s: cannot open: %s", path, strerror(errno));
    pthread_mutex_lock(&s->mu);
    for (struct entry *e = s->head; e; e = e->next) {
        if (e->dev == st.st_dev && e->ino == st.st_ino) {
            e->refs++;
            *out = e->g;
            pthread_mutex_unlock(&s->mu);
            return REALM_OK;
        }
    }
    /* Opening under the lock keeps two first users from mapping the same file twice; opening
     * is an mmap and a metadata scan, milliseconds even for big models. */
    struct entry *e = realm_calloc(1, sizeof *e);
    int rc = e ? realm_gguf_open(path, &e->g, err)
               : realm_err_set(err, REALM_E_NOMEM, "store: out of memory");
    if (rc) {
        realm_free(e);
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    e->dev = st.st_dev;
    e->ino = st.st_ino;
    e->refs = 1;
    e->next = s->head;
    s->head = e;
    *out = e->g;
    pthread_mutex_unlock(&s->mu);
    return REALM_OK;
}

static struct entry **find_link(struct realm_store *s, const struct realm_gguf *g) {
    for (struct entry **link = &s->head; *link; link = &(*link)->next)
        if ((*link)->g == g) return link;
    return NULL;
}

void realm_store_release(struct realm_store *s, struct realm_gguf *g) {
    if (!g) return;
    pthread_mutex_lock(&s->mu);
    struct entry **link = find_link(s, g);
    struct entry *dead = NULL;
    if (!link) {
        realm_log(REALM_LOG_ERROR, "store", "release of a file not in this store");
    } else if (--(*link)->refs == 0) {
        dead = *link;
        *link = dead->next;
    }
    pthread_mutex_unlock(&s->mu);
    if (dead) entry_close(dead);
}

int realm_store_refcount(struct realm_store *s, const struct realm_gguf *g) {
    pthread_mutex_lock(&s->mu);
    struct entry **link = find_link(s, g);
    int refs = link ? (*link)->refs : 0;
    pthread_mutex_unlock(&s->mu);
    return refs;
}

int realm_store_attach(struct realm_store *s, const struct realm_gguf *g,
                       realm_store_build_fn build, realm_store_destroy_fn destroy, void *ctx,
                       void **out, struct realm_err *err) {
    pthread_mutex_lock(&s->mu);
    struct entry **link = find_link(s, g);
    int rc = REALM_OK;
    if (!link) {
        rc = realm_err_set(err, REALM_E_NOT_FOUND, "store: model file is not open in this store");
    } else if (!(*link)->obj) {
        void *obj = NULL;
        rc = build((*link)->g, ctx, &obj, err);
        if (rc == REALM_OK) {
            (*link)->obj = obj;
            (*link)->destroy = destroy;
        }
    }
    if (rc == REALM_OK) *out = (*link)->obj;
    pthread_mutex_unlock(&s->mu);
    return rc;
}
