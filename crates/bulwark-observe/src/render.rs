//! `bulwark status --url URL`: fetch `/admin/status` and print it for a human.
//!
//! The first lines answer "is it up, is anything firing"; then one block per route
//! headed by the target serving now (flagged when failed over) and a table of its
//! targets; then the journal. Columns are aligned by a small formatter here rather
//! than a table crate: the layout is fixed and this keeps the CLI's build light.

use std::fmt::Write as _;
use std::time::Duration;

use crate::conditions::short;
use crate::status::{JournalReport, RouteStatus, StatusReport, TargetStatus};

/// Why the status could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} refused the admin token (HTTP {status}); pass the gateway's admin token")]
    Unauthorized { url: String, status: u16 },
    #[error("{url} answered HTTP {status}")]
    Http { url: String, status: u16 },
    #[error("{url} did not answer with a status document: {reason}")]
    Decode { url: String, reason: String },
}

/// `URL` as given, or `URL/admin/status` when it is the gateway's base URL.
pub fn status_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/admin/status") {
        url.to_string()
    } else {
        format!("{url}/admin/status")
    }
}

/// Fetches the status document, sending `token` as `Authorization: Bearer`.
pub async fn fetch_status(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Result<StatusReport, StatusError> {
    let url = status_url(url);
    let mut request = client
        .get(&url)
        .header(reqwest::header::ACCEPT, "application/json");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| StatusError::Unreachable {
        url: url.clone(),
        reason: cause_chain(&e),
    })?;
    let status = response.status().as_u16();
    match status {
        200 => {}
        401 | 403 => return Err(StatusError::Unauthorized { url, status }),
        _ => return Err(StatusError::Http { url, status }),
    }
    response.json().await.map_err(|e| StatusError::Decode {
        url,
        reason: e.to_string(),
    })
}

/// The error and its causes (reqwest's own text says only "error sending request";
/// "connection refused" or "timed out" is in a cause).
fn cause_chain(err: &reqwest::Error) -> String {
    let mut out = if err.is_timeout() {
        "timed out".to_string()
    } else {
        err.to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// Fetches and renders; what the CLI subcommand prints.
pub async fn status_command(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Result<String, StatusError> {
    fetch_status(client, url, token).await.map(|r| render(&r))
}

fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{:.0}%", r * 100.0))
}

fn secs(s: u64) -> String {
    short(Duration::from_secs(s))
}

fn millis(ms: u64) -> String {
    short(Duration::from_millis(ms))
}

/// The human view of a status document.
pub fn render(r: &StatusReport) -> String {
    let mut out = String::new();
    let g = &r.gateway;
    let _ = writeln!(
        out,
        "bulwark {} on {}: UP for {} (since {})",
        g.version,
        g.source,
        secs(g.uptime_seconds),
        g.started_at
    );
    for c in &r.chaos {
        let _ = writeln!(
            out,
            "CHAOS ACTIVE (#{}): {}/{} {} for {} more (clear: DELETE /admin/chaos/{})",
            c.id,
            c.provider,
            c.model.as_deref().unwrap_or("*"),
            c.fault,
            secs(c.remaining_seconds),
            c.id
        );
    }
    if r.alerts.is_empty() {
        let _ = writeln!(out, "alerts: none firing");
    } else {
        let _ = writeln!(out, "alerts: {} firing", r.alerts.len());
        let mut t = Table::new(&["SEVERITY", "RULE", "SUBJECT", "FOR", "SUMMARY"]);
        for a in &r.alerts {
            t.row(vec![
                a.severity.to_uppercase(),
                a.rule.clone(),
                a.subject.clone(),
                secs(a.firing_for_seconds),
                a.summary.clone(),
            ]);
        }
        t.write(&mut out, "  ");
    }
    for route in &r.routes {
        out.push('\n');
        route_block(&mut out, route);
    }
    out.push('\n');
    match &r.journal {
        None => {
            let _ = writeln!(out, "journal: not configured");
        }
        Some(j) => journal_line(&mut out, j),
    }
    out
}

fn route_block(out: &mut String, route: &RouteStatus) {
    let serving = match &route.serving {
        None => "NO TARGET AVAILABLE".to_string(),
        Some(t) if route.failed_over => format!("{}/{} (FAILED OVER)", t.provider, t.model),
        Some(t) => format!("{}/{}", t.provider, t.model),
    };
    let mut line = format!("route {}: serving {serving}", route.name);
    if let Some(f) = &route.last_failover {
        let _ = write!(
            line,
            "; last failover {} -> {} {} ago",
            f.from,
            f.to,
            secs(f.ago_seconds)
        );
    }
    let _ = writeln!(out, "{line}");
    let mut t = Table::new(&[
        "",
        "TARGET",
        "ROLE",
        "STATE",
        "OK/100",
        "OK 1m",
        "OK 5m",
        "OK 60m",
        "P50",
        "P95",
        "TTFT P50",
        "TTFT P95",
        "IN-FLIGHT",
        "LAST ERROR",
    ]);
    for target in &route.targets {
        t.row(target_row(target));
    }
    t.write(out, "  ");
}

fn target_row(t: &TargetStatus) -> Vec<String> {
    let mut state = t.state.replace('_', "-");
    if t.state != "closed" {
        state = state.to_uppercase();
    }
    if t.quota_blocked {
        state.push_str(" +QUOTA");
    }
    let state = format!("{state} {}", secs(t.state_for_seconds));
    let p = |x: &Option<crate::status::PercentilesMs>,
             f: fn(&crate::status::PercentilesMs) -> u64| {
        x.as_ref().map_or_else(|| "-".to_string(), |v| millis(f(v)))
    };
    vec![
        if t.serving { ">".into() } else { String::new() },
        format!("{}/{}", t.provider, t.model),
        if t.primary {
            "primary".into()
        } else {
            "backup".into()
        },
        state,
        pct(t.success_rate.last_100),
        pct(t.success_rate.m1),
        pct(t.success_rate.m5),
        pct(t.success_rate.m60),
        p(&t.latency_ms, |v| v.p50),
        p(&t.latency_ms, |v| v.p95),
        p(&t.ttft_ms, |v| v.p50),
        p(&t.ttft_ms, |v| v.p95),
        t.in_flight.to_string(),
        t.last_error.as_ref().map_or_else(
            || "-".to_string(),
            |e| format!("{} {} ago", e.class, secs(e.ago_seconds)),
        ),
    ]
}

/// Seconds from a report as a duration; a value no duration can hold (a report from
/// a gateway that got it wrong) shows as the longest one rather than a panic.
fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
}

fn journal_line(out: &mut String, j: &JournalReport) {
    let writes = if j.writes_failing {
        "WRITES FAILING"
    } else {
        "writes ok"
    };
    let rpo = match (j.rpo_exposure_seconds, j.rpo_target_seconds) {
        (Some(e), Some(t)) if e > t => format!(
            "RPO exposure {} ABOVE target {}",
            short(seconds(e)),
            short(seconds(t))
        ),
        (Some(e), Some(t)) => format!(
            "RPO exposure {} (target {})",
            short(seconds(e)),
            short(seconds(t))
        ),
        (Some(e), None) => format!("RPO exposure {}", short(seconds(e))),
        (None, None) => "RPO exposure n/a".to_string(),
        (None, Some(_)) => "RPO exposure unknown".to_string(),
    };
    let backup = match (j.last_backup_ago_seconds, j.rpo_target_seconds) {
        (Some(s), _) => format!("last backup {} ago", secs(s)),
        (None, Some(_)) => "no backup yet".to_string(),
        (None, None) => "no backup configured".to_string(),
    };
    let _ = writeln!(
        out,
        "journal: durability {}, {writes}, {rpo}, {backup}",
        j.durability
    );
}

/// Left-aligned columns, two spaces apart.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Self {
        Table {
            rows: vec![header.iter().map(|h| (*h).to_string()).collect()],
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn write(&self, out: &mut String, indent: &str) {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &self.rows {
            let mut line = indent.to_string();
            for (c, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if c + 1 < row.len() {
                    let pad = widths[c].saturating_sub(cell.chars().count()) + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "error sending request" alone does not say what is wrong; the cause does.
    #[tokio::test]
    async fn an_unreachable_gateway_is_reported_with_the_cause() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = fetch_status(&reqwest::Client::new(), &format!("http://{addr}"), None)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("cannot reach"), "{text}");
        assert!(text.to_lowercase().contains("connection refused"), "{text}");
    }
    use crate::status::*;
    use std::collections::BTreeMap;

    fn target(provider: &str, serving: bool, state: &str) -> TargetStatus {
        TargetStatus {
            provider: provider.into(),
            model: "m".into(),
            priority: 0,
            primary: provider == "primary",
            serving,
            state: state.into(),
            state_for_seconds: 120,
            available: state != "open",
            quota_blocked: false,
            throttled: false,
            in_flight: 1,
            success_rate: SuccessRates {
                last_100: Some(0.5),
                m1: Some(0.0),
                m5: None,
                m60: Some(0.99),
            },
            calls: CallCounts {
                last_100: 2,
                m1: 1,
                m5: 0,
                m60: 100,
            },
            latency_ms: Some(PercentilesMs {
                p50: 820,
                p95: 1900,
                p99: 2000,
                samples: 3,
            }),
            ttft_ms: None,
            errors: BTreeMap::new(),
            last_error: Some(LastError {
                class: "transient".into(),
                at: "x".into(),
                ago_seconds: 5,
            }),
            last_success_ago_seconds: None,
        }
    }

    #[test]
    fn render_puts_the_serving_target_and_alerts_first() {
        let report = StatusReport {
            gateway: GatewayStatus {
                status: "up".into(),
                version: "0.1.0".into(),
                source: "gw1".into(),
                started_at: "2026-11-02T10:00:00.000Z".into(),
                uptime_seconds: 7200,
                generated_at: "x".into(),
            },
            chaos: Vec::new(),
            alerts: vec![FiringAlert {
                rule: "failover".into(),
                severity: "warning".into(),
                subject: "chat".into(),
                summary: "route chat failed over".into(),
                since: "x".into(),
                firing_for_seconds: 90,
                dedup_key: "k".into(),
            }],
            routes: vec![RouteStatus {
                name: "chat".into(),
                serving: Some(TargetRef {
                    provider: "backup".into(),
                    model: "m".into(),
                }),
                failed_over: true,
                last_failover: Some(FailoverStatus {
                    from: "primary".into(),
                    to: "backup".into(),
                    at: "x".into(),
                    ago_seconds: 60,
                }),
                failovers_total: 1,
                targets: vec![
                    target("primary", false, "open"),
                    target("backup", true, "closed"),
                ],
            }],
            journal: None,
        };
        let text = render(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("bulwark 0.1.0 on gw1: UP for 2h"),
            "{text}"
        );
        assert_eq!(lines[1], "alerts: 1 firing");
        assert!(
            text.contains(
                "route chat: serving backup/m (FAILED OVER); last failover primary -> backup 1m ago"
            ),
            "{text}"
        );
        let primary = lines.iter().find(|l| l.contains("primary/m")).unwrap();
        assert!(
            primary.contains("OPEN 2m") && primary.contains("transient 5s ago"),
            "{primary}"
        );
        let serving = lines
            .iter()
            .find(|l| l.trim_start().starts_with('>'))
            .unwrap();
        assert!(
            serving.contains("backup/m") && serving.contains("closed 2m"),
            "{serving}"
        );
        assert!(text.contains("820ms") && text.contains("1.9s"), "{text}");
        assert!(text.ends_with("journal: not configured\n"));
    }

    #[test]
    fn status_url_accepts_base_or_full() {
        assert_eq!(status_url("http://h:1/"), "http://h:1/admin/status");
        assert_eq!(
            status_url("http://h:1/admin/status"),
            "http://h:1/admin/status"
        );
    }
}
