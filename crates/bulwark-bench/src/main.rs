//! `bulwark-loadgen`: a closed-loop HTTP load generator for the benchmarks in `bench/`.
//!
//! N connections each send the same POST back to back for a duration (after a warm-up)
//! and record, per request, the time to the first body byte and to the last. Prints one
//! JSON object: requests/s, errors, and percentiles of both. With `--hold`, it instead
//! opens N streaming requests at once and keeps them open (reading slowly) for the
//! duration: the "1,000 concurrent slow streams" case.
//!
//! wrk measures the whole response only; for streams the number that matters is the
//! time to the first byte, hence this tool.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;

#[derive(Parser)]
struct Args {
    /// Target URL.
    #[arg(long)]
    url: String,
    /// JSON request body (a file path).
    #[arg(long)]
    body: std::path::PathBuf,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds (not measured).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Extra header `name: value` (repeatable).
    #[arg(long)]
    header: Vec<String>,
    /// Open `concurrency` streams and hold them for `duration` instead of a closed loop.
    #[arg(long)]
    hold: bool,
}

#[derive(serde::Serialize)]
struct Report {
    url: String,
    concurrency: usize,
    seconds: f64,
    requests: u64,
    errors: u64,
    /// Requests answered and failed, warm-up included: what the target's CPU time over
    /// the whole run divides by.
    requests_total: u64,
    rps: f64,
    latency_us: Percentiles,
    ttfb_us: Percentiles,
}

#[derive(serde::Serialize)]
struct Percentiles {
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        Percentiles {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let body =
        std::fs::read(&args.body).with_context(|| format!("reading {}", args.body.display()))?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("content-type", "application/json".parse()?);
    for h in &args.header {
        let (name, value) = h.split_once(':').context("--header is `name: value`")?;
        headers.insert(
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes())?,
            value.trim().parse()?,
        );
    }
    let client = reqwest::Client::builder()
        .tls_backend_rustls()
        .pool_max_idle_per_host(args.concurrency.max(1))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(600))
        .build()?;
    if args.hold {
        return hold(client, &args, headers, body).await;
    }
    let warmup_end = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = warmup_end + Duration::from_secs_f64(args.duration);
    let errors = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let client = client.clone();
        let url = args.url.clone();
        let headers = headers.clone();
        let body = body.clone();
        let errors = Arc::clone(&errors);
        let sent = Arc::clone(&sent);
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new(3)?;
            let mut ttfb = Histogram::<u64>::new(3)?;
            while Instant::now() < end {
                let start = Instant::now();
                let measured = start >= warmup_end;
                let result = one(&client, &url, &headers, &body).await;
                sent.fetch_add(1, Ordering::Relaxed);
                match result {
                    Ok(first) => {
                        if measured {
                            latency.record(start.elapsed().as_micros() as u64)?;
                            ttfb.record(first.as_micros() as u64)?;
                        }
                    }
                    Err(_) => {
                        if measured {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            anyhow::Ok((latency, ttfb))
        }));
    }
    let mut latency = Histogram::<u64>::new(3)?;
    let mut ttfb = Histogram::<u64>::new(3)?;
    for task in tasks {
        let (l, t) = task.await??;
        latency.add(&l)?;
        ttfb.add(&t)?;
    }
    let requests = latency.len();
    let report = Report {
        url: args.url,
        concurrency: args.concurrency,
        seconds: args.duration,
        requests,
        errors: errors.load(Ordering::Relaxed),
        requests_total: sent.load(Ordering::Relaxed),
        rps: requests as f64 / args.duration,
        latency_us: Percentiles::of(&latency),
        ttfb_us: Percentiles::of(&ttfb),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// One request read to the end; returns the time to its first body byte.
async fn one(
    client: &reqwest::Client,
    url: &str,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let resp = client
        .post(url)
        .headers(headers.clone())
        .body(body.to_vec())
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
    let mut stream = resp.bytes_stream();
    let mut first = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if first.is_none() && !chunk.is_empty() {
            first = Some(start.elapsed());
        }
    }
    first.context("empty body")
}

/// Opens N streams at once and keeps reading them slowly until the duration ends.
async fn hold(
    client: reqwest::Client,
    args: &Args,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs_f64(args.duration);
    let opened = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let client = client.clone();
        let url = args.url.clone();
        let headers = headers.clone();
        let body = body.clone();
        let opened = Arc::clone(&opened);
        let errors = Arc::clone(&errors);
        tasks.push(tokio::spawn(async move {
            let result = async {
                let resp = client.post(&url).headers(headers).body(body).send().await?;
                anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
                opened.fetch_add(1, Ordering::Relaxed);
                let mut stream = resp.bytes_stream();
                while Instant::now() < end {
                    match tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
                        Ok(Some(chunk)) => {
                            chunk?;
                        }
                        Ok(None) => break,
                        Err(_) => {}
                    }
                }
                anyhow::Ok(())
            }
            .await;
            if result.is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    println!(
        "{}",
        serde_json::json!({
            "url": args.url,
            "streams": args.concurrency,
            "opened": opened.load(Ordering::Relaxed),
            "errors": errors.load(Ordering::Relaxed),
            "seconds": args.duration,
        })
    );
    Ok(())
}
