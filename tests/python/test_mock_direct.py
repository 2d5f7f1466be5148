"""The official SDKs pointed straight at Bulwark's mock provider.

The gateway's upstream adapters are tested against the mock, so the mock itself must
speak each provider's format well enough for that provider's own SDK.
"""

from google import genai
from google.genai import types

import anthropic
import openai

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"location": {"type": "string"}},
    "required": ["location"],
}


def test_openai_sdk_against_mock(stack, mock):
    client = openai.OpenAI(base_url=stack["mock"].url + "/v1", api_key="k", max_retries=0)
    resp = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi there"}])
    assert resp.choices[0].message.content == "Hello from mock. You said: hi there"
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi there"}], stream=True
        )
        if c.choices
    )
    assert text == "Hello from mock. You said: hi there"


def test_anthropic_sdk_against_mock(stack, mock):
    client = anthropic.Anthropic(base_url=stack["mock"].url, api_key="k", max_retries=0)
    msg = client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi there"}])
    assert msg.content[0].text == "Hello from mock. You said: hi there"
    with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as s:
        assert "".join(s.text_stream) == "Hello from mock. You said: hi"


def test_genai_sdk_against_mock(stack, mock):
    client = genai.Client(
        api_key="k", http_options=types.HttpOptions(base_url=stack["mock"].url, api_version="v1beta")
    )
    resp = client.models.generate_content(model="gemini-test", contents="hi there")
    assert resp.text == "Hello from mock. You said: hi there"
    assert resp.usage_metadata.candidates_token_count > 0
    text = "".join(
        chunk.text or "" for chunk in client.models.generate_content_stream(model="gemini-test", contents="hi there")
    )
    assert text == "Hello from mock. You said: hi there"
    tool = types.Tool(
        function_declarations=[
            types.FunctionDeclaration(name="get_weather", description="w", parameters_json_schema=WEATHER_SCHEMA)
        ]
    )
    resp = client.models.generate_content(
        model="gemini-test", contents="Weather?", config=types.GenerateContentConfig(tools=[tool])
    )
    call = resp.function_calls[0]
    assert call.name == "get_weather" and call.args == {"location": "example"}
    calls = mock.calls()
    assert calls[0]["headers"]["x-goog-api-key"] == "k"
