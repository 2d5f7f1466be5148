//! The `/_mock/` control API and the Rust API behind it.

// Helpers outside #[test] fns unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bulwark_mock::{Api, Behavior, Fault, FaultRule, MockServer};
use common::{ALL, call, client};
use serde_json::{Value, json};

#[tokio::test]
async fn faults_can_be_pushed_listed_removed_and_cleared_over_http() {
    let mock = MockServer::start("m").await.unwrap();
    let http = client();
    let url = format!("{}/_mock/faults", mock.url());

    let first: Value = http
        .post(&url)
        .json(&json!({"fault": {"kind": "status", "status": 503}, "times": 2, "api": "openai"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second: Value = http
        .post(&url)
        .json(&json!({"fault": {"kind": "reset"}, "model": "x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (first, second) = (
        first["id"].as_u64().unwrap(),
        second["id"].as_u64().unwrap(),
    );
    assert_ne!(first, second);

    let listed: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed[0]["id"], first);
    assert_eq!(listed[0]["fault"], json!({"kind": "status", "status": 503}));
    assert_eq!(listed[0]["remaining"], 2);
    assert_eq!(listed[0]["api"], "openai");
    assert_eq!(listed[1]["remaining"], Value::Null);
    assert_eq!(listed[1]["model"], "x");
    assert_eq!(mock.faults().len(), 2);

    let removed = http.delete(format!("{url}/{first}")).send().await.unwrap();
    assert_eq!(removed.status(), 204);
    let again = http.delete(format!("{url}/{first}")).send().await.unwrap();
    assert_eq!(again.status(), 404);
    assert_eq!(mock.faults().len(), 1);

    let cleared = http.delete(&url).send().await.unwrap();
    assert_eq!(cleared.status(), 204);
    assert!(mock.faults().is_empty());
    mock.shutdown().await;
}

#[tokio::test]
async fn bad_control_bodies_are_a_400_naming_the_problem() {
    let mock = MockServer::start("m").await.unwrap();
    let http = client();
    let response = http
        .post(format!("{}/_mock/faults", mock.url()))
        .json(&json!({"fault": {"kind": "cut", "after_chunk": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("after_chunk"),
        "{body}"
    );

    let response = http
        .put(format!("{}/_mock/behavior", mock.url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(mock.faults().is_empty());
    mock.shutdown().await;
}

#[tokio::test]
async fn behavior_takes_partial_updates_and_reset_restores_it() {
    let mock = MockServer::start("alpha").await.unwrap();
    let http = client();
    let url = format!("{}/_mock/behavior", mock.url());

    let initial: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        initial,
        json!({"latency_ms": 0, "token_delay_ms": 0, "reply_tokens": null, "name": "alpha"})
    );
    let updated: Value = http
        .put(&url)
        .json(&json!({"token_delay_ms": 5, "reply_tokens": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(updated["token_delay_ms"], 5);
    assert_eq!(updated["reply_tokens"], 3);
    assert_eq!(updated["name"], "alpha");
    assert_eq!(mock.behavior().reply_tokens, Some(3));

    mock.set_behavior(Behavior::named("beta"));
    let now: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(now["name"], "beta");
    assert_eq!(now["reply_tokens"], Value::Null);

    mock.push_fault(FaultRule::new(Fault::Hang));
    let reset = http
        .post(format!("{}/_mock/reset", mock.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 204);
    assert_eq!(mock.behavior(), Behavior::named("alpha"));
    assert!(mock.faults().is_empty());
    mock.shutdown().await;
}

#[tokio::test]
async fn the_call_log_records_path_model_headers_and_body() {
    let mock = MockServer::start("m").await.unwrap();
    // A status fault keeps this test independent of the wire encoders.
    mock.push_fault(FaultRule::new(Fault::status(500)));
    let http = client();

    http.post(format!("{}/v1/messages", mock.url()))
        .header("x-api-key", "sk-ant-test")
        .header("anthropic-version", "2023-06-01")
        .json(
            &json!({"model": "claude-x", "max_tokens": 10, "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    http.post(format!(
        "{}/v1beta/models/gemini-x:streamGenerateContent?alt=sse",
        mock.url()
    ))
    .header("x-goog-api-key", "g-key")
    .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
    .send()
    .await
    .unwrap();
    http.post(format!("{}/v1/chat/completions", mock.url()))
        .bearer_auth("sk-openai")
        .body("not json at all")
        .send()
        .await
        .unwrap();

    let calls = mock.calls();
    assert_eq!(calls.len(), 3);
    let anthropic = &calls[0];
    assert_eq!(anthropic.api, Api::Anthropic);
    assert_eq!(anthropic.path, "/v1/messages");
    assert_eq!(anthropic.model.as_deref(), Some("claude-x"));
    assert!(anthropic.stream);
    assert_eq!(anthropic.headers["x-api-key"], "sk-ant-test");
    assert_eq!(anthropic.headers["anthropic-version"], "2023-06-01");
    assert_eq!(anthropic.body["messages"][0]["content"], "hi");
    assert_eq!(anthropic.fault.as_deref(), Some("status"));
    assert_eq!(anthropic.status, Some(500));

    let gemini = &calls[1];
    assert_eq!(gemini.api, Api::Gemini);
    assert_eq!(gemini.path, "/v1beta/models/gemini-x:streamGenerateContent");
    assert_eq!(gemini.query.as_deref(), Some("alt=sse"));
    assert_eq!(gemini.model.as_deref(), Some("gemini-x"));
    assert!(gemini.stream);
    assert_eq!(gemini.headers["x-goog-api-key"], "g-key");

    let openai = &calls[2];
    assert_eq!(openai.headers["authorization"], "Bearer sk-openai");
    assert_eq!(openai.body, json!("not json at all"));
    assert_eq!(openai.model, None);
    assert!(calls[0].seq < calls[1].seq && calls[1].seq < calls[2].seq);
    assert!(calls[0].at_ms <= calls[2].at_ms);

    // The same log over HTTP, then cleared.
    let listed: Value = http
        .get(format!("{}/_mock/calls", mock.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["api"], "anthropic");
    assert_eq!(listed[0]["headers"]["x-api-key"], "sk-ant-test");
    assert_eq!(listed[0]["status"], 500);
    assert_eq!(listed[0]["fault"], "status");
    let cleared = http
        .delete(format!("{}/_mock/calls", mock.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 204);
    assert!(mock.calls().is_empty());
    mock.shutdown().await;
}

#[tokio::test]
async fn control_calls_and_unknown_paths_are_not_logged() {
    let mock = MockServer::start("m").await.unwrap();
    let http = client();
    let health: Value = http
        .get(format!("{}/_mock/health", mock.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok", "name": "m"}));
    let missing = http
        .post(format!("{}/v1/v1/chat/completions", mock.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/v1/chat/completions")
    );
    assert!(mock.calls().is_empty());
    mock.shutdown().await;
}

#[tokio::test]
async fn serve_runs_until_its_shutdown_future_resolves() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bulwark_mock::serve(listener, "cli".into(), async move {
        let _ = stopped.await;
    }));
    let http = client();
    let health: Value = http
        .get(format!("http://{addr}/_mock/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["name"], "cli");
    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap();
    assert!(result.unwrap().is_ok());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_ends_connections_parked_on_a_hang() {
    let mock = MockServer::start("m").await.unwrap();
    mock.push_fault(FaultRule::new(Fault::Hang));
    let http = client();
    let pending = {
        let http = http.clone();
        let url = mock.url();
        tokio::spawn(async move {
            http.post(format!("{url}/v1/chat/completions"))
                .json(&json!({"model": "m", "messages": []}))
                .send()
                .await
        })
    };
    // Wait until the mock has the call, then stop it.
    for _ in 0..100 {
        if !mock.calls().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(mock.calls().len(), 1);
    tokio::time::timeout(Duration::from_secs(5), mock.shutdown())
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_err(), "a hung call must fail once the mock stops");
}

#[tokio::test]
async fn every_api_path_answers_something_in_its_own_shape() {
    // Independent of the encoders: a status fault on each path.
    let mock = MockServer::start("m").await.unwrap();
    mock.push_fault(FaultRule::new(Fault::status(404)));
    let http = client();
    for api in ALL {
        let response = call(&http, &mock, api, "some-model", false).await.unwrap();
        assert_eq!(response.status(), 404, "{api}");
        let body: Value = response.json().await.unwrap();
        match api {
            Api::OpenAi => assert_eq!(body["error"]["type"], "invalid_request_error"),
            Api::Anthropic => assert_eq!(body["error"]["type"], "not_found_error"),
            Api::Gemini => assert_eq!(body["error"]["status"], "NOT_FOUND"),
        }
    }
    // Gemini's methods under the other API versions the SDK may pick.
    for version in ["v1", "v1alpha"] {
        let response = http
            .post(format!("{}/{version}/models/g:generateContent", mock.url()))
            .json(&common::body(Api::Gemini, "g", "hi", false))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{version}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["status"], "NOT_FOUND", "{version}");
    }
    assert_eq!(mock.calls().last().unwrap().model.as_deref(), Some("g"));
    mock.shutdown().await;
}
