//! Each fault kind does what the crate docs say, on every format.

// Helpers outside #[test] fns unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bulwark_mock::{Api, Behavior, Fault, FaultRule, MockServer};
use common::{ALL, Frame, call, client, ends_properly, frames, stream_text};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FULL: &str = "Hello from m. You said: hi there";

/// Reads a streamed body until it ends or fails: (text so far, error if any).
async fn read_body(response: reqwest::Response) -> (String, Option<reqwest::Error>) {
    let mut text = String::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Err(err) => return (text, Some(err)),
        }
    }
    (text, None)
}

async fn stream_with(api: Api, fault: Fault) -> (reqwest::Response, MockServer) {
    let mock = MockServer::start("m").await.unwrap();
    mock.push_fault(FaultRule::new(fault).times(1));
    let response = call(&client(), &mock, api, "model-a", true).await.unwrap();
    assert_eq!(response.status(), 200, "{api}");
    (response, mock)
}

#[tokio::test]
async fn status_faults_send_the_provider_error_body_retry_after_and_headers() {
    let mock = MockServer::start("m").await.unwrap();
    let http = client();
    for api in ALL {
        mock.push_fault(
            FaultRule::new(Fault::Status {
                status: 429,
                message: Some("slow down".into()),
                code: None,
                retry_after: Some("7".into()),
                headers: BTreeMap::from([("x-ratelimit-reset".into(), "1s".into())]),
            })
            .times(1),
        );
        let response = call(&http, &mock, api, "model-a", false).await.unwrap();
        assert_eq!(response.status(), 429, "{api}");
        assert_eq!(response.headers()["retry-after"], "7");
        assert_eq!(response.headers()["x-ratelimit-reset"], "1s");
        assert_eq!(response.headers()["content-type"], "application/json");
        let body: Value = response.json().await.unwrap();
        let expected = match api {
            Api::OpenAi => json!({"error": {"message": "slow down", "type": "requests",
                                            "param": null, "code": null}}),
            Api::Anthropic => json!({"type": "error",
                                     "error": {"type": "rate_limit_error", "message": "slow down"}}),
            Api::Gemini => json!({"error": {"code": 429, "message": "slow down",
                                            "status": "RESOURCE_EXHAUSTED"}}),
        };
        assert_eq!(body, expected, "{api}");
    }
    mock.shutdown().await;
}

#[tokio::test]
async fn status_faults_take_codes_such_as_overloaded_and_insufficient_quota() {
    let mock = MockServer::start("m").await.unwrap();
    let http = client();
    mock.push_fault(FaultRule::new(Fault::status(529)).api(Api::Anthropic));
    mock.push_fault(
        FaultRule::new(Fault::Status {
            status: 429,
            message: None,
            code: Some("insufficient_quota".into()),
            retry_after: None,
            headers: BTreeMap::new(),
        })
        .api(Api::OpenAi),
    );
    let response = call(&http, &mock, Api::Anthropic, "c", true).await.unwrap();
    assert_eq!(response.status().as_u16(), 529);
    assert!(response.headers().get("retry-after").is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "overloaded_error");

    let response = call(&http, &mock, Api::OpenAi, "o", false).await.unwrap();
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "insufficient_quota");
    assert_eq!(body["error"]["code"], "insufficient_quota");
    mock.shutdown().await;
}

#[tokio::test]
async fn times_n_applies_exactly_n_times_then_the_rule_is_gone() {
    let mock = MockServer::start("m").await.unwrap();
    let http = client();
    mock.push_fault(FaultRule::new(Fault::status(503)).times(2));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = call(&http, &mock, Api::OpenAi, "o", false).await.unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(&statuses[..2], &[503, 503]);
    assert_ne!(statuses[2], 503);
    assert!(mock.faults().is_empty());
    let faults: Vec<Option<String>> = mock.calls().into_iter().map(|c| c.fault).collect();
    assert_eq!(faults, [Some("status".into()), Some("status".into()), None]);
    mock.shutdown().await;
}

#[tokio::test]
async fn rules_only_hit_the_api_and_model_they_name() {
    let mock = MockServer::start("m").await.unwrap();
    let http = client();
    mock.push_fault(
        FaultRule::new(Fault::status(503))
            .api(Api::Gemini)
            .model("g1"),
    );
    let other_api = call(&http, &mock, Api::OpenAi, "g1", false).await.unwrap();
    let other_model = call(&http, &mock, Api::Gemini, "g2", false).await.unwrap();
    let hit = call(&http, &mock, Api::Gemini, "g1", false).await.unwrap();
    assert_ne!(other_api.status(), 503);
    assert_ne!(other_model.status(), 503);
    assert_eq!(hit.status(), 503);
    assert_eq!(mock.faults()[0].applied, 1);
    mock.shutdown().await;
}

#[tokio::test]
async fn reset_closes_the_connection_without_any_response() {
    let mock = MockServer::start("m").await.unwrap();
    mock.push_fault(FaultRule::new(Fault::Reset).times(1));
    let err = call(&client(), &mock, Api::OpenAi, "o", false)
        .await
        .expect_err("a reset must not produce a response");
    assert!(err.status().is_none());
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    let calls = mock.calls();
    assert_eq!(calls[0].fault.as_deref(), Some("reset"));
    assert_eq!(calls[0].status, None);
    mock.shutdown().await;
}

#[tokio::test]
async fn reset_is_an_rst_on_the_wire() {
    let mock = MockServer::start("m").await.unwrap();
    mock.push_fault(FaultRule::new(Fault::Reset).api(Api::Anthropic));
    let mut socket = tokio::net::TcpStream::connect(mock.addr()).await.unwrap();
    let body = r#"{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    let request = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut buf))
        .await
        .expect("the mock must close the connection");
    assert!(buf.is_empty(), "no HTTP response bytes: {buf:?}");
    let err = read.expect_err("an RST reads as an error, not a clean end");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    mock.shutdown().await;
}

#[tokio::test]
async fn hang_never_answers_but_logs_the_call() {
    let mock = MockServer::start("m").await.unwrap();
    mock.push_fault(FaultRule::new(Fault::Hang).times(1));
    let started = Instant::now();
    let err = client()
        .post(format!(
            "{}{}",
            mock.url(),
            common::path(Api::Gemini, "g", false)
        ))
        .timeout(Duration::from_millis(150))
        .json(&common::body(Api::Gemini, "g", "hi", false))
        .send()
        .await
        .expect_err("a hung call has no response");
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(150));
    let calls = mock.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].fault.as_deref(), Some("hang"));
    assert_eq!(calls[0].status, None);
    mock.shutdown().await;
}

#[tokio::test]
async fn latency_delays_the_response_headers() {
    let mock = MockServer::start("m").await.unwrap();
    mock.set_behavior(Behavior {
        latency_ms: 120,
        ..Behavior::named("m")
    });
    mock.push_fault(FaultRule::new(Fault::status(500)));
    let started = Instant::now();
    let response = call(&client(), &mock, Api::Anthropic, "c", false)
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert!(started.elapsed() >= Duration::from_millis(120));
    mock.shutdown().await;
}

#[tokio::test]
async fn stream_only_faults_leave_json_calls_alone() {
    let mock = MockServer::start("m").await.unwrap();
    mock.push_fault(FaultRule::new(Fault::Cut { after_chunks: 0 }).times(1));
    let response = call(&client(), &mock, Api::OpenAi, "o", false)
        .await
        .unwrap();
    let (_, err) = read_body(response).await;
    assert!(err.is_none());
    assert_eq!(mock.faults()[0].remaining, Some(1));
    assert_eq!(mock.calls()[0].fault, None);
    mock.shutdown().await;
}

// ---- stream faults (these need the real serve encoders) ----

#[tokio::test]
async fn cut_drops_the_connection_mid_body() {
    for api in ALL {
        let (response, mock) = stream_with(api, Fault::Cut { after_chunks: 2 }).await;
        let (text, err) = read_body(response).await;
        assert!(
            err.is_some(),
            "{api}: a cut stream must end in a body error"
        );
        let got = frames(&text);
        assert_eq!(stream_text(api, &got), "Hello from ", "{api}");
        assert!(!ends_properly(api, &got), "{api}");
        assert!(!text.contains("[DONE]"));
        assert_eq!(mock.calls()[0].fault.as_deref(), Some("cut"));
        assert_eq!(mock.calls()[0].status, Some(200));
    }
}

#[tokio::test]
async fn stall_pauses_the_stream_then_finishes_it() {
    for api in ALL {
        let (response, _mock) = stream_with(
            api,
            Fault::Stall {
                after_chunks: 1,
                stall_ms: 150,
            },
        )
        .await;
        // Every piece of body as it arrives, with the time since the previous one.
        let mut last = Instant::now();
        let mut pieces = Vec::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let gap = last.elapsed();
            last = Instant::now();
            pieces.push((gap, String::from_utf8_lossy(&chunk.unwrap()).into_owned()));
        }
        let (stall_at, (gap, _)) = pieces
            .iter()
            .enumerate()
            .max_by_key(|(_, (gap, _))| *gap)
            .unwrap();
        // Lower bounds only (an upper bound would flake on a busy machine).
        assert!(*gap >= Duration::from_millis(130), "{api}: {gap:?}");
        let before: String = pieces[..stall_at].iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(stream_text(api, &frames(&before)), "Hello ", "{api}");
        let text: String = pieces.iter().map(|(_, t)| t.as_str()).collect();
        let got = frames(&text);
        assert_eq!(stream_text(api, &got), FULL, "{api}");
        assert!(ends_properly(api, &got), "{api}");
    }
}

#[tokio::test]
async fn malformed_writes_one_bad_frame_and_goes_on() {
    for api in ALL {
        let (response, _mock) = stream_with(api, Fault::Malformed { after_chunks: 1 }).await;
        let (text, err) = read_body(response).await;
        assert!(err.is_none());
        let got = frames(&text);
        let bad: Vec<&Frame> = got.iter().filter(|f| f.data == "{not json").collect();
        assert_eq!(bad.len(), 1, "{api}");
        assert_eq!(stream_text(api, &got), FULL, "{api}");
        assert!(ends_properly(api, &got), "{api}");
    }
}

#[tokio::test]
async fn no_terminator_ends_cleanly_without_the_terminator() {
    for api in ALL {
        let (response, _mock) = stream_with(api, Fault::NoTerminator).await;
        let (text, err) = read_body(response).await;
        assert!(err.is_none(), "{api}: the close is clean");
        let got = frames(&text);
        assert_eq!(stream_text(api, &got), FULL, "{api}");
        match api {
            Api::OpenAi => {
                assert!(!got.iter().any(|f| f.data == "[DONE]"));
                assert!(text.contains(r#""finish_reason":"stop""#), "{text}");
            }
            Api::Anthropic => {
                assert!(
                    !got.iter()
                        .any(|f| f.event.as_deref() == Some("message_stop"))
                );
                assert!(
                    got.iter()
                        .any(|f| f.event.as_deref() == Some("message_delta"))
                );
            }
            // Gemini has no terminator: a normal stream.
            Api::Gemini => assert!(ends_properly(api, &got)),
        }
    }
}

#[tokio::test]
async fn error_event_sends_the_provider_s_in_band_error() {
    for api in ALL {
        let (response, _mock) = stream_with(
            api,
            Fault::ErrorEvent {
                after_chunks: 1,
                status: None,
                message: Some("busy".into()),
                code: None,
            },
        )
        .await;
        let (text, err) = read_body(response).await;
        assert!(err.is_none());
        let got = frames(&text);
        assert_eq!(stream_text(api, &got), "Hello ", "{api}");
        let last = got.last().unwrap();
        let data: Value = serde_json::from_str(&last.data).unwrap();
        match api {
            Api::OpenAi => {
                assert_eq!(last.event, None);
                assert_eq!(data["error"]["message"], "busy");
                assert_eq!(data["error"]["type"], "server_error");
            }
            Api::Anthropic => {
                assert_eq!(last.event.as_deref(), Some("error"));
                assert_eq!(data["type"], "error");
                assert_eq!(data["error"]["type"], "overloaded_error");
            }
            Api::Gemini => {
                assert_eq!(data["error"]["code"], 503);
                assert_eq!(data["error"]["status"], "UNAVAILABLE");
            }
        }
    }
}

#[tokio::test]
async fn slow_first_token_sends_headers_at_once_and_content_late() {
    for api in ALL {
        let (response, _mock) = stream_with(api, Fault::SlowFirstToken { delay_ms: 150 }).await;
        let headers_at = Instant::now();
        let (text, _) = read_body(response).await;
        // The delay comes after the headers (with slack for the headers' own trip).
        assert!(headers_at.elapsed() >= Duration::from_millis(130), "{api}");
        assert_eq!(stream_text(api, &frames(&text)), FULL, "{api}");
    }
}

#[tokio::test]
async fn slow_first_token_delays_a_json_answer_whole() {
    let mock = MockServer::start("m").await.unwrap();
    mock.push_fault(FaultRule::new(Fault::SlowFirstToken { delay_ms: 150 }).times(1));
    let started = Instant::now();
    let response = call(&client(), &mock, Api::Anthropic, "c", false)
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(response.status(), 200);
    mock.shutdown().await;
}
