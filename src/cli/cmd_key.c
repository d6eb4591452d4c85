/*
 * cmd_key.c — `realm key add TENANT [--config FILE]`: creates an API key for a tenant, prints it
 * once on stdout and stores only its SHA-256 in the config file (rewritten atomically, mode 0600;
 * the tenant is created with access to every model if it is not there). `realm key hash KEY`
 * prints the hash a config stores for KEY.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "realm/server.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: realm key add TENANT [--config FILE.json]   (default FILE: realm.json)\n"
            "       realm key hash KEY\n"
            "\n"
            "add   creates a new API key for TENANT, prints it once, and stores only its SHA-256\n"
            "      hash in the config (creating the file or the tenant if needed)\n"
            "hash  prints the SHA-256 hex a config stores for KEY\n");
}

int cmd_key(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "hash")) {
        char hex[REALM_KEY_HASH_HEX + 1];
        realm_key_hash(argv[2], strlen(argv[2]), hex);
        printf("%s\n", hex);
        return 0;
    }
    if (argc < 3 || strcmp(argv[1], "add")) {
        usage(stderr);
        return 2;
    }
    const char *tenant = NULL, *config = "realm.json";
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            config = argv[++i];
        else if (argv[i][0] != '-' && !tenant)
            tenant = argv[i];
        else {
            cli_error("key: unknown or incomplete option '%s' (see realm key --help)", argv[i]);
            return 2;
        }
    }
    if (!tenant || !tenant[0]) {
        cli_error("key add: missing TENANT");
        return 2;
    }
    char key[REALM_KEY_LEN + 1];
    bool created = false;
    struct realm_err err = {0};
    if (realm_config_add_key(config, tenant, key, sizeof key, &created, &err)) {
        cli_error("key add: %s", err.msg);
        return 1;
    }
    printf("%s\n", key);
    fflush(stdout);
    fprintf(stderr,
            "realm: added a key to tenant \"%s\"%s in %s (only its hash is stored; this is the "
            "only time "
            "the key is shown)\n",
            tenant, created ? " (new tenant, all models)" : "", config);
    memset(key, 0, sizeof key);
    return 0;
}
