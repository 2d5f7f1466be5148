//! The gateway end to end, in process: real HTTP on loopback to Bulwark, real HTTP from
//! Bulwark to the mock provider. Asserts what the caller got and what the upstream saw.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;

use bulwark_mock::{FaultRule, MockServer};
use serde_json::{Value, json};

struct Stack {
    gateway: SocketAddr,
    primary: MockServer,
    secondary: MockServer,
    client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

const KEY_A: &str = "sk-ant-primary-secret";
const KEY_B: &str = "sk-openai-secondary-secret";

/// Gateway with route `chat` = primary (anthropic kind) → secondary (openai kind).
async fn stack() -> Stack {
    let primary = MockServer::start("primary").await.unwrap();
    let secondary = MockServer::start("secondary").await.unwrap();
    let (gateway, stop, dir) = start_gateway(&primary.url(), &secondary.url()).await;
    Stack {
        gateway,
        primary,
        secondary,
        client: reqwest::Client::new(),
        _stop: stop,
        _dir: dir,
    }
}

/// Runs a gateway whose route `chat` is `primary` (an Anthropic provider at
/// `primary_url`, key `KEY_A`) then `secondary` (an OpenAI one, key `KEY_B`). It runs
/// until the returned sender is dropped; the directory holds its journal.
async fn start_gateway(
    primary_url: &str,
    secondary_url: &str,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tempfile::TempDir,
) {
    bulwark_server::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
journal: {{path: "{j}"}}
providers:
  - {{name: primary, kind: anthropic, api_key: "${{KEY_A}}", base_url: "{primary_url}"}}
  - {{name: secondary, kind: openai, api_key: "${{KEY_B}}", base_url: "{secondary_url}/v1"}}
routes:
  - model: chat
    targets:
      - {{provider: primary, model: claude-test}}
      - {{provider: secondary, model: gpt-test}}
"#,
        j = dir.path().join("journal.db").display()
    );
    let env = |name: &str| match name {
        "KEY_A" => Some(KEY_A.to_string()),
        "KEY_B" => Some(KEY_B.to_string()),
        _ => None,
    };
    let config = bulwark_server::config::parse(Path::new("test.yaml"), &yaml, &env).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        bulwark_server::run(listener, &config, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (gateway, stop, dir)
}

fn fault(json: Value) -> FaultRule {
    serde_json::from_value(json).unwrap()
}

impl Stack {
    async fn post(&self, path: &str, body: &str) -> (u16, reqwest::header::HeaderMap, String) {
        let resp = self
            .client
            .post(format!("http://{}{path}", self.gateway))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap())
    }

    /// The body of a GET, as text.
    async fn get_text(&self, path: &str) -> String {
        let resp = self
            .client
            .get(format!("http://{}{path}", self.gateway))
            .send()
            .await
            .unwrap();
        resp.text().await.unwrap()
    }

    async fn healthy(&self) -> bool {
        self.client
            .get(format!("http://{}/healthz", self.gateway))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The answer text of an OpenAI chat-completion SSE body.
fn openai_stream_text(body: &str) -> String {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

const CHAT: &str = r#"{"model":"chat","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hello"}]}"#;

#[tokio::test]
async fn first_target_503_is_answered_by_the_second() {
    let s = stack().await;
    s.primary
        .push_fault(fault(json!({"fault": {"kind": "status", "status": 503}})));
    let (status, headers, body) = s.post("/v1/chat/completions", CHAT).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-bulwark-provider"), "secondary");
    // Three attempts on the primary (retries with backoff), then the secondary.
    assert_eq!(header(&headers, "x-bulwark-attempts"), "4");
    assert!(!header(&headers, "x-request-id").is_empty());
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["model"], "gpt-test");
    assert_eq!(
        json["choices"][0]["message"]["content"],
        "Hello from secondary. You said: hello"
    );
    assert_eq!(s.primary.calls().len(), 3);
    assert_eq!(s.secondary.calls().len(), 1);
}

#[tokio::test]
async fn upstreams_see_keys_system_prompt_tools_and_max_tokens_in_their_own_shape() {
    let s = stack().await;
    let body = r#"{"model":"chat","max_tokens":50,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"weather?"}],
      "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"zone":{"type":"string"},"city":{"type":"string"}},"required":["zone","city"]}}}]}"#;
    let (status, _, text) = s.post("/v1/chat/completions", body).await;
    assert_eq!(status, 200, "{text}");
    // Key order is kept both ways: a schema's property order is the order a model
    // writes them in (OpenAI documents it for structured outputs), and the caller
    // gets the arguments in the order the provider wrote them.
    let answer: Value = serde_json::from_str(&text).unwrap();
    let arguments = answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .unwrap();
    assert!(
        arguments.find("zone").unwrap() < arguments.find("city").unwrap(),
        "{arguments}"
    );
    let call = &s.primary.calls()[0];
    let properties = call.body["tools"][0]["input_schema"]["properties"]
        .as_object()
        .unwrap();
    assert_eq!(
        properties.keys().collect::<Vec<_>>(),
        ["zone", "city"],
        "{}",
        call.body
    );
    assert_eq!(
        call.headers.get("x-api-key").map(String::as_str),
        Some(KEY_A)
    );
    assert!(call.headers.contains_key("anthropic-version"));
    assert!(!call.headers.contains_key("authorization"));
    assert_eq!(call.body["system"][0]["text"], "Be brief.");
    assert_eq!(call.body["max_tokens"], 50);
    assert_eq!(call.body["messages"][0]["role"], "user");
    assert_eq!(call.body["tools"][0]["name"], "get_weather");
    assert_eq!(
        call.body["tools"][0]["input_schema"]["required"],
        json!(["zone", "city"])
    );

    // An Anthropic caller without... max_tokens is required by Anthropic's own API, so
    // an OpenAI caller that omits it still reaches Anthropic with one.
    s.primary.clear_calls();
    let (status, _, _) = s
        .post(
            "/v1/chat/completions",
            r#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
    assert_eq!(status, 200);
    assert!(s.primary.calls()[0].body["max_tokens"].as_u64().unwrap() > 0);

    // The OpenAI-kind upstream: Bearer key, system as the first message.
    s.primary
        .push_fault(fault(json!({"fault": {"kind": "status", "status": 500}})));
    let (status, _, _) = s.post("/v1/messages", r#"{"model":"chat","max_tokens":20,"system":"Be brief.","messages":[{"role":"user","content":"hi"}]}"#).await;
    assert_eq!(status, 200);
    let call = &s.secondary.calls()[0];
    assert_eq!(
        call.headers.get("authorization").map(String::as_str),
        Some(format!("Bearer {KEY_B}").as_str())
    );
    assert_eq!(
        call.body["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
}

#[tokio::test]
async fn bad_input_gets_4xx_in_the_callers_format_and_the_gateway_stays_up() {
    let s = stack().await;
    let openai_cases = [
        ("{not json", 400, None),
        (r#"{"model":"chat"}"#, 400, Some("messages")),
        (r#"{"model":"chat","messages":"hi"}"#, 400, Some("messages")),
        (
            r#"{"model":"chat","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
            400,
            Some("temperature"),
        ),
        (
            r#"{"model":"chat","messages":[{"role":"user","content":"x"}],"n":3}"#,
            400,
            Some("n"),
        ),
        (
            r#"{"model":"no-such-model","messages":[{"role":"user","content":"x"}]}"#,
            404,
            Some("model"),
        ),
        ("", 400, None),
        ("[]", 400, None),
    ];
    for (body, want, param) in openai_cases {
        let (status, _, text) = s.post("/v1/chat/completions", body).await;
        assert_eq!(status, want, "{body} -> {text}");
        let json: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{text}"
        );
        assert!(json["error"]["type"].is_string(), "{text}");
        if let Some(param) = param {
            assert_eq!(json["error"]["param"], param, "{body} -> {text}");
        }
    }
    let anthropic_cases = [
        ("{not json", 400, "invalid_request_error"),
        (
            r#"{"model":"chat","max_tokens":5}"#,
            400,
            "invalid_request_error",
        ),
        (
            r#"{"model":"chat","messages":[{"role":"user","content":"x"}]}"#,
            400,
            "invalid_request_error",
        ),
        (
            r#"{"model":"chat","max_tokens":"five","messages":[]}"#,
            400,
            "invalid_request_error",
        ),
        (
            r#"{"model":"nope","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
            404,
            "not_found_error",
        ),
    ];
    for (body, want, kind) in anthropic_cases {
        let (status, _, text) = s.post("/v1/messages", body).await;
        assert_eq!(status, want, "{body} -> {text}");
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["type"], "error", "{text}");
        assert_eq!(json["error"]["type"], kind, "{body} -> {text}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // A known endpoint asked with the wrong method: 405, `Allow`, the caller's format.
    for (method, path, allow, anthropic) in [
        ("GET", "/v1/chat/completions", "POST", false),
        ("GET", "/v1/messages", "POST", true),
        ("POST", "/metrics", "GET,HEAD", false),
    ] {
        let resp = s
            .client
            .request(
                method.parse().unwrap(),
                format!("http://{}{path}", s.gateway),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{path}");
        assert_eq!(resp.headers()["allow"], allow, "{path}");
        let json: Value = resp.json().await.unwrap();
        if anthropic {
            assert_eq!(json["type"], "error", "{json}");
            assert_eq!(json["error"]["type"], "invalid_request_error", "{json}");
        } else {
            assert_eq!(json["error"]["type"], "invalid_request_error", "{json}");
        }
        assert!(
            json["error"]["message"].as_str().unwrap().contains(method),
            "{json}"
        );
    }
    // An unknown path from the Anthropic SDK (it sends anthropic-version): its shape.
    let resp = s
        .client
        .get(format!("http://{}/v1/models/claude-x", s.gateway))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let json: Value = resp.json().await.unwrap();
    assert_eq!(json["type"], "error", "{json}");
    assert_eq!(json["error"]["type"], "not_found_error", "{json}");
    // A compressed body (not decoded) is a 415, and a deadline under a millisecond a
    // 400, each in the caller's format, not a parse error or an outage.
    for (path, headers, want) in [
        ("/v1/chat/completions", ("content-encoding", "gzip"), 415),
        ("/v1/messages", ("content-encoding", "br"), 415),
        (
            "/v1/messages/count_tokens",
            ("content-encoding", "gzip"),
            415,
        ),
        ("/v1/chat/completions", ("x-bulwark-timeout", "1us"), 400),
    ] {
        let body = if path.starts_with("/v1/messages") {
            r#"{"model":"chat","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#
        } else {
            CHAT
        };
        let resp = s
            .client
            .post(format!("http://{}{path}", s.gateway))
            .header("content-type", "application/json")
            .header(headers.0, headers.1)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want, "{path} {headers:?}");
        let json: Value = resp.json().await.unwrap();
        assert_eq!(json["error"]["type"], "invalid_request_error", "{json}");
    }
    // Every Content-Encoding header counts, not only the first.
    let resp = s
        .client
        .post(format!("http://{}/v1/chat/completions", s.gateway))
        .header("content-type", "application/json")
        .header("content-encoding", "identity")
        .header("content-encoding", "gzip")
        .body(CHAT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    // Nothing reached a provider, and the gateway still serves.
    assert!(s.primary.calls().is_empty());
    assert!(s.healthy().await);
    let (status, _, _) = s.post("/v1/chat/completions", CHAT).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn stream_fails_over_before_the_first_byte_and_never_fakes_a_finish_after_it() {
    let s = stack().await;
    let body =
        r#"{"model":"chat","stream":true,"messages":[{"role":"user","content":"one two three"}]}"#;

    // Broken before any content: the caller sees only the secondary's complete stream.
    s.primary
        .push_fault(fault(json!({"fault": {"kind": "cut", "after_chunks": 0}})));
    let (status, headers, text) = s.post("/v1/chat/completions", body).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-bulwark-provider"), "secondary");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(
        openai_stream_text(&text),
        "Hello from secondary. You said: one two three"
    );
    assert_eq!(
        text.matches("\"role\":\"assistant\"").count(),
        1,
        "one clean stream: {text}"
    );
    s.primary.clear_faults();

    // Broken after content was sent: an in-band error, and no [DONE].
    s.primary.push_fault(fault(
        json!({"fault": {"kind": "cut", "after_chunks": 3}, "times": 1}),
    ));
    let (status, headers, text) = s.post("/v1/chat/completions", body).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-bulwark-provider"), "primary");
    assert!(!text.contains("[DONE]"), "{text}");
    let last = text.trim_end().lines().last().unwrap();
    let chunk: Value = serde_json::from_str(last.trim_start_matches("data: ")).unwrap();
    assert!(chunk["error"]["message"].is_string(), "{text}");

    // Same on the Anthropic ingress: `event: error`, no message_stop.
    s.primary.push_fault(fault(
        json!({"fault": {"kind": "cut", "after_chunks": 3}, "times": 1}),
    ));
    let (status, _, text) = s
        .post("/v1/messages", r#"{"model":"chat","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"one two three"}]}"#)
        .await;
    assert_eq!(status, 200);
    assert!(text.contains("event: error"), "{text}");
    assert!(!text.contains("message_stop"), "{text}");
    assert!(s.healthy().await);
}

#[tokio::test]
async fn provider_keys_never_reach_the_caller() {
    let s = stack().await;
    // Both providers reject their credentials, quoting the key back (as some do).
    for (mock, key) in [(&s.primary, KEY_A), (&s.secondary, KEY_B)] {
        mock.push_fault(fault(json!({"fault": {
            "kind": "status", "status": 401,
            "message": format!("Incorrect API key provided: {key}")
        }})));
    }
    let (status, headers, text) = s.post("/v1/chat/completions", CHAT).await;
    assert_eq!(status, 503, "{text}");
    let everything = format!("{headers:?}{text}");
    assert!(
        !everything.contains(KEY_A) && !everything.contains(KEY_B),
        "{everything}"
    );
    let json: Value = serde_json::from_str(&text).unwrap();
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("credentials")
    );
}

#[tokio::test]
async fn models_lists_routes_in_both_shapes() {
    let s = stack().await;
    let openai: Value = serde_json::from_str(&s.get_text("/v1/models").await).unwrap();
    assert_eq!(openai["object"], "list");
    assert_eq!(openai["data"][0]["id"], "chat");
    let anthropic: Value = s
        .client
        .get(format!("http://{}/v1/models", s.gateway))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(anthropic["data"][0]["type"], "model");
    assert_eq!(anthropic["data"][0]["id"], "chat");
}

#[tokio::test]
async fn a_key_quoted_in_a_mid_stream_error_reaches_neither_caller_nor_journal() {
    let s = stack().await;
    // The primary streams two chunks, then an in-band error quoting its own key.
    s.primary.push_fault(fault(json!({"fault": {
        "kind": "error_event", "after_chunks": 2,
        "message": format!("internal error for key {KEY_A}")
    }})));
    let body = json!({
        "model": "chat", "stream": true,
        "messages": [{"role": "user", "content": "hi"}],
    })
    .to_string();
    let (status, _, text) = s.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("\"error\""),
        "the break is reported in band: {text}"
    );
    assert!(!text.contains(KEY_A), "{text}");
    assert!(
        text.contains("***"),
        "the key is masked, the message kept: {text}"
    );
    // The journal recorded the failed attempt's message, masked too.
    let journal = bulwark_journal::Journal::open_read_only(
        &bulwark_journal::JournalConfig::sqlite(s._dir.path().join("journal.db")),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    journal
        .export(&bulwark_journal::ExportFilter::default(), &mut out)
        .await
        .unwrap();
    let exported = String::from_utf8(out).unwrap();
    assert!(exported.contains("***"), "{exported}");
    assert!(!exported.contains(KEY_A), "{exported}");
}

/// A journal that cannot write (a full disk, simulated by a trigger that aborts the
/// insert): with `durability: sync` a request is refused with 503 before any provider
/// is called, and an answer whose record cannot be committed is not released.
#[tokio::test]
async fn a_journal_that_cannot_write_refuses_requests_and_withholds_unrecorded_answers() {
    let s = stack().await;
    // One request first: the gateway has created the journal before we touch it.
    let (status, _, _) = s.post("/v1/chat/completions", CHAT).await;
    assert_eq!(status, 200);
    s.primary.clear_calls();
    let db = rusqlite::Connection::open(s._dir.path().join("journal.db")).unwrap();

    db.execute_batch(
        "CREATE TRIGGER full BEFORE INSERT ON records BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END;",
    )
    .unwrap();
    let (status, _, text) = s.post("/v1/chat/completions", CHAT).await;
    assert_eq!(status, 503, "{text}");
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["error"]["code"], "journal_unavailable", "{text}");
    assert!(
        !text.contains("disk full"),
        "no internals in the caller's error: {text}"
    );
    assert!(
        s.primary.calls().is_empty(),
        "no provider call for an unrecorded request"
    );

    // Begin records go through; the outcome cannot be written: the answer is withheld.
    db.execute_batch(
        "DROP TRIGGER full; CREATE TRIGGER full BEFORE INSERT ON records WHEN NEW.kind = 'complete' BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END;",
    )
    .unwrap();
    let (status, _, text) = s.post("/v1/chat/completions", CHAT).await;
    assert_eq!(status, 503, "{text}");
    assert_eq!(s.primary.calls().len(), 1, "the provider answered");
    assert!(
        !text.contains("Hello from"),
        "the unrecorded answer must not be released: {text}"
    );

    // A stream under the same fault: its content went out before its end, so the end
    // is an in-band error, never a finish reason or [DONE] (an answer that reached the
    // caller whole in one write must also have been recorded first).
    let stream =
        r#"{"model":"chat","stream":true,"messages":[{"role":"user","content":"one two three"}]}"#;
    let (status, _, text) = s.post("/v1/chat/completions", stream).await;
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(!text.contains("\"finish_reason\":\"stop\""), "{text}");
    let last = text.trim_end().lines().last().unwrap();
    let chunk: Value = serde_json::from_str(last.trim_start_matches("data: ")).unwrap();
    assert!(chunk["error"]["message"].is_string(), "{text}");
    assert!(!text.contains("disk full"), "no internals: {text}");

    // The disk has room again: requests are answered and recorded.
    db.execute_batch("DROP TRIGGER full;").unwrap();
    let (status, _, text) = s.post("/v1/chat/completions", CHAT).await;
    assert_eq!(status, 200, "{text}");
    assert!(s.healthy().await);
}

/// A caller that hangs up mid-stream: the stream's task is stopped at once (not at the
/// upstream's next token), the request counts as `cancelled`, and the gateway goes on.
#[tokio::test]
async fn a_caller_hanging_up_mid_stream_is_cancelled_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = stack().await;
    // Tokens 2 s apart: after the first one, nothing else happens upstream for 2 s.
    s.primary.set_behavior(bulwark_mock::Behavior {
        token_delay_ms: 2000,
        reply_tokens: Some(5),
        ..bulwark_mock::Behavior::named("primary")
    });
    let body = r#"{"model":"chat","stream":true,"messages":[{"role":"user","content":"hello"}]}"#;
    let mut conn = tokio::net::TcpStream::connect(s.gateway).await.unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: bulwark\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("tok1") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "the stream ended before its first token");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(conn);
    let hung_up = std::time::Instant::now();

    let cancelled = |text: &str| {
        text.lines().any(|l| {
            l.starts_with("bulwark_requests_total{")
                && l.contains(r#"outcome="cancelled""#)
                && l.ends_with(" 1")
        })
    };
    loop {
        let text = s.get_text("/metrics").await;
        if cancelled(&text) {
            break;
        }
        assert!(
            hung_up.elapsed() < std::time::Duration::from_millis(1500),
            "not counted as cancelled before the upstream's next token:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    s.primary
        .set_behavior(bulwark_mock::Behavior::named("primary"));
    let (status, _, _) = s.post("/v1/chat/completions", CHAT).await;
    assert_eq!(status, 200, "the gateway answers the next caller");
}

/// A provider answering with a redirect is not followed: following it would resend
/// the prompt and the provider's key headers (`x-api-key` is not among the headers an
/// HTTP client strips on a cross-host redirect) to wherever the redirect points. The
/// 3xx counts as a failed attempt and the route fails over.
#[tokio::test]
async fn a_redirecting_provider_is_not_followed_and_its_key_goes_nowhere_else() {
    let elsewhere = MockServer::start("elsewhere").await.unwrap();
    let secondary = MockServer::start("secondary").await.unwrap();
    let target = format!("{}/v1/messages", elsewhere.url());
    let redirector = axum::Router::new().fallback(move || {
        let target = target.clone();
        async move {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, target)],
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirector_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, redirector).await.unwrap() });

    let (gateway, _stop, _dir) =
        start_gateway(&format!("http://{redirector_addr}"), &secondary.url()).await;

    for stream in [false, true] {
        let body = json!({"model": "chat", "stream": stream,
            "messages": [{"role": "user", "content": "hello"}]});
        let resp = reqwest::Client::new()
            .post(format!("http://{gateway}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "stream={stream}");
        assert_eq!(header(resp.headers(), "x-bulwark-provider"), "secondary");
    }
    assert!(
        elsewhere.calls().is_empty(),
        "the redirect was followed: {:?}",
        elsewhere.calls()
    );
}

/// A caller that sends its request a little at a time is cut off: headers not in
/// within 30 s close the connection, a body not in within 60 s of its headers gets a
/// 408 in the caller's format; and shutdown does not wait for either.
#[tokio::test(start_paused = true)]
async fn a_trickling_caller_is_cut_off_and_does_not_hold_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn read_until_closed(stream: &mut tokio::net::TcpStream, into: &mut Vec<u8>) {
        let read = stream.read_to_end(into);
        let waited = tokio::time::timeout(std::time::Duration::from_secs(600), read).await;
        assert!(
            waited.is_ok(),
            "the gateway kept the connection open for 10 minutes"
        );
    }
    let (gateway, stop, _dir) = start_gateway("http://127.0.0.1:9", "http://127.0.0.1:9").await;

    // Headers that never end.
    let mut slow_headers = tokio::net::TcpStream::connect(gateway).await.unwrap();
    slow_headers
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: bulwark\r\n")
        .await
        .unwrap();
    let began = tokio::time::Instant::now();
    let mut got = Vec::new();
    read_until_closed(&mut slow_headers, &mut got).await;
    assert!(
        began.elapsed() >= std::time::Duration::from_secs(30),
        "closed after {:?}",
        began.elapsed()
    );
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains("200 OK"), "{text}");

    // A connection that never starts a request: silent, or a partial HTTP/2 preface.
    for opening in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut idle = tokio::net::TcpStream::connect(gateway).await.unwrap();
        idle.write_all(opening).await.unwrap();
        let began = tokio::time::Instant::now();
        let mut got = Vec::new();
        read_until_closed(&mut idle, &mut got).await;
        assert!(began.elapsed() >= std::time::Duration::from_secs(30));
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    }

    // A body that stops short of its length.
    for (path, shape) in [
        ("/v1/chat/completions", "openai"),
        ("/v1/messages", "anthropic"),
    ] {
        let mut slow_body = tokio::net::TcpStream::connect(gateway).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: bulwark\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"model\":"
        );
        slow_body.write_all(head.as_bytes()).await.unwrap();
        let began = tokio::time::Instant::now();
        let mut got = Vec::new();
        read_until_closed(&mut slow_body, &mut got).await;
        assert!(began.elapsed() >= std::time::Duration::from_secs(60));
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408"), "{shape}: {text}");
        let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        let message = match shape {
            "openai" => body["error"]["message"].as_str(),
            _ => {
                assert_eq!(body["type"], "error");
                body["error"]["message"].as_str()
            }
        };
        assert!(message.unwrap().contains("did not arrive"), "{body}");
    }

    // Shutdown with a caller still trickling headers: the connection is closed and
    // the server stops.
    let mut lingering = tokio::net::TcpStream::connect(gateway).await.unwrap();
    lingering.write_all(b"POST /v1/chat").await.unwrap();
    drop(stop);
    let mut rest = Vec::new();
    read_until_closed(&mut lingering, &mut rest).await;
    let refused = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(gateway),
    )
    .await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "the listener is still open after shutdown"
    );
}
