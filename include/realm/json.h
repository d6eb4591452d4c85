/*
 * json.h — checks on JSON text before it is parsed.
 *
 * cJSON builds one ~64-byte node per value, so a 4 MiB body of "[1,1,...]" would cost ~128 MiB
 * of host memory: callers that parse untrusted JSON count its values first with this bound.
 */
#ifndef REALM_JSON_H
#define REALM_JSON_H

#include <stddef.h>
#include <stdint.h>

/* An upper bound on the values in JSON text p[0..n), in one pass without allocating: the root,
 * one per ',' and one per '[' / '{' outside strings (a container's first element follows its
 * opener, every other one a comma). Escapes are honoured so that '\"' does not end a string.
 * Stops counting once past `max` (the result is then max + 1). Any bytes are safe input. */
uint64_t realm_json_values_bound(const void *p, size_t n, uint64_t max);

#endif
