/*
 * chat.c — chat templates. The family of a model's Jinja template (tokenizer.chat_template) is
 * recognised by the markers it contains, in the order of llama.cpp's llm_chat_detect_template,
 * and messages are rendered by a fixed C renderer per family (llm_chat_apply_template); no Jinja
 * is interpreted. A file without a template gets a family from its special tokens
 * (<start_of_turn> → gemma, <|im_start|> → chatml, ...), since e.g. gemma-3 GGUFs often ship
 * none. realm_chat_tokenize renders the same text while noting where each message's content
 * lies, so that the tokenizer recognises control tokens in the template's markup only.
 *
 * Owns nothing. Thread-safe.
 */
#include <ctype.h>
#include <string.h>

#include "realm/alloc.h"
#include "realm/buf.h"
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

/* llm_chat_apply_template for family `name` (NULL: t's) into bp (which the caller frees, on
 * failure too). Returns the length or REALM_E_NOT_FOUND / REALM_E_INVALID / REALM_E_LIMIT /
 * REALM_E_NOMEM. */
static int64_t render(const struct realm_tokenizer *t, const char *name,
                      const struct realm_chat_msg *msgs, size_t n_msgs, bool add_generation_prompt,
                      struct sb *bp) {
    const char *f = name ? family(name) : (t ? t->chat_family : NULL);
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

int64_t realm_chat_format(const struct realm_tokenizer *t, const char *name,
                          const struct realm_chat_msg *msgs, size_t n_msgs,
                          bool add_generation_prompt, char *out, size_t cap) {
    struct sb b = {0};
    int64_t len = render(t, name, msgs, n_msgs, add_generation_prompt, &b);
    if (len > 0 && out && cap) memcpy(out, b.buf.data, (size_t)len < cap ? (size_t)len : cap);
    realm_buf_free(&b.buf);
    return len;
}

/* Why one string: tokenizing each content on its own would put a token boundary at every edge
 * between markup and content, and byte-level BPE pre-tokenizers (and SPM merges) join text
 * across those edges ("\n" + "\n", " " + word), so the ids would drift from what the model saw
 * in training and from tokenize(chat_format(...)). Instead the rendered string is tokenized
 * whole, as before, and only the special-token recognition step knows where the contents are:
 * a control token whose text overlaps a content is left as text. */
int realm_chat_tokenize(const struct realm_tokenizer *t, const char *name,
                        const struct realm_chat_msg *msgs, size_t n_msgs,
                        bool add_generation_prompt, uint32_t flags, int32_t *out, int64_t cap,
                        int64_t *n_out, struct realm_err *err) {
    if (!t || !n_out || cap < 0 || (cap > 0 && !out))
        return realm_err_set(err, REALM_E_INVALID, "chat: NULL tokenizer, count or buffer");
    if (flags & ~(uint32_t)REALM_TOKENIZE_ADD_BOS)
        return realm_err_set(err, REALM_E_INVALID, "chat: flags 0x%x, expected only ADD_BOS",
                             (unsigned)flags);
    struct sb b = {.record = true};
    int64_t len = render(t, name, msgs, n_msgs, add_generation_prompt, &b);
    if (len < 0) {
        realm_buf_free(&b.buf);
        realm_free(b.spans);
    }
    if (len == REALM_E_NOT_FOUND)
        return realm_err_set(err, len, "chat: template %s: unknown, expected a family name",
                             name ? name : "(the model's)");
    if (len < 0)
        return realm_err_set(err, (int)len, "chat: messages: %s",
                             len == REALM_E_INVALID
                                 ? "a role not [A-Za-z0-9_-]{1,64}, or NULL text with a length"
                                 : realm_strerror((int)len));
    if ((uint64_t)len > (size_t)INT32_MAX / 4) {
        realm_buf_free(&b.buf);
        realm_free(b.spans);
        return realm_err_set(err, REALM_E_LIMIT, "chat: prompt of %lld bytes, expected <= %d", (long long)len,
                             INT32_MAX / 4);
    }
    int rc = tok_tokenize(t, b.buf.data ? b.buf.data : "", (size_t)len, flags | REALM_TOKENIZE_PARSE_SPECIAL, b.spans,
                          b.n_spans, out, cap, n_out);
    realm_buf_free(&b.buf);
    realm_free(b.spans);
    if (rc == REALM_E_TOO_SMALL)
        return realm_err_set(err, rc, "chat: %lld tokens, buffer of %lld", (long long)*n_out,
                             (long long)cap);
    if (rc) return realm_err_set(err, rc, "chat: tokenize: %s", realm_strerror(rc));
    return REALM_OK;
}
