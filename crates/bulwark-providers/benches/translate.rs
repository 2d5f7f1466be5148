//! Stream-chunk translation benchmark: the per-chunk work of a streamed answer on its
//! way through Bulwark, upstream wire format → neutral events → the caller's format.
//!
//! Run: `cargo bench -p bulwark-providers --bench translate`
//!
//! The input is a typical answer streamed by the upstream: a start, 64 text deltas
//! of one word each, the finish and the usage, encoded by Bulwark's own encoders
//! (the same bytes the mock provider sends). Each benchmark translates the whole
//! answer; criterion reports the time per answer and the chunks per second (one
//! "element" is one content chunk).
//!
//! - `decode/<upstream>`: the `data:` payloads through the adapter's stream decoder
//!   into neutral events (what every request pays, JSON callers included, since the
//!   router always streams from the upstream);
//! - `encode/<caller>`: neutral events into the caller's SSE frames, as written;
//! - `translate/<upstream>_to_<caller>`: both, per chunk, as the gateway does it;
//! - `sse_bytes/openai`: the raw upstream body (split into 1 KiB reads) through the
//!   SSE parser and the decoder, to show what the byte-level parsing adds.

// A benchmark harness, like a test: a failed setup should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use bulwark_core::{SseFrame, StopReason, StreamEvent, Usage};
use bulwark_providers::anthropic::{AnthropicAdapter, serve as anthropic_serve};
use bulwark_providers::openai::{OpenAiAdapter, serve as openai_serve};
use bulwark_providers::{Adapter, StreamDecoder};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;

const WORDS: usize = 64;

/// The neutral events of one answer.
fn answer() -> Vec<StreamEvent> {
    let mut events = vec![StreamEvent::Start {
        id: "chatcmpl-bench-0123456789abcdef".into(),
        model: "gpt-bench".into(),
    }];
    for i in 0..WORDS {
        events.push(StreamEvent::TextDelta {
            text: format!("word{i} "),
        });
    }
    events.push(StreamEvent::Finish {
        stop_reason: StopReason::EndTurn,
        stop_sequence: None,
        usage: Usage {
            input_tokens: 12,
            output_tokens: WORDS as u64,
            ..Usage::default()
        },
    });
    events
}

/// The SSE frames an upstream of `kind` sends for `events`.
fn upstream_frames(kind: Kind, events: &[StreamEvent]) -> Vec<SseFrame> {
    let mut frames = Vec::new();
    match kind {
        Kind::OpenAi => {
            let mut enc =
                openai_serve::StreamEncoder::new("chatcmpl-bench".into(), 1_700_000_000, true);
            for e in events {
                enc.encode(e, &mut frames);
            }
        }
        Kind::Anthropic => {
            let mut enc = anthropic_serve::StreamEncoder::new("msg_bench".into());
            for e in events {
                enc.encode(e, &mut frames);
            }
        }
    }
    frames
}

#[derive(Clone, Copy)]
enum Kind {
    OpenAi,
    Anthropic,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::OpenAi => "openai",
            Kind::Anthropic => "anthropic",
        }
    }

    fn decoder(self) -> Box<dyn StreamDecoder> {
        match self {
            Kind::OpenAi => OpenAiAdapter::new(false).stream_decoder(),
            Kind::Anthropic => AnthropicAdapter::new(4096).stream_decoder(),
        }
    }
}

/// The caller-side encoder, as the ingress holds it.
enum Encoder {
    OpenAi(openai_serve::StreamEncoder),
    Anthropic(anthropic_serve::StreamEncoder),
}

impl Encoder {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::OpenAi => Encoder::OpenAi(openai_serve::StreamEncoder::new(
                "chatcmpl-caller".into(),
                1_700_000_000,
                false,
            )),
            Kind::Anthropic => {
                Encoder::Anthropic(anthropic_serve::StreamEncoder::new("msg_caller".into()))
            }
        }
    }

    fn encode(&mut self, event: &StreamEvent, out: &mut Vec<SseFrame>) {
        match self {
            Encoder::OpenAi(e) => e.encode(event, out),
            Encoder::Anthropic(e) => e.encode(event, out),
        }
    }
}

/// Decodes a whole upstream answer; returns the neutral events.
fn decode(kind: Kind, frames: &[SseFrame]) -> Vec<StreamEvent> {
    let mut decoder = kind.decoder();
    let mut out = Vec::with_capacity(frames.len() + 2);
    for frame in frames {
        decoder.feed(frame.event, &frame.data, &mut out).unwrap();
    }
    decoder.finish(&mut out).unwrap();
    out
}

/// Decodes each upstream chunk and encodes it for the caller at once, as the gateway
/// streams; returns the bytes written to the caller.
fn translate(from: Kind, to: Kind, frames: &[SseFrame]) -> usize {
    let mut decoder = from.decoder();
    let mut encoder = Encoder::new(to);
    let mut events = Vec::new();
    let mut out = Vec::new();
    let mut written = 0;
    let mut step = |events: &mut Vec<StreamEvent>, out: &mut Vec<SseFrame>| {
        for event in events.drain(..) {
            encoder.encode(&event, out);
        }
        for frame in out.drain(..) {
            written += frame.to_wire().len();
        }
    };
    for frame in frames {
        decoder.feed(frame.event, &frame.data, &mut events).unwrap();
        step(&mut events, &mut out);
    }
    decoder.finish(&mut events).unwrap();
    step(&mut events, &mut out);
    written
}

fn bench_translate(c: &mut Criterion) {
    let events = answer();
    let kinds = [Kind::OpenAi, Kind::Anthropic];

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(WORDS as u64));
    for kind in kinds {
        let frames = upstream_frames(kind, &events);
        assert_eq!(decode(kind, &frames), events_as_decoded(kind, &events));
        group.bench_function(kind.name(), |b| b.iter(|| decode(kind, black_box(&frames))));
    }
    group.finish();

    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(WORDS as u64));
    for kind in kinds {
        group.bench_function(kind.name(), |b| {
            b.iter(|| {
                let mut encoder = Encoder::new(kind);
                let mut out = Vec::new();
                let mut written = 0;
                for event in black_box(&events) {
                    encoder.encode(event, &mut out);
                    for frame in out.drain(..) {
                        written += frame.to_wire().len();
                    }
                }
                written
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("translate");
    group.throughput(Throughput::Elements(WORDS as u64));
    for (from, to) in [
        (Kind::Anthropic, Kind::OpenAi),
        (Kind::OpenAi, Kind::Anthropic),
        (Kind::OpenAi, Kind::OpenAi),
    ] {
        let frames = upstream_frames(from, &events);
        assert!(translate(from, to, &frames) > 0);
        group.bench_function(format!("{}_to_{}", from.name(), to.name()), |b| {
            b.iter(|| translate(from, to, black_box(&frames)))
        });
    }
    group.finish();

    // The raw body as it comes off the socket, in 1 KiB reads.
    let frames = upstream_frames(Kind::OpenAi, &events);
    let body: String = frames.iter().map(SseFrame::to_wire).collect();
    let reads: Vec<bytes::Bytes> = body
        .as_bytes()
        .chunks(1024)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    let mut group = c.benchmark_group("sse_bytes");
    group.throughput(Throughput::Elements(WORDS as u64));
    group.bench_function("openai", |b| {
        b.iter(|| {
            let input = futures::stream::iter(
                black_box(&reads)
                    .iter()
                    .cloned()
                    .map(Ok::<_, std::io::Error>),
            );
            let mut sse = sse_stream::SseByteStream::new(input);
            let mut decoder = Kind::OpenAi.decoder();
            let mut out = Vec::new();
            futures::executor::block_on(async {
                while let Some(event) = sse.next().await {
                    let event = event.unwrap();
                    if let Some(data) = event.data {
                        decoder
                            .feed(event.event.as_deref(), &data, &mut out)
                            .unwrap();
                    }
                }
            });
            decoder.finish(&mut out).unwrap();
            out.len()
        })
    });
    group.finish();
}

/// What decoding an upstream's frames gives back for `events`: the same answer, with
/// the id the upstream chose and, for Anthropic, the usage it reports in two halves.
fn events_as_decoded(kind: Kind, events: &[StreamEvent]) -> Vec<StreamEvent> {
    let mut expected = events.to_vec();
    if let Some(StreamEvent::Start { id, .. }) = expected.first_mut() {
        *id = match kind {
            Kind::OpenAi => "chatcmpl-bench".into(),
            Kind::Anthropic => "msg_bench".into(),
        };
    }
    expected
}

criterion_group!(benches, bench_translate);
criterion_main!(benches);
