//! `bulwark availability --config FILE`: the availability the gateway delivered, per
//! route and per provider, folded from the journal's export.
//!
//! # What is counted
//!
//! - **Route availability** = completed / (completed + failed + interrupted) over the
//!   requests received in the period. Requests still `in_flight` are reported but not
//!   counted, nor are requests whose caller went away before the answer was complete
//!   (nothing failed), nor the traffic of `bulwark drill` (journaled as `drill`, which
//!   only the gateway's admin token can claim; its failures were made on purpose,
//!   and its attempts are left out of the providers' figures too). A request that failed because of the caller (a 400) counts as failed:
//!   the journal records the outcome the caller saw, not whose fault it was.
//! - **Provider availability** = the attempt success ratio: `ok` attempts / (`ok` +
//!   failed attempts). Attempts that say nothing about the provider are left out:
//!   `cancelled` (a hedge that lost, a caller who went away) and the caller-fault or
//!   adapter classes `invalid_request`, `context_window`, `content_policy`,
//!   `unsupported`. Every other class (`transient`, `timeout`, `throttled`, `quota`,
//!   `auth`, `protocol`, anything unknown) is a failure: the provider did not serve.
//! - **Downtime** is time-based, so a burst of traffic during an outage does not
//!   weigh more than a quiet hour: the period is cut into 1-minute buckets (UTC, by
//!   the request's received time, or the attempt's start time); a bucket with traffic
//!   is *down* when more than half of what it counts failed (exactly half is up).
//!   Downtime is the number of down buckets, in minutes, next to the number of
//!   minutes that had traffic at all; minutes without traffic are neither.
//!
//! `--by day|month` splits every row by the UTC day or month of the same timestamps.
//!
//! The journal is read with [`Journal::open_read_only`] and its JSON-lines export,
//! folded line by line as it is written, so bodies are never held for more than one
//! request at a time.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bulwark_journal::{BackendKind, Durability, ExportFilter, Journal, JournalConfig, Status};
use serde::{Deserialize, Serialize};

use super::{Period, minutes, percent};

/// Attempt classes that say nothing about the provider's availability.
const NOT_COUNTED: [&str; 5] = [
    "cancelled",
    "invalid_request",
    "context_window",
    "content_policy",
    "unsupported",
];

const RULE: &str = "a minute with traffic is down when more than half of what finished in it \
                    failed (requests by received time, attempts by start time)";

/// The realised report, as printed and as `--json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub journal: String,
    /// RFC 3339, when `--since` was given.
    pub since: Option<String>,
    pub by: Option<&'static str>,
    /// Received times of the first and last request read (RFC 3339).
    pub first_request: Option<String>,
    pub last_request: Option<String>,
    pub requests: u64,
    pub in_flight: u64,
    /// Requests whose caller went away before the answer was complete (not counted).
    pub left_by_caller: u64,
    /// Requests `bulwark drill` sent (not counted).
    pub drill: u64,
    pub downtime_rule: &'static str,
    pub routes: Vec<RouteRow>,
    pub providers: Vec<ProviderRow>,
}

/// One route in one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteRow {
    /// `all`, a UTC day (`2026-11-28`) or month (`2026-11`).
    pub period: String,
    pub route: String,
    /// Finished requests: completed + failed + interrupted.
    pub requests: u64,
    pub completed: u64,
    pub failed: u64,
    pub interrupted: u64,
    pub in_flight: u64,
    /// None when nothing finished.
    pub availability: Option<f64>,
    pub down_minutes: u64,
    pub minutes_with_traffic: u64,
}

/// One provider in one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderRow {
    pub period: String,
    pub provider: String,
    /// Every attempt, counted or not.
    pub attempts: u64,
    pub ok: u64,
    pub failed: u64,
    /// Cancelled and caller-fault attempts, left out of the ratio.
    pub not_counted: u64,
    /// ok / (ok + failed); None when no attempt counted.
    pub success_ratio: Option<f64>,
    pub down_minutes: u64,
    pub minutes_with_traffic: u64,
}

/// Runs `bulwark availability --config FILE [--since T] [--by P] [--json]`.
pub async fn run(
    config: &Path,
    since: Option<&str>,
    by: Option<Period>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // The journal is all it reads: no provider keys needed.
    let (journal, _) = bulwark_server::config::load_storage(config)?;
    let journal = &journal;
    if journal.durability == Durability::Off {
        anyhow::bail!(
            "{}: `journal.durability: off` records nothing, so there is no realised \
             availability; set `journal.durability: sync` (or `batched`) and serve traffic",
            config.display()
        );
    }
    if journal.backend == BackendKind::Sqlite && !journal.path.exists() {
        anyhow::bail!(
            "no journal at {} (`journal.path` in {}): the gateway creates it when it first \
             starts; run `bulwark serve --config {}` and send traffic, or point \
             `journal.path` at the journal the gateway writes",
            journal.path.display(),
            config.display(),
            config.display()
        );
    }
    let since = since
        .map(|s| bulwark_journal::parse_time(s, SystemTime::now()))
        .transpose()
        .map_err(anyhow::Error::msg)
        .context("--since")?;
    let report = realised(journal, since, by).await?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the journal and folds it into the report.
pub async fn realised(
    cfg: &JournalConfig,
    since: Option<SystemTime>,
    by: Option<Period>,
) -> anyhow::Result<Report> {
    let journal = Journal::open_read_only(cfg)
        .await
        .with_context(|| format!("cannot open the journal at {}", cfg.describe()))?;
    let mut fold = Fold::new(by);
    let filter = ExportFilter {
        since,
        status: None,
    };
    {
        let mut sink = FoldSink {
            fold: &mut fold,
            line: Vec::new(),
        };
        journal
            .export(&filter, &mut sink)
            .await
            .with_context(|| format!("cannot read the journal at {}", cfg.describe()))?;
    }
    Ok(fold.into_report(cfg.describe(), since, by))
}

/// The part of an export line this report reads; bodies are skipped.
#[derive(Debug, Deserialize)]
struct ExportedRequest {
    status: Status,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    drill: bool,
    received_at: String,
    route: String,
    #[serde(default)]
    attempts: Vec<ExportedAttempt>,
}

#[derive(Debug, Deserialize)]
struct ExportedAttempt {
    provider: String,
    started_at: String,
    outcome_class: String,
}

/// Feeds complete export lines to the fold as `export` writes them.
struct FoldSink<'a> {
    fold: &'a mut Fold,
    line: Vec<u8>,
}

impl Write for FoldSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for piece in buf.split_inclusive(|b| *b == b'\n') {
            match piece.strip_suffix(b"\n") {
                Some(rest) => {
                    self.line.extend_from_slice(rest);
                    let line = std::mem::take(&mut self.line);
                    self.fold.add_line(&line)?;
                }
                None => self.line.extend_from_slice(piece),
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Requests (or attempts) that finished in one minute, and how many failed.
#[derive(Debug, Default, Clone, Copy)]
struct MinuteTally {
    counted: u32,
    failed: u32,
}

impl MinuteTally {
    fn is_down(self) -> bool {
        self.failed * 2 > self.counted
    }
}

#[derive(Debug, Default)]
struct RouteTally {
    completed: u64,
    failed: u64,
    interrupted: u64,
    in_flight: u64,
    minutes: BTreeMap<i64, MinuteTally>,
}

#[derive(Debug, Default)]
struct ProviderTally {
    attempts: u64,
    ok: u64,
    failed: u64,
    not_counted: u64,
    minutes: BTreeMap<i64, MinuteTally>,
}

/// Running totals keyed by (period, route) and (period, provider).
#[derive(Debug)]
struct Fold {
    by: Option<Period>,
    routes: BTreeMap<(String, String), RouteTally>,
    providers: BTreeMap<(String, String), ProviderTally>,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
    requests: u64,
    in_flight: u64,
    left_by_caller: u64,
    drill: u64,
}

impl Fold {
    fn new(by: Option<Period>) -> Fold {
        Fold {
            by,
            routes: BTreeMap::new(),
            providers: BTreeMap::new(),
            first_ms: None,
            last_ms: None,
            requests: 0,
            in_flight: 0,
            left_by_caller: 0,
            drill: 0,
        }
    }

    fn add_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let req: ExportedRequest = serde_json::from_slice(line)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.add_request(&req)
    }

    fn add_request(&mut self, req: &ExportedRequest) -> std::io::Result<()> {
        let received = unix_ms(&req.received_at)?;
        self.requests += 1;
        if req.drill {
            self.drill += 1;
            return Ok(());
        }
        // A caller who went away leaves the route's outcome unknown; its attempts
        // still say how the providers did.
        let left = req.status == Status::Failed
            && req.error.as_deref() == Some(bulwark_server::CALLER_WENT_AWAY);
        if left {
            self.left_by_caller += 1;
        }
        self.first_ms = Some(self.first_ms.map_or(received, |t| t.min(received)));
        self.last_ms = Some(self.last_ms.map_or(received, |t| t.max(received)));
        let tally = self
            .routes
            .entry((period_of(received, self.by), req.route.clone()))
            .or_default();
        let failed = match req.status {
            _ if left => None,
            Status::InFlight => {
                tally.in_flight += 1;
                self.in_flight += 1;
                None
            }
            Status::Completed => {
                tally.completed += 1;
                Some(false)
            }
            Status::Failed => {
                tally.failed += 1;
                Some(true)
            }
            Status::Interrupted => {
                tally.interrupted += 1;
                Some(true)
            }
        };
        if let Some(failed) = failed {
            count_minute(&mut tally.minutes, received, failed);
        }
        for attempt in &req.attempts {
            let started = unix_ms(&attempt.started_at)?;
            let tally = self
                .providers
                .entry((period_of(started, self.by), attempt.provider.clone()))
                .or_default();
            tally.attempts += 1;
            match attempt_verdict(&attempt.outcome_class) {
                None => tally.not_counted += 1,
                Some(ok) => {
                    if ok {
                        tally.ok += 1;
                    } else {
                        tally.failed += 1;
                    }
                    count_minute(&mut tally.minutes, started, !ok);
                }
            }
        }
        Ok(())
    }

    fn into_report(self, journal: String, since: Option<SystemTime>, by: Option<Period>) -> Report {
        let routes = self
            .routes
            .into_iter()
            .map(|((period, route), t)| {
                let finished = t.completed + t.failed + t.interrupted;
                RouteRow {
                    period,
                    route,
                    requests: finished,
                    completed: t.completed,
                    failed: t.failed,
                    interrupted: t.interrupted,
                    in_flight: t.in_flight,
                    availability: ratio(t.completed, finished),
                    down_minutes: down_minutes(&t.minutes),
                    minutes_with_traffic: t.minutes.len() as u64,
                }
            })
            .collect();
        let providers = self
            .providers
            .into_iter()
            .map(|((period, provider), t)| ProviderRow {
                period,
                provider,
                attempts: t.attempts,
                ok: t.ok,
                failed: t.failed,
                not_counted: t.not_counted,
                success_ratio: ratio(t.ok, t.ok + t.failed),
                down_minutes: down_minutes(&t.minutes),
                minutes_with_traffic: t.minutes.len() as u64,
            })
            .collect();
        Report {
            journal,
            since: since.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            by: by.map(|p| match p {
                Period::Day => "day",
                Period::Month => "month",
            }),
            first_request: self.first_ms.map(bulwark_journal::rfc3339),
            last_request: self.last_ms.map(bulwark_journal::rfc3339),
            requests: self.requests,
            in_flight: self.in_flight,
            left_by_caller: self.left_by_caller,
            drill: self.drill,
            downtime_rule: RULE,
            routes,
            providers,
        }
    }
}

/// `Some(true)` ok, `Some(false)` a provider failure, `None` not about the provider.
fn attempt_verdict(outcome_class: &str) -> Option<bool> {
    if outcome_class == "ok" {
        Some(true)
    } else if NOT_COUNTED.contains(&outcome_class) {
        None
    } else {
        Some(false)
    }
}

fn count_minute(minutes: &mut BTreeMap<i64, MinuteTally>, at_ms: i64, failed: bool) {
    let bucket = minutes.entry(at_ms.div_euclid(60_000)).or_default();
    bucket.counted += 1;
    if failed {
        bucket.failed += 1;
    }
}

fn down_minutes(minutes: &BTreeMap<i64, MinuteTally>) -> u64 {
    minutes.values().filter(|m| m.is_down()).count() as u64
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// The period label of a Unix-millisecond time (UTC).
fn period_of(ms: i64, by: Option<Period>) -> String {
    let stamp = bulwark_journal::rfc3339(ms);
    let len = match by {
        None => return "all".to_string(),
        Some(Period::Day) => 10,
        Some(Period::Month) => 7,
    };
    stamp.get(..len).unwrap_or(&stamp).to_string()
}

/// Unix milliseconds of an exported RFC 3339 time.
fn unix_ms(raw: &str) -> std::io::Result<i64> {
    let t = humantime::parse_rfc3339(raw).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad time {raw:?} in the export: {e}"),
        )
    })?;
    let ms = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    };
    Ok(ms)
}

fn write_table(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    writeln!(out, "realised availability from {}", r.journal)?;
    let since = r
        .since
        .as_ref()
        .map(|s| format!(" since {s}"))
        .unwrap_or_default();
    let (Some(first), Some(last)) = (&r.first_request, &r.last_request) else {
        writeln!(
            out,
            "no requests in the journal{since}: nothing to report yet (the gateway records \
             every request it serves; send some traffic, or widen --since)"
        )?;
        return Ok(());
    };
    writeln!(
        out,
        "{} request(s){since}, received {first} .. {last}; {} still in flight (not counted)",
        r.requests, r.in_flight
    )?;
    if r.left_by_caller > 0 || r.drill > 0 {
        writeln!(
            out,
            "not counted either: {} left by their caller before the answer was complete, {} sent by `bulwark drill`",
            r.left_by_caller, r.drill
        )?;
    }
    let with_period = r.by.is_some();
    let period = |p: &str| {
        if with_period {
            format!("{p:<11}")
        } else {
            String::new()
        }
    };
    let downtime = |down: u64, traffic: u64| format!("{} of {}", minutes(down), minutes(traffic));
    let availability = |a: Option<f64>| a.map_or_else(|| "-".to_string(), percent);

    writeln!(out)?;
    writeln!(
        out,
        "{}{:<28} {:>13}  {:<26} {:>9} {:>8}",
        period("PERIOD"),
        "CONFIGURATION",
        "AVAILABILITY",
        "DOWNTIME",
        "REQUESTS",
        "FAILED"
    )?;
    for row in &r.routes {
        writeln!(
            out,
            "{}{:<28} {:>13}  {:<26} {:>9} {:>8}",
            period(&row.period),
            format!("route {}", row.route),
            availability(row.availability),
            downtime(row.down_minutes, row.minutes_with_traffic),
            row.requests,
            row.failed + row.interrupted
        )?;
    }
    if !r.providers.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "{}{:<28} {:>13}  {:<26} {:>9} {:>8}",
            period("PERIOD"),
            "CONFIGURATION",
            "AVAILABILITY",
            "DOWNTIME",
            "ATTEMPTS",
            "FAILED"
        )?;
        for row in &r.providers {
            writeln!(
                out,
                "{}{:<28} {:>13}  {:<26} {:>9} {:>8}",
                period(&row.period),
                format!("provider {}", row.provider),
                availability(row.success_ratio),
                downtime(row.down_minutes, row.minutes_with_traffic),
                row.attempts,
                row.failed
            )?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "route availability: completed / finished requests (failed includes interrupted)"
    )?;
    writeln!(
        out,
        "provider availability: ok / (ok + failed) attempts; cancelled and caller-fault \
         attempts ({}) are not counted",
        NOT_COUNTED.join(", ")
    )?;
    writeln!(out, "downtime: {RULE}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bulwark_core::{ChatResponse, ContentBlock, StopReason, Usage};
    use bulwark_journal::{AttemptRecord, NewRequest, Outcome};

    use super::*;

    /// 2026-11-28T04:00:00Z, the start of a minute.
    fn t0() -> SystemTime {
        humantime::parse_rfc3339("2026-11-28T04:00:00Z").unwrap()
    }

    fn at(minute: u64, second: u64) -> SystemTime {
        t0() + Duration::from_secs(minute * 60 + second)
    }

    fn answer() -> ChatResponse {
        ChatResponse {
            id: "r".into(),
            model: "m".into(),
            content: vec![ContentBlock::Text { text: "hi".into() }],
            stop_reason: StopReason::EndTurn,
            stop_sequence: None,
            usage: Usage::default(),
        }
    }

    /// Writes one request received at `received` whose attempts are `(provider,
    /// class)` in order; it completes when the last attempt is `ok`, else fails.
    async fn request(journal: &Journal, id: &str, received: SystemTime, attempts: &[(&str, &str)]) {
        journal
            .begin(NewRequest {
                id: id.into(),
                caller_request_id: None,
                drill: false,
                received_at: received,
                caller_key_id: None,
                ingress: "openai".into(),
                route: "chat".into(),
                stream: false,
                request_body: serde_json::json!({"model": "chat"}),
                idempotency_key: None,
                body_hash: None,
            })
            .await
            .unwrap();
        for (n, (provider, class)) in attempts.iter().enumerate() {
            let started = received + Duration::from_millis(100 * n as u64);
            journal.record_attempt(AttemptRecord {
                request_id: id.into(),
                n: n as u32 + 1,
                provider: (*provider).into(),
                model: "m".into(),
                started_at: started,
                first_byte_at: None,
                ended_at: Some(started + Duration::from_millis(50)),
                outcome_class: (*class).into(),
                status: None,
                error: None,
            });
        }
        let n = attempts.len() as u32;
        let outcome = match attempts.last() {
            Some((provider, "ok")) => Outcome::completed(provider, "m", answer(), n),
            _ => Outcome::failed("every target failed", n),
        };
        journal.complete(id, outcome).await.unwrap();
    }

    /// Minute 0: 4 served by a. Minute 1: a down; b saves 1 of 4 (down). Minute 2: 1
    /// of 2 fails (exactly half: up), b's attempt is cancelled. Next day: 1 served by
    /// a. Plus one request still in flight.
    async fn sample_journal(dir: &Path) -> JournalConfig {
        let cfg = JournalConfig::sqlite(dir.join("journal.db"));
        let (journal, _) = Journal::open(&cfg).await.unwrap();
        for i in 0..4 {
            request(&journal, &format!("m0-{i}"), at(0, i), &[("a", "ok")]).await;
        }
        for i in 0..3 {
            let attempts = [("a", "transient"), ("b", "timeout")];
            request(&journal, &format!("m1-{i}"), at(1, i), &attempts).await;
        }
        request(
            &journal,
            "m1-3",
            at(1, 5),
            &[("a", "transient"), ("b", "ok")],
        )
        .await;
        request(&journal, "m2-0", at(2, 0), &[("a", "ok")]).await;
        let attempts = [("a", "transient"), ("b", "cancelled")];
        request(&journal, "m2-1", at(2, 1), &attempts).await;
        request(&journal, "d2-0", at(24 * 60, 0), &[("a", "ok")]).await;
        journal
            .begin(NewRequest {
                id: "open".into(),
                caller_request_id: None,
                drill: false,
                received_at: at(3, 0),
                caller_key_id: None,
                ingress: "openai".into(),
                route: "chat".into(),
                stream: false,
                request_body: serde_json::Value::Null,
                idempotency_key: None,
                body_hash: None,
            })
            .await
            .unwrap();
        journal.close().await.unwrap();
        cfg
    }

    #[tokio::test]
    async fn journal_report_counts_requests_attempts_and_down_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = sample_journal(dir.path()).await;
        let report = realised(&cfg, None, None).await.unwrap();
        assert_eq!(report.requests, 12);
        assert_eq!(report.in_flight, 1);
        assert_eq!(
            report.first_request.as_deref(),
            Some("2026-11-28T04:00:00.000Z")
        );

        let [chat] = report.routes.as_slice() else {
            panic!("{:?}", report.routes)
        };
        assert_eq!((chat.period.as_str(), chat.route.as_str()), ("all", "chat"));
        assert_eq!((chat.requests, chat.completed, chat.failed), (11, 7, 4));
        assert_eq!((chat.interrupted, chat.in_flight), (0, 1));
        assert_eq!(chat.availability, Some(7.0 / 11.0));
        // Minutes 0, 1, 2 and the next day's have traffic; only minute 1 is down.
        assert_eq!((chat.down_minutes, chat.minutes_with_traffic), (1, 4));

        let [a, b] = report.providers.as_slice() else {
            panic!("{:?}", report.providers)
        };
        assert_eq!(a.provider, "a");
        assert_eq!((a.attempts, a.ok, a.failed, a.not_counted), (11, 6, 5, 0));
        assert_eq!(a.success_ratio, Some(6.0 / 11.0));
        assert_eq!((a.down_minutes, a.minutes_with_traffic), (1, 4));
        assert_eq!(b.provider, "b");
        assert_eq!((b.attempts, b.ok, b.failed, b.not_counted), (5, 1, 3, 1));
        assert_eq!(b.success_ratio, Some(0.25));
        // The cancelled attempt in minute 2 is not traffic.
        assert_eq!((b.down_minutes, b.minutes_with_traffic), (1, 1));
    }

    #[tokio::test]
    async fn journal_report_splits_rows_by_day_and_honours_since() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = sample_journal(dir.path()).await;
        let report = realised(&cfg, None, Some(Period::Day)).await.unwrap();
        let days: Vec<(&str, u64, Option<f64>)> = report
            .routes
            .iter()
            .map(|r| (r.period.as_str(), r.requests, r.availability))
            .collect();
        assert_eq!(
            days,
            vec![("2026-11-28", 10, Some(0.6)), ("2026-11-29", 1, Some(1.0))]
        );

        let later = realised(&cfg, Some(at(2, 0)), Some(Period::Month))
            .await
            .unwrap();
        let [chat] = later.routes.as_slice() else {
            panic!("{:?}", later.routes)
        };
        assert_eq!(chat.period, "2026-11");
        assert_eq!((chat.requests, chat.completed, chat.in_flight), (3, 2, 1));
        assert_eq!(chat.down_minutes, 0);
    }

    #[tokio::test]
    async fn an_empty_journal_gives_an_empty_report() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = JournalConfig::sqlite(dir.path().join("journal.db"));
        let (journal, _) = Journal::open(&cfg).await.unwrap();
        journal.close().await.unwrap();
        let report = realised(&cfg, None, None).await.unwrap();
        assert_eq!(report.requests, 0);
        assert!(report.routes.is_empty() && report.providers.is_empty());
        let mut text = Vec::new();
        write_table(&mut text, &report).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("nothing to report yet"), "{text}");
    }

    #[tokio::test]
    async fn a_missing_journal_names_the_path_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("nowhere.db");
        let config = dir.path().join("bulwark.yaml");
        let yaml = format!(
            "journal: {{path: \"{}\"}}\nproviders:\n  - {{name: local, kind: openai-compatible, \
             base_url: \"http://127.0.0.1:9/v1\"}}\nroutes:\n  - model: chat\n    targets:\n      \
             - {{provider: local, model: m}}\n",
            journal.display()
        );
        std::fs::write(&config, yaml).unwrap();
        let err = run(&config, None, None, false).await.unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains(&journal.display().to_string()),
            "{message}"
        );
        assert!(message.contains("bulwark serve --config"), "{message}");
    }

    #[test]
    fn callers_who_left_and_drill_traffic_are_not_counted() {
        let mut fold = Fold::new(None);
        let line = |status: &str, error: Option<&str>, caller: &str, drill: bool, class: &str| {
            serde_json::json!({
                "status": status, "error": error, "caller_request_id": caller, "drill": drill,
                "received_at": "2026-11-28T04:00:01Z", "route": "chat",
                "attempts": [{"provider": "a", "started_at": "2026-11-28T04:00:01Z", "outcome_class": class}],
            })
            .to_string()
        };
        let left = Some(bulwark_server::CALLER_WENT_AWAY);
        for l in [
            line("completed", None, "app-1", false, "ok"),
            line("failed", left, "app-2", false, "cancelled"),
            line(
                "failed",
                Some("every target failed"),
                "drill-x-1",
                true,
                "transient",
            ),
            // A caller naming its request like the drill's is not drill traffic.
            line(
                "failed",
                Some("every target failed"),
                "drill-spoof-1",
                false,
                "transient",
            ),
        ] {
            fold.add_line(l.as_bytes()).unwrap();
        }
        let report = fold.into_report("j".into(), None, None);
        assert_eq!(
            (report.requests, report.left_by_caller, report.drill),
            (4, 1, 1)
        );
        let chat = &report.routes[0];
        assert_eq!((chat.requests, chat.completed, chat.failed), (2, 1, 1));
        let a = &report.providers[0];
        assert_eq!(
            (a.ok, a.failed, a.not_counted),
            (1, 1, 1),
            "the drill's failed attempt is left out; the cancelled one is not counted"
        );
    }

    #[test]
    fn a_minute_is_down_only_when_more_than_half_failed() {
        let tally = |counted, failed| MinuteTally { counted, failed };
        assert!(!tally(2, 1).is_down());
        assert!(tally(3, 2).is_down());
        assert!(tally(1, 1).is_down());
        assert!(!tally(4, 0).is_down());
    }

    #[test]
    fn caller_faults_and_cancellations_do_not_count_against_a_provider() {
        assert_eq!(attempt_verdict("ok"), Some(true));
        assert_eq!(attempt_verdict("transient"), Some(false));
        assert_eq!(attempt_verdict("auth"), Some(false));
        assert_eq!(attempt_verdict("cancelled"), None);
        assert_eq!(attempt_verdict("invalid_request"), None);
    }
}
