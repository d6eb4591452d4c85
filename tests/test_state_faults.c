/*
 * test_state_faults.c — `realm serve --state` when its registry's storage fails (issue 15):
 * the server runs in this process over SQLite with the failing VFS of sqlite_fault_vfs.h as the
 * default, and an admin change is retried with the storage failing after 0, 1, 2, ... writes
 * and syncs until it goes through. Every try must answer either 2xx with the change made, or a
 * 5xx with the registry's message and no trace of the change; the server keeps serving, and the
 * database passes PRAGMA integrity_check at the end.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "realm/registry.h"
#include "realm/server.h"
#include "sqlite_fault_vfs.h"
#include "test_sandbox_util.h"

/* One HTTP/1.1 request to 127.0.0.1:port (Connection: close); the status, and the body in
 * body[cap]. -1 on a transport error. */
static int http(uint16_t port, const char *method, const char *path, const char *key,
                const char *json, char *body, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    char req[2048];
    int n = snprintf(
        req, sizeof req,
        "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\nConnection: close\r\n"
        "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
        method, path, key, json ? strlen(json) : 0, json ? json : "");
    if (n <= 0 || (size_t)n >= sizeof req || write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    static char resp[1 << 16];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof resp - 1 && (r = read(fd, resp + got, sizeof resp - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    resp[got] = '\0';
    int status = -1;
    if (sscanf(resp, "HTTP/1.1 %d", &status) != 1) return -1;
    const char *b = strstr(resp, "\r\n\r\n");
    snprintf(body, cap, "%s", b ? b + 4 : "");
    return status;
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    const char *model = tu_shared_path("models/stories260K.gguf");
    if (!model) tu_skip("stories260K.gguf not found");
    char model_path[4096], dir[] = "/tmp/realm-state-faults-XXXXXX";
    snprintf(model_path, sizeof model_path, "%s", model);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    fault_vfs_register(true); /* every connection from here on: the server's too */

    /* an admin key, created in the state before the server starts (as `realm serve` does) */
    struct realm_err err;
    struct realm_registry *reg = NULL;
    char admin[REALM_KEY_LEN + 1];
    CHECK_EQ_INT(realm_registry_open_sqlite(dir, NULL, &reg, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_admin_key_add(reg, "test", admin, sizeof admin, &err), REALM_OK);
    realm_registry_close(reg);

    struct realm_server_config *cfg = NULL;
    CHECK_EQ_INT(realm_server_config_new(&cfg), REALM_OK);
    cfg->port = 0;
    cfg->max_inflight = 2;
    CHECK_EQ_INT(realm_server_config_add_model(cfg, "stories", model_path, 0, &err), REALM_OK);
    CHECK_EQ_INT(realm_server_config_set_default_guest(cfg, ts_guest_path("default")), REALM_OK);
    CHECK_EQ_INT(realm_server_config_set_state_dir(cfg, dir), REALM_OK);
    struct realm_server *srv = NULL;
    if (realm_server_start(cfg, &srv, &err) != REALM_OK) {
        fprintf(stderr, "server: %s\n", err.msg);
        return 1;
    }
    const uint16_t port = realm_server_port(srv);
    char body[4096], path[256], json[256];
    CHECK_EQ_INT(
        http(port, "POST", "/admin/v1/tenants", admin, "{\"id\":\"before\"}", body, sizeof body),
        201);

    int failed = 0, ok = 0;
    for (int budget = 0; budget < 400 && !ok; budget++) {
        snprintf(json, sizeof json,
                 "{\"id\":\"t%d\",\"limits\":{\"max_concurrent\":3},\"models\":[\"stories\"]}",
                 budget);
        fault_vfs_arm(budget, budget % 2 ? SQLITE_IOERR_WRITE : SQLITE_FULL);
        const int st = http(port, "POST", "/admin/v1/tenants", admin, json, body, sizeof body);
        fault_vfs_arm(-1, 0);
        snprintf(path, sizeof path, "/admin/v1/tenants/t%d", budget);
        char got[4096];
        const int after = http(port, "GET", path, admin, NULL, got, sizeof got);
        if (st == 201) {
            ok = 1;
            CHECKF(after == 200 && strstr(got, "\"max_concurrent\":3"),
                   "budget %d: acknowledged but %d %s", budget, after, got);
            continue;
        }
        failed++;
        CHECKF(st == 503 && strstr(body, "registry_unavailable") &&
                   strstr(body, "The registry failed"),
               "budget %d: %d %s", budget, st, body);
        /* a failed fsync may have committed (its outcome is unknown), but never partly */
        CHECKF(after == 404 ||
                   (after == 200 && strstr(got, "\"max_concurrent\":3") && strstr(got, "stories")),
               "budget %d: after a failure the tenant reads %d %s", budget, after, got);
    }
    CHECK(ok);
    CHECKF(failed >= 3, "only %d injected failures", failed);
    tu_log("admin change: %d injected storage failures before it went through", failed);

    /* the server still serves: a key for a tenant made before the faults answers a completion */
    char key_json[512], key[REALM_KEY_LEN + 1] = "";
    CHECK_EQ_INT(
        http(port, "POST", "/admin/v1/tenants/before/keys", admin, "{}", key_json, sizeof key_json),
        201);
    const char *k = strstr(key_json, "\"key\":\"");
    if (k) snprintf(key, sizeof key, "%.*s", REALM_KEY_LEN, k + 7);
    CHECK_EQ_INT(http(port, "POST", "/v1/completions", key,
                      "{\"model\":\"stories\",\"prompt\":\"Once upon a "
                      "time\",\"max_tokens\":4,\"temperature\":0}",
                      body, sizeof body),
                 200);
    realm_server_free(srv);
    realm_server_config_free(cfg);

    sqlite3 *db = NULL;
    char dbpath[512];
    snprintf(dbpath, sizeof dbpath, "%s/registry.db", dir);
    CHECK_EQ_INT(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READWRITE, "unix"), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    CHECK_EQ_INT(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    CHECK(sqlite3_step(st) == SQLITE_ROW &&
          !strcmp((const char *)sqlite3_column_text(st, 0), "ok"));
    sqlite3_finalize(st);
    sqlite3_close(db);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return tu_finish("test_state_faults");
}
