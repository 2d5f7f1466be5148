//! Decoding a streamed Chat Completions response (`chat.completion.chunk` SSE data
//! lines ending with `data: [DONE]`) into neutral stream events.
//!
//! State carried across chunks: whether `Start` went out, OpenAI's per-choice tool-call
//! indexes mapped to our ordinal indexes, the finish reason and the usage. `Finish` is
//! emitted once both the finish reason and the usage are known (with
//! `stream_options.include_usage` the usage arrives in a chunk of its own *after* the
//! chunk carrying `finish_reason`), or at `[DONE]`, or at a clean end of the body after
//! a finish reason — whichever comes first.

use bulwark_core::{StopReason, StreamEvent, UpstreamError, Usage};
use serde::Deserialize;
use serde_json::Value;

use super::client::{
    ERROR_FINISH, ErrorInfo, classify, ended_in_error, stop_reason, usage_from_wire,
};
use super::wire::{ChunkIn, ToolCallDelta};
use crate::StreamDecoder;

#[derive(Debug, Default)]
pub(crate) struct Decoder {
    started: bool,
    /// `[DONE]` seen: the stream is over, anything after it is ignored.
    done: bool,
    /// One entry per started tool call, in start order (our index is the position):
    /// the upstream's index for it (if it sent one) and its id.
    calls: Vec<(Option<u32>, String)>,
    finish_reason: Option<String>,
    /// A chunk carried choice 0: the stream is an answer, even if an empty one.
    answered: bool,
    refusal: bool,
    usage: Option<Usage>,
    /// The framing of the first plain text chunk (see [`TextFrame`]).
    text_frame: Option<TextFrame>,
}

impl StreamDecoder for Decoder {
    fn feed(
        &mut self,
        _event: Option<&str>,
        data: &str,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), UpstreamError> {
        let data = data.trim();
        if self.done || data.is_empty() {
            return Ok(());
        }
        if data == "[DONE]" {
            self.done = true;
            if !self.started {
                return Err(UpstreamError::protocol(
                    "upstream stream ended before its first chunk",
                ));
            }
            if !self.answered {
                // Chunks with no choice at all, then the end: nothing was answered,
                // which is not an empty answer.
                return Err(UpstreamError::protocol(
                    "upstream stream ended without a choice in any chunk",
                ));
            }
            if self.finish_reason.is_none() {
                // Every complete answer says why it ended; a terminator without that
                // (a proxy closing for a model that failed) may follow a cut answer.
                return Err(UpstreamError::protocol(
                    "upstream stream ended ([DONE]) without a finish reason: the answer may be incomplete",
                ));
            }
            out.push(self.finish_event());
            return Ok(());
        }
        // Most servers frame every text chunk of a stream alike: only the text differs.
        // A chunk framed exactly like the first plain text chunk is that chunk with
        // another text, and means what the typed parse below would make of it.
        if self.started
            && let Some(text) = self.text_frame.as_ref().and_then(|frame| frame.text(data))
        {
            if !text.is_empty() {
                out.push(StreamEvent::TextDelta { text });
            }
            return Ok(());
        }
        // Most chunks take the fast path, straight into the typed chunk. A payload that
        // could hold an error — the text `error` anywhere (an `error` key, `"object":
        // "error"`), or a `\u` escape that could spell it — and any payload the typed
        // parse rejects go through a `Value` first, which finds the error and words the
        // messages; the typed parse decides nothing the `Value` path would decide
        // otherwise.
        let value;
        let mut typed = true;
        let chunk = match fast_chunk(data) {
            Some(chunk) => chunk,
            None => {
                typed = false;
                value = chunk_value(data)?;
                ChunkIn::deserialize(&value).map_err(|e| {
                    UpstreamError::protocol(format!(
                        "upstream stream chunk is not a chat.completion.chunk: {e}"
                    ))
                })?
            }
        };
        let plain_text = typed && self.text_frame.is_none() && is_plain_text(&chunk);
        let carries_nothing = chunk.choices.is_empty() && chunk.usage.is_none();
        if !self.started && chunk.id.as_deref().unwrap_or("").is_empty() && carries_nothing {
            // A prelude without id or content (Azure's prompt-filter chunk): Start waits
            // for a chunk that says which answer this is.
            return Ok(());
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: chunk.id.unwrap_or_default().into_owned(),
                model: chunk.model.unwrap_or_default().into_owned(),
            });
        }
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage_from_wire(usage));
        }
        if plain_text {
            self.text_frame = chunk.choices.first().and_then(|choice| {
                let text = choice.delta.content.as_deref()?;
                TextFrame::learn(data, text)
            });
        }
        // Bulwark always asks for one choice; any other index is not ours to mix in.
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            self.answered = true;
            let delta = &choice.delta;
            // Reasoning first: a chunk holding both (some servers' turn from reasoning
            // to answer) reasoned before it answered. A server that writes both names
            // for it writes the same text twice: `reasoning` is taken.
            let reasoning = delta
                .reasoning
                .as_deref()
                .or(delta.reasoning_content.as_deref());
            if let Some(text) = reasoning.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::ThinkingDelta {
                    text: text.to_string(),
                });
            }
            if let Some(text) = delta.content.as_deref().filter(|t| !t.is_empty()) {
                out.push(StreamEvent::TextDelta {
                    text: text.to_string(),
                });
            }
            if let Some(text) = delta.refusal.as_deref().filter(|t| !t.is_empty()) {
                self.refusal = true;
                out.push(StreamEvent::RefusalDelta {
                    text: text.to_string(),
                });
            }
            for call in delta.tool_calls.iter().flatten() {
                self.tool_call_fragment(call, out)?;
            }
            if let Some(reason) = &choice.finish_reason {
                if reason == ERROR_FINISH {
                    return Err(ended_in_error(choice.error.as_ref()));
                }
                self.finish_reason = Some(reason.to_string());
            }
        }
        if self.finish_reason.is_some() && self.usage.is_some() {
            // Finish reason and usage are both in: nothing that matters can follow, so
            // the answer is final now, even if `[DONE]` never comes (a server that
            // holds the connection open must not hold the caller until the idle timeout).
            self.done = true;
            out.push(self.finish_event());
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), UpstreamError> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        if self.started && self.finish_reason.is_some() {
            // The answer was complete; only the `[DONE]` terminator went missing.
            out.push(self.finish_event());
            return Ok(());
        }
        Err(UpstreamError::protocol(
            "stream ended before the answer was complete",
        ))
    }
}

impl Decoder {
    fn tool_call_fragment(
        &mut self,
        call: &ToolCallDelta,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), UpstreamError> {
        let id = call.id.as_deref().filter(|id| !id.is_empty());
        let named = call
            .function
            .as_ref()
            .and_then(|f| f.name.as_deref())
            .is_some_and(|n| !n.is_empty());
        let known = match call.index {
            // A fragment with a new id and a name at an index already in use starts a
            // call of its own: some compatible servers send every call at index 0.
            Some(wire) => self
                .calls
                .iter()
                .rposition(|(w, _)| *w == Some(wire))
                .filter(|&at| !(named && id.is_some_and(|id| id != self.calls[at].1))),
            // Without an index (some compatible servers): a new id starts a new call,
            // anything else continues the last one.
            None => match id {
                Some(id) if self.calls.last().is_none_or(|(_, last)| last != id) => None,
                _ => self.calls.len().checked_sub(1),
            },
        };
        let ordinal = match known {
            Some(ordinal) => ordinal,
            None => {
                let name = call
                    .function
                    .as_ref()
                    .and_then(|f| f.name.as_deref())
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        UpstreamError::protocol("upstream tool call fragment came before its name")
                    })?;
                let id = id.map_or_else(
                    || format!("call_{}", uuid::Uuid::new_v4().simple()),
                    str::to_string,
                );
                self.calls.push((call.index, id.clone()));
                let ordinal = self.calls.len() - 1;
                out.push(StreamEvent::ToolCallStart {
                    index: ordinal_u32(ordinal)?,
                    id,
                    name: name.to_string(),
                });
                ordinal
            }
        };
        if let Some(arguments) = call
            .function
            .as_ref()
            .and_then(|f| f.arguments.as_deref())
            .filter(|a| !a.is_empty())
        {
            out.push(StreamEvent::ToolCallDelta {
                index: ordinal_u32(ordinal)?,
                arguments: arguments.to_string(),
            });
        }
        Ok(())
    }

    fn finish_event(&self) -> StreamEvent {
        let mut stop = stop_reason(self.finish_reason.as_deref());
        if self.refusal && matches!(stop, StopReason::EndTurn | StopReason::Other) {
            stop = StopReason::Refusal;
        }
        // Some compatible servers say `stop` for an answer that is tool calls.
        if !self.calls.is_empty() && stop == StopReason::EndTurn {
            stop = StopReason::ToolUse;
        }
        StreamEvent::Finish {
            stop_reason: stop,
            stop_sequence: None,
            usage: self.usage.unwrap_or_default(),
        }
    }
}

/// Where a plain text chunk's text sits: the payload's bytes before the text's JSON
/// string literal and after it. A later payload made of the same two parts around one
/// string literal differs from the learned chunk only in that string, so it is the
/// same chunk with another text: same id, model and choice, no finish reason, no
/// usage, no error. It costs two comparisons and the string's parse instead of the
/// whole chunk's. Servers that vary anything else per chunk (OpenAI's `obfuscation`
/// padding) never match, and take the typed parse every time.
#[derive(Debug)]
struct TextFrame {
    head: String,
    tail: String,
}

impl TextFrame {
    /// The key the text follows, in compact JSON (spaced JSON is not learned).
    const KEY: &'static str = r#""delta":{"content":"#;

    /// The frame of `data`, a chunk that parsed as plain text `text`; `None` unless
    /// the key occurs once, the literal after it is that text, and another text put
    /// in its place is what the typed parse reads as the choice's text (not, say, a
    /// look-alike `delta` elsewhere in the payload).
    fn learn(data: &str, text: &str) -> Option<TextFrame> {
        let at = data.find(Self::KEY)?;
        let start = at + Self::KEY.len();
        if data[start..].contains(Self::KEY) {
            return None;
        }
        let end = start + literal_len(&data[start..])?;
        let literal: String = serde_json::from_str(&data[start..end]).ok()?;
        if literal != text {
            return None;
        }
        let frame = TextFrame {
            head: data[..start].to_string(),
            tail: data[end..].to_string(),
        };
        let probe = if text == "probe" { "other" } else { "probe" };
        let probed = format!("{}\"{probe}\"{}", frame.head, frame.tail);
        let chunk: ChunkIn<'_> = serde_json::from_str(&probed).ok()?;
        let read = chunk
            .choices
            .first()
            .and_then(|c| c.delta.content.as_deref());
        (is_plain_text(&chunk) && read == Some(probe)).then_some(frame)
    }

    /// The text of `data` if it is framed like the learned chunk.
    fn text(&self, data: &str) -> Option<String> {
        let literal = data
            .strip_prefix(self.head.as_str())?
            .strip_suffix(self.tail.as_str())?;
        if literal_len(literal)? != literal.len() {
            return None;
        }
        serde_json::from_str(literal).ok()
    }
}

/// The length in bytes of the JSON string literal (quotes included) `s` starts with.
fn literal_len(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    None
}

/// One choice (index 0) whose delta is non-empty text alone; no finish reason, no usage.
fn is_plain_text(chunk: &ChunkIn<'_>) -> bool {
    match chunk.choices.as_slice() {
        [choice] => {
            choice.index == 0
                && choice.finish_reason.is_none()
                && choice.delta.refusal.is_none()
                && choice.delta.tool_calls.is_none()
                && choice.delta.reasoning.is_none()
                && choice.delta.reasoning_content.is_none()
                && choice
                    .delta
                    .content
                    .as_deref()
                    .is_some_and(|t| !t.is_empty())
                && chunk.usage.is_none()
        }
        _ => false,
    }
}

/// The typed parse of a payload that cannot hold an error (see `feed`).
fn fast_chunk(data: &str) -> Option<ChunkIn<'_>> {
    if data.contains("error") || data.contains("\\u") {
        return None;
    }
    serde_json::from_str(data).ok()
}

/// A payload as a `Value`, or the in-band error it carries.
fn chunk_value(data: &str) -> Result<Value, UpstreamError> {
    let value: Value = serde_json::from_str(data)
        .map_err(|e| UpstreamError::protocol(format!("upstream stream chunk is not JSON: {e}")))?;
    if is_error(&value) {
        return Err(stream_error(&value));
    }
    Ok(value)
}

fn ordinal_u32(ordinal: usize) -> Result<u32, UpstreamError> {
    u32::try_from(ordinal).map_err(|_| UpstreamError::protocol("too many tool calls"))
}

/// `{"error": {...}}` (OpenAI) or `{"object": "error", ...}` (older vLLM).
fn is_error(value: &Value) -> bool {
    value.get("error").is_some_and(|e| !e.is_null())
        || value.get("object").and_then(Value::as_str) == Some("error")
}

fn stream_error(value: &Value) -> UpstreamError {
    let info = ErrorInfo::from_value(value);
    let class = classify(None, &info);
    let message = info
        .message
        .clone()
        .unwrap_or_else(|| "upstream reported an error mid-stream".to_string());
    let mut err = UpstreamError::new(class, message);
    if let Some(status) = info.numeric_code.filter(|s| (400..600).contains(s)) {
        err = err.with_status(status);
    }
    if let Some(code) = info.code.or(info.kind) {
        err = err.with_code(code);
    }
    err
}

#[cfg(test)]
#[path = "client_stream_tests.rs"]
mod tests;
