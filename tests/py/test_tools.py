"""Chat templates and OpenAI tool calling through `realm serve`, with the official openai client:
SmolLM2 renders its own Jinja template; `tools` + tool_choice "required" (and a named function)
return tool_calls whose arguments are JSON with the schema's required keys (the grammar forces
them); streamed delta.tool_calls reassemble to the same call; a follow-up with the tool's result
works; tool_choice "none" answers in text; stories260K (no template) chats through the ChatML
fallback; a configured chat_template (a Jinja file or a family name) replaces the file's."""
import json

import pytest

from conftest import SHARED, model_path, start_server, tenant

openai = pytest.importorskip("openai")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the local time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]

# a template that shows where it puts tools and tool calls (checked through the CLI's rendering)
CUSTOM_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def srv(realm_bin, tmp_path_factory):
    smol = model_path("SmolLM2-135M-Instruct.Q4_1.gguf")
    stories = SHARED / "models/stories260K.gguf"
    if not stories.exists():
        pytest.skip(f"{stories} not found")
    work = tmp_path_factory.mktemp("tools")
    (work / "custom.jinja").write_text(CUSTOM_TEMPLATE)
    (work / "raise.jinja").write_text("{% if tools %}{{ raise_exception('this template takes no tools') }}{% endif %}"
                                      + CUSTOM_TEMPLATE)
    key, t = tenant("alice")
    config = {
        "models": [{"name": "smollm2", "path": str(smol)},
                   {"name": "stories", "path": str(stories)},
                   {"name": "smollm2-file", "path": str(smol), "chat_template": "custom.jinja"},
                   {"name": "smollm2-llama3", "path": str(smol), "chat_template": "llama3"},
                   {"name": "smollm2-raise", "path": str(smol), "chat_template": str(work / "raise.jinja")}],
        "tenants": [t],
    }
    s = start_server(realm_bin, work, config, keys={"alice": key})
    yield s
    assert s.stop() == 0, s.log()


def client(srv):
    return srv.client("alice")


def check_call(call, name, required):
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == name
    args = json.loads(call.function.arguments)
    assert isinstance(args, dict)
    for k in required:
        assert k in args, (k, args)
    return args


def test_required_returns_a_call(srv):
    r = client(srv).chat.completions.create(model="smollm2", messages=ASK, tools=[WEATHER], tool_choice="required",
                                            max_tokens=96, temperature=0)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls", ch
    assert ch.message.content is None
    assert len(ch.message.tool_calls) >= 1
    args = check_call(ch.message.tool_calls[0], "get_weather", ["city", "unit"])
    assert args["unit"] in ("celsius", "fahrenheit")


def test_named_function_is_the_one_called(srv):
    r = client(srv).chat.completions.create(
        model="smollm2", messages=ASK, tools=[WEATHER, TIME], parallel_tool_calls=False,
        tool_choice={"type": "function", "function": {"name": "get_time"}}, max_tokens=96, temperature=0)
    calls = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls"
    assert len(calls) == 1
    check_call(calls[0], "get_time", ["city"])


def test_streamed_deltas_reassemble_to_the_same_call(srv):
    c = client(srv)
    kw = dict(model="smollm2", messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=96, temperature=0)
    whole = c.chat.completions.create(**kw).choices[0].message.tool_calls
    calls, finish = {}, None
    for chunk in c.chat.completions.create(stream=True, **kw):
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        for tc in d.tool_calls or []:
            cur = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            if tc.id:
                cur["id"] = tc.id
            if tc.function and tc.function.name:
                cur["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                cur["arguments"] += tc.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [calls[i]["name"] for i in sorted(calls)] == [w.function.name for w in whole]
    assert [json.loads(calls[i]["arguments"]) for i in sorted(calls)] == [json.loads(w.function.arguments)
                                                                        for w in whole]
    assert all(calls[i]["id"] and calls[i]["id"].startswith("call_") for i in calls)


def test_follow_up_with_the_tool_result(srv):
    c = client(srv)
    first = c.chat.completions.create(model="smollm2", messages=ASK, tools=[WEATHER], tool_choice="required",
                                      max_tokens=96, temperature=0).choices[0].message
    call = first.tool_calls[0]
    msgs = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "sunny"})},
    ]
    r = c.chat.completions.create(model="smollm2", messages=msgs, tools=[WEATHER], max_tokens=24, temperature=0)
    ch = r.choices[0]
    assert ch.finish_reason in ("stop", "length", "tool_calls")
    assert r.usage.prompt_tokens > 60  # the tool definitions, the call and its result are in the prompt
    if ch.finish_reason != "tool_calls":
        assert isinstance(ch.message.content, str)


def test_none_answers_in_text(srv):
    r = client(srv).chat.completions.create(model="smollm2", messages=ASK, tools=[WEATHER], tool_choice="none",
                                            max_tokens=16, temperature=0)
    ch = r.choices[0]
    assert ch.message.tool_calls is None
    assert isinstance(ch.message.content, str) and ch.message.content
    assert ch.finish_reason in ("stop", "length")


def test_chat_without_template_uses_chatml(srv):
    r = client(srv).chat.completions.create(model="stories", messages=[{"role": "user", "content": "Once upon"}],
                                            max_tokens=8, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert isinstance(r.choices[0].message.content, str)
    assert r.usage.prompt_tokens > 3
    assert "ChatML" in srv.log()


def test_configured_templates(srv):
    c = client(srv)
    base = dict(messages=[{"role": "user", "content": "Hi"}], max_tokens=1, temperature=0)
    # SmolLM2's own template adds its default system prompt; the configured file does not
    own = c.chat.completions.create(model="smollm2", **base).usage.prompt_tokens
    filed = c.chat.completions.create(model="smollm2-file", **base).usage.prompt_tokens
    assert filed < own
    # a family name: llama3's markup is not in SmolLM2's vocabulary, so it is tokenized as text (longer)
    l3 = c.chat.completions.create(model="smollm2-llama3", **base).usage.prompt_tokens
    assert l3 > filed


def test_template_error_is_a_400(srv):
    c = client(srv)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="smollm2-raise", messages=ASK, tools=[WEATHER], max_tokens=4)
    assert "this template takes no tools" in str(e.value)
    r = c.chat.completions.create(model="smollm2-raise", messages=ASK, max_tokens=2)
    assert r.choices[0].finish_reason in ("stop", "length")


def test_bad_tool_requests(srv):
    c = client(srv)
    bad = [
        dict(tools=[{"type": "function", "function": {"name": "has space"}}]),
        dict(tools=[WEATHER], tool_choice="sometimes"),
        dict(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}),
        dict(tool_choice="required"),
        dict(tools=[WEATHER, WEATHER]),
        dict(functions=[WEATHER["function"]]),
    ]
    for kw in bad:
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model="smollm2", messages=ASK, max_tokens=4, **kw)
    # a tool message needs the call it answers
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="smollm2", messages=ASK + [{"role": "tool", "content": "x"}], max_tokens=4)
