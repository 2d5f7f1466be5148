//! Streamed answers: the events of an answer go through the format's
//! `serve::*::StreamEncoder` into a fixed *plan* of steps (wait, send bytes,
//! abort), with the stream faults and delays laid into it; the plan is then played
//! as a response body. Computing the whole plan up front keeps timing and fault
//! placement deterministic and testable without a network.

use std::time::Duration;

use bulwark_core::{SseFrame, StreamEvent};
use bulwark_providers::{anthropic, gemini, openai};
use bytes::{Bytes, BytesMut};
use futures::Stream;

use crate::fault_errors::{default_event_status, error_frame, malformed_frame};
use crate::model::{Api, Fault};

/// How long a `cut` waits after its last chunk before failing the body, so the
/// server flushes the chunks already written before it drops the connection.
const CUT_FLUSH_DELAY: Duration = Duration::from_millis(20);

/// One step of a streamed response.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    Wait(Duration),
    Send(Bytes),
    /// Fail the body: the connection is dropped without the stream's end.
    Abort,
}

/// Turns neutral events into SSE frames (one format's stream encoder).
pub(crate) trait FrameEncoder {
    fn encode(&mut self, event: &StreamEvent, out: &mut Vec<SseFrame>);
}

/// The stream encoder of one of the three formats.
pub(crate) enum Encoder {
    OpenAi(openai::serve::StreamEncoder),
    Anthropic(anthropic::serve::StreamEncoder),
    Gemini(gemini::serve::StreamEncoder),
}

impl FrameEncoder for Encoder {
    fn encode(&mut self, event: &StreamEvent, out: &mut Vec<SseFrame>) {
        match self {
            Encoder::OpenAi(e) => e.encode(event, out),
            Encoder::Anthropic(e) => e.encode(event, out),
            Encoder::Gemini(e) => e.encode(event, out),
        }
    }
}

/// Whether a frame is the format's end-of-stream marker (dropped by `no_terminator`).
fn is_terminator(api: Api, frame: &SseFrame) -> bool {
    match api {
        Api::OpenAi => frame.data.trim() == "[DONE]",
        Api::Anthropic => {
            frame.event == Some("message_stop")
                || serde_json::from_str::<serde_json::Value>(&frame.data)
                    .is_ok_and(|v| v["type"] == "message_stop")
        }
        Api::Gemini => false,
    }
}

fn wire(frames: &[SseFrame]) -> Bytes {
    let text: String = frames.iter().map(SseFrame::to_wire).collect();
    Bytes::from(text)
}

fn send(steps: &mut Vec<Step>, frames: &[SseFrame]) {
    if !frames.is_empty() {
        steps.push(Step::Send(wire(frames)));
    }
}

fn wait(steps: &mut Vec<Step>, ms: u64) {
    if ms > 0 {
        steps.push(Step::Wait(Duration::from_millis(ms)));
    }
}

/// Lays out a streamed answer: `events` is `Start` (and the prompt's usage), content
/// events, `Finish` (as [`crate::answer::Answer::events`] makes them). The leading
/// events go out at once; each content event is one chunk, sent after
/// `token_delay_ms`.
pub(crate) fn plan(
    api: Api,
    encoder: &mut impl FrameEncoder,
    events: &[StreamEvent],
    fault: Option<&Fault>,
    token_delay_ms: u64,
) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut frames = Vec::new();
    let leading = events
        .iter()
        .take_while(|e| !e.is_content() && !matches!(e, StreamEvent::Finish { .. }))
        .count();
    let (head, rest) = events.split_at(leading);
    let (content, tail) = match rest.split_last() {
        Some((last, body)) if matches!(last, StreamEvent::Finish { .. }) => (body, Some(last)),
        _ => (rest, None),
    };
    if !head.is_empty() {
        for event in head {
            encoder.encode(event, &mut frames);
        }
        send(&mut steps, &frames);
    }
    // Where a chunk-counting fault fires: after this many chunks, or before the
    // final chunk when the answer is shorter.
    let fire_at = match fault {
        Some(
            Fault::Cut { after_chunks }
            | Fault::Stall { after_chunks, .. }
            | Fault::Malformed { after_chunks }
            | Fault::ErrorEvent { after_chunks, .. },
        ) => Some((*after_chunks as usize).min(content.len())),
        _ => None,
    };
    for index in 0..=content.len() {
        if fire_at == Some(index) {
            match fault {
                Some(Fault::Cut { .. }) => {
                    steps.push(Step::Abort);
                    return steps;
                }
                Some(Fault::Stall { stall_ms, .. }) => wait(&mut steps, *stall_ms),
                Some(Fault::Malformed { .. }) => send(&mut steps, &[malformed_frame(api)]),
                Some(Fault::ErrorEvent {
                    status,
                    message,
                    code,
                    ..
                }) => {
                    let status = status.unwrap_or_else(|| default_event_status(api));
                    let frame = error_frame(api, status, message.as_deref(), code.as_deref());
                    send(&mut steps, &[frame]);
                    return steps;
                }
                _ => {}
            }
        }
        let Some(event) = content.get(index) else {
            break;
        };
        if index == 0
            && let Some(Fault::SlowFirstToken { delay_ms }) = fault
        {
            wait(&mut steps, *delay_ms);
        }
        wait(&mut steps, token_delay_ms);
        frames.clear();
        encoder.encode(event, &mut frames);
        send(&mut steps, &frames);
    }
    if content.is_empty()
        && let Some(Fault::SlowFirstToken { delay_ms }) = fault
    {
        wait(&mut steps, *delay_ms);
    }
    if let Some(finish) = tail {
        frames.clear();
        encoder.encode(finish, &mut frames);
        if matches!(fault, Some(Fault::NoTerminator)) {
            frames.retain(|f| !is_terminator(api, f));
        }
        send(&mut steps, &frames);
    }
    steps
}

/// Plays a plan as a response body. Sends with no wait between them leave as one
/// body frame, so an answer without token delays goes out in one write, the way a
/// fast server's burst does (and the benchmark's upstream costs what its bytes cost).
pub(crate) fn play(steps: Vec<Step>) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures::stream::unfold(steps.into_iter().peekable(), |mut steps| async move {
        loop {
            match steps.next()? {
                Step::Wait(d) => tokio::time::sleep(d).await,
                Step::Send(bytes) => {
                    if !matches!(steps.peek(), Some(Step::Send(_))) {
                        return Some((Ok(bytes), steps));
                    }
                    let mut joined = BytesMut::from(&bytes[..]);
                    while let Some(Step::Send(next)) =
                        steps.next_if(|step| matches!(step, Step::Send(_)))
                    {
                        joined.extend_from_slice(&next);
                    }
                    return Some((Ok(joined.freeze()), steps));
                }
                Step::Abort => {
                    // Going pending first lets the server flush what it buffered.
                    tokio::time::sleep(CUT_FLUSH_DELAY).await;
                    let err = std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "bulwark-mock: injected cut",
                    );
                    return Some((Err(err), steps));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_core::{StopReason, Usage};
    use futures::StreamExt;

    /// Writes one recognisable frame per event, with the real formats' terminators.
    struct Fake(Api);

    impl FrameEncoder for Fake {
        fn encode(&mut self, event: &StreamEvent, out: &mut Vec<SseFrame>) {
            match event {
                StreamEvent::Start { .. } => out.push(SseFrame::data("start")),
                StreamEvent::TextDelta { text } => out.push(SseFrame::data(text.trim())),
                StreamEvent::Finish { .. } => {
                    out.push(SseFrame::data("finish"));
                    match self.0 {
                        Api::OpenAi => out.push(SseFrame::data("[DONE]")),
                        Api::Anthropic => out.push(SseFrame::named(
                            "message_stop",
                            r#"{"type":"message_stop"}"#,
                        )),
                        Api::Gemini => {}
                    }
                }
                _ => out.push(SseFrame::data("tool")),
            }
        }
    }

    fn events(n: usize) -> Vec<StreamEvent> {
        let mut events = vec![StreamEvent::Start {
            id: "i".into(),
            model: "m".into(),
        }];
        events.extend((1..=n).map(|i| StreamEvent::TextDelta {
            text: format!("t{i}"),
        }));
        events.push(StreamEvent::Finish {
            stop_reason: StopReason::EndTurn,
            stop_sequence: None,
            usage: Usage::default(),
        });
        events
    }

    /// The plan as text: `W<ms>` for waits, the data of sends, `ABORT`.
    fn show(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Wait(d) => format!("W{}", d.as_millis()),
                Step::Send(b) => String::from_utf8_lossy(b)
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(|l| l.trim_start_matches("data: "))
                    .collect::<Vec<_>>()
                    .join("|"),
                Step::Abort => "ABORT".into(),
            })
            .collect()
    }

    fn run(api: Api, n: usize, fault: Option<Fault>, delay: u64) -> Vec<String> {
        show(&plan(
            api,
            &mut Fake(api),
            &events(n),
            fault.as_ref(),
            delay,
        ))
    }

    #[test]
    fn a_clean_stream_is_start_chunks_finish() {
        assert_eq!(
            run(Api::OpenAi, 2, None, 0),
            ["start", "t1", "t2", "finish|[DONE]"]
        );
        assert_eq!(
            run(Api::Gemini, 2, None, 5),
            ["start", "W5", "t1", "W5", "t2", "finish"]
        );
    }

    #[test]
    fn cut_aborts_after_the_given_chunks() {
        let cut = Some(Fault::Cut { after_chunks: 1 });
        assert_eq!(run(Api::OpenAi, 3, cut, 0), ["start", "t1", "ABORT"]);
        // Past the end: still cut, before the finish.
        let cut = Some(Fault::Cut { after_chunks: 9 });
        assert_eq!(run(Api::OpenAi, 2, cut, 0), ["start", "t1", "t2", "ABORT"]);
    }

    #[test]
    fn stall_pauses_then_goes_on() {
        let stall = Some(Fault::Stall {
            after_chunks: 2,
            stall_ms: 80,
        });
        assert_eq!(
            run(Api::Anthropic, 3, stall, 0),
            [
                "start",
                "t1",
                "t2",
                "W80",
                "t3",
                "finish|event: message_stop|{\"type\":\"message_stop\"}"
            ]
        );
    }

    #[test]
    fn malformed_inserts_one_bad_frame() {
        let bad = Some(Fault::Malformed { after_chunks: 0 });
        assert_eq!(
            run(Api::OpenAi, 1, bad, 0),
            ["start", "{not json", "t1", "finish|[DONE]"]
        );
        let bad = Some(Fault::Malformed { after_chunks: 1 });
        assert_eq!(
            run(Api::Anthropic, 1, bad, 0)[2],
            "event: content_block_delta|{not json"
        );
    }

    #[test]
    fn no_terminator_drops_only_the_terminator() {
        let fault = Some(Fault::NoTerminator);
        assert_eq!(
            run(Api::OpenAi, 1, fault.clone(), 0),
            ["start", "t1", "finish"]
        );
        assert_eq!(
            run(Api::Anthropic, 1, fault.clone(), 0),
            ["start", "t1", "finish"]
        );
        assert_eq!(run(Api::Gemini, 1, fault, 0), run(Api::Gemini, 1, None, 0));
    }

    #[test]
    fn error_event_ends_the_stream_in_band() {
        let fault = Some(Fault::ErrorEvent {
            after_chunks: 1,
            status: None,
            message: Some("busy".into()),
            code: None,
        });
        let shown = run(Api::Anthropic, 3, fault, 0);
        assert_eq!(shown.len(), 3);
        let (event, data) = shown[2].split_once('|').unwrap();
        assert_eq!(event, "event: error");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(data).unwrap(),
            serde_json::json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
        );
    }

    #[test]
    fn slow_first_token_delays_only_the_first_chunk() {
        let fault = Some(Fault::SlowFirstToken { delay_ms: 50 });
        assert_eq!(
            run(Api::Gemini, 2, fault.clone(), 0),
            ["start", "W50", "t1", "t2", "finish"]
        );
        assert_eq!(run(Api::Gemini, 0, fault, 0), ["start", "W50", "finish"]);
    }

    #[tokio::test(start_paused = true)]
    async fn playing_a_plan_sends_waits_and_fails_on_abort() {
        let steps = vec![
            Step::Send(Bytes::from_static(b"a")),
            Step::Send(Bytes::from_static(b"b")),
            Step::Wait(Duration::from_millis(100)),
            Step::Send(Bytes::from_static(b"c")),
            Step::Abort,
        ];
        let started = tokio::time::Instant::now();
        let items: Vec<_> = play(steps).collect().await;
        assert_eq!(
            items.len(),
            3,
            "sends with no wait between them are one frame"
        );
        assert_eq!(items[0].as_ref().unwrap(), &Bytes::from_static(b"ab"));
        assert_eq!(items[1].as_ref().unwrap(), &Bytes::from_static(b"c"));
        assert!(items[2].is_err());
        assert!(started.elapsed() >= Duration::from_millis(100) + CUT_FLUSH_DELAY);
    }
}
