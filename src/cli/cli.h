/*
 * cli.h — the `realm` command's subcommands. Each lives in src/cli/cmd_<name>.c, parses its own
 * options, prints its own --help, and returns the process exit status (0 ok, 1 error, 2 usage).
 * Only src/cli/ prints to stdout/stderr or exits.
 */
#ifndef REALM_CLI_H
#define REALM_CLI_H

int cmd_info(int argc, char **argv);
int cmd_run(int argc, char **argv);        /* cmd_run.c */
int cmd_bench(int argc, char **argv);      /* cmd_bench.c */
int cmd_tokenize(int argc, char **argv);   /* cmd_tokenize.c */
int cmd_detokenize(int argc, char **argv); /* cmd_tokenize.c */
int cmd_serve(int argc, char **argv);      /* cmd_serve.c */
int cmd_key(int argc, char **argv);        /* cmd_key.c */
int cmd_template(int argc, char **argv);   /* cmd_template.c */
int cmd_admin(int argc, char **argv);      /* cmd_admin.c */

/* ---- `realm run` (cmd_run.c) ---- */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "realm/clock.h"
struct realm_gguf;
struct realm_model;

struct cli_run_opts {
    const char *model;  /* -m */
    const char *prompt; /* -p */
    const char *tokens; /* --tokens "1,2,3": bypasses the tokenizer */
    int n_predict;      /* -n, default 64 */
    float temp;         /* --temp, default 0.8; 0 = greedy */
    int top_k;          /* --top-k, default 40; 0 = off */
    float top_p;        /* --top-p, default 0.95; 1 = off */
    uint64_t seed;      /* --seed */
    bool seed_set;
    int threads;            /* -t, 0 = all cores */
    int32_t n_ctx;          /* -c, 0 = prompt + n_predict */
    int32_t batch;          /* -b, prefill rows per forward, default 512 */
    bool kv_f32;            /* --kv f32 */
    bool no_bos;            /* --no-bos */
    bool ignore_eos;        /* --ignore-eos */
    const char *logits_out; /* --logits-out FILE: f32 logits of every prompt position */
    bool print_ids;         /* --print-ids: generated token ids instead of text (--native) */
    bool native;            /* --native */
    const char *guest;      /* --guest FILE.wasm */
};
/* Parses `run` options (argv[0] = "run"). Returns 0, 2 on a usage error (message printed), or
 * -1 after printing --help. */
int cli_run_parse(int argc, char **argv, struct cli_run_opts *o);
/* The native path: loads the model, prefills, decodes and streams; returns the exit status. */
int cli_run_native(const struct cli_run_opts *o);
/* The sandboxed path (run_sandbox.c): the default guest (or o->guest) runs the request in
 * Wasmtime; same output and summary line as cli_run_native plus sandbox time. */
int cli_run_sandbox(const struct cli_run_opts *o);
/* Opens and loads a model, printing the error; returns 0 or 1. */
int cli_model_open(const char *path, struct realm_gguf **g, struct realm_model **m);
struct realm_model_opts;
int cli_model_open_opts(const char *path, const struct realm_model_opts *opts,
                        struct realm_gguf **g, struct realm_model **m);
/* "1,2,3" → malloc'd array; the count, or -1 on a malformed list. */
int cli_parse_tokens(const char *s, int32_t **out);
/* CPU model name from /proc/cpuinfo ("unknown" if absent). */
void cli_cpu_model(char *buf, size_t cap);
/* Writes s as a JSON string literal. */
void cli_json_str(FILE *f, const char *s);
/* Parses "1,4,16,64" into out (each 1..1024); returns the count, or -1. */
int cli_parse_tenant_counts(const char *s, int *out, int cap);
struct realm_served;
/* `realm bench --tenants` (bench_tenants.c) over a served model built for the largest count
 * (cli_bench_tenants_params); returns the exit status. */
int cli_bench_tenants(const char *model_path, struct realm_served *sv, const int *counts,
                      int n_counts, const int32_t *toks, int n_toks, int n_prompt, int n_gen,
                      int reps, bool json);
struct realm_served_params;
/* The served model `realm bench --tenants` needs: rows and KV room for the largest count. */
void cli_bench_tenants_params(const int *counts, int n_counts, int n_prompt, int n_gen, int threads,
                              bool prepack, struct realm_served_params *out);

/* Prints "realm: <msg>" to stderr as one line. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
