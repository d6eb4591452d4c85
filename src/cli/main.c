/*
 * main.c — `realm <command> ...`: dispatches to the subcommands listed in the table below.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct command g_commands[] = {
    {"info", cmd_info, "show a GGUF model's architecture, hyper-parameters, tokenizer and tensors"},
    {"run", cmd_run, "generate text from a prompt (native engine)"},
    {"bench", cmd_bench, "measure prefill and decode throughput"},
    {"tokenize", cmd_tokenize, "print the token ids (or pieces) of a text"},
    {"detokenize", cmd_detokenize, "print the text of token ids"},
    {"serve", cmd_serve, "serve the OpenAI API over HTTP, each tenant's requests in its own guest"},
    {"template", cmd_template,
     "render a chat template (the GGUF's or a file) with messages and tools"},
    {"key", cmd_key, "add an API key to a tenant in a server config (only its hash is stored)"},
    {"admin", cmd_admin,
     "manage tenants, keys, limits, guests and the usage ledger (a state directory, or a server "
     "with --url)"},
};

void cli_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("realm: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void usage(FILE *f) {
    fprintf(f, "usage: realm <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof g_commands / sizeof g_commands[0]; i++)
        fprintf(f, "  %-12s %s\n", g_commands[i].name, g_commands[i].summary);
    fprintf(f, "\n`realm <command> --help` lists the options of a command.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof g_commands / sizeof g_commands[0]; i++)
        if (!strcmp(argv[1], g_commands[i].name)) return g_commands[i].run(argc - 1, argv + 1);
    cli_error("unknown command '%s' (see realm --help)", argv[1]);
    return 2;
}
