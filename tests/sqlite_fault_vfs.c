/* sqlite_fault_vfs.c — see sqlite_fault_vfs.h. */
#include "sqlite_fault_vfs.h"

#include <stdatomic.h>
#include <stdlib.h>

struct faulty_file {
    sqlite3_file base;
    sqlite3_file *real; /* the default VFS's file, in the same allocation right after this */
};

static sqlite3_vfs *g_real_vfs;
static _Atomic int g_budget =
    -1; /* writes + syncs + truncates allowed before failing (-1: never fail) */
static _Atomic int g_calls;
static _Atomic bool g_tripped;
static _Atomic int g_write_error = SQLITE_FULL;

void fault_vfs_arm(int budget, int write_error) {
    g_budget = budget;
    g_calls = 0;
    g_tripped = false;
    g_write_error = write_error;
}

bool fault_vfs_tripped(void) {
    return g_tripped;
}

/* Whether this call fails: once the budget is spent, every later one fails too (a full disk). */
static bool spend(void) {
    if (g_budget < 0) return false;
    if (g_calls++ < g_budget) return false;
    g_tripped = true;
    return true;
}

#define REAL(f) (((struct faulty_file *)(f))->real)
static int f_close(sqlite3_file *f) {
    return REAL(f)->pMethods->xClose(REAL(f));
}
static int f_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off) {
    return REAL(f)->pMethods->xRead(REAL(f), p, n, off);
}
static int f_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off) {
    if (spend()) return g_write_error;
    return REAL(f)->pMethods->xWrite(REAL(f), p, n, off);
}
static int f_truncate(sqlite3_file *f, sqlite3_int64 size) {
    if (spend()) return SQLITE_IOERR_TRUNCATE;
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int f_sync(sqlite3_file *f, int flags) {
    if (spend()) return SQLITE_IOERR_FSYNC;
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int f_size(sqlite3_file *f, sqlite3_int64 *size) {
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int f_lock(sqlite3_file *f, int l) {
    return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int f_unlock(sqlite3_file *f, int l) {
    return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int f_check_lock(sqlite3_file *f, int *out) {
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int f_fcntl(sqlite3_file *f, int op, void *arg) {
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int f_sector(sqlite3_file *f) {
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int f_devchar(sqlite3_file *f) {
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int f_shm_map(sqlite3_file *f, int pg, int sz, int extend, void volatile **pp) {
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, extend, pp);
}
static int f_shm_lock(sqlite3_file *f, int off, int n, int flags) {
    return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void f_shm_barrier(sqlite3_file *f) {
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int f_shm_unmap(sqlite3_file *f, int del) {
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int f_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp) {
    return REAL(f)->pMethods->xFetch(REAL(f), off, n, pp);
}
static int f_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p) {
    return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

static const sqlite3_io_methods k_faulty_io = {
    3,          f_close,       f_read,       f_write, f_truncate, f_sync,    f_size,
    f_lock,     f_unlock,      f_check_lock, f_fcntl, f_sector,   f_devchar, f_shm_map,
    f_shm_lock, f_shm_barrier, f_shm_unmap,  f_fetch, f_unfetch,
};

static int f_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags,
                  int *out_flags) {
    (void)vfs;
    struct faulty_file *f = (struct faulty_file *)file;
    f->real = (sqlite3_file *)(f + 1);
    int rc = g_real_vfs->xOpen(g_real_vfs, name, f->real, flags, out_flags);
    file->pMethods = rc == SQLITE_OK && f->real->pMethods ? &k_faulty_io : NULL;
    return rc;
}
static int f_delete(sqlite3_vfs *v, const char *name, int sync) {
    (void)v;
    return g_real_vfs->xDelete(g_real_vfs, name, sync);
}
static int f_access(sqlite3_vfs *v, const char *name, int flags, int *out) {
    (void)v;
    return g_real_vfs->xAccess(g_real_vfs, name, flags, out);
}
static int f_fullpath(sqlite3_vfs *v, const char *name, int n, char *out) {
    (void)v;
    return g_real_vfs->xFullPathname(g_real_vfs, name, n, out);
}
static int f_random(sqlite3_vfs *v, int n, char *out) {
    (void)v;
    return g_real_vfs->xRandomness(g_real_vfs, n, out);
}
static int f_sleep(sqlite3_vfs *v, int us) {
    (void)v;
    return g_real_vfs->xSleep(g_real_vfs, us);
}
static int f_time(sqlite3_vfs *v, double *out) {
    (void)v;
    return g_real_vfs->xCurrentTime(g_real_vfs, out);
}
static int f_lasterr(sqlite3_vfs *v, int n, char *out) {
    (void)v;
    return g_real_vfs->xGetLastError(g_real_vfs, n, out);
}
static int f_time64(sqlite3_vfs *v, sqlite3_int64 *out) {
    (void)v;
    return g_real_vfs->xCurrentTimeInt64(g_real_vfs, out);
}

static sqlite3_vfs g_faulty_vfs;

void fault_vfs_register(bool make_default) {
    g_real_vfs = sqlite3_vfs_find(NULL);
    g_faulty_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(struct faulty_file) + g_real_vfs->szOsFile,
        .mxPathname = g_real_vfs->mxPathname,
        .zName = FAULT_VFS_NAME,
        .xOpen = f_open,
        .xDelete = f_delete,
        .xAccess = f_access,
        .xFullPathname = f_fullpath,
        .xRandomness = f_random,
        .xSleep = f_sleep,
        .xCurrentTime = f_time,
        .xGetLastError = f_lasterr,
        .xCurrentTimeInt64 = f_time64,
    };
    if (sqlite3_vfs_register(&g_faulty_vfs, make_default) != SQLITE_OK) abort();
}
