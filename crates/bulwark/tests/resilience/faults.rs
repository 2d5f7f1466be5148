//! Items 1–14 and 16 of issue 3: one fault each.

use bulwark_router::BreakerState;
use serde_json::json;

use super::support::*;

/// 1. 429 with `Retry-After: 2` once → retried after ~2 s (not sooner), answered.
/// Not scaled: the 2 s is waited for real.
#[tokio::test]
async fn a_429_with_retry_after_2_is_retried_after_2s_and_answered() {
    let g = primary_then_secondary().await;
    g.primary.push_fault(fault(json!({
        "fault": {"kind": "status", "status": 429, "retry_after": "2"}, "times": 1
    })));
    let r = g.openai(&chat(false)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-bulwark-provider"), "primary");
    assert_eq!(r.header("x-bulwark-attempts"), "2");
    let calls = caller_calls(&g.primary);
    assert_eq!(calls.len(), 2);
    let gap = gaps(&calls)[0];
    eprintln!("item 1: retry {gap} ms after the 429 (Retry-After: 2)");
    assert!(
        (2000..2700).contains(&gap),
        "retried {gap} ms after the 429"
    );
    assert!(g.secondary.calls().is_empty(), "waited, did not fail over");
}

/// 2. 429 without a wait signal, persistent → backs off with jitter (never more than
/// 4 attempts in 3 s), fails over, answered. Default backoff (500 ms base).
#[tokio::test]
async fn a_persistent_429_without_a_wait_backs_off_with_jitter_then_fails_over() {
    let g = primary_then_secondary().await;
    g.primary
        .push_fault(fault(json!({"fault": {"kind": "status", "status": 429}})));
    let mut all_gaps = Vec::new();
    for _ in 0..3 {
        let before = caller_calls(&g.primary).len();
        let r = g.openai(&chat(false)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-bulwark-provider"), "secondary");
        let calls = caller_calls(&g.primary)[before..].to_vec();
        assert_eq!(
            calls.len(),
            3,
            "max_attempts on the primary, then fail over"
        );
        let span = calls[2].at_ms - calls[0].at_ms;
        assert!(span < 3000, "3 attempts in {span} ms");
        let g2 = gaps(&calls);
        // Full jitter: uniform(0, 500 ms) then uniform(0, 1 s).
        assert!(g2[0] <= 600 && g2[1] <= 1100, "{g2:?}");
        all_gaps.push(g2);
    }
    eprintln!("item 2: gaps between attempts on the primary per request: {all_gaps:?}");
    let at_ceiling = all_gaps.iter().all(|g| g[0] >= 450 && g[1] >= 900);
    assert!(!at_ceiling, "no jitter: {all_gaps:?}");
    // A throttle is not a health failure: the breaker stayed closed.
    assert_eq!(g.breaker("primary"), BreakerState::Closed);
}

/// 3. 500 once → retried on the same target, answered.
#[tokio::test]
async fn a_single_500_is_retried_on_the_same_target() {
    let g = primary_then_secondary().await;
    g.primary.push_fault(fault(
        json!({"fault": {"kind": "status", "status": 500}, "times": 1}),
    ));
    let r = g.openai(&chat(false)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-bulwark-provider"), "primary");
    assert_eq!(r.header("x-bulwark-attempts"), "2");
    let calls = caller_calls(&g.primary);
    assert_eq!(calls.len(), 2);
    let gap = gaps(&calls)[0];
    eprintln!("item 3: retry {gap} ms after the 500");
    assert!(gap <= 650, "{gap}");
    assert!(g.secondary.calls().is_empty());
}

/// 4. 503 persistent → fails over within the retry budget; at most 6 attempts on the
/// primary (3 on the first request, 2 more open the breaker, then none).
#[tokio::test]
async fn a_persistent_503_fails_over_with_at_most_six_attempts_on_the_primary() {
    let g = primary_then_secondary().await;
    g.primary
        .push_fault(fault(json!({"fault": {"kind": "status", "status": 503}})));
    let mut attempts = Vec::new();
    for _ in 0..4 {
        let r = g.openai(&chat(false)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-bulwark-provider"), "secondary");
        attempts.push(r.header("x-bulwark-attempts").to_string());
    }
    let calls = caller_calls(&g.primary);
    eprintln!(
        "item 4: attempts per request {attempts:?}; primary saw {} calls, gaps {:?}",
        calls.len(),
        gaps(&calls)
    );
    assert_eq!(attempts, ["4", "3", "1", "1"]);
    assert_eq!(calls.len(), 5);
    assert!(calls.len() <= 6);
    assert_eq!(g.breaker("primary"), BreakerState::Open);
}

/// 5. Reset before headers → answered.
#[tokio::test]
async fn a_connection_reset_before_headers_is_answered() {
    let g = primary_then_secondary().await;
    g.primary
        .push_fault(fault(json!({"fault": {"kind": "reset"}, "times": 1})));
    let r = g.openai(&chat(false)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-bulwark-provider"), "primary");
    let calls = caller_calls(&g.primary);
    eprintln!(
        "item 5: primary saw {} calls (first reset), answered in {} ms",
        calls.len(),
        r.ms()
    );
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].fault.as_deref(), Some("reset"));
}

/// 6. No response at all → the primary is not retried; the fallback answers well
/// inside the deadline (first token 1 s, total 10 s).
#[tokio::test]
async fn no_response_at_all_is_not_retried_and_the_fallback_answers_inside_the_deadline() {
    let g = primary_then_secondary().await;
    g.primary
        .push_fault(fault(json!({"fault": {"kind": "hang"}})));
    let r = g.openai(&chat(false)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-bulwark-provider"), "secondary");
    assert_eq!(r.header("x-bulwark-attempts"), "2");
    assert_eq!(caller_calls(&g.primary).len(), 1, "not retried");
    eprintln!("item 6: answered by the fallback after {} ms", r.ms());
    assert!((1000..2000).contains(&r.ms()), "{}", r.ms());
}

/// One deadline across attempts and failovers, set by the caller's
/// `x-bulwark-timeout` (capped by the route's total): both targets hang; the primary
/// times out at the 1 s first-token limit, the secondary gets the 0.5 s left.
#[tokio::test]
async fn the_callers_deadline_header_bounds_the_whole_request() {
    let g = primary_then_secondary().await;
    for mock in [&g.primary, &g.secondary] {
        mock.push_fault(fault(json!({"fault": {"kind": "hang"}})));
    }
    let r = g
        .post(
            "/v1/chat/completions",
            &chat(false),
            &[("x-bulwark-timeout", "1500ms")],
        )
        .await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(!r.header("retry-after").is_empty());
    assert_eq!(r.header("x-bulwark-attempts"), "2");
    assert_eq!(caller_calls(&g.primary).len(), 1);
    assert_eq!(caller_calls(&g.secondary).len(), 1);
    eprintln!(
        "deadline: x-bulwark-timeout 1500ms answered 504 after {} ms",
        r.ms()
    );
    assert!((1500..2100).contains(&r.ms()), "{}", r.ms());
}

/// 7. First token after 20 s → fails over at the first-token timeout and answers.
/// Scaled: first-token timeout 1 s (15 s in the issue); the primary's first token
/// still comes after 20 s.
#[tokio::test]
async fn a_first_token_after_20s_fails_over_at_the_first_token_timeout() {
    let g = primary_then_secondary().await;
    g.primary.push_fault(fault(
        json!({"fault": {"kind": "slow_first_token", "delay_ms": 20000}}),
    ));
    let r = g.openai(&chat(true)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-bulwark-provider"), "secondary");
    let s = openai_stream(&r.body);
    assert_eq!(s.text, "Hello from secondary. You said: hello there");
    assert!(s.done && s.error.is_none() && s.roles == 1, "{}", r.body);
    assert_eq!(caller_calls(&g.primary).len(), 1);
    eprintln!(
        "item 7: complete stream from the fallback after {} ms",
        r.ms()
    );
    assert!((1000..2000).contains(&r.ms()), "{}", r.ms());
}

/// 8. Stream cut after 40 of 60 tokens → a complete answer from the fallback if
/// nothing was sent yet, or a clean in-band error; never a successful truncated answer.
#[tokio::test]
async fn a_stream_cut_after_40_of_60_tokens_is_never_passed_off_as_complete() {
    let g = primary_then_secondary().await;
    set_reply_tokens(&g.primary, 60);
    set_reply_tokens(&g.secondary, 60);
    let full = tokens(1, 60);

    // A JSON caller: nothing was sent yet, so the fallback's complete answer.
    let cut = g
        .primary
        .push_fault(fault(json!({"fault": {"kind": "cut", "after_chunks": 40}})));
    let r = g.openai(&chat(false)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-bulwark-provider"), "secondary");
    let json = r.json();
    assert_eq!(json["choices"][0]["message"]["content"], full.trim_end());
    assert_eq!(json["choices"][0]["finish_reason"], "stop");
    assert_eq!(json["usage"]["completion_tokens"], 60);
    let cut_attempts = caller_calls(&g.primary).len();
    g.primary.remove_fault(cut);

    // A streaming caller: 40 tokens went out, then an in-band error, no [DONE].
    g.primary.push_fault(fault(
        json!({"fault": {"kind": "cut", "after_chunks": 40}, "times": 1}),
    ));
    let r = g.openai(&chat(true)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-bulwark-provider"), "primary");
    let s = openai_stream(&r.body);
    assert_eq!(s.text, tokens(1, 40));
    assert!(s.error.is_some(), "{}", r.body);
    assert!(!s.done, "no [DONE] after a cut");
    assert_eq!(s.finish_reason, None, "no finish after a cut");
    assert!(s.well_formed);

    // The Anthropic ingress: `event: error`, no message_delta stop, no message_stop.
    g.primary.push_fault(fault(
        json!({"fault": {"kind": "cut", "after_chunks": 40}, "times": 1}),
    ));
    let r = g.anthropic(&anthropic_chat(true)).await;
    assert_eq!(r.status, 200);
    let events = anthropic_events(&r.body);
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, tokens(1, 40));
    assert_eq!(
        events.last().map(|e| e.0.as_str()),
        Some("error"),
        "{}",
        r.body
    );
    assert!(
        !events
            .iter()
            .any(|(n, _)| n == "message_stop" || n == "message_delta")
    );
    eprintln!(
        "item 8: JSON caller answered by the fallback after {cut_attempts} cut attempts on the primary; streaming callers got 40 tokens + an in-band error"
    );
}

/// 9. Stream stalls for 30 s → detected within the idle timeout; clean error or
/// complete answer; the gateway is healthy afterwards. Scaled: idle timeout 1 s
/// (20 s in the issue); the stall still lasts 30 s.
#[tokio::test]
async fn a_30s_stall_is_detected_within_the_idle_timeout() {
    let g = primary_then_secondary().await;
    set_reply_tokens(&g.primary, 10);
    set_reply_tokens(&g.secondary, 10);
    let stall =
        json!({"fault": {"kind": "stall", "after_chunks": 3, "stall_ms": 30000}, "times": 1});

    // JSON caller: fails over to a complete answer.
    g.primary.push_fault(fault(stall.clone()));
    let r = g.openai(&chat(false)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-bulwark-provider"), "secondary");
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        tokens(1, 10).trim_end()
    );
    let json_ms = r.ms();
    assert!((1000..2000).contains(&json_ms), "{json_ms}");
    assert_eq!(
        caller_calls(&g.primary).len(),
        1,
        "a stalled target is not retried"
    );

    // Streaming caller: 3 tokens, then a clean in-band error about a second later.
    g.primary.push_fault(fault(stall));
    let r = g.openai(&chat(true)).await;
    assert_eq!(r.status, 200);
    let s = openai_stream(&r.body);
    assert_eq!(s.text, tokens(1, 3));
    let message = s.error.as_ref().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("stalled"), "{message}");
    assert!(!s.done && s.finish_reason.is_none() && s.well_formed);
    let stream_ms = r.ms();
    assert!((1000..2000).contains(&stream_ms), "{stream_ms}");

    // Healthy afterwards.
    assert!(g.healthy().await);
    let r = g.openai(&chat(false)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-bulwark-provider"), "primary");
    assert!(r.ms() < 500, "{}", r.ms());
    assert_eq!(g.breaker("primary"), BreakerState::Closed);
    eprintln!(
        "item 9: stall detected after {json_ms} ms (JSON, failed over) and {stream_ms} ms (stream, in-band error)"
    );
}

/// 10. Malformed chunk mid-stream → skipped or clean error; nothing broken reaches
/// the caller; the gateway stays up.
#[tokio::test]
async fn a_malformed_chunk_mid_stream_never_reaches_the_caller() {
    let g = primary_then_secondary().await;
    set_reply_tokens(&g.primary, 10);
    let malformed = json!({"fault": {"kind": "malformed", "after_chunks": 2}, "times": 1});

    // JSON caller: the broken attempt is retried, the answer is whole.
    g.primary.push_fault(fault(malformed.clone()));
    let r = g.openai(&chat(false)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-bulwark-provider"), "primary");
    assert_eq!(r.header("x-bulwark-attempts"), "2");
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        tokens(1, 10).trim_end()
    );

    // Streaming caller: 2 tokens, then a clean error event; every frame is valid.
    g.primary.push_fault(fault(malformed.clone()));
    let r = g.openai(&chat(true)).await;
    let s = openai_stream(&r.body);
    assert!(s.well_formed, "{}", r.body);
    assert_eq!(s.text, tokens(1, 2));
    assert!(s.error.is_some() && !s.done, "{}", r.body);
    g.primary.push_fault(fault(malformed));
    let r = g.anthropic(&anthropic_chat(true)).await;
    let events = anthropic_events(&r.body);
    assert!(events.iter().all(|(_, d)| !d.is_null()), "{}", r.body);
    assert_eq!(events.last().map(|e| e.0.as_str()), Some("error"));

    assert!(g.healthy().await);
    assert_eq!(g.openai(&chat(false)).await.status, 200);
}

/// 11. Stream ends without its terminator → finalised at once, with usage. Addressed
/// as `provider/model`, so the default policy applies (idle timeout 20 s): "at once"
/// means well under that.
#[tokio::test]
async fn a_stream_without_its_terminator_is_finalised_at_once_with_usage() {
    let g = primary_then_secondary().await;
    let mut measured = Vec::new();
    for (mock, model) in [
        (&g.primary, "primary/claude-test"),
        (&g.secondary, "secondary/gpt-test"),
    ] {
        mock.push_fault(fault(
            json!({"fault": {"kind": "no_terminator"}, "times": 2}),
        ));
        let r = g.openai(&openai_body(model, true)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let s = openai_stream(&r.body);
        assert!(s.done && s.error.is_none(), "{}", r.body);
        assert_eq!(s.finish_reason.as_deref(), Some("stop"));
        let usage = s.usage.unwrap();
        assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
        assert!(usage["prompt_tokens"].as_u64().unwrap() > 0, "{usage}");
        assert!(r.ms() < 1000, "{}", r.ms());
        measured.push((model, r.ms()));

        let r = g.openai(&openai_body(model, false)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.json()["usage"]["completion_tokens"].as_u64().unwrap() > 0);
        assert!(r.ms() < 1000);
        assert_eq!(caller_calls(mock).len(), 2, "no retry");
    }
    eprintln!("item 11: unterminated streams finalised in {measured:?} ms");
}

/// 12. Context length exceeded → exactly one attempt on that model; routed to a
/// larger declared window or a clean error.
#[tokio::test]
async fn context_length_exceeded_is_one_attempt_then_a_larger_window_or_a_clean_error() {
    let small = "{provider: secondary, model: gpt-small, context_window: 8000}";
    let also_small = "{provider: primary, model: claude-test, context_window: 8000}";
    let big = "{provider: tertiary, model: gemini-big, context_window: 1000000}";
    let routes = route("chat", &[small, also_small, big], &scaled())
        + &route("small", &[small, also_small], &scaled());
    let g = Gw::start(&routes).await;
    g.secondary.push_fault(fault(json!({
        "fault": {"kind": "status", "status": 400, "code": "context_length_exceeded",
                  "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens."},
        "model": "gpt-small"
    })));
    let r = g.openai(&chat(false)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-bulwark-provider"), "tertiary");
    assert_eq!(r.json()["model"], "gemini-big");
    assert_eq!(
        caller_calls(&g.secondary).len(),
        1,
        "one attempt on that model"
    );
    assert!(
        g.primary.calls().is_empty(),
        "a window no larger is skipped"
    );

    let r = g.openai(&openai_body("small", false)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.header("x-bulwark-attempts"), "1");
    let err = &r.json()["error"];
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length"),
        "{err}"
    );
    assert_eq!(err["code"], "context_length_exceeded");
    assert_eq!(caller_calls(&g.secondary).len(), 2);
    assert!(g.primary.calls().is_empty());
}

/// 13. Content-policy rejection → exactly one attempt; the reason reaches the caller.
#[tokio::test]
async fn a_content_policy_rejection_is_one_attempt_and_its_reason_reaches_the_caller() {
    let g = Gw::start(&route("chat", &[S, P], &scaled())).await;
    let reason = "Your request was rejected as a result of our safety system.";
    g.secondary.push_fault(fault(json!({
        "fault": {"kind": "status", "status": 400, "code": "content_policy_violation", "message": reason}
    })));
    let r = g.openai(&chat(false)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["message"], reason);
    assert_eq!(r.header("x-bulwark-attempts"), "1");
    assert_eq!(caller_calls(&g.secondary).len(), 1);
    assert!(
        g.primary.calls().is_empty(),
        "no failover on a refusal by default"
    );
    let r = g.anthropic(&anthropic_chat(false)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["message"], reason);
}

/// 13b. An answer the provider's content filter stopped (`blocked`: OpenAI
/// `content_filter`, Anthropic `refusal`, Gemini `SAFETY`) reaches the caller as
/// stopped by default. With `failover_on_content_policy` the next target answers
/// instead, for a JSON caller even after text; and when every target's filter stops
/// it, the caller still gets the last stopped answer, not an error.
#[tokio::test]
async fn a_content_filter_stop_fails_over_only_when_the_route_says_so() {
    let blocked = |after: u32| fault(json!({"fault": {"kind": "blocked", "after_chunks": after}}));
    async fn ask(g: &Gw, openai: bool, stream: bool) -> Resp {
        if openai {
            g.openai(&chat(stream)).await
        } else {
            g.anthropic(&anthropic_chat(stream)).await
        }
    }
    fn stop_of(r: &Resp, openai: bool, stream: bool) -> (String, String) {
        let provider = r.header("x-bulwark-provider").to_string();
        let stop = match (openai, stream) {
            (true, false) => r.json()["choices"][0]["finish_reason"].clone(),
            (true, true) => json!(openai_stream(&r.body).finish_reason),
            (false, false) => r.json()["stop_reason"].clone(),
            (false, true) => anthropic_events(&r.body)
                .into_iter()
                .find(|(name, _)| name == "message_delta")
                .map(|(_, data)| data["delta"]["stop_reason"].clone())
                .unwrap_or_default(),
        };
        (provider, stop.as_str().unwrap_or_default().to_string())
    }
    // Each caller format, JSON and streamed: who answered, with which stop.
    async fn expect_all(
        g: &Gw,
        provider: &str,
        openai_stop: &str,
        anthropic_stop: &str,
    ) -> Vec<Resp> {
        let mut all = Vec::new();
        for (openai, stream) in [(true, false), (true, true), (false, false), (false, true)] {
            let r = ask(g, openai, stream).await;
            assert_eq!(r.status, 200, "{}", r.body);
            let want = if openai { openai_stop } else { anthropic_stop };
            assert_eq!(
                stop_of(&r, openai, stream),
                (provider.to_string(), want.to_string()),
                "{}",
                r.body
            );
            all.push(r);
        }
        all
    }

    // By default the stopped answer is the answer.
    let g = Gw::start(&route("chat", &[P, S], &scaled())).await;
    g.primary.push_fault(blocked(2));
    expect_all(&g, "primary", "content_filter", "refusal").await;
    assert!(
        g.secondary.calls().is_empty(),
        "no failover on a content filter by default"
    );

    // With failover_on_content_policy the next target answers.
    let g = Gw::start(&route(
        "chat",
        &[P, S, T],
        &[TIMEOUTS, BREAKER, "failover_on_content_policy: true"],
    ))
    .await;
    g.primary.push_fault(blocked(0));
    expect_all(&g, "secondary", "stop", "end_turn").await;
    // A JSON caller has been sent nothing yet, even when text came before the stop.
    g.primary.clear_faults();
    g.primary.push_fault(blocked(2));
    let r = g.openai(&chat(false)).await;
    assert_eq!(
        stop_of(&r, true, false),
        ("secondary".into(), "stop".into())
    );

    // Every target's filter stops it: the last stopped answer, still a 200.
    for mock in [&g.primary, &g.secondary, &g.tertiary] {
        mock.clear_faults();
        mock.push_fault(blocked(0));
    }
    for r in expect_all(&g, "tertiary", "content_filter", "refusal").await {
        assert_eq!(r.header("x-bulwark-attempts"), "3");
    }
}

/// 14. Stream cut, and the fallback rejects a prefill → the caller never sees the
/// prefill error as the final error. (And when it accepts, the answer continues.)
#[tokio::test]
async fn a_cut_stream_whose_fallback_rejects_the_prefill_ends_with_the_original_error() {
    let fallback = "{provider: secondary, model: gpt-test, accepts_prefill: true}";
    let g = Gw::start(&route(
        "chat",
        &[P, fallback],
        &[TIMEOUTS, BREAKER, "resume_streams: true"],
    ))
    .await;
    set_reply_tokens(&g.primary, 20);
    let cut = json!({"fault": {"kind": "cut", "after_chunks": 5}, "times": 1});

    g.primary.push_fault(fault(cut.clone()));
    g.secondary.push_fault(fault(json!({
        "fault": {"kind": "status", "status": 400, "message": "assistant prefill is not supported here"},
        "times": 1
    })));
    let r = g.openai(&chat(true)).await;
    assert_eq!(r.status, 200);
    let s = openai_stream(&r.body);
    assert_eq!(s.text, tokens(1, 5));
    let message = s.error.as_ref().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!message.contains("prefill"), "{message}");
    assert!(message.contains("incomplete"), "{message}");
    assert!(!s.done);
    let tried = caller_calls(&g.secondary);
    assert_eq!(tried.len(), 1);
    let last = tried[0].body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["role"], "assistant");
    // Without the space the caller already has: Anthropic refuses a prefill ending
    // in whitespace.
    assert_eq!(last["content"], tokens(1, 5).trim_end());

    // The same cut with a fallback that takes the prefill: one complete stream.
    g.primary.push_fault(fault(cut));
    let r = g.openai(&chat(true)).await;
    let s = openai_stream(&r.body);
    assert!(s.done && s.error.is_none(), "{}", r.body);
    assert_eq!(s.finish_reason.as_deref(), Some("stop"));
    assert!(s.text.starts_with(&tokens(1, 5)), "{}", s.text);
    assert!(
        s.text
            .ends_with("Hello from secondary. You said: hello there"),
        "{}",
        s.text
    );
    assert_eq!(s.roles, 1);
}

/// 16. Primary 503, fallback answers → the caller sees the fallback's model and usage
/// (failed attempts are not billed).
#[tokio::test]
async fn the_caller_sees_the_fallbacks_model_and_usage() {
    let g = primary_then_secondary().await;
    let direct = g.openai(&openai_body("secondary/gpt-test", false)).await;
    let usage = direct.json()["usage"].clone();
    g.primary
        .push_fault(fault(json!({"fault": {"kind": "status", "status": 503}})));

    let r = g.openai(&chat(false)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model"], "gpt-test");
    assert_eq!(r.json()["usage"], usage);

    let r = g.openai(&chat(true)).await;
    let s = openai_stream(&r.body);
    assert_eq!(s.usage.unwrap(), usage);
    assert!(r.body.contains("\"model\":\"gpt-test\""));

    let r = g.anthropic(&anthropic_chat(false)).await;
    let json = r.json();
    assert_eq!(json["model"], "gpt-test");
    assert_eq!(json["usage"]["input_tokens"], usage["prompt_tokens"]);
    assert_eq!(json["usage"]["output_tokens"], usage["completion_tokens"]);
}

/// A reasoning model behind an OpenAI-compatible server (vLLM, OpenRouter, Ollama)
/// streams its thinking as `delta.reasoning` before the answer. That is the model at
/// work: it counts as the first token, so thinking longer than `first_token` is no
/// stall and fails nothing over, and an OpenAI-format caller (whose format has no
/// place for reasoning) gets the answer alone.
#[tokio::test]
async fn reasoning_streamed_by_an_openai_compatible_server_is_the_first_token() {
    let g = Gw::start(&route(
        "think",
        &[S, T],
        &["timeouts: {connect: 1s, first_token: 600ms, idle: 1s, total: 10s}"],
    ))
    .await;
    // Two reasoning chunks, then two answer tokens, 300 ms apart: the first reasoning
    // comes 300 ms in, the first answer token 900 ms in, past the first-token timeout.
    g.secondary.set_behavior(bulwark_mock::Behavior {
        token_delay_ms: 300,
        reply_tokens: Some(2),
        ..g.secondary.behavior()
    });
    for stream in [true, false] {
        let mut body = openai_body("think", stream);
        body["reasoning_effort"] = json!("high");
        let r = g.openai(&body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-bulwark-provider"), "secondary", "{}", r.body);
        assert!(!r.body.contains("Thinking about"), "{}", r.body);
        let text = openai_answer_text(&r, stream);
        assert_eq!(text, "tok1 tok2");
    }
    // The upstream did stream reasoning: the mock was asked to reason.
    let calls = caller_calls(&g.secondary);
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.body["reasoning_effort"] == "high"));
    assert!(caller_calls(&g.tertiary).is_empty());
}

/// Where a stream was asked for, a server may answer 200 with one JSON document: the
/// whole answer (it ignores `stream: true`), or an error reported in-band (OpenRouter
/// once a request is under way, some relays always). The answer is streamed on to the
/// caller; the error is classed by what it says, as it would be with its own status.
#[tokio::test]
async fn a_whole_json_answer_or_error_where_a_stream_was_asked_for_is_read_as_such() {
    let g = Gw::start(&route("json200", &[S, T], &scaled())).await;
    g.secondary
        .push_fault(fault(json!({"fault": {"kind": "whole"}, "times": 2})));
    for stream in [true, false] {
        let r = g.openai(&openai_body("json200", stream)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-bulwark-provider"), "secondary", "{}", r.body);
        assert_eq!(r.header("x-bulwark-attempts"), "1");
        let text = openai_answer_text(&r, stream);
        assert_eq!(text, "Hello from secondary. You said: hello there");
    }
    // An over-long prompt reported with status 200: the caller's clean 400, one
    // attempt, no failover, and the breaker not fed a protocol failure.
    g.secondary.push_fault(fault(json!({"fault": {
        "kind": "status", "status": 200, "code": "context_length_exceeded",
        "message": "This model's maximum context length is 8192 tokens."}, "times": 1})));
    let r = g.openai(&openai_body("json200", true)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("maximum context length"), "{}", r.body);
    assert!(caller_calls(&g.tertiary).is_empty());
    assert_eq!(g.breaker("secondary"), BreakerState::Closed);
}

/// An Anthropic-format caller gets reasoning only when it turned `thinking` on, as from
/// Anthropic itself, whichever provider reasoned: a model behind an OpenAI-compatible
/// server may reason unasked. With thinking on, it comes as `thinking`, unsigned.
#[tokio::test]
async fn an_anthropic_caller_gets_reasoning_only_when_it_asked_for_it() {
    let g = Gw::start(&route(
        "chat",
        &["{provider: secondary, model: deepseek-reasoner}"],
        &scaled(),
    ))
    .await;
    for thinking in [false, true] {
        for stream in [false, true] {
            let mut body = anthropic_chat(stream);
            if thinking {
                body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
                body["max_tokens"] = json!(2048);
            }
            let r = g.anthropic(&body).await;
            assert_eq!(r.status, 200, "{}", r.body);
            // Streamed, the words arrive one chunk each.
            assert!(r.body.contains("Hello"), "{}", r.body);
            assert_eq!(
                r.body.contains("Thinking"),
                thinking,
                "thinking {thinking}, stream {stream}: {}",
                r.body
            );
            if thinking && !stream {
                let answer = r.json();
                assert_eq!(answer["content"][0]["type"], "thinking", "{answer}");
                assert_eq!(answer["content"][0]["signature"], "", "{answer}");
            }
        }
    }
}
