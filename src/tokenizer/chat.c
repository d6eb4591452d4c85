/*
 * chat.c — chat templates. A chat is rendered by the model's Jinja template (the GGUF's
 * tokenizer.chat_template or a configured file, interpreted by src/template), else by a fixed C
 * renderer per family (llama.cpp's llm_chat_apply_template): a configured family name, the family
 * recognised from a template our interpreter cannot parse (the markers of llama.cpp's
 * llm_chat_detect_template), or for a file without a template the family its special tokens show
 * (<start_of_turn> → gemma, <|im_start|> → chatml, ...; gemma-3 GGUFs often ship none); when
 * nothing matches, ChatML with a warning. Templates that do not render tools or tool calls get
 * them as text (polyfills below).
 *
 * realm_chat_tokenize renders the same text while noting where each message's content lies, so
 * that the tokenizer recognises control tokens in the template's markup only: the family
 * renderers record the spans as they write; a Jinja rendering is matched against a second one
 * with sentinels in place of the contents (tok_chat_map_spans), failing closed when they do not
 * match.
 *
 * Owns nothing. Thread-safe (the ChatML warning flag is atomic).
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "realm/alloc.h"
#include "realm/buf.h"
#include "realm/log.h"
#include "realm/status.h"
#include "realm/tokenizer.h"
#include "tokenizer/tok.h"

static const char *const k_families[] = {
    "chatml",
    "llama2",
    "llama2-sys",
    "llama2-sys-bos",
    "llama2-sys-strip",
    "mistral-v1",
    "mistral-v3",
    "mistral-v3-tekken",
    "mistral-v7",
    "mistral-v7-tekken",
    "phi3",
    "phi4",
    "falcon3",
    "zephyr",
    "monarch",
    "gemma",
    "orion",
    "openchat",
    "vicuna",
    "vicuna-orca",
    "deepseek",
    "deepseek2",
    "deepseek3",
    "command-r",
    "llama3",
    "chatglm3",
    "chatglm4",
    "glmedge",
    "minicpm",
    "exaone3",
    "granite",
    "megrez",
    "llama4",
    "smolvlm",
    NULL,
};

static const char *family(const char *name) {
    for (size_t i = 0; k_families[i]; i++)
        if (!strcmp(k_families[i], name)) return k_families[i];
    return NULL;
}

static bool has(const char *s, size_t n, const char *needle) {
    return memmem(s, n, needle, strlen(needle)) != NULL;
}

const char *tok_chat_detect(const char *s, size_t n) {
    /* a template that is just a family name */
    char name[32];
    if (n < sizeof name) {
        memcpy(name, s, n);
        name[n] = 0;
        const char *f = family(name);
        if (f) return f;
    }
#define H(x) has(s, n, x)
    if (H("<|im_start|>")) {
        if (H("<|im_sep|>")) return family("phi4");
        if (H("<end_of_utterance>")) return family("smolvlm");
        return family("chatml");
    }
    if ((n >= 7 && !memcmp(s, "mistral", 7)) || H("[INST]")) {
        if (H("[SYSTEM_PROMPT]")) return family("mistral-v7");
        if (H("' [INST] ' + system_message") || H("[AVAILABLE_TOOLS]")) {
            if (H(" [INST]")) return family("mistral-v1");
            if (H("\"[INST]\"")) return family("mistral-v3-tekken");
            return family("mistral-v3");
        }
        if (H("content.strip()")) return family("llama2-sys-strip");
        if (H("bos_token + '[INST]")) return family("llama2-sys-bos");
        if (H("<<SYS>>")) return family("llama2-sys");
        return family("llama2");
    }
    if (H("<|assistant|>") && H("<|end|>")) return family("phi3");
    if (H("[gMASK]<sop>")) return family("chatglm4");
    if (H("<|assistant|>") && H("<|user|>")) return family(H("</s>") ? "falcon3" : "glmedge");
    if (H("<|user|>") && H("<|endoftext|>")) return family("zephyr");
    if (H("bos_token + message['role']")) return family("monarch");
    if (H("<start_of_turn>")) return family("gemma");
    if (H("'\\n\\nAssistant: ' + eos_token")) return family("orion");
    if (H("GPT4 Correct ")) return family("openchat");
    if (H("USER: ") && H("ASSISTANT: ")) return family(H("SYSTEM: ") ? "vicuna-orca" : "vicuna");
    if (H("### Instruction:") && H("<|EOT|>")) return family("deepseek");
    if (H("<|START_OF_TURN_TOKEN|>") && H("<|USER_TOKEN|>")) return family("command-r");
    if (H("<|start_header_id|>") && H("<|end_header_id|>")) return family("llama3");
    if (H("[gMASK]sop")) return family("chatglm3");
    if (H("<\xe7\x94\xa8\xe6\x88\xb7>")) return family("minicpm"); /* <用户> */
    if (H("'Assistant: ' + message['content'] + eos_token")) return family("deepseek2");
    if (H("<\xef\xbd\x9c"
          "Assistant\xef\xbd\x9c>") &&
        H("<\xef\xbd\x9cUser\xef\xbd\x9c>"))
        return family("deepseek3");
    if (H("[|system|]") && H("[|assistant|]") && H("[|endofturn|]")) return family("exaone3");
    if (H("<|start_of_role|>")) return family("granite");
    if (H("<|role_start|>")) return family("megrez");
    if (H("<|header_start|>") && H("<|header_end|>")) return family("llama4");
#undef H
    return NULL;
}

const char *tok_chat_detect_vocab(const struct realm_tokenizer *t) {
    static const struct {
        const char *token, *fam;
    } k[] = {
        {"<start_of_turn>", "gemma"},
        {"<|im_start|>", "chatml"},
        {"<|start_header_id|>", "llama3"},
        {"<|header_start|>", "llama4"},
        {"<|START_OF_TURN_TOKEN|>", "command-r"},
        {"<|start_of_role|>", "granite"},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (tok_find(t, k[i].token, strlen(k[i].token)) >= 0) return family(k[i].fam);
    return NULL;
}

/* ---- rendering ---- */

/* The output: the rendered bytes and, when record is set, where the messages' contents landed
 * (realm_chat_tokenize). Role names are markup: they are validated identifiers, and templates
 * such as phi3 build a token out of one ("<|" role "|>"). */
struct sb {
    struct realm_buf buf;
    bool record; /* collect spans */
    struct tok_span *spans;
    size_t n_spans, spans_cap;
    bool nomem;
};

static void put(struct sb *b, const char *s, size_t n) {
    if (!b->nomem && realm_buf_append(&b->buf, s, n)) b->nomem = true;
}
static void puts_(struct sb *b, const char *s) {
    put(b, s, strlen(s));
}
/* Message text: recorded as a content span (empty ones are not, so that spans never touch). */
static void put_content(struct sb *b, const char *s, size_t n) {
    if (b->record && n) {
        if (tok_buf_reserve((void **)&b->spans, &b->spans_cap, b->n_spans + 1, sizeof *b->spans))
            b->nomem = true;
        else
            b->spans[b->n_spans++] = (struct tok_span){b->buf.len, n};
    }
    put(b, s, n);
}

/* isspace-trim, as llama-chat.cpp's trim() */
static void trimmed(const char *s, size_t n, const char **o, size_t *on) {
    size_t a = 0, e = n;
    while (a < e && isspace((unsigned char)s[a]))
        a++;
    while (e > a && isspace((unsigned char)s[e - 1]))
        e--;
    *o = s + a;
    *on = e - a;
}

static bool role_is(const struct realm_chat_msg *m, const char *r) {
    return m->role_len == strlen(r) && !memcmp(m->role, r, m->role_len);
}

static void content(struct sb *b, const struct realm_chat_msg *m, bool trim) {
    if (!trim) {
        put_content(b, m->content, m->content_len);
        return;
    }
    const char *s;
    size_t n;
    trimmed(m->content, m->content_len, &s, &n);
    put_content(b, s, n);
}

static void role(struct sb *b, const struct realm_chat_msg *m) {
    put(b, m->role, m->role_len);
}

static bool valid_role(const struct realm_chat_msg *m) {
    if (!m->role || m->role_len == 0 || m->role_len > 64) return false;
    for (size_t i = 0; i < m->role_len; i++) {
        unsigned char c = (unsigned char)m->role[i];
        if (!(isalnum(c) || c == '_' || c == '-')) return false;
    }
    return m->content || m->content_len == 0;
}

/* llm_chat_apply_template for family f into bp (which the caller frees, on
 * failure too). Returns the length or REALM_E_NOT_FOUND / REALM_E_INVALID / REALM_E_LIMIT /
 * REALM_E_NOMEM. */
static int64_t render(const char *f, const struct realm_chat_msg *msgs, size_t n_msgs,
                      bool add_generation_prompt, struct sb *bp) {
    if (!f) return REALM_E_NOT_FOUND;
    if (n_msgs && !msgs) return REALM_E_INVALID;
    for (size_t i = 0; i < n_msgs; i++)
        if (!valid_role(&msgs[i])) return REALM_E_INVALID;
    struct sb b = *bp; /* written back on success */
    bool ass = add_generation_prompt;
#define EACH for (size_t i = 0; i < n_msgs; i++)
#define M (&msgs[i])
    if (!strcmp(f, "chatml")) {
        EACH {
            puts_(&b, "<|im_start|>");
            role(&b, M);
            puts_(&b, "\n");
            content(&b, M, false);
            puts_(&b, "<|im_end|>\n");
        }
        if (ass) puts_(&b, "<|im_start|>assistant\n");
    } else if (!strcmp(f, "mistral-v7") || !strcmp(f, "mistral-v7-tekken")) {
        const char *sp = !strcmp(f, "mistral-v7") ? " " : "";
        EACH {
            if (role_is(M, "system")) {
                puts_(&b, "[SYSTEM_PROMPT]");
                puts_(&b, sp);
                content(&b, M, false);
                puts_(&b, "[/SYSTEM_PROMPT]");
            } else if (role_is(M, "user")) {
                puts_(&b, "[INST]");
                puts_(&b, sp);
                content(&b, M, false);
                puts_(&b, "[/INST]");
            } else {
                puts_(&b, sp);
                content(&b, M, false);
                puts_(&b, "</s>");
            }
        }
    } else if (!strncmp(f, "mistral-v", 9)) {
        bool v1 = !strcmp(f, "mistral-v1"), tekken = !strcmp(f, "mistral-v3-tekken");
        const char *lead = v1 ? " " : "", *trail = tekken ? "" : " ";
        bool trim_ass = !strcmp(f, "mistral-v3"), inside = false;
        EACH {
            if (!inside) {
                puts_(&b, lead);
                puts_(&b, "[INST]");
                puts_(&b, trail);
                inside = true;
            }
            if (role_is(M, "system")) {
                content(&b, M, false);
                puts_(&b, "\n\n");
            } else if (role_is(M, "user")) {
                content(&b, M, false);
                puts_(&b, lead);
                puts_(&b, "[/INST]");
            } else {
                puts_(&b, trail);
                content(&b, M, trim_ass);
                puts_(&b, "</s>");
                inside = false;
            }
        }
    } else if (!strncmp(f, "llama2", 6)) {
        bool sys = strcmp(f, "llama2") != 0, bos = !strcmp(f, "llama2-sys-bos");
        bool strip = !strcmp(f, "llama2-sys-strip"), inside = true;
        puts_(&b, "[INST] ");
        EACH {
            if (!inside) {
                inside = true;
                puts_(&b, bos ? "<s>[INST] " : "[INST] ");
            }
            if (role_is(M, "system")) {
                if (sys) {
                    puts_(&b, "<<SYS>>\n");
                    content(&b, M, strip);
                    puts_(&b, "\n<</SYS>>\n\n");
                } else {
                    content(&b, M, strip);
                    puts_(&b, "\n");
                }
            } else if (role_is(M, "user")) {
                content(&b, M, strip);
                puts_(&b, " [/INST]");
            } else {
                content(&b, M, strip);
                puts_(&b, "</s>");
                inside = false;
            }
        }
    } else if (!strcmp(f, "phi3")) {
        EACH {
            puts_(&b, "<|");
            role(&b, M);
            puts_(&b, "|>\n");
            content(&b, M, false);
            puts_(&b, "<|end|>\n");
        }
        if (ass) puts_(&b, "<|assistant|>\n");
    } else if (!strcmp(f, "phi4")) {
        EACH {
            puts_(&b, "<|im_start|>");
            role(&b, M);
            puts_(&b, "<|im_sep|>");
            content(&b, M, false);
            puts_(&b, "<|im_end|>");
        }
        if (ass) puts_(&b, "<|im_start|>assistant<|im_sep|>");
    } else if (!strcmp(f, "falcon3")) {
        EACH {
            puts_(&b, "<|");
            role(&b, M);
            puts_(&b, "|>\n");
            content(&b, M, false);
            puts_(&b, "\n");
        }
        if (ass) puts_(&b, "<|assistant|>\n");
    } else if (!strcmp(f, "zephyr")) {
        EACH {
            puts_(&b, "<|");
            role(&b, M);
            puts_(&b, "|>\n");
            content(&b, M, false);
            puts_(&b, "<|endoftext|>\n");
        }
        if (ass) puts_(&b, "<|assistant|>\n");
    } else if (!strcmp(f, "monarch")) {
        EACH {
            if (i) puts_(&b, "<s>");
            role(&b, M);
            puts_(&b, "\n");
            content(&b, M, false);
            puts_(&b, "</s>\n");
        }
        if (ass) puts_(&b, "<s>assistant\n");
    } else if (!strcmp(f, "gemma")) {
        /* no system role: system text is merged into the next user turn */
        size_t sys_from = 0, sys_to = 0; /* indices of pending system messages */
        bool pending = false;
        EACH {
            if (role_is(M, "system")) {
                if (!pending) sys_from = i;
                sys_to = i + 1;
                pending = true;
                continue;
            }
            bool model = role_is(M, "assistant");
            puts_(&b, "<start_of_turn>");
            if (model)
                puts_(&b, "model");
            else
                role(&b, M);
            puts_(&b, "\n");
            if (pending && !model) {
                bool any = false;
                for (size_t k = sys_from; k < sys_to; k++) {
                    if (!role_is(&msgs[k], "system")) continue;
                    const char *s;
                    size_t n;
                    trimmed(msgs[k].content, msgs[k].content_len, &s, &n);
                    put_content(&b, s, n);
                    any = any || n;
                }
                if (any) puts_(&b, "\n\n");
                pending = false;
            }
            content(&b, M, true);
            puts_(&b, "<end_of_turn>\n");
        }
        if (ass) puts_(&b, "<start_of_turn>model\n");
    } else if (!strcmp(f, "orion")) {
        size_t sys_from = 0, sys_to = 0;
        bool pending = false;
        EACH {
            if (role_is(M, "system")) {
                if (!pending) sys_from = i;
                sys_to = i + 1;
                pending = true;
            } else if (role_is(M, "user")) {
                puts_(&b, "Human: ");
                if (pending) {
                    bool any = false;
                    for (size_t k = sys_from; k < sys_to; k++)
                        if (role_is(&msgs[k], "system")) {
                            content(&b, &msgs[k], false);
                            any = any || msgs[k].content_len;
                        }
                    if (any) puts_(&b, "\n\n");
                    pending = false;
                }
                content(&b, M, false);
                puts_(&b, "\n\nAssistant: </s>");
            } else {
                content(&b, M, false);
                puts_(&b, "</s>");
            }
        }
    } else if (!strcmp(f, "openchat")) {
        EACH {
            if (role_is(M, "system")) {
                content(&b, M, false);
            } else {
                puts_(&b, "GPT4 Correct ");
                char c = (char)toupper((unsigned char)M->role[0]);
                put(&b, &c, 1);
                put(&b, M->role + 1, M->role_len - 1);
                puts_(&b, ": ");
                content(&b, M, false);
            }
            puts_(&b, "<|end_of_turn|>");
        }
        if (ass) puts_(&b, "GPT4 Correct Assistant:");
    } else if (!strcmp(f, "vicuna") || !strcmp(f, "vicuna-orca")) {
        bool orca = !strcmp(f, "vicuna-orca");
        EACH {
            if (role_is(M, "system")) {
                if (orca) puts_(&b, "SYSTEM: ");
                content(&b, M, false);
                puts_(&b, orca ? "\n" : "\n\n");
            } else if (role_is(M, "user")) {
                puts_(&b, "USER: ");
                content(&b, M, false);
                puts_(&b, "\n");
            } else if (role_is(M, "assistant")) {
                puts_(&b, "ASSISTANT: ");
                content(&b, M, false);
                puts_(&b, "</s>\n");
            }
        }
        if (ass) puts_(&b, "ASSISTANT:");
    } else if (!strcmp(f, "deepseek")) {
        EACH {
            if (role_is(M, "system")) {
                content(&b, M, false);
            } else if (role_is(M, "user")) {
                puts_(&b, "### Instruction:\n");
                content(&b, M, false);
                puts_(&b, "\n");
            } else if (role_is(M, "assistant")) {
                puts_(&b, "### Response:\n");
                content(&b, M, false);
                puts_(&b, "\n<|EOT|>\n");
            }
        }
        if (ass) puts_(&b, "### Response:\n");
    } else if (!strcmp(f, "deepseek2")) {
        EACH {
            if (role_is(M, "system")) {
                content(&b, M, false);
                puts_(&b, "\n\n");
            } else if (role_is(M, "user")) {
                puts_(&b, "User: ");
                content(&b, M, false);
                puts_(&b, "\n\n");
            } else if (role_is(M, "assistant")) {
                puts_(&b, "Assistant: ");
                content(&b, M, false);
                puts_(&b, "<\xef\xbd\x9c"
                          "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>");
            }
        }
        if (ass) puts_(&b, "Assistant:");
    } else if (!strcmp(f, "deepseek3")) {
        EACH {
            if (role_is(M, "system")) {
                content(&b, M, false);
                puts_(&b, "\n\n");
            } else if (role_is(M, "user")) {
                puts_(&b, "<\xef\xbd\x9cUser\xef\xbd\x9c>");
                content(&b, M, false);
            } else if (role_is(M, "assistant")) {
                puts_(&b, "<\xef\xbd\x9c"
                          "Assistant\xef\xbd\x9c>");
                content(&b, M, false);
                puts_(&b, "<\xef\xbd\x9c"
                          "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>");
            }
        }
        if (ass)
            puts_(&b, "<\xef\xbd\x9c"
                      "Assistant\xef\xbd\x9c>");
    } else if (!strcmp(f, "command-r")) {
        EACH {
            const char *tag = role_is(M, "system")      ? "<|SYSTEM_TOKEN|>"
                              : role_is(M, "user")      ? "<|USER_TOKEN|>"
                              : role_is(M, "assistant") ? "<|CHATBOT_TOKEN|>"
                                                        : NULL;
            if (!tag) continue;
            puts_(&b, "<|START_OF_TURN_TOKEN|>");
            puts_(&b, tag);
            content(&b, M, true);
            puts_(&b, "<|END_OF_TURN_TOKEN|>");
        }
        if (ass) puts_(&b, "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>");
    } else if (!strcmp(f, "llama3") || !strcmp(f, "llama4")) {
        bool l4 = !strcmp(f, "llama4");
        const char *hs = l4 ? "<|header_start|>" : "<|start_header_id|>";
        const char *he = l4 ? "<|header_end|>\n\n" : "<|end_header_id|>\n\n";
        EACH {
            puts_(&b, hs);
            role(&b, M);
            puts_(&b, he);
            content(&b, M, true);
            puts_(&b, l4 ? "<|eot|>" : "<|eot_id|>");
        }
        if (ass) {
            puts_(&b, hs);
            puts_(&b, "assistant");
            puts_(&b, he);
        }
    } else if (!strcmp(f, "chatglm3") || !strcmp(f, "chatglm4")) {
        bool v4 = !strcmp(f, "chatglm4");
        puts_(&b, v4 ? "[gMASK]<sop>" : "[gMASK]sop");
        EACH {
            puts_(&b, "<|");
            role(&b, M);
            puts_(&b, v4 ? "|>\n" : "|>\n ");
            content(&b, M, false);
        }
        if (ass) puts_(&b, v4 ? "<|assistant|>\n" : "<|assistant|>");
    } else if (!strcmp(f, "glmedge")) {
        EACH {
            puts_(&b, "<|");
            role(&b, M);
            puts_(&b, "|>\n");
            content(&b, M, false);
        }
        if (ass) puts_(&b, "<|assistant|>");
    } else if (!strcmp(f, "minicpm")) {
        EACH {
            if (role_is(M, "user")) {
                puts_(&b, "<\xe7\x94\xa8\xe6\x88\xb7>");
                content(&b, M, true);
                puts_(&b, "<AI>");
            } else {
                content(&b, M, true);
            }
        }
    } else if (!strcmp(f, "exaone3")) {
        EACH {
            if (role_is(M, "system")) {
                puts_(&b, "[|system|]");
                content(&b, M, true);
                puts_(&b, "[|endofturn|]\n");
            } else if (role_is(M, "user")) {
                puts_(&b, "[|user|]");
                content(&b, M, true);
                puts_(&b, "\n");
            } else if (role_is(M, "assistant")) {
                puts_(&b, "[|assistant|]");
                content(&b, M, true);
                puts_(&b, "[|endofturn|]\n");
            }
        }
        if (ass) puts_(&b, "[|assistant|]");
    } else if (!strcmp(f, "granite")) {
        EACH {
            puts_(&b, "<|start_of_role|>");
            role(&b, M);
            puts_(&b, "<|end_of_role|>");
            if (role_is(M, "assistant_tool_call")) puts_(&b, "<|tool_call|>");
            content(&b, M, false);
            puts_(&b, "<|end_of_text|>\n");
        }
        if (ass) puts_(&b, "<|start_of_role|>assistant<|end_of_role|>\n");
    } else if (!strcmp(f, "megrez")) {
        EACH {
            puts_(&b, "<|role_start|>");
            role(&b, M);
            puts_(&b, "<|role_end|>");
            content(&b, M, false);
            puts_(&b, "<|turn_end|>");
        }
        if (ass) puts_(&b, "<|role_start|>assistant<|role_end|>");
    } else if (!strcmp(f, "smolvlm")) {
        puts_(&b, "<|im_start|>");
        EACH {
            if (role_is(M, "system")) {
                content(&b, M, false);
                puts_(&b, "\n\n");
            } else if (role_is(M, "user")) {
                puts_(&b, "User: ");
                content(&b, M, false);
                puts_(&b, "<end_of_utterance>\n");
            } else {
                puts_(&b, "Assistant: ");
                content(&b, M, false);
                puts_(&b, "<end_of_utterance>\n");
            }
        }
        if (ass) puts_(&b, "Assistant:");
    } else {
        return REALM_E_NOT_FOUND;
    }
#undef EACH
#undef M
    *bp = b; /* every return above comes before the first append */
    if (b.nomem) return REALM_E_NOMEM;
    if (b.buf.len > INT64_MAX) return REALM_E_LIMIT;
    return (int64_t)b.buf.len;
}

/* ---- template selection ---- */

/* The family renderer for a chat with family `name` forced, or NULL when the Jinja template
 * renders it. *fallback tells that nothing matched and ChatML stands in. */
static const char *pick_family(const struct realm_tokenizer *t, const char *name, bool *fallback) {
    *fallback = false;
    if (name) return family(name);
    if (t->tpl && !t->family_forced) return NULL;
    if (t->chat_family) return t->chat_family;
    *fallback = true;
    return family("chatml");
}

int tok_chat_set_template(struct realm_tokenizer *t, const char *src, size_t len,
                          struct realm_err *err) {
    struct realm_template *tpl = NULL;
    int rc = realm_template_parse(src, len, &tpl, err);
    if (rc) return rc;
    char *copy = realm_strndup(src, len);
    if (!copy) {
        realm_template_free(tpl);
        return realm_err_set(err, REALM_E_NOMEM, "chat template: out of memory");
    }
    realm_template_free(t->tpl);
    realm_free(t->chat_template);
    t->tpl = tpl;
    t->chat_template = copy;
    t->chat_template_len = len;
    t->family_forced = false;
    const char *f = tok_chat_detect(src, len);
    if (f) t->chat_family = f; /* what realm_tokenizer_chat_template reports */
    return REALM_OK;
}

#define MAX_TEMPLATE_FILE ((size_t)1 << 20)

int realm_tokenizer_set_chat_template(struct realm_tokenizer *t, const char *spec,
                                      struct realm_err *err) {
    if (!t || !spec || !spec[0])
        return realm_err_set(err, REALM_E_INVALID, "chat template: empty name or path");
    const char *f = family(spec);
    if (f) {
        t->chat_family = f;
        t->family_forced = true;
        return REALM_OK;
    }
    FILE *fp = fopen(spec, "rb");
    if (!fp)
        return realm_err_set(err, REALM_E_IO,
                             "chat template: %s: not a family name and cannot be opened", spec);
    char *buf = realm_malloc(MAX_TEMPLATE_FILE + 1);
    size_t n = buf ? fread(buf, 1, MAX_TEMPLATE_FILE + 1, fp) : 0;
    bool bad = ferror(fp);
    fclose(fp);
    int rc;
    if (!buf)
        rc = realm_err_set(err, REALM_E_NOMEM, "chat template: out of memory");
    else if (bad)
        rc = realm_err_set(err, REALM_E_IO, "chat template: %s: read error", spec);
    else if (n > MAX_TEMPLATE_FILE)
        rc = realm_err_set(err, REALM_E_LIMIT, "chat template: %s: larger than 1 MiB", spec);
    else {
        struct realm_err e;
        realm_err_clear(&e);
        rc = tok_chat_set_template(t, buf, n, &e);
        if (rc) realm_err_set(err, rc, "chat template: %s: %s", spec, e.msg);
    }
    realm_free(buf);
    return rc;
}

const char *realm_tokenizer_tool_format(const struct realm_tokenizer *t) {
    const char *s = t->chat_template;
    size_t n = t->chat_template_len;
    if (s && !t->family_forced) {
        if (has(s, n, "<tool_call>")) return "hermes";
        if (has(s, n, "<|start_header_id|>ipython<|end_header_id|>")) return "llama3";
    }
    return "hermes";
}

/* ---- tool polyfills: for templates that do not render tools or tool calls themselves ---- */

/* The instructions given to a model whose template ignores `tools` (the Hermes format, which the
 * default guest parses). */
static const char k_tools_head[] =
    "# Tools\n\nYou can call functions to help answer the user. The available functions are listed "
    "below, one "
    "JSON signature per line, between <tools> and </tools>:\n<tools>";
static const char k_tools_tail[] = "\n</tools>\n\nTo call a function, answer with a JSON object "
                                   "holding its name and arguments between "
                                   "<tool_call> and </tool_call> tags, one call per "
                                   "block:\n<tool_call>\n{\"name\": <function-name>, "
                                   "\"arguments\": <arguments-as-a-JSON-object>}\n</tool_call>";

/* A message list after the polyfills; owned[i] (may be NULL) is msgs[i]'s content when rewritten.
 */
struct poly {
    struct realm_chat_msg *msgs;
    char **owned;
    size_t n;
};

static void poly_free(struct poly *p) {
    if (p->owned)
        for (size_t i = 0; i < p->n; i++)
            realm_free(p->owned[i]);
    realm_free(p->owned);
    realm_free(p->msgs);
}

static bool mentions(const struct realm_tokenizer *t, bool jinja, const char *word) {
    return jinja && t->chat_template && has(t->chat_template, t->chat_template_len, word);
}

/* The text of one tool call as the Hermes format writes it. */
static int call_text(struct realm_buf *b, const cJSON *call) {
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(call, "function");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
    char *printed = NULL;
    const char *a = "{}";
    if (cJSON_IsString(args))
        a = args->valuestring;
    else if (args && (printed = cJSON_PrintUnformatted(args)))
        a = printed;
    int rc = realm_buf_puts(b, "<tool_call>\n{\"name\": ") ||
             realm_buf_json_string(b, cJSON_IsString(name) ? name->valuestring : "",
                                   cJSON_IsString(name) ? strlen(name->valuestring) : 0) ||
             realm_buf_puts(b, ", \"arguments\": ") || realm_buf_puts(b, a) ||
             realm_buf_puts(b, "}\n</tool_call>");
    cJSON_free(printed);
    return rc;
}

static int tools_text(struct realm_buf *b, const cJSON *tools) {
    int rc = realm_buf_puts(b, k_tools_head);
    const cJSON *tool;
    cJSON_ArrayForEach(tool, tools) {
        char *p = cJSON_PrintUnformatted(tool);
        rc = rc || !p || realm_buf_puts(b, "\n") || realm_buf_puts(b, p);
        cJSON_free(p);
    }
    return rc || realm_buf_puts(b, k_tools_tail);
}

/* Applies the polyfills a renderer needs (jinja: the template renders; else a family does). */
static int polyfill(const struct realm_tokenizer *t, bool jinja, const struct realm_chat_msg *msgs,
                    size_t n, const cJSON *tools, struct poly *p) {
    bool want_tools = tools && cJSON_GetArraySize(tools) > 0 && !mentions(t, jinja, "tools");
    bool calls_ok = mentions(t, jinja, "tool_calls");
    bool sys_first = n && msgs[0].role_len == 6 && !memcmp(msgs[0].role, "system", 6);
    size_t extra = want_tools && !sys_first ? 1 : 0;
    memset(p, 0, sizeof *p);
    p->n = n + extra;
    p->msgs = realm_calloc(p->n ? p->n : 1, sizeof *p->msgs);
    p->owned = realm_calloc(p->n ? p->n : 1, sizeof *p->owned);
    if (!p->msgs || !p->owned) return REALM_E_NOMEM;
    if (n) memcpy(p->msgs + extra, msgs, n * sizeof *msgs);
    int rc = 0;
    for (size_t i = 0; i < p->n && !rc; i++) {
        struct realm_chat_msg *m = &p->msgs[i];
        bool tools_here = want_tools && i == 0;
        bool calls_here = !calls_ok && m->tool_calls && cJSON_GetArraySize(m->tool_calls) > 0;
        if (!tools_here && !calls_here) continue;
        struct realm_buf b = {0};
        if (tools_here && extra) {
            m->role = "system";
            m->role_len = 6;
            m->content = "";
            m->content_len = 0;
        }
        rc = m->content_len ? realm_buf_append(&b, m->content, m->content_len) : 0;
        if (tools_here) rc = rc || (b.len && realm_buf_puts(&b, "\n\n")) || tools_text(&b, tools);
        if (calls_here) {
            const cJSON *c;
            cJSON_ArrayForEach(c, m->tool_calls) rc =
                rc || (b.len && realm_buf_puts(&b, "\n")) || call_text(&b, c);
            m->tool_calls = NULL;
        }
        if (rc) {
            realm_buf_free(&b);
            break;
        }
        p->owned[i] = b.data;
        m->content = b.data ? b.data : "";
        m->content_len = b.len;
    }
    return rc ? REALM_E_NOMEM : REALM_OK;
}

/* ---- Jinja rendering ---- */

/* Sentinel pairs (private-use code points) marking content slots; the first pair absent from the
 * real rendering is used, so no input can imitate one. */
static const char *const k_sentinels[][2] = {
    {"\xef\xa3\xb0", "\xef\xa3\xb1"}, /* U+F8F0, U+F8F1 */
    {"\xef\xa3\xb2", "\xef\xa3\xb3"},
    {"\xef\xa3\xb4", "\xef\xa3\xb5"},
    {"\xef\xa3\xb6", "\xef\xa3\xb7"},
};

static cJSON *str_n(const char *s, size_t n) {
    char small[128];
    char *tmp = n < sizeof small ? small : realm_malloc(n + 1);
    if (!tmp) return NULL;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    cJSON *j = cJSON_CreateString(tmp);
    if (tmp != small) realm_free(tmp);
    return j;
}

/* An assistant's tool_calls for a template: OpenAI gives "arguments" as a JSON string, templates
 * (Qwen's, Llama 3.1's) expect the object. */
static cJSON *calls_for_template(const cJSON *calls) {
    cJSON *c = cJSON_Duplicate(calls, true);
    cJSON *call;
    cJSON_ArrayForEach(call, c) {
        cJSON *fn = cJSON_GetObjectItemCaseSensitive(call, "function");
        cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        if (!cJSON_IsString(args)) continue;
        cJSON *obj = cJSON_Parse(args->valuestring);
        if (cJSON_IsObject(obj))
            cJSON_ReplaceItemInObjectCaseSensitive(fn, "arguments", obj);
        else
            cJSON_Delete(obj);
    }
    return c;
}

/* The messages variable: contents as given, or (sentinel != NULL) each non-empty content replaced
 * by opener + its index + closer. */
static cJSON *messages_json(const struct poly *p, const char *const *sentinel) {
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < p->n; i++) {
        const struct realm_chat_msg *m = &p->msgs[i];
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            goto fail;
        }
        cJSON *content;
        if (sentinel && m->content_len) {
            char mark[48];
            snprintf(mark, sizeof mark, "%s%zu%s", sentinel[0], i, sentinel[1]);
            content = cJSON_CreateString(mark);
        } else {
            content = str_n(m->content ? m->content : "", m->content_len);
        }
        if (!cJSON_AddItemToObject(o, "role", str_n(m->role, m->role_len)) || !content ||
            !cJSON_AddItemToObject(o, "content", content))
            goto fail;
        if (m->name && !cJSON_AddStringToObject(o, "name", m->name)) goto fail;
        if (m->tool_call_id && !cJSON_AddStringToObject(o, "tool_call_id", m->tool_call_id))
            goto fail;
        if (m->tool_calls) {
            cJSON *c = calls_for_template(m->tool_calls);
            if (!c || !cJSON_AddItemToObject(o, "tool_calls", c)) {
                cJSON_Delete(c);
                goto fail;
            }
        }
    }
    return arr;
fail:
    cJSON_Delete(arr);
    return NULL;
}

static void token_text(const struct realm_tokenizer *t, int32_t id, char *out, size_t cap) {
    size_t len = 0;
    const char *s = id >= 0 && id < t->n_vocab ? tok_text(t, id, &len) : "";
    if (len >= cap) len = 0;
    memcpy(out, s, len);
    out[len] = 0;
}

/* One rendering of the template with p's messages (sentinel: see messages_json). */
static int render_once(const struct realm_tokenizer *t, const struct poly *p,
                       const struct realm_chat_opts *o, const char *const *sentinel, char **out,
                       size_t *len, struct realm_err *err) {
    char bos[256], eos[256];
    token_text(t, t->bos, bos, sizeof bos);
    token_text(t, t->eos, eos, sizeof eos);
    cJSON *msgs = messages_json(p, sentinel), *vars = NULL;
    if (!msgs) return realm_err_set(err, REALM_E_NOMEM, "chat: out of memory");
    const cJSON *tools = o->tools && cJSON_GetArraySize(o->tools) > 0 ? o->tools : NULL;
    int rc = realm_template_chat_vars(msgs, tools, o->add_generation_prompt, bos, eos, o->extra,
                                      &vars, err);
    if (!rc) rc = realm_template_render(t->tpl, vars, NULL, out, len, err);
    cJSON_Delete(vars);
    cJSON_Delete(msgs);
    return rc;
}

static size_t lead(const char *s, size_t n, bool nl_only) {
    size_t a = 0;
    while (a < n && (nl_only ? s[a] == '\n' : isspace((unsigned char)s[a]) != 0))
        a++;
    return a;
}

static size_t trail(const char *s, size_t n, bool nl_only) {
    size_t b = 0;
    while (b < n && (nl_only ? s[n - 1 - b] == '\n' : isspace((unsigned char)s[n - 1 - b]) != 0))
        b++;
    return b;
}

/* The markup after position i of sent (up to the next opener or the end). */
static size_t markup_len(const char *sent, size_t len, size_t i, const char *opener) {
    const char *o = memmem(sent + i, len - i, opener, strlen(opener));
    return o ? (size_t)(o - sent) - i : len - i;
}

static int add_span(struct tok_span **spans, size_t *n, size_t *cap, size_t off, size_t len) {
    if (!len) return REALM_OK;
    if (*n && (*spans)[*n - 1].off + (*spans)[*n - 1].len == off) {
        (*spans)[*n - 1].len += len;
        return REALM_OK;
    }
    if (tok_buf_reserve((void **)spans, cap, *n + 1, sizeof **spans)) return REALM_E_NOMEM;
    (*spans)[(*n)++] = (struct tok_span){off, len};
    return REALM_OK;
}

int tok_chat_map_spans(const char *sent, size_t sent_len, const char *real, size_t real_len,
                       const char *opener, const char *closer, const struct tok_slot *slots,
                       size_t n_slots, struct tok_span **spans, size_t *n_spans) {
    size_t ol = strlen(opener), cl = strlen(closer), cap = 0, i = 0, pos = 0;
    *spans = NULL;
    *n_spans = 0;
    /* a closer outside a sentinel means the template cut one apart */
    size_t n_open = 0, n_close = 0;
    for (const char *q = sent; (q = memmem(q, sent_len - (size_t)(q - sent), opener, ol)); q += ol)
        n_open++;
    for (const char *q = sent; (q = memmem(q, sent_len - (size_t)(q - sent), closer, cl)); q += cl)
        n_close++;
    int rc = n_open == n_close ? REALM_OK : REALM_E_FORMAT;
    while (rc == REALM_OK) {
        size_t m = markup_len(sent, sent_len, i, opener);
        if (m > real_len - pos || memcmp(sent + i, real + pos, m)) {
            rc = REALM_E_FORMAT;
            break;
        }
        i += m;
        pos += m;
        if (i == sent_len) {
            if (pos != real_len) rc = REALM_E_FORMAT;
            break;
        }
        /* a sentinel: opener, decimal index, closer */
        size_t k = i + ol, idx = 0, digits = 0;
        while (k < sent_len && sent[k] >= '0' && sent[k] <= '9' && digits < 9)
            idx = idx * 10 + (size_t)(sent[k++] - '0'), digits++;
        if (!digits || idx >= n_slots || sent_len - k < cl || memcmp(sent + k, closer, cl)) {
            rc = REALM_E_FORMAT;
            break;
        }
        i = k + cl;
        size_t next = markup_len(sent, sent_len, i, opener);
        const char *c = slots[idx].text;
        size_t n = slots[idx].len;
        size_t as[3] = {0, lead(c, n, false), lead(c, n, true)},
               bs[3] = {0, trail(c, n, false), trail(c, n, true)};
        bool found = false;
        for (int x = 0; x < 3 && !found; x++) {
            for (int y = 0; y < 3 && !found; y++) {
                size_t a = as[x], b = bs[y];
                if (a + b > n) b = n - a; /* all whitespace */
                size_t w = n - a - b;
                if (w > real_len - pos || memcmp(real + pos, c + a, w)) continue;
                if (next > real_len - pos - w || memcmp(real + pos + w, sent + i, next)) continue;
                found = true;
                rc = add_span(spans, n_spans, &cap, pos, w);
                pos += w;
            }
        }
        if (!found) rc = REALM_E_FORMAT;
    }
    if (rc) {
        realm_free(*spans);
        *spans = NULL;
        *n_spans = 0;
    }
    return rc;
}

/* The rendered prompt; spans (when asked for) where message contents lie. */
struct rendered {
    char *text;
    size_t len;
    struct tok_span *spans;
    size_t n_spans;
};

static void rendered_free(struct rendered *r) {
    realm_free(r->text);
    realm_free(r->spans);
    memset(r, 0, sizeof *r);
}

static int render_jinja(const struct realm_tokenizer *t, const struct poly *p,
                        const struct realm_chat_opts *o, bool record, struct rendered *r,
                        struct realm_err *err) {
    int rc = render_once(t, p, o, NULL, &r->text, &r->len, err);
    if (rc || !record) return rc;
    size_t k = 0;
    while (k < sizeof k_sentinels / sizeof k_sentinels[0] &&
           (has(r->text, r->len, k_sentinels[k][0]) || has(r->text, r->len, k_sentinels[k][1])))
        k++;
    if (k == sizeof k_sentinels / sizeof k_sentinels[0])
        return realm_err_set(err, REALM_E_FORMAT,
                             "chat: the messages use every sentinel character U+F8F0..U+F8F7");
    char *sent = NULL;
    size_t sent_len = 0;
    struct realm_err e2;
    rc = render_once(t, p, o, k_sentinels[k], &sent, &sent_len, &e2);
    if (rc)
        return realm_err_set(
            err, rc == REALM_E_NOMEM ? rc : REALM_E_FORMAT,
            "chat: the template behaves differently when contents are replaced by markers (%s); "
            "refusing to tokenize content as markup",
            e2.msg);
    struct tok_slot *slots = realm_calloc(p->n ? p->n : 1, sizeof *slots);
    if (!slots) rc = REALM_E_NOMEM;
    for (size_t i = 0; slots && i < p->n; i++)
        slots[i] = (struct tok_slot){p->msgs[i].content, p->msgs[i].content_len};
    if (!rc)
        rc = tok_chat_map_spans(sent, sent_len, r->text, r->len, k_sentinels[k][0],
                                k_sentinels[k][1], slots, p->n, &r->spans, &r->n_spans);
    realm_free(slots);
    realm_free(sent);
    if (rc == REALM_E_FORMAT)
        return realm_err_set(
            err, rc,
            "chat: cannot tell where the messages' contents lie in the template's output "
            "(it rewrites them beyond trimming); refusing to tokenize content as markup");
    if (rc) return realm_err_set(err, rc, "chat: %s", realm_strerror(rc));
    return REALM_OK;
}

/* llama.cpp drops a template's leading bos_token when the tokenizer adds BOS itself. */
static void drop_bos(const struct realm_tokenizer *t, struct rendered *r) {
    if (!t->add_bos || t->bos < 0) return;
    size_t bl = 0;
    const char *b = tok_text(t, t->bos, &bl);
    if (!bl || r->len < bl || memcmp(r->text, b, bl)) return;
    if (r->n_spans && r->spans[0].off < bl) return; /* content, not the template's token */
    memmove(r->text, r->text + bl, r->len - bl + 1);
    r->len -= bl;
    for (size_t i = 0; i < r->n_spans; i++)
        r->spans[i].off -= bl;
}

static int render_any(const struct realm_tokenizer *t, const struct realm_chat_msg *msgs,
                      size_t n_msgs, const struct realm_chat_opts *o, bool record,
                      struct rendered *r, struct realm_err *err) {
    memset(r, 0, sizeof *r);
    if (n_msgs && !msgs) return realm_err_set(err, REALM_E_INVALID, "chat: NULL messages");
    for (size_t i = 0; i < n_msgs; i++)
        if (!valid_role(&msgs[i]))
            return realm_err_set(
                err, REALM_E_INVALID,
                "chat: messages[%zu]: a role not [A-Za-z0-9_-]{1,64}, or NULL text with a length",
                i);
    bool fallback;
    const char *f = pick_family(t, o->name, &fallback);
    if (o->name && !f)
        return realm_err_set(err, REALM_E_NOT_FOUND,
                             "chat: template %s: unknown, expected a family name", o->name);
    if (fallback && !atomic_exchange(&((struct realm_tokenizer *)t)->warned_chatml, true))
        realm_log(REALM_LOG_WARN, "tokenizer",
                  "no chat template in the model and none configured: chats use ChatML");
    struct poly p;
    int rc = polyfill(t, !f, msgs, n_msgs, o->tools, &p);
    if (rc) {
        poly_free(&p);
        return realm_err_set(err, rc, "chat: out of memory");
    }
    if (!f) {
        rc = render_jinja(t, &p, o, record, r, err);
        if (!rc) drop_bos(t, r);
    } else {
        struct sb b = {.record = record};
        int64_t len = render(f, p.msgs, p.n, o->add_generation_prompt, &b);
        if (len >= 0 && !b.buf.data && realm_buf_puts(&b.buf, "")) len = REALM_E_NOMEM;
        if (len < 0) {
            realm_buf_free(&b.buf);
            realm_free(b.spans);
            rc = realm_err_set(err, (int)len, "chat: %s", realm_strerror((int)len));
        } else {
            *r = (struct rendered){b.buf.data, (size_t)len, b.spans, b.n_spans};
        }
    }
    poly_free(&p);
    if (rc) rendered_free(r);
    return rc;
}

int realm_chat_render(const struct realm_tokenizer *t, const struct realm_chat_msg *msgs,
                      size_t n_msgs, const struct realm_chat_opts *opts, char **out,
                      size_t *out_len, struct realm_err *err) {
    if (!t || !opts || !out || !out_len)
        return realm_err_set(err, REALM_E_INVALID, "chat: NULL argument");
    *out = NULL;
    struct rendered r;
    int rc = render_any(t, msgs, n_msgs, opts, false, &r, err);
    if (rc) return rc;
    *out = r.text;
    *out_len = r.len;
    realm_free(r.spans);
    return REALM_OK;
}

int64_t realm_chat_format(const struct realm_tokenizer *t, const char *name,
                          const struct realm_chat_msg *msgs, size_t n_msgs,
                          bool add_generation_prompt, char *out, size_t cap) {
    if (!t && !name) return REALM_E_NOT_FOUND;
    struct realm_chat_opts o = {.name = name, .add_generation_prompt = add_generation_prompt};
    char *text = NULL;
    size_t len = 0;
    int rc;
    if (!t) { /* a family by name needs no tokenizer */
        struct sb b = {0};
        int64_t n = render(family(name), msgs, n_msgs, add_generation_prompt, &b);
        if (n > 0 && out && cap) memcpy(out, b.buf.data, (size_t)n < cap ? (size_t)n : cap);
        realm_buf_free(&b.buf);
        return n;
    }
    rc = realm_chat_render(t, msgs, n_msgs, &o, &text, &len, NULL);
    if (rc) return rc;
    if (len > INT64_MAX) {
        realm_free(text);
        return REALM_E_LIMIT;
    }
    if (len && out && cap) memcpy(out, text, len < cap ? len : cap);
    realm_free(text);
    return (int64_t)len;
}

/* Why one string: tokenizing each content on its own would put a token boundary at every edge
 * between markup and content, and byte-level BPE pre-tokenizers (and SPM merges) join text
 * across those edges ("\n" + "\n", " " + word), so the ids would drift from what the model saw
 * in training and from tokenize(chat_format(...)). Instead the rendered string is tokenized
 * whole, as before, and only the special-token recognition step knows where the contents are:
 * a control token whose text overlaps a content is left as text. */
int realm_chat_tokenize_ex(const struct realm_tokenizer *t, const struct realm_chat_msg *msgs,
                           size_t n_msgs, const struct realm_chat_opts *opts, uint32_t flags,
                           int32_t *out, int64_t cap, int64_t *n_out, struct realm_err *err) {
    if (!t || !opts || !n_out || cap < 0 || (cap > 0 && !out))
        return realm_err_set(err, REALM_E_INVALID,
                             "chat: NULL tokenizer, options, count or buffer");
    if (flags & ~(uint32_t)REALM_TOKENIZE_ADD_BOS)
        return realm_err_set(err, REALM_E_INVALID, "chat: flags 0x%x, expected only ADD_BOS",
                             (unsigned)flags);
    struct rendered r;
    int rc = render_any(t, msgs, n_msgs, opts, true, &r, err);
    if (rc) return rc;
    if (r.len > (size_t)INT32_MAX / 4) {
        rendered_free(&r);
        return realm_err_set(err, REALM_E_LIMIT, "chat: prompt of %zu bytes, expected <= %d", r.len,
                             INT32_MAX / 4);
    }
    rc = tok_tokenize(t, r.text, r.len, flags | REALM_TOKENIZE_PARSE_SPECIAL, r.spans, r.n_spans,
                      out, cap, n_out);
    rendered_free(&r);
    if (rc == REALM_E_TOO_SMALL)
        return realm_err_set(err, rc, "chat: %lld tokens, buffer of %lld", (long long)*n_out,
                             (long long)cap);
    if (rc) return realm_err_set(err, rc, "chat: tokenize: %s", realm_strerror(rc));
    return REALM_OK;
}

int realm_chat_tokenize(const struct realm_tokenizer *t, const char *name,
                        const struct realm_chat_msg *msgs, size_t n_msgs,
                        bool add_generation_prompt, uint32_t flags, int32_t *out, int64_t cap,
                        int64_t *n_out, struct realm_err *err) {
    struct realm_chat_opts o = {.name = name, .add_generation_prompt = add_generation_prompt};
    return realm_chat_tokenize_ex(t, msgs, n_msgs, &o, flags, out, cap, n_out, err);
}
