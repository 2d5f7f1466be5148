//! Deterministic answers in each wire format, JSON and streamed (these need the
//! real `serve` encoders and decoders of bulwark-providers).

// Helpers outside #[test] fns unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bulwark_mock::{Api, Behavior, MockServer};
use common::{ALL, call, client, ends_properly, frames, json_text, post, stream_text};
use serde_json::{Value, json};

const FULL: &str = "Hello from m. You said: hi there";

fn usage(api: Api, v: &Value) -> (u64, u64) {
    let pick = |a: &Value, b: &Value| (a.as_u64().unwrap(), b.as_u64().unwrap());
    match api {
        Api::OpenAi => pick(
            &v["usage"]["prompt_tokens"],
            &v["usage"]["completion_tokens"],
        ),
        Api::Anthropic => pick(&v["usage"]["input_tokens"], &v["usage"]["output_tokens"]),
        Api::Gemini => pick(
            &v["usageMetadata"]["promptTokenCount"],
            &v["usageMetadata"]["candidatesTokenCount"],
        ),
    }
}

#[tokio::test]
async fn each_api_answers_json_with_the_echo_model_and_usage() {
    let mock = MockServer::start("m").await.unwrap();
    let http = client();
    for api in ALL {
        let response = call(&http, &mock, api, "model-a", false).await.unwrap();
        assert_eq!(response.status(), 200, "{api}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let v: Value = response.json().await.unwrap();
        assert_eq!(json_text(api, &v), FULL, "{api}: {v}");
        // "be brief" + "hi there" = 4 words in; 7 words out.
        assert_eq!(usage(api, &v), (4, 7), "{api}: {v}");
        match api {
            Api::OpenAi => {
                assert_eq!(v["object"], "chat.completion");
                assert_eq!(v["model"], "model-a");
                assert_eq!(v["choices"][0]["finish_reason"], "stop");
                assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
            }
            Api::Anthropic => {
                assert_eq!(v["type"], "message");
                assert_eq!(v["model"], "model-a");
                assert_eq!(v["stop_reason"], "end_turn");
                assert!(v["id"].as_str().unwrap().starts_with("msg_"));
            }
            Api::Gemini => {
                assert_eq!(v["candidates"][0]["finishReason"], "STOP");
                assert_eq!(v["modelVersion"], "model-a");
            }
        }
    }
    let statuses: Vec<Option<u16>> = mock.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [Some(200); 3]);
    mock.shutdown().await;
}

#[tokio::test]
async fn each_api_streams_one_word_per_chunk_and_ends_properly() {
    let mock = MockServer::start("m").await.unwrap();
    let http = client();
    for api in ALL {
        let response = call(&http, &mock, api, "model-a", true).await.unwrap();
        assert_eq!(response.status(), 200, "{api}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let text = response.text().await.unwrap();
        let got = frames(&text);
        assert_eq!(stream_text(api, &got), FULL, "{api}");
        assert!(ends_properly(api, &got), "{api}: {text}");
        let words: Vec<String> = got
            .iter()
            .map(|f| stream_text(api, std::slice::from_ref(f)))
            .filter(|t| !t.is_empty())
            .collect();
        assert_eq!(
            words,
            ["Hello ", "from ", "m. ", "You ", "said: ", "hi ", "there"],
            "{api}"
        );
    }
    mock.shutdown().await;
}

#[tokio::test]
async fn openai_streams_report_usage_when_asked() {
    let mock = MockServer::start("m").await.unwrap();
    let mut body = common::body(Api::OpenAi, "o", "hi there", true);
    body["stream_options"] = json!({"include_usage": true});
    let text = post(&client(), &mock, Api::OpenAi, "o", true, body)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let got = frames(&text);
    let usage_chunk = got
        .iter()
        .filter_map(|f| serde_json::from_str::<Value>(&f.data).ok())
        .find(|v| v["usage"].is_object())
        .expect("a usage chunk");
    assert_eq!(usage(Api::OpenAi, &usage_chunk), (4, 7));
    mock.shutdown().await;
}

#[tokio::test]
async fn reply_tokens_and_token_delay_shape_the_stream() {
    let mock = MockServer::start("m").await.unwrap();
    mock.set_behavior(Behavior {
        reply_tokens: Some(4),
        token_delay_ms: 30,
        ..Behavior::named("m")
    });
    let started = Instant::now();
    let text = call(&client(), &mock, Api::Anthropic, "c", true)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(120));
    let got = frames(&text);
    assert_eq!(stream_text(Api::Anthropic, &got), "tok1 tok2 tok3 tok4");
    assert!(ends_properly(Api::Anthropic, &got));
    mock.shutdown().await;
}

fn weather_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"]
    })
}

fn tool_request(api: Api, stream: bool) -> Value {
    let mut body = common::body(api, "t", "weather in Paris?", stream);
    match api {
        Api::OpenAi => {
            body["tools"] = json!([{"type": "function",
                "function": {"name": "get_weather", "parameters": weather_schema()}}]);
        }
        Api::Anthropic => {
            body["tools"] = json!([{"name": "get_weather", "input_schema": weather_schema()}]);
        }
        Api::Gemini => {
            body["tools"] = json!([{"functionDeclarations": [
                {"name": "get_weather", "parameters": weather_schema()}]}]);
        }
    }
    body
}

#[tokio::test]
async fn tools_get_one_tool_call_with_arguments_from_the_schema() {
    let mock = MockServer::start("m").await.unwrap();
    let http = client();
    let expected = json!({"city": "example", "days": 1});
    for api in ALL {
        let v: Value = post(&http, &mock, api, "t", false, tool_request(api, false))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match api {
            Api::OpenAi => {
                let call = &v["choices"][0]["message"]["tool_calls"][0];
                assert_eq!(call["function"]["name"], "get_weather");
                assert!(call["id"].as_str().unwrap().starts_with("call_"));
                let args: Value =
                    serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
                assert_eq!(args, expected);
                assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
            }
            Api::Anthropic => {
                let block = v["content"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|b| b["type"] == "tool_use")
                    .unwrap();
                assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
                assert_eq!(block["name"], "get_weather");
                assert_eq!(block["input"], expected);
                assert_eq!(v["stop_reason"], "tool_use");
            }
            Api::Gemini => {
                let call = &v["candidates"][0]["content"]["parts"][0]["functionCall"];
                assert_eq!(call["name"], "get_weather");
                assert_eq!(call["args"], expected);
            }
        }
    }
    mock.shutdown().await;
}

#[tokio::test]
async fn streamed_tool_calls_carry_the_arguments_in_fragments() {
    let mock = MockServer::start("m").await.unwrap();
    let http = client();
    for api in ALL {
        let text = post(&http, &mock, api, "t", true, tool_request(api, true))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let got = frames(&text);
        assert!(ends_properly(api, &got), "{api}: {text}");
        let chunks: Vec<Value> = got
            .iter()
            .filter_map(|f| serde_json::from_str(&f.data).ok())
            .collect();
        let args: Value = match api {
            Api::OpenAi => {
                let fragments: Vec<&str> = chunks
                    .iter()
                    .filter_map(|c| {
                        c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
                    })
                    .filter(|a| !a.is_empty())
                    .collect();
                assert_eq!(fragments.len(), 2, "{text}");
                serde_json::from_str(&fragments.concat()).unwrap()
            }
            Api::Anthropic => {
                let fragments: Vec<&str> = chunks
                    .iter()
                    .filter(|c| c["delta"]["type"] == "input_json_delta")
                    .filter_map(|c| c["delta"]["partial_json"].as_str())
                    .filter(|a| !a.is_empty())
                    .collect();
                assert_eq!(fragments.len(), 2, "{text}");
                serde_json::from_str(&fragments.concat()).unwrap()
            }
            // Gemini sends a function call whole, in one chunk.
            Api::Gemini => chunks
                .iter()
                .find_map(|c| {
                    let call = &c["candidates"][0]["content"]["parts"][0]["functionCall"];
                    call.is_object().then(|| call["args"].clone())
                })
                .unwrap(),
        };
        assert_eq!(args, json!({"city": "example", "days": 1}), "{api}");
    }
    mock.shutdown().await;
}

#[tokio::test]
async fn a_tool_result_is_answered_with_its_text() {
    let mock = MockServer::start("m").await.unwrap();
    let http = client();
    for api in ALL {
        let mut body = tool_request(api, false);
        match api {
            Api::OpenAi => {
                let messages = body["messages"].as_array_mut().unwrap();
                messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{}"}}]}));
                messages
                    .push(json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"}));
            }
            Api::Anthropic => {
                let messages = body["messages"].as_array_mut().unwrap();
                messages.push(json!({"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]}));
                messages.push(json!({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}));
            }
            Api::Gemini => {
                let contents = body["contents"].as_array_mut().unwrap();
                contents.push(json!({"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {}}}]}));
                contents.push(json!({"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}]}));
            }
        }
        let v: Value = post(&http, &mock, api, "t", false, body)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let text = json_text(api, &v);
        assert!(text.starts_with("The tool said: "), "{api}: {v}");
        assert!(text.contains("sunny"), "{api}: {v}");
    }
    mock.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_the_format_s_own_error() {
    let mock = MockServer::start("m").await.unwrap();
    let http = client();
    for api in ALL {
        let response = post(&http, &mock, api, "x", false, json!({"messages": 5}))
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{api}");
        let v: Value = response.json().await.unwrap();
        match api {
            Api::OpenAi => assert_eq!(v["error"]["type"], "invalid_request_error", "{v}"),
            Api::Anthropic => {
                assert_eq!(v["type"], "error");
                assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
            }
            Api::Gemini => assert_eq!(v["error"]["code"], 400, "{v}"),
        }
    }
    // Gemini streaming without alt=sse is refused too.
    let response = http
        .post(format!(
            "{}/v1beta/models/g:streamGenerateContent",
            mock.url()
        ))
        .json(&common::body(Api::Gemini, "g", "hi", true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT", "{v}");
    mock.shutdown().await;
}

#[tokio::test]
async fn response_ids_are_unique_per_call() {
    let mock = MockServer::start("m").await.unwrap();
    let http = client();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let v: Value = call(&http, &mock, Api::OpenAi, "o", false)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    ids.dedup();
    assert_eq!(ids.len(), 3);
    mock.shutdown().await;
}
