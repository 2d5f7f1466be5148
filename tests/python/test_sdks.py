"""The official OpenAI and Anthropic Python SDKs, through Bulwark, to every upstream kind.

Every ingress (OpenAI chat completions, Anthropic messages) × upstream kind (anthropic,
openai, gemini, openai-compatible) × {plain, stream, tools}. The upstream is Bulwark's mock
provider; its call log shows what the upstream received.
"""

import re
import json

import anthropic
import openai
import pytest

from conftest import KEYS

SYSTEM = "Be brief."
PROMPT = "What is Bulwark?"
ANSWER = f"Hello from mock. You said: {PROMPT}"
TOOL_RESULT = "sunny, 21 C"

# upstream name -> (model the client asks for, mock api, upstream model, auth header, value)
UPSTREAMS = {
    "anthropic": ("anthropic/claude-test", "anthropic", "claude-test", "x-api-key", KEYS["T_ANTHROPIC_KEY"]),
    "openai": ("openai/gpt-test", "openai", "gpt-test", "authorization", "Bearer " + KEYS["T_OPENAI_KEY"]),
    "gemini": ("google/gemini-test", "gemini", "gemini-test", "x-goog-api-key", KEYS["T_GOOGLE_KEY"]),
    "openai-compatible": ("local/llama-test", "openai", "llama-test", None, None),
}
KINDS = list(UPSTREAMS)

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"location": {"type": "string", "description": "City name"}},
    "required": ["location"],
}
OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather for a city", "parameters": WEATHER_SCHEMA},
    }
]
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER_SCHEMA}]


def openai_client(stack):
    return openai.OpenAI(base_url=stack["gateway"] + "/v1", api_key="caller-key", max_retries=0)


def anthropic_client(stack):
    return anthropic.Anthropic(base_url=stack["gateway"], api_key="caller-key", max_retries=0)


def only_call(mock, kind):
    """The single upstream call the request made, checked for the right API, model and credentials."""
    _, api, upstream_model, header, value = UPSTREAMS[kind]
    calls = mock.calls()
    assert len(calls) == 1, calls
    call = calls[0]
    assert call["api"] == api
    assert call["model"].removeprefix("models/") == upstream_model
    headers = call["headers"]
    if header:
        assert headers.get(header) == value
    else:
        assert "authorization" not in headers
        assert headers.get("x-title") == "bulwark-tests"
    # Bulwark never forwards the caller's own key upstream.
    assert "caller-key" not in json.dumps(headers)
    return call


def check_upstream_request(call, kind, tools=False):
    body = call["body"]
    api = UPSTREAMS[kind][1]
    if api == "anthropic":
        assert call["path"] == "/v1/messages"
        assert [b["text"] for b in body["system"]] == [SYSTEM]
        assert isinstance(body["max_tokens"], int) and body["max_tokens"] > 0
        assert body["messages"][0]["role"] == "user"
        if tools:
            assert body["tools"][0]["name"] == "get_weather"
            assert body["tools"][0]["input_schema"]["required"] == ["location"]
    elif api == "gemini":
        assert call["path"].startswith("/v1beta/models/gemini-test:")
        assert body["systemInstruction"]["parts"][0]["text"] == SYSTEM
        assert body["contents"][0]["role"] == "user"
        if tools:
            decl = body["tools"][0]["functionDeclarations"][0]
            assert decl["name"] == "get_weather"
    else:
        assert call["path"] == "/v1/chat/completions"
        assert body["messages"][0] == {"role": "system", "content": SYSTEM}
        assert body["messages"][1]["role"] == "user"
        if tools:
            assert body["tools"][0]["function"]["name"] == "get_weather"
            assert body["tools"][0]["function"]["parameters"] == WEATHER_SCHEMA


# ---------------------------------------------------------------- OpenAI SDK


@pytest.mark.parametrize("kind", KINDS)
def test_openai_sdk_plain(stack, mock, kind):
    client = openai_client(stack)
    raw = client.chat.completions.with_raw_response.create(
        model=UPSTREAMS[kind][0],
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        max_tokens=64,
    )
    assert raw.headers["x-bulwark-provider"] == UPSTREAMS[kind][0].split("/")[0]
    assert raw.headers["x-bulwark-attempts"] == "1"
    assert raw.headers.get("x-request-id")
    resp = raw.parse()
    assert resp.object == "chat.completion"
    assert resp.model == UPSTREAMS[kind][2]
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == ANSWER
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens > 0 and resp.usage.prompt_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    check_upstream_request(only_call(mock, kind), kind)


@pytest.mark.parametrize("kind", KINDS)
def test_openai_sdk_stream_with_usage(stack, mock, kind):
    client = openai_client(stack)
    stream = client.chat.completions.create(
        model=UPSTREAMS[kind][0],
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, chunks = "", None, None, 0
    for chunk in stream:
        chunks += 1
        assert chunk.object == "chat.completion.chunk"
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert chunks > 2
    assert text == ANSWER
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0
    call = only_call(mock, kind)
    assert call["stream"] is True
    check_upstream_request(call, kind)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_openai_sdk_tools_round_trip(stack, mock, kind, stream):
    client = openai_client(stack)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Weather in Paris?"}]
    if stream:
        calls, finish = {}, None
        for chunk in client.chat.completions.create(
            model=UPSTREAMS[kind][0], messages=messages, tools=OPENAI_TOOLS, stream=True
        ):
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    entry["id"] = tc.id
                if tc.function and tc.function.name:
                    entry["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    entry["arguments"] += tc.function.arguments
        assert finish == "tool_calls"
        assert list(calls) == [0]
        call_id, name, arguments = calls[0]["id"], calls[0]["name"], calls[0]["arguments"]
    else:
        resp = client.chat.completions.create(model=UPSTREAMS[kind][0], messages=messages, tools=OPENAI_TOOLS)
        choice = resp.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert len(choice.message.tool_calls) == 1
        tc = choice.message.tool_calls[0]
        assert tc.type == "function"
        call_id, name, arguments = tc.id, tc.function.name, tc.function.arguments
    assert call_id
    assert name == "get_weather"
    assert json.loads(arguments) == {"location": "example"}
    check_upstream_request(only_call(mock, kind), kind, tools=True)

    mock.reset()
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
        },
        {"role": "tool", "tool_call_id": call_id, "content": TOOL_RESULT},
    ]
    resp = client.chat.completions.create(model=UPSTREAMS[kind][0], messages=messages, tools=OPENAI_TOOLS)
    assert resp.choices[0].message.content == f"The tool said: {TOOL_RESULT}"
    assert resp.choices[0].finish_reason == "stop"
    body = only_call(mock, kind)["body"]
    # The tool result reached the upstream in its own shape.
    if UPSTREAMS[kind][1] == "anthropic":
        result = body["messages"][-1]["content"][0]
        assert result["type"] == "tool_result" and result["tool_use_id"] == call_id
    elif UPSTREAMS[kind][1] == "gemini":
        part = body["contents"][-1]["parts"][0]
        assert part["functionResponse"]["name"] == "get_weather"
    else:
        assert body["messages"][-1] == {"role": "tool", "tool_call_id": call_id, "content": TOOL_RESULT}


# ---------------------------------------------------------------- Anthropic SDK


@pytest.mark.parametrize("kind", KINDS)
def test_anthropic_sdk_plain(stack, mock, kind):
    client = anthropic_client(stack)
    raw = client.messages.with_raw_response.create(
        model=UPSTREAMS[kind][0],
        max_tokens=64,
        system=SYSTEM,
        messages=[{"role": "user", "content": PROMPT}],
    )
    assert raw.headers["x-bulwark-provider"] == UPSTREAMS[kind][0].split("/")[0]
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.model == UPSTREAMS[kind][2]
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == ANSWER
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    # Anthropic's `request-id` header, which the SDK shows as `_request_id`.
    assert msg._request_id == raw.headers["x-request-id"]
    check_upstream_request(only_call(mock, kind), kind)


@pytest.mark.parametrize("kind", KINDS)
def test_anthropic_sdk_stream(stack, mock, kind):
    client = anthropic_client(stack)
    with client.messages.stream(
        model=UPSTREAMS[kind][0],
        max_tokens=64,
        system=SYSTEM,
        messages=[{"role": "user", "content": PROMPT}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == ANSWER
    assert final.content[0].text == ANSWER
    assert final.stop_reason == "end_turn"
    assert final.model == UPSTREAMS[kind][2]
    assert final.usage.output_tokens > 0
    call = only_call(mock, kind)
    assert call["stream"] is True
    check_upstream_request(call, kind)
    # Clients that read input usage from message_start (LangChain does) find it there
    # when the upstream gave it first, as Anthropic does.
    mock.reset()
    events = list(
        client.messages.create(
            model=UPSTREAMS[kind][0], max_tokens=64, system=SYSTEM, stream=True,
            messages=[{"role": "user", "content": PROMPT}],
        )
    )
    assert events[0].type == "message_start"
    delta = [e for e in events if e.type == "message_delta"][0]
    if kind == "anthropic":
        assert events[0].message.usage.input_tokens == delta.usage.input_tokens > 0
    else:
        assert events[0].message.usage.input_tokens == 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_anthropic_sdk_tools_round_trip(stack, mock, kind, stream):
    client = anthropic_client(stack)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    args = dict(model=UPSTREAMS[kind][0], max_tokens=256, system=SYSTEM, tools=ANTHROPIC_TOOLS)
    if stream:
        with client.messages.stream(messages=messages, **args) as s:
            msg = s.get_final_message()
    else:
        msg = client.messages.create(messages=messages, **args)
    assert msg.stop_reason == "tool_use"
    uses = [b for b in msg.content if b.type == "tool_use"]
    assert len(uses) == 1
    assert uses[0].name == "get_weather"
    assert uses[0].input == {"location": "example"}
    assert uses[0].id
    check_upstream_request(only_call(mock, kind), kind, tools=True)

    mock.reset()
    messages += [
        {"role": "assistant", "content": msg.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": TOOL_RESULT}]},
    ]
    final = client.messages.create(messages=messages, **args)
    assert final.content[0].text == f"The tool said: {TOOL_RESULT}"
    assert final.stop_reason == "end_turn"
    only_call(mock, kind)


# ---------------------------------------------------------------- failover and errors


def test_failover_on_503_reported_in_header(stack, mock):
    # The primary keeps answering 503: three attempts there (retries with backoff),
    # then the second target serves.
    mock.fault({"kind": "status", "status": 503}, api="anthropic")
    raw = openai_client(stack).chat.completions.with_raw_response.create(
        model="failover", messages=[{"role": "user", "content": PROMPT}]
    )
    assert raw.headers["x-bulwark-provider"] == "openai"
    assert raw.headers["x-bulwark-attempts"] == "4"
    assert raw.parse().model == "gpt-test"
    assert [c["api"] for c in mock.calls()] == ["anthropic"] * 3 + ["openai"]


def test_anthropic_sdk_failover_stream(stack, mock):
    mock.fault({"kind": "status", "status": 529}, api="anthropic")
    with anthropic_client(stack).messages.stream(
        model="stream-failover", max_tokens=64, messages=[{"role": "user", "content": PROMPT}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == ANSWER
    assert final.model == "gpt-test"


def test_errors_reach_the_sdks_in_their_own_shape(stack, mock):
    with pytest.raises(openai.NotFoundError) as err:
        openai_client(stack).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert "nope" in err.value.message
    with pytest.raises(anthropic.NotFoundError) as err:
        anthropic_client(stack).messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert err.value.body["error"]["type"] == "not_found_error"
    assert err.value.request_id
    with pytest.raises(openai.BadRequestError) as err:
        openai_client(stack).chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}], n=2)
    assert err.value.body["param"] == "n"
    # The caller's mistake upstream comes back as the caller's mistake, not as a failover.
    mock.fault({"kind": "status", "status": 400, "message": "bad temperature"}, times=1, api="anthropic")
    with pytest.raises(anthropic.BadRequestError) as err:
        anthropic_client(stack).messages.create(model="chat", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert "bad temperature" in err.value.message
    assert len(mock.calls()) == 1


def test_an_empty_message_goes_to_a_provider_that_takes_it(stack, mock):
    """OpenAI takes an empty user message; Anthropic and Gemini reject empty turns, and
    dropping it would leave nothing to send. The route's Anthropic target is skipped as
    unable (no call, no penalty) and OpenAI answers, instead of a 400 blaming the caller."""
    raw = openai_client(stack).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": ""}]
    )
    assert raw.headers["x-bulwark-provider"] == "openai"
    assert raw.parse().choices[0].message.role == "assistant"
    assert [c["api"] for c in mock.calls()] == ["openai"]
    assert mock.calls()[0]["body"]["messages"] == [{"role": "user", "content": ""}]
    # With no target that takes it, a 400 says why, and no provider was called.
    mock.reset()
    with pytest.raises(openai.BadRequestError) as err:
        openai_client(stack).chat.completions.create(
            model="anthropic/claude-test", messages=[{"role": "user", "content": ""}]
        )
    assert "empty" in err.value.message and "anthropic" in err.value.message
    assert mock.calls() == []


def test_anthropic_sdk_errors_pair_type_and_status_as_anthropic_does(stack, mock):
    """A server-held `thread` (the SDK tool runner's default in newer SDKs) is a 400 that
    names it; no target left to serve is a 503 of type `api_error` (Anthropic pairs
    `overloaded_error` with 529 only, and the SDKs pick the error class by status)."""
    client = anthropic_client(stack)
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(
            model="chat", max_tokens=5, messages=[{"role": "user", "content": "x"}],
            extra_body={"thread": {"type": "create"}},
        )
    assert err.value.body["error"]["type"] == "invalid_request_error"
    message = err.value.body["error"]["message"]
    assert message.startswith("thread: ") and "not supported" in message and "thread: false" in message
    assert err.value.body["error"]["details"] == {"error_code": "thread_unsupported_request", "unsupported": []}
    assert mock.calls() == []
    mock.fault({"kind": "status", "status": 401, "message": "bad key"}, api="anthropic")
    with pytest.raises(anthropic.APIStatusError) as err:
        client.messages.create(
            model="anthropic/claude-rejected", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.status_code == 503
    assert err.value.body["error"]["type"] == "api_error"


def test_anthropic_sdk_tool_runner_goes_without_a_thread_by_itself(stack, mock):
    """The SDK's tool runner asks for a server-held thread first; Bulwark's refusal
    carries the `thread_unsupported_request` code the runner recovers from, so it
    resends whole conversations and finishes, with no `thread` reaching a provider."""
    from anthropic import beta_tool

    @beta_tool
    def get_weather(location: str) -> str:
        """Weather for a city."""
        assert location == "example"
        return TOOL_RESULT

    runner = anthropic_client(stack).beta.messages.tool_runner(
        model="anthropic/claude-test", max_tokens=256, tools=[get_weather],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    final = runner.until_done()
    assert final.content[-1].text == f"The tool said: {TOOL_RESULT}"
    bodies = [c["body"] for c in mock.calls()]
    assert len(bodies) == 2
    assert all("thread" not in body for body in bodies)


def test_anthropic_sdk_prompt_cache_breakpoints_reach_an_anthropic_upstream(stack, mock):
    """Anthropic caches a prompt only up to the `cache_control` breakpoints it gets."""
    ephemeral = {"type": "ephemeral"}
    anthropic_client(stack).messages.create(
        model=UPSTREAMS["anthropic"][0],
        max_tokens=64,
        system=[{"type": "text", "text": SYSTEM, "cache_control": ephemeral}],
        tools=[dict(ANTHROPIC_TOOLS[0], cache_control=ephemeral)],
        messages=[{"role": "user", "content": [{"type": "text", "text": PROMPT, "cache_control": ephemeral}]}],
    )
    body = only_call(mock, "anthropic")["body"]
    assert body["system"][0]["cache_control"] == ephemeral
    assert body["tools"][0]["cache_control"] == ephemeral
    assert body["messages"][0]["content"][0]["cache_control"] == ephemeral


def test_anthropic_sdk_betas_reach_an_anthropic_upstream_only(stack, mock):
    """`betas=` (the `anthropic-beta` header) goes on to Anthropic, which some betas
    need (a 1M-token context), and to no other provider."""
    client = anthropic_client(stack)
    betas = ["context-1m-2025-08-07", "token-efficient-tools-2025-02-19"]
    for kind in ("anthropic", "openai"):
        client.beta.messages.create(
            model=UPSTREAMS[kind][0], max_tokens=64, betas=betas,
            messages=[{"role": "user", "content": PROMPT}],
        )
    anthropic_call, openai_call = mock.calls()
    assert anthropic_call["headers"]["anthropic-beta"] == ",".join(betas)
    assert "anthropic-beta" not in openai_call["headers"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_extended_thinking_round_trips_as_claude_code_sends_it(stack, mock, kind, stream):
    """Claude Code's defaults: `thinking`, `context_management` and `output_config.effort`.
    An Anthropic upstream gets them as sent and its reasoning reaches the caller, signed;
    sent back with a tool result, the signature still holds (the mock checks it, and that
    the turn starts with it, as Anthropic does). The other upstreams answer without them."""
    client = anthropic_client(stack)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    editing = {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}
    args = dict(
        model=UPSTREAMS[kind][0], max_tokens=2048, system=SYSTEM, tools=ANTHROPIC_TOOLS,
        thinking=thinking,
        extra_body={"context_management": editing, "output_config": {"effort": "high"}},
    )
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        with client.messages.stream(messages=messages, **args) as s:
            msg = s.get_final_message()
    else:
        msg = client.messages.create(messages=messages, **args)
    body = only_call(mock, kind)["body"]
    kinds = [b.type for b in msg.content]
    if kind == "anthropic":
        assert kinds == ["thinking", "tool_use"]
        assert msg.content[0].thinking == "Thinking about: Weather in Paris?"
        assert msg.content[0].signature.startswith("mock-signature-")
        assert body["thinking"] == thinking
        assert body["context_management"] == editing
        assert body["output_config"] == {"effort": "high"}
    else:
        assert kinds == ["tool_use"]
        sent = json.dumps(body)
        for word in ("thinking", "context_management", "effort", "budget_tokens"):
            assert word not in sent, (word, sent)

    result = {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": msg.content[-1].id, "content": TOOL_RESULT}]}
    mock.reset()
    final = client.messages.create(
        messages=messages + [{"role": "assistant", "content": msg.content}, result], **args)
    assert final.content[-1].text == f"The tool said: {TOOL_RESULT}"
    sent = only_call(mock, kind)["body"]
    if kind == "anthropic":
        assert sent["messages"][1]["content"][0] == msg.content[0].model_dump()
        # A reasoning block changed on its way back is refused, as Anthropic refuses it.
        forged = msg.content[0].model_copy(update={"thinking": "Something else."})
        with pytest.raises(anthropic.BadRequestError, match="signature"):
            client.messages.create(messages=messages + [
                {"role": "assistant", "content": [forged, msg.content[-1]]}, result], **args)
    else:
        assert "thinking" not in json.dumps(sent)


@pytest.mark.parametrize("kind", KINDS)
def test_openai_reasoning_effort_and_verbosity_reach_openai_only(stack, mock, kind):
    """`reasoning_effort` and `verbosity` (LangChain's `ChatOpenAI(reasoning_effort=…)`,
    the AI SDK's `reasoningEffort`) go on to OpenAI; the other upstreams answer without
    them, as OpenAI upstreams answer without Anthropic's `thinking`."""
    resp = openai_client(stack).chat.completions.create(
        model=UPSTREAMS[kind][0], reasoning_effort="low", verbosity="low",
        messages=[{"role": "user", "content": PROMPT}],
    )
    assert resp.choices[0].message.content == ANSWER
    body = only_call(mock, kind)["body"]
    if kind == "openai":
        assert (body["reasoning_effort"], body["verbosity"]) == ("low", "low")
    else:
        sent = json.dumps(body)
        assert "reasoning_effort" not in sent and "verbosity" not in sent, sent


def test_anthropic_sdk_counts_tokens_through_an_anthropic_target(stack, mock):
    """`messages.count_tokens` (Claude Code, LangChain's `get_num_tokens_from_messages`)
    is answered by the route's first target with a counter: an Anthropic one. A route
    without one says so in a 400; an answer setting is refused as Anthropic refuses it."""
    client = anthropic_client(stack)
    args = dict(system=SYSTEM, tools=ANTHROPIC_TOOLS,
                messages=[{"role": "user", "content": "Weather in Paris today?"}])
    count = client.messages.count_tokens(model=UPSTREAMS["anthropic"][0], **args)
    # The mock counts the request's words: system 2 + prompt 4.
    assert count.input_tokens == 6
    call = only_call(mock, "anthropic")
    assert call["path"] == "/v1/messages/count_tokens"
    assert set(call["body"]) == {"model", "messages", "system", "tools"}

    mock.reset()
    for kind in ("openai", "gemini"):
        with pytest.raises(anthropic.BadRequestError, match="count tokens") as err:
            client.messages.count_tokens(model=UPSTREAMS[kind][0], **args)
        # No upstream was asked, so none is named.
        assert "x-bulwark-provider" not in err.value.response.headers
    assert mock.calls() == []
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        client.messages.count_tokens(model=UPSTREAMS["anthropic"][0], extra_body={"max_tokens": 5}, **args)
    # A route counts with its Anthropic target, wherever it stands; when that target
    # fails, the caller hears its failure (a 503 to retry), not the others' "cannot count".
    assert client.messages.count_tokens(model="chat", **args).input_tokens == 6
    mock.fault({"kind": "status", "status": 503}, times=1, api="anthropic")
    with pytest.raises(anthropic.InternalServerError) as err:
        client.messages.count_tokens(model="failover", **args)
    assert err.value.status_code == 503


def test_both_sdks_retrieve_a_model_and_hear_of_an_unknown_one_in_their_own_shape(stack, mock):
    """`models.retrieve` (`GET /v1/models/{id}`): a route or `provider/model`, shaped as
    each SDK's model type; an unknown one is the SDK's NotFoundError."""
    oai, ant = openai_client(stack), anthropic_client(stack)
    for model in ("chat", UPSTREAMS["openai"][0]):
        assert oai.models.retrieve(model).id == model
        got = ant.models.retrieve(model)
        assert (got.id, got.type) == (model, "model")
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("no-such-route")
    with pytest.raises(anthropic.NotFoundError):
        ant.models.retrieve("no-such-route")
    # The Anthropic SDK pages the list by `limit` and `after_id`; every route comes once.
    routes = [m.id for m in oai.models.list()]
    assert [m.id for m in ant.models.list(limit=1)] == routes
    assert len(ant.models.list(limit=1).data) == 1
    assert mock.calls() == []


def test_a_system_message_mid_conversation_is_refused_in_words_claude_code_acts_on(stack, mock):
    """Claude Code resends a mid-conversation system message as a user-turn reminder when
    the 400 says the role is "not supported" (its check: /role .{0,2}system/)."""
    import re

    client = anthropic_client(stack)
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(
            model=UPSTREAMS["anthropic"][0], max_tokens=64,
            messages=[{"role": "user", "content": "hi"}, {"role": "system", "content": "Skills: none."}],
        )
    message = err.value.body["error"]["message"]
    assert "not supported" in message and re.search(r"role .{0,2}system", message), message
    assert mock.calls() == []


# ---------------------------------------------------------------- images

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def upstream_image(call, kind):
    """The base64 image data as the upstream received it, in its own format."""
    api = UPSTREAMS[kind][1]
    body = call["body"]
    if api == "anthropic":
        block = [b for b in body["messages"][0]["content"] if b["type"] == "image"][0]
        assert block["source"] == {"type": "base64", "media_type": "image/png", "data": PNG_B64}
        return block["source"]["data"]
    if api == "gemini":
        part = [p for p in body["contents"][0]["parts"] if "inlineData" in p][0]
        assert part["inlineData"]["mimeType"] == "image/png"
        return part["inlineData"]["data"]
    part = [p for p in body["messages"][0]["content"] if p["type"] == "image_url"][0]
    assert part["image_url"]["url"] == f"data:image/png;base64,{PNG_B64}"
    return PNG_B64


@pytest.mark.parametrize("kind", KINDS)
def test_images_reach_every_upstream_from_both_sdks(stack, mock, kind):
    resp = openai_client(stack).chat.completions.create(
        model=UPSTREAMS[kind][0],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                ],
            }
        ],
    )
    assert resp.choices[0].message.content.startswith("Hello from mock.")
    assert upstream_image(only_call(mock, kind), kind) == PNG_B64

    mock.reset()
    msg = anthropic_client(stack).messages.create(
        model=UPSTREAMS[kind][0],
        max_tokens=32,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
                    {"type": "text", "text": "What is in this image?"},
                ],
            }
        ],
    )
    assert msg.content[0].text.startswith("Hello from mock.")
    assert upstream_image(only_call(mock, kind), kind) == PNG_B64


def test_image_url_to_gemini_is_a_clear_400_naming_it(stack, mock):
    with pytest.raises(openai.BadRequestError) as err:
        openai_client(stack).chat.completions.create(
            model="google/gemini-test",
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}],
        )
    assert "image URL" in err.value.message or "image url" in err.value.message.lower()
    assert mock.calls() == []


def test_openai_sdk_stream_helper_and_parse(stack, mock):
    client = openai_client(stack)
    with client.chat.completions.stream(
        model="openai/gpt-test", messages=[{"role": "user", "content": PROMPT}]
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert final.choices[0].message.content == ANSWER


@pytest.mark.parametrize("kind", KINDS)
def test_openai_sdk_stream_helper_assembles_a_tool_only_answer_as_openai_does(stack, mock, kind):
    """A tool-only answer streamed from any upstream assembles, in the SDK's stream
    helper, to what OpenAI's own stream gives: the call, and `content` None (not "")."""
    client = openai_client(stack)
    with client.chat.completions.stream(
        model=UPSTREAMS[kind][0],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=OPENAI_TOOLS,
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert message.role == "assistant"
    assert message.content is None
    assert [c.function.name for c in message.tool_calls] == ["get_weather"]
    assert json.loads(message.tool_calls[0].function.arguments) == {"location": "example"}


def upstream_schema(call, kind):
    """The JSON schema a structured-output request carried upstream, in that API's shape."""
    body = call["body"]
    if kind == "anthropic":
        assert body["output_config"]["format"]["type"] == "json_schema"
        return body["output_config"]["format"]["schema"]
    if kind == "gemini":
        assert body["generationConfig"]["responseMimeType"] == "application/json"
        return body["generationConfig"]["responseJsonSchema"]
    assert body["response_format"]["type"] == "json_schema"
    return body["response_format"]["json_schema"]["schema"]


@pytest.mark.parametrize("kind", KINDS)
def test_structured_output_from_both_sdks_reaches_every_upstream(stack, mock, kind):
    """`messages.parse(output_format=…)` (Anthropic's `output_config.format`) and
    `chat.completions.parse(response_format=…)` (OpenAI's `json_schema`) both reach
    every provider kind as that provider's structured output, and both SDKs parse
    the answer into the model."""
    import pydantic

    class Place(pydantic.BaseModel):
        city: str

    class Weather(pydantic.BaseModel):
        location: str
        days: int | None
        places: list[Place]

    expected = Weather(location="example", days=1, places=[])
    message = anthropic_client(stack).messages.parse(
        model=UPSTREAMS[kind][0], max_tokens=64,
        messages=[{"role": "user", "content": "Weather in Paris?"}], output_format=Weather,
    )
    assert message.parsed_output == expected
    assert upstream_schema(only_call(mock, kind), kind)["properties"]["location"]["type"] == "string"

    mock.reset()
    completion = openai_client(stack).chat.completions.parse(
        model=UPSTREAMS[kind][0], messages=[{"role": "user", "content": "Weather in Paris?"}],
        response_format=Weather,
    )
    assert completion.choices[0].message.parsed == expected
    assert upstream_schema(only_call(mock, kind), kind)["required"] == ["location", "days", "places"]

    # Streamed, with each SDK's stream helper.
    with anthropic_client(stack).messages.stream(
        model=UPSTREAMS[kind][0], max_tokens=64,
        messages=[{"role": "user", "content": "Weather in Paris?"}], output_format=Weather,
    ) as stream:
        assert stream.get_final_message().parsed_output == expected
    with openai_client(stack).chat.completions.stream(
        model=UPSTREAMS[kind][0], messages=[{"role": "user", "content": "Weather in Paris?"}],
        response_format=Weather,
    ) as stream:
        assert stream.get_final_completion().choices[0].message.parsed == expected


def test_a_model_without_structured_output_hands_the_request_to_the_next_target(stack, mock):
    """An Anthropic model that refuses `output_config` is a target that cannot serve
    this request, not the caller's mistake: the route's next target answers."""
    import pydantic

    class Weather(pydantic.BaseModel):
        location: str

    mock.fault(
        {"kind": "status", "status": 400,
         "message": "output_config.format: structured outputs are not supported for this model"},
        times=1, api="anthropic",
    )
    raw = openai_client(stack).chat.completions.with_raw_response.parse(
        model="chat", messages=[{"role": "user", "content": "Weather in Paris?"}], response_format=Weather,
    )
    assert raw.headers["x-bulwark-provider"] == "openai"
    assert raw.parse().choices[0].message.parsed == Weather(location="example")
    assert [c["api"] for c in mock.calls()] == ["anthropic", "openai"]


def test_openai_sdk_strict_tools_reach_an_openai_upstream_strict(stack, mock):
    """`pydantic_function_tool` marks a tool strict, which is what makes OpenAI keep the
    arguments to the schema; the upstream must get it."""
    import pydantic

    class GetWeather(pydantic.BaseModel):
        location: str

    client = openai_client(stack)
    completion = client.chat.completions.parse(
        model="openai/gpt-test",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[openai.pydantic_function_tool(GetWeather)],
    )
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "GetWeather"
    assert call.function.parsed_arguments == GetWeather(location="example")
    tool = only_call(mock, "openai")["body"]["tools"][0]["function"]
    assert tool["strict"] is True
    assert tool["parameters"]["additionalProperties"] is False


def test_anthropic_sdk_strict_tools_and_foreign_tool_ids_reach_anthropic(stack, mock):
    """A strict tool reaches Anthropic strict (and OpenAI strict), and a conversation
    whose tool call another provider named `functions.get_weather:0` (vLLM-style; an
    id Anthropic refuses) reaches Anthropic with one id it takes, the same on the
    call and on its result."""
    tool = {
        "name": "get_weather", "description": "Weather", "strict": True,
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"], "additionalProperties": False},
    }
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "functions.get_weather:0",
                                           "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "functions.get_weather:0",
                                      "content": "sunny"}]},
    ]
    client = anthropic_client(stack)
    reply = client.messages.create(model="anthropic/claude-test", max_tokens=100,
                                   tools=[tool], messages=messages)
    assert reply.stop_reason in ("end_turn", "tool_use")
    # (The mock, like Anthropic, refuses any other id with a 400.)
    body = only_call(mock, "anthropic")["body"]
    assert body["tools"][0]["strict"] is True
    used = body["messages"][1]["content"][0]["id"]
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", used), used
    assert body["messages"][2]["content"][0]["tool_use_id"] == used

    mock.reset()
    client.messages.create(model="openai/gpt-test", max_tokens=100, tools=[tool], messages=messages)
    sent = only_call(mock, "openai")["body"]
    assert sent["tools"][0]["function"]["strict"] is True
    # Other providers take the caller's id as it was.
    assert sent["messages"][1]["tool_calls"][0]["id"] == "functions.get_weather:0"


# ---------------------------------------------------------------- idempotency


def test_idempotent_replays_parse_in_both_sdks(stack, mock):
    """A repeated Idempotency-Key gets the stored answer (JSON or stream) without an
    upstream call, and the SDKs parse the replay like the original; reusing the key
    with another body is a 422 the SDKs raise as UnprocessableEntityError."""
    oai = openai_client(stack)
    msgs = [{"role": "user", "content": PROMPT}]
    key = {"Idempotency-Key": "sdk-json-1"}
    first = oai.chat.completions.create(model="chat", messages=msgs, extra_headers=key)
    again = oai.chat.completions.with_raw_response.create(model="chat", messages=msgs, extra_headers=key)
    assert again.headers["x-bulwark-idempotent-replay"] == "true"
    replay = again.parse()
    assert replay.id == first.id
    assert replay.choices[0].message.content == first.choices[0].message.content
    assert replay.usage.total_tokens == first.usage.total_tokens
    assert len(mock.calls()) == 1

    skey = {"Idempotency-Key": "sdk-stream-1"}
    chunks = list(oai.chat.completions.create(model="chat", messages=msgs, stream=True, extra_headers=skey))
    replayed = list(oai.chat.completions.create(model="chat", messages=msgs, stream=True, extra_headers=skey))
    text = lambda cs: "".join(c.choices[0].delta.content or "" for c in cs if c.choices)  # noqa: E731
    assert text(replayed) == text(chunks) == ANSWER
    assert len(mock.calls()) == 2

    with pytest.raises(openai.UnprocessableEntityError) as err:
        oai.chat.completions.create(model="chat", messages=[{"role": "user", "content": "other"}], extra_headers=key)
    assert err.value.body["code"] == "idempotency_key_reused"

    ant = anthropic_client(stack)
    akey = {"Idempotency-Key": "sdk-anthropic-1"}
    with ant.messages.stream(model="chat", max_tokens=64, messages=msgs, extra_headers=akey) as s:
        original = s.get_final_message()
    with ant.messages.stream(model="chat", max_tokens=64, messages=msgs, extra_headers=akey) as s:
        replay = s.get_final_message()
    assert replay.id == original.id
    assert replay.content[0].text == original.content[0].text == ANSWER
    assert replay.stop_reason == original.stop_reason
    with pytest.raises(anthropic.UnprocessableEntityError):
        ant.messages.create(model="chat", max_tokens=65, messages=msgs, extra_headers=akey)
    assert len(mock.calls()) == 3
