//! The mock's public data types: fault rules, behaviour and the call log. They are
//! the JSON of the control API and the arguments of the [`crate::MockServer`]
//! methods alike.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// One of the three wire formats the mock speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// `POST /v1/chat/completions`
    #[serde(rename = "openai")]
    OpenAi,
    /// `POST /v1/messages`
    Anthropic,
    /// `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent?alt=sse`
    Gemini,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
            Api::Gemini => "gemini",
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What goes wrong with a call. JSON: `{"kind": "<snake_case name>", ...fields}`.
///
/// "Chunks" are content chunks of a stream: one per text token, three for a tool
/// call (its start and two argument fragments). The frames that open the stream
/// (OpenAI's role chunk, Anthropic's `message_start`) are not counted. An
/// `after_chunks` larger than the answer fires just before the final chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Answer with this HTTP status and the provider's own error body.
    Status {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// OpenAI `code` (`insufficient_quota`, `context_length_exceeded`, ...),
        /// Anthropic error `type` (`overloaded_error`, ...), Gemini `status`
        /// (`RESOURCE_EXHAUSTED`, ...). Absent: chosen from the status.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        /// Sent verbatim as `Retry-After` (a number is accepted too).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "string_or_number"
        )]
        retry_after: Option<String>,
        /// Extra response headers, sent as given.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
    },
    /// Close the TCP connection without any HTTP response (RST).
    Reset,
    /// Read the request and never answer, until the client goes away.
    Hang,
    /// Streams: headers at once, the first content chunk after `delay_ms`.
    /// JSON: the whole answer after `delay_ms`.
    SlowFirstToken { delay_ms: u64 },
    /// Streams only: send `after_chunks` chunks, then abort the connection mid-body.
    Cut { after_chunks: u32 },
    /// Streams only: send `after_chunks` chunks, pause `stall_ms`, then go on normally.
    Stall { after_chunks: u32, stall_ms: u64 },
    /// Streams only: after `after_chunks` chunks, one `data: {not json` frame, then go on.
    Malformed { after_chunks: u32 },
    /// Streams only: the whole answer without the format's terminator (OpenAI
    /// `[DONE]`, Anthropic `message_stop`; Gemini has none), then a clean close.
    NoTerminator,
    /// The provider's safety system stops the answer after `after_chunks` text
    /// chunks (default 0): OpenAI `finish_reason: "content_filter"`, Anthropic
    /// `stop_reason: "refusal"`, Gemini `finishReason: "SAFETY"`. Streams and JSON.
    Blocked {
        #[serde(default)]
        after_chunks: u32,
    },
    /// Streams only: the whole answer as one JSON document (`application/json`), as
    /// a server that ignores `stream: true` sends it.
    Whole,
    /// Streams only: after `after_chunks` chunks, the provider's in-band error
    /// event, then the stream ends.
    ErrorEvent {
        after_chunks: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
    },
}

impl Fault {
    /// The `kind` tag, as recorded in the call log.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Status { .. } => "status",
            Fault::Reset => "reset",
            Fault::Hang => "hang",
            Fault::SlowFirstToken { .. } => "slow_first_token",
            Fault::Cut { .. } => "cut",
            Fault::Stall { .. } => "stall",
            Fault::Malformed { .. } => "malformed",
            Fault::NoTerminator => "no_terminator",
            Fault::Whole => "whole",
            Fault::ErrorEvent { .. } => "error_event",
            Fault::Blocked { .. } => "blocked",
        }
    }

    /// Faults that only mean something for a streamed answer. They never match a
    /// non-streaming call (and are not used up by one).
    pub fn is_stream_only(&self) -> bool {
        matches!(
            self,
            Fault::Cut { .. }
                | Fault::Stall { .. }
                | Fault::Malformed { .. }
                | Fault::NoTerminator
                | Fault::Whole
                | Fault::ErrorEvent { .. }
        )
    }

    /// A `status` fault with no message, code or headers.
    pub fn status(status: u16) -> Fault {
        Fault::Status {
            status,
            message: None,
            code: None,
            retry_after: None,
            headers: BTreeMap::new(),
        }
    }
}

/// A fault and which calls it applies to.
/// JSON: `{"fault": {...}, "times": 2, "api": "anthropic", "model": "m"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    pub fault: Fault,
    /// How many matching calls it applies to; absent: every one until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    /// Only calls in this format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<Api>,
    /// Only calls for this model (exactly as requested; Gemini: as in the path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Applies to each matching call with this probability (0–1); absent: always.
    /// A call it skips does not use up one of its `times`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
}

impl FaultRule {
    /// The fault for every matching call until cleared.
    pub fn new(fault: Fault) -> Self {
        FaultRule {
            fault,
            times: None,
            api: None,
            model: None,
            probability: None,
        }
    }

    pub fn times(mut self, times: u32) -> Self {
        self.times = Some(times);
        self
    }

    pub fn api(mut self, api: Api) -> Self {
        self.api = Some(api);
        self
    }

    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Whether this rule applies to a call (ignoring how many times are left).
    pub fn matches(&self, api: Api, model: Option<&str>, stream: bool) -> bool {
        if self.api.is_some_and(|want| want != api) {
            return false;
        }
        if let Some(want) = &self.model
            && model != Some(want.as_str())
        {
            return false;
        }
        stream || !self.fault.is_stream_only()
    }
}

/// A queued rule as `GET /_mock/faults` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRuleStatus {
    pub id: u64,
    pub fault: Fault,
    #[serde(default)]
    pub times: Option<u32>,
    #[serde(default)]
    pub api: Option<Api>,
    #[serde(default)]
    pub model: Option<String>,
    /// Calls left; `null` for a rule that lasts until cleared.
    pub remaining: Option<u32>,
    /// Calls it has been applied to so far.
    pub applied: u64,
}

/// How the mock answers when no fault applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behavior {
    /// Wait before sending response headers (every call, faults included).
    pub latency_ms: u64,
    /// Wait before each streamed content chunk.
    pub token_delay_ms: u64,
    /// Answer plain prompts with exactly this many tokens, `"tok1 tok2 … tokN"`.
    pub reply_tokens: Option<u32>,
    /// The name in `"Hello from {name}. ..."`.
    pub name: String,
}

impl Behavior {
    pub fn named(name: impl Into<String>) -> Self {
        Behavior {
            name: name.into(),
            ..Behavior::default()
        }
    }
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            latency_ms: 0,
            token_delay_ms: 0,
            reply_tokens: None,
            name: "mock".to_string(),
        }
    }
}

/// A partial update of [`Behavior`] (`PUT /_mock/behavior`): absent fields keep
/// their value; `"reply_tokens": null` goes back to the echo reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BehaviorPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_delay_ms: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub reply_tokens: Option<Option<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl BehaviorPatch {
    pub fn apply(&self, to: &mut Behavior) {
        if let Some(v) = self.latency_ms {
            to.latency_ms = v;
        }
        if let Some(v) = self.token_delay_ms {
            to.token_delay_ms = v;
        }
        if let Some(v) = self.reply_tokens {
            to.reply_tokens = v;
        }
        if let Some(v) = &self.name {
            to.name.clone_from(v);
        }
    }
}

/// One call the mock received on a provider path (control calls are not logged).
///
/// Headers are recorded verbatim, credentials included: the mock is a test tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Counts from 1 over the mock's life; never reused, not even after a reset.
    pub seq: u64,
    pub api: Api,
    /// The request path, without the query.
    pub path: String,
    /// The query string, if any (Gemini's `alt=sse`).
    pub query: Option<String>,
    /// The requested model, when the request named one.
    pub model: Option<String>,
    pub stream: bool,
    /// Lowercased name → value; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The request body as JSON, or as a string when it is not JSON.
    pub body: serde_json::Value,
    /// Milliseconds since the mock started.
    pub at_ms: u64,
    /// The `kind` of the fault applied, if any.
    pub fault: Option<String>,
    /// The HTTP status sent; `null` until headers go out, and for `reset`/`hang`.
    pub status: Option<u16>,
}

fn string_or_number<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Int(u64),
        Float(f64),
    }
    Ok(Option::<Raw>::deserialize(de)?.map(|raw| match raw {
        Raw::Text(s) => s,
        Raw::Int(n) => n.to_string(),
        Raw::Float(x) => x.to_string(),
    }))
}

/// Tells an explicit `null` (`Some(None)`) from an absent field (`None`, by `default`).
fn present<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Option<u32>>, D::Error> {
    Ok(Some(Option::<u32>::deserialize(de)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fault_rule_round_trips_the_documented_json() {
        let text = json!({
            "fault": {"kind": "status", "status": 429, "code": "rate_limit_exceeded",
                      "retry_after": 2, "headers": {"x-extra": "1"}},
            "times": 2, "api": "openai", "model": "gpt-x"
        });
        let rule: FaultRule = serde_json::from_value(text).unwrap();
        assert_eq!(rule.times, Some(2));
        assert_eq!(rule.api, Some(Api::OpenAi));
        let Fault::Status {
            status,
            retry_after,
            headers,
            ..
        } = &rule.fault
        else {
            panic!("not a status fault: {:?}", rule.fault);
        };
        assert_eq!(*status, 429);
        assert_eq!(retry_after.as_deref(), Some("2"));
        assert_eq!(headers.get("x-extra").map(String::as_str), Some("1"));
        let back = serde_json::to_value(&rule).unwrap();
        assert_eq!(back["fault"]["retry_after"], "2");
        assert_eq!(back["api"], "openai");
    }

    #[test]
    fn every_fault_kind_parses_by_its_tag() {
        let cases = [
            (json!({"kind": "reset"}), "reset"),
            (json!({"kind": "hang"}), "hang"),
            (
                json!({"kind": "slow_first_token", "delay_ms": 5}),
                "slow_first_token",
            ),
            (json!({"kind": "cut", "after_chunks": 2}), "cut"),
            (
                json!({"kind": "stall", "after_chunks": 1, "stall_ms": 9}),
                "stall",
            ),
            (json!({"kind": "malformed", "after_chunks": 0}), "malformed"),
            (json!({"kind": "no_terminator"}), "no_terminator"),
            (
                json!({"kind": "error_event", "after_chunks": 1, "status": 529}),
                "error_event",
            ),
        ];
        for (value, kind) in cases {
            let fault: Fault = serde_json::from_value(value.clone()).unwrap();
            assert_eq!(fault.kind(), kind);
            assert_eq!(serde_json::to_value(&fault).unwrap(), value);
        }
    }

    #[test]
    fn misspelt_fault_fields_are_rejected() {
        let bad = json!({"kind": "cut", "after_chunk": 2});
        assert!(serde_json::from_value::<Fault>(bad).is_err());
        let bad = json!({"fault": {"kind": "reset"}, "time": 2});
        assert!(serde_json::from_value::<FaultRule>(bad).is_err());
    }

    #[test]
    fn stream_only_faults_do_not_match_json_calls() {
        let cut = FaultRule::new(Fault::Cut { after_chunks: 1 });
        assert!(cut.matches(Api::OpenAi, None, true));
        assert!(!cut.matches(Api::OpenAi, None, false));
        let slow = FaultRule::new(Fault::SlowFirstToken { delay_ms: 1 });
        assert!(slow.matches(Api::OpenAi, None, false));
    }

    #[test]
    fn rules_filter_on_api_and_model() {
        let rule = FaultRule::new(Fault::Reset)
            .api(Api::Gemini)
            .model("gemini-x");
        assert!(rule.matches(Api::Gemini, Some("gemini-x"), false));
        assert!(!rule.matches(Api::Gemini, Some("other"), false));
        assert!(!rule.matches(Api::Gemini, None, false));
        assert!(!rule.matches(Api::Anthropic, Some("gemini-x"), false));
    }

    #[test]
    fn behavior_patch_tells_null_from_absent() {
        let mut b = Behavior {
            reply_tokens: Some(4),
            ..Behavior::named("m")
        };
        let keep: BehaviorPatch = serde_json::from_value(json!({"latency_ms": 7})).unwrap();
        keep.apply(&mut b);
        assert_eq!((b.latency_ms, b.reply_tokens), (7, Some(4)));
        let clear: BehaviorPatch = serde_json::from_value(json!({"reply_tokens": null})).unwrap();
        clear.apply(&mut b);
        assert_eq!(b.reply_tokens, None);
        assert_eq!(b.name, "m");
    }
}
