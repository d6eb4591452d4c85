/*
 * cli.h — the `realm` command's subcommands. Each lives in src/cli/cmd_<name>.c, parses its own
 * options, prints its own --help, and returns the process exit status (0 ok, 1 error, 2 usage).
 * Only src/cli/ prints to stdout/stderr or exits.
 */
#ifndef REALM_CLI_H
#define REALM_CLI_H

int cmd_info(int argc, char **argv);

/* Prints "realm: <msg>" to stderr as one line. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
