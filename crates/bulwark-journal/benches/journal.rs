//! Journal write-path benchmark: what `begin` + `complete` add to a request, and how
//! many records per second one writer commits, for `sync` and `batched` durability.
//!
//! Run: `cargo bench -p bulwark-journal --bench journal` (the journal lives in a temp
//! dir on the same disk as the system temp dir; set TMPDIR to measure another disk).
//!
//! - `latency/<mode>`: one caller, one request at a time; the time per iteration is
//!   the latency `begin` + one attempt + `complete` add to a request (sync: two
//!   commits with an fsync each; batched: two enqueues).
//! - `throughput/<mode>/<callers>`: that many concurrent callers; criterion reports
//!   records per second (3 records per request: begin, attempt, complete).

// A benchmark harness, like a test: a failed setup should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bulwark_core::{ChatResponse, ContentBlock, StopReason, Usage};
use bulwark_journal::{AttemptRecord, Durability, Journal, JournalConfig, NewRequest, Outcome};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn request(id: &str) -> NewRequest {
    NewRequest {
        id: id.to_string(),
        caller_request_id: None,
        drill: false,
        received_at: SystemTime::now(),
        caller_key_id: Some("bench".into()),
        ingress: "openai".into(),
        route: "fast".into(),
        stream: false,
        request_body: serde_json::json!({
            "model": "fast",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "x".repeat(800)}]}],
        }),
        idempotency_key: None,
        body_hash: None,
    }
}

fn outcome() -> Outcome {
    let response = ChatResponse {
        id: "r".into(),
        model: "m".into(),
        content: vec![ContentBlock::Text {
            text: "y".repeat(1200),
        }],
        stop_reason: StopReason::EndTurn,
        stop_sequence: None,
        usage: Usage {
            input_tokens: 200,
            output_tokens: 300,
            ..Usage::default()
        },
    };
    Outcome::completed("mock", "m", response, 1)
}

/// One request's journal traffic: begin, one attempt, complete.
async fn one_request(journal: &Journal) {
    let id = format!("b{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    journal.begin(request(&id)).await.unwrap();
    let now = SystemTime::now();
    journal.record_attempt(AttemptRecord {
        request_id: id.clone(),
        n: 1,
        provider: "mock".into(),
        model: "m".into(),
        started_at: now,
        first_byte_at: Some(now),
        ended_at: Some(now),
        outcome_class: "ok".into(),
        status: Some(200),
        error: None,
    });
    journal.complete(&id, outcome()).await.unwrap();
}

fn open(rt: &tokio::runtime::Runtime, durability: Durability) -> (Journal, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = JournalConfig::sqlite(dir.path().join("journal.db"));
    cfg.durability = durability;
    let (journal, _) = rt.block_on(Journal::open(&cfg)).unwrap();
    (journal, dir)
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let modes = [("sync", Durability::Sync), ("batched", Durability::Batched)];

    let mut latency = c.benchmark_group("latency");
    latency
        .sample_size(30)
        .measurement_time(Duration::from_secs(8));
    for (name, durability) in modes {
        let (journal, _dir) = open(&rt, durability);
        latency.bench_function(name, |b| {
            b.to_async(&rt).iter(|| one_request(&journal));
        });
        rt.block_on(journal.close()).unwrap();
    }
    latency.finish();

    let mut throughput = c.benchmark_group("throughput");
    throughput
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (name, durability) in modes {
        for callers in [16usize, 128] {
            let (journal, _dir) = open(&rt, durability);
            let per_caller = 20usize;
            throughput.throughput(Throughput::Elements((callers * per_caller * 3) as u64));
            throughput.bench_with_input(
                BenchmarkId::new(name, callers),
                &callers,
                |b, &callers| {
                    b.to_async(&rt).iter_custom(|iters| {
                        let journal = journal.clone();
                        async move {
                            let mut total = Duration::ZERO;
                            for _ in 0..iters {
                                let started = Instant::now();
                                let tasks: Vec<_> = (0..callers)
                                    .map(|_| {
                                        let journal = journal.clone();
                                        tokio::spawn(async move {
                                            for _ in 0..per_caller {
                                                one_request(&journal).await;
                                            }
                                        })
                                    })
                                    .collect();
                                for task in tasks {
                                    task.await.unwrap();
                                }
                                // Batched: count the time until the records are committed too.
                                journal.flush().await.unwrap();
                                total += started.elapsed();
                            }
                            total
                        }
                    });
                },
            );
            let health = journal.health();
            println!(
                "{name}/{callers}: {} records in {} commits ({:.1} records per commit)",
                health.records_written,
                health.commits,
                health.records_written as f64 / health.commits.max(1) as f64
            );
            rt.block_on(journal.close()).unwrap();
        }
    }
    throughput.finish();
}

criterion_group!(journal, benches);
criterion_main!(journal);
