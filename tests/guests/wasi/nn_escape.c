/*
 * nn_escape.c — a wasi-nn guest that tries to leave its sandbox through WASI: open files (host
 * paths, a preopened directory, the current one), list a directory, use a socket (accept /
 * send / receive on the descriptors a preopened socket would have), read its environment and
 * arguments. Prints one line per attempt ("<what>: denied (errno N)" or "<what>: ALLOWED") and
 * then "denied: K of N"; exits 0 either way, so the test reads the verdict from stdout.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <wasi/api.h>

#include "wasi_nn.h"

static int n_tries, n_denied;

static void verdict(const char *what, int denied, int err) {
    n_tries++;
    n_denied += denied;
    if (denied)
        printf("%s: denied (errno %d)\n", what, err);
    else
        printf("%s: ALLOWED\n", what);
}

int main(int argc, char **argv) {
    (void)argv;
    errno = 0;
    FILE *f = fopen("/etc/passwd", "r");
    verdict("fopen /etc/passwd", f == NULL, errno);
    errno = 0;
    int fd = open("/tmp/realm-escape", O_WRONLY | O_CREAT, 0644);
    verdict("open /tmp for writing", fd < 0, errno);
    errno = 0;
    fd = open("data.txt", O_RDONLY);
    verdict("open a relative path", fd < 0, errno);
    errno = 0;
    DIR *d = opendir(".");
    verdict("opendir .", d == NULL, errno);
    /* descriptors 3.. are where preopened directories and sockets would be */
    for (__wasi_fd_t k = 3; k < 6; k++) {
        __wasi_prestat_t ps;
        __wasi_errno_t e = __wasi_fd_prestat_get(k, &ps);
        verdict("fd_prestat_get", e != 0, e);
        __wasi_fd_t nfd;
        e = __wasi_sock_accept(k, 0, &nfd);
        verdict("sock_accept", e != 0, e);
    }
    __wasi_size_t sent = 0;
    __wasi_ciovec_t io = {(const uint8_t *)"x", 1};
    __wasi_errno_t e = __wasi_sock_send(3, &io, 1, 0, &sent);
    verdict("sock_send", e != 0, e);
    e = __wasi_sock_shutdown(1, __WASI_SDFLAGS_WR);
    verdict("sock_shutdown stdout", e != 0, e);
    verdict("environment", getenv("HOME") == NULL && getenv("PATH") == NULL, 0);
    verdict("arguments beyond argv[0]", argc <= 1, 0);
    /* wasi-nn by path, not by name: refused */
    uint32_t graph = 0;
    uint32_t rc = nn_load_by_name("/etc/passwd", 11, &graph);
    verdict("load_by_name of a path", rc == NN_MODEL_NOT_FOUND, (int)rc);
    printf("denied: %d of %d\n", n_denied, n_tries);
    return 0;
}
