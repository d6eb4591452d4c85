/* json.c — see include/realm/json.h. */
#include "realm/json.h"

#include <stdbool.h>

uint64_t realm_json_values_bound(const void *text, size_t n, uint64_t max) {
    const uint8_t *p = text;
    uint64_t count = 1;
    bool in_str = false;
    for (size_t i = 0; i < n && count <= max; i++) {
        uint8_t c = p[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == ',' || c == '[' || c == '{') {
            count++;
        }
    }
    return count > max ? max + 1 : count;
}
