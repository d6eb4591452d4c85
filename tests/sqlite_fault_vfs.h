/*
 * sqlite_fault_vfs.h — a SQLite VFS over the default one whose writes, truncates and syncs start
 * failing after a budget, as a full disk or a failing device would: the registry's fault-injection
 * tests (tests/test_registry.c) and the server's (tests/test_state_faults.c). Not thread-safe to
 * arm while SQLite runs on other threads; arm between requests.
 */
#ifndef REALM_TESTS_SQLITE_FAULT_VFS_H
#define REALM_TESTS_SQLITE_FAULT_VFS_H

#include <sqlite3.h>
#include <stdbool.h>

#define FAULT_VFS_NAME "realm-faulty"

/* Registers the VFS (make_default: every connection opened afterwards without a VFS name uses
 * it). Aborts if SQLite refuses. */
void fault_vfs_register(bool make_default);
/* From now on `budget` writes, truncates and syncs succeed and every later one fails (writes with
 * write_error, e.g. SQLITE_FULL); budget -1: none fails. */
void fault_vfs_arm(int budget, int write_error);
/* Whether a call failed since the last arm. */
bool fault_vfs_tripped(void);

#endif
