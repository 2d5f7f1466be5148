//! Issue 4, must-show 3: `Idempotency-Key` — a repeat gets the stored answer without
//! a provider call (JSON and stream, in either ingress format), a concurrent duplicate
//! waits for the first, and the same key with another body is a 422.

use bulwark_mock::{Behavior, MockServer};
use serde_json::{Value, json};

use crate::support::{
    Gateway, chat_body, journal_export, journal_lines, stream_text, write_config,
};

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = client.post(url).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

/// A mock, and a gateway on it (`durability: sync`, `extra` top-level YAML).
struct Setup {
    mock: MockServer,
    /// Holds the journal's directory.
    _dir: tempfile::TempDir,
    journal: std::path::PathBuf,
    gateway: Gateway,
    /// The gateway's `/v1/chat/completions`.
    url: String,
    client: reqwest::Client,
}

async fn setup(extra: &str) -> Setup {
    let mock = MockServer::start("upstream").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.db");
    let config = write_config(dir.path(), &mock.url(), &journal, extra);
    let gateway = Gateway::start(&config).await;
    let url = gateway.url("/v1/chat/completions");
    Setup {
        mock,
        _dir: dir,
        journal,
        gateway,
        url,
        client: crate::support::client(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_wait_and_reject_mismatches() {
    let Setup {
        mock,
        _dir,
        journal,
        gateway,
        url,
        client,
    } = setup("").await;
    let auth = ("authorization", "Bearer caller-one");

    // 1. JSON: the first call reaches the provider, the repeat does not.
    let key = ("idempotency-key", "order-42");
    let body = chat_body(false, "what is 6 x 7?");
    let (s1, h1, b1) = post(&client, &url, &body, &[auth, key]).await;
    assert_eq!(s1, 200, "{b1}");
    assert!(h1.get("x-bulwark-idempotent-replay").is_none());
    let (s2, h2, b2) = post(&client, &url, &body, &[auth, key]).await;
    assert_eq!(s2, 200, "{b2}");
    assert_eq!(h2["x-bulwark-idempotent-replay"], "true");
    let (a1, a2): (Value, Value) = (
        serde_json::from_str(&b1).unwrap(),
        serde_json::from_str(&b2).unwrap(),
    );
    assert_eq!(
        a1["id"], a2["id"],
        "the replay carries the first answer's id"
    );
    assert_eq!(a1["choices"], a2["choices"]);
    assert_eq!(a1["usage"], a2["usage"]);
    assert_eq!(
        mock.calls().len(),
        1,
        "the replay must not call the provider"
    );

    // The key is the caller's: another caller with the same key is a new request.
    let (s3, h3, _) = post(
        &client,
        &url,
        &body,
        &[("authorization", "Bearer caller-two"), key],
    )
    .await;
    assert_eq!(s3, 200);
    assert!(h3.get("x-bulwark-idempotent-replay").is_none());
    assert_eq!(mock.calls().len(), 2);

    // 2. Same key, another body: 422 in the caller's format, no provider call.
    let (s4, _, b4) = post(
        &client,
        &url,
        &chat_body(false, "something else"),
        &[auth, key],
    )
    .await;
    assert_eq!(s4, 422, "{b4}");
    let err: Value = serde_json::from_str(&b4).unwrap();
    assert_eq!(err["error"]["code"], "idempotency_key_reused", "{b4}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("different request body")
    );
    let anthropic_body = json!({
        "model": "chat", "max_tokens": 50,
        "messages": [{"role": "user", "content": "hello"}],
    });
    let anthropic_url = gateway.url("/v1/messages");
    let akey = ("idempotency-key", "anthropic-1");
    let (s5, _, _) = post(&client, &anthropic_url, &anthropic_body, &[auth, akey]).await;
    assert_eq!(s5, 200);
    let mut changed = anthropic_body.clone();
    changed["max_tokens"] = json!(51);
    let (s6, _, b6) = post(&client, &anthropic_url, &changed, &[auth, akey]).await;
    assert_eq!(s6, 422, "{b6}");
    let err: Value = serde_json::from_str(&b6).unwrap();
    assert_eq!(err["type"], "error", "Anthropic error shape: {b6}");
    assert_eq!(err["error"]["type"], "invalid_request_error");
    assert_eq!(mock.calls().len(), 3);

    // 3. A stream is replayed as a stream with the same text.
    let skey = ("idempotency-key", "stream-7");
    let sbody = chat_body(true, "stream me");
    let (_, _, first) = post(&client, &url, &sbody, &[auth, skey]).await;
    let (_, h, again) = post(&client, &url, &sbody, &[auth, skey]).await;
    assert_eq!(h["x-bulwark-idempotent-replay"], "true");
    assert_eq!(h["content-type"], "text/event-stream");
    let text = stream_text(&first).expect("first stream complete");
    assert!(!text.is_empty());
    assert_eq!(stream_text(&again).as_deref(), Some(text.as_str()));
    assert_eq!(mock.calls().len(), 4);

    // 4. A concurrent duplicate waits for the first and gets its answer.
    mock.set_behavior(Behavior {
        latency_ms: 400,
        ..Behavior::named("upstream")
    });
    let ckey = ("idempotency-key", "concurrent-1");
    let cbody = chat_body(false, "slow question");
    let headers = [auth, ckey];
    let (first, second) = tokio::join!(post(&client, &url, &cbody, &headers), async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        post(&client, &url, &cbody, &headers).await
    });
    assert_eq!(
        (first.0, second.0),
        (200, 200),
        "{} / {}",
        first.2,
        second.2
    );
    let (f, s): (Value, Value) = (
        serde_json::from_str(&first.2).unwrap(),
        serde_json::from_str(&second.2).unwrap(),
    );
    assert_eq!(f["id"], s["id"]);
    assert_eq!(f["choices"], s["choices"]);
    assert_eq!(second.1["x-bulwark-idempotent-replay"], "true");
    assert_eq!(
        mock.calls().len(),
        5,
        "the duplicate must not reach the provider"
    );

    // A bad key is the caller's mistake.
    let long = "k".repeat(300);
    let (s7, _, b7) = post(&client, &url, &body, &[("idempotency-key", &long)]).await;
    assert_eq!(s7, 400, "{b7}");

    // The journal holds each request once, with the caller-scoped key and no caller secret.
    drop(gateway);
    let entries = journal_export(&journal).await;
    let keyed: Vec<&Value> = entries
        .values()
        .filter(|e| {
            e["idempotency_key"]
                .as_str()
                .is_some_and(|k| k.ends_with(":order-42"))
        })
        .collect();
    assert_eq!(keyed.len(), 2, "one per caller");
    let dump = serde_json::to_string(&entries.values().collect::<Vec<_>>()).unwrap();
    assert!(!dump.contains("caller-one") && !dump.contains("sk-test-secret-key"));
}

/// A caller's `x-request-id` is its own: two requests sent with the same one are two
/// journal entries, each with the gateway's id (`x-request-id` on the answer) and the
/// caller's kept beside it (echoed as `x-client-request-id`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_requests_with_one_caller_request_id_stay_two() {
    // Held whole, so the mock and the gateway live to the end.
    let s = setup("").await;
    let mut ids = Vec::new();
    for prompt in ["first question", "second question"] {
        let body = chat_body(false, prompt);
        let (status, headers, text) =
            post(&s.client, &s.url, &body, &[("x-request-id", "same-id-1")]).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(headers["x-client-request-id"], "same-id-1");
        let id = headers["x-request-id"].to_str().unwrap().to_string();
        assert_ne!(id, "same-id-1");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["id"], format!("chatcmpl-{id}"));
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
    // `durability: sync`: both are committed before their answers went out.
    let lines = journal_lines(&s.journal).await;
    let ours: Vec<&Value> = lines
        .iter()
        .filter(|v| v["caller_request_id"] == "same-id-1")
        .collect();
    assert_eq!(ours.len(), 2, "{lines:?}");
    for (entry, (id, prompt)) in ours.iter().zip(ids.iter().zip(["first", "second"])) {
        assert_eq!(entry["id"], id.as_str());
        assert_eq!(entry["status"], "completed");
        assert!(entry["request"].to_string().contains(prompt), "{entry}");
    }
}

/// Drill traffic is marked in the journal only when `x-bulwark-drill` carries the
/// gateway's admin token: a caller cannot keep its failures out of `availability`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_token_marks_a_request_as_drill_traffic() {
    // Held whole, so the mock and the gateway live to the end.
    let s = setup("admin_token: drill-secret-1").await;
    for (caller_id, marker) in [
        ("real", "drill-secret-1"),
        ("spoof", "guess"),
        ("plain", ""),
    ] {
        let body = chat_body(false, caller_id);
        let mut headers = vec![("x-request-id", caller_id)];
        if !marker.is_empty() {
            headers.push(("x-bulwark-drill", marker));
        }
        let (status, _, text) = post(&s.client, &s.url, &body, &headers).await;
        assert_eq!(status, 200, "{text}");
    }
    let entries = journal_export(&s.journal).await;
    assert_eq!(entries["real"]["drill"], true);
    assert_eq!(entries["spoof"]["drill"], false);
    assert_eq!(entries["plain"]["drill"], false);
}
