/*
 * admin_http.h — `realm admin --url URL`: the subcommands of `realm admin` carried out through a
 * running server's admin API (/admin/v1/..., src/server/admin.c) with libcurl instead of on the
 * state directory (admin_http.c), and the parts of cmd_admin.c both modes share — option
 * parsing and the output formats — so that both print the same thing.
 *
 * Only src/cli uses this. Strings are borrowed for the call unless said otherwise.
 */
#ifndef REALM_CLI_ADMIN_HTTP_H
#define REALM_CLI_ADMIN_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realm/registry.h"

/* ---- admin_http.c ---- */

/* Runs one `realm admin` command (words argv[0..argc): "tenant add acme ...", "key add ...",
 * "limits ...", "guest ...", "usage ...") against the server at url ("http://host:port", a
 * trailing '/' allowed) with admin_key, which goes only into the Authorization header and is
 * never printed. admin-key and import have no admin-API route and are refused (use --state).
 * Prints what the --state mode prints; on a failure one line "realm: admin: MESSAGE (HTTP N)"
 * (or the connection error) on stderr. Returns the exit status: 0, 1 (failure), 2 (usage). */
int cli_admin_remote(const char *url, const char *admin_key, int argc, char **argv);

/* ---- cmd_admin.c, shared with admin_http.c ---- */

/* Options of tenant add / limits from argv[start..argc): the LIMITS options, --model NAME
 * (repeatable), --all-models, set into t (t->models is realm_realloc'd and borrows argv
 * strings: free only the array). *any is set when an option was given. Returns 0 or 2 (usage
 * error, printed). */
int cli_admin_tenant_opts(int argc, char **argv, int start, struct realm_reg_tenant *t, bool *any);
/* Options of usage from argv[1..argc): --tenant T, --since TIME, --until TIME (ms since the
 * epoch out; 0 when absent), --csv. Returns 0 or 2 (usage error, printed). */
int cli_admin_usage_opts(int argc, char **argv, const char **tenant, int64_t *since, int64_t *until,
                         bool *csv);
/* The limits, in the order `tenant list` prints them: the option's name ("max-concurrent"; the
 * admin API's JSON name has '_' for '-') and its value in the option's unit (MiB for the memory
 * limits, as in the JSON). */
size_t cli_admin_n_limits(void);
const char *cli_admin_limit_name(size_t i);
int64_t cli_admin_limit_get(const struct realm_tenant_limits *l, size_t i);
void cli_admin_limit_set(struct realm_tenant_limits *l, size_t i, int64_t v);

/* One `tenant list` line to stdout; active NULL: the default guest. */
void cli_admin_print_tenant(const struct realm_reg_tenant *t, size_t n_keys,
                            const struct realm_reg_guest *active);
/* `key list` lines to stdout. */
void cli_admin_print_keys(const struct realm_reg_key *k, size_t n);
/* `guest list` lines to stdout. */
void cli_admin_print_guests(const struct realm_reg_guest *g, size_t n);
/* `usage` without --csv to stdout: per-tenant sums and the total of the rows. */
void cli_admin_print_usage_sums(const struct realm_reg_usage *u, size_t n);
/* Reads a whole file of at most REALM_REG_GUEST_MAX bytes. Ownership: returns realm_malloc'd
 * bytes (realm_free). Errors: NULL with errno set (EFBIG: too large). */
unsigned char *cli_admin_read_file(const char *path, size_t *len);

#endif
