//! `bulwark demo`: business continuity on a laptop, no keys, no network.
//!
//! Three mock providers shaped like Anthropic, OpenAI and Gemini (each with its own
//! latency, streaming token by token), one gateway in this process, and steady
//! traffic on three routes over the same targets:
//!
//! ```text
//! one    anthropic
//! two    anthropic → openai
//! three  anthropic → openai → gemini
//! ```
//!
//! A scripted fault timeline runs against the mocks (so every route lives through the
//! very same faults): normal → primary outage → primary outage and secondary
//! brown-out → secondary brown-out → recovery. Every second one line shows what
//! callers got on each route, who served, the breakers and the alerts; at the end a
//! table gives the availability measured for one, two and three providers, the time
//! to fail over, the requests lost, and what that availability would mean as
//! monthly downtime. Every answer is also checked against the journal (`sync`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bulwark_core::config::Config;
use bulwark_mock::{Behavior, FaultRule, MockServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// The routes, by number of providers.
const ROUTES: [&str; 3] = ["one", "two", "three"];
/// The providers, in priority order.
const PROVIDERS: [&str; 3] = ["anthropic", "openai", "gemini"];
/// Requests per second on each route.
const RATE_PER_ROUTE: u32 = 4;

/// One step of the fault timeline, from `start` (a fraction of the run) on.
struct Phase {
    start: f64,
    title: &'static str,
    /// (provider index, fault JSON) applied when the phase begins (all cleared first).
    faults: &'static [(usize, &'static str)],
}

const TIMELINE: &[Phase] = &[
    Phase {
        start: 0.0,
        title: "normal",
        faults: &[],
    },
    Phase {
        start: 0.15,
        title: "primary outage",
        faults: &[(
            0,
            r#"{"fault": {"kind": "status", "status": 503, "message": "demo outage"}}"#,
        )],
    },
    Phase {
        start: 0.35,
        title: "outage + secondary brown-out",
        faults: &[
            (
                0,
                r#"{"fault": {"kind": "status", "status": 503, "message": "demo outage"}}"#,
            ),
            (
                1,
                r#"{"fault": {"kind": "slow_first_token", "delay_ms": 2500}}"#,
            ),
        ],
    },
    Phase {
        start: 0.50,
        title: "secondary brown-out",
        faults: &[(
            1,
            r#"{"fault": {"kind": "slow_first_token", "delay_ms": 2500}}"#,
        )],
    },
    Phase {
        start: 0.65,
        title: "recovery",
        faults: &[],
    },
];

/// What one caller request got.
#[derive(Debug, Clone)]
struct Outcome {
    route: usize,
    sent_at: Duration,
    done_at: Duration,
    answered: bool,
    /// Why it was not answered.
    error: Option<String>,
    provider: Option<String>,
    request_id: String,
    text: Option<String>,
}

pub async fn run(duration: Duration, seed: u64) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        duration >= Duration::from_secs(10),
        "--duration must be at least 10s (the timeline needs room for breakers to open and close)"
    );
    let color = std::io::stdout().is_terminal();
    let mocks = start_mocks().await?;
    let data = tempfile::tempdir().context("cannot create a directory for the demo journal")?;
    let journal_path = data.path().join("journal.db");
    let config = demo_config(&mocks, &journal_path)?;
    let state = bulwark_server::build_state(&config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bulwark_server::serve(listener, state.clone(), async {
        let _ = stop_rx.await;
    }));

    println!(
        "Bulwark demo: gateway on http://{gateway}; three mock providers on loopback, no keys."
    );
    println!("  route one   = anthropic");
    println!("  route two   = anthropic → openai");
    println!("  route three = anthropic → openai → gemini");
    println!(
        "  {} requests/s per route for {}; the same faults hit every route (seed {seed}).\n",
        RATE_PER_ROUTE,
        humantime::format_duration(duration)
    );

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut phase_at: Vec<Duration> = Vec::new();
    let mut next_phase = 0;
    let mut next_report = Duration::from_secs(1);
    let mut reported = 0usize;
    let mut seen_alerts: HashMap<String, String> = HashMap::new();
    let mut requests = Vec::new();
    let tick = Duration::from_secs(1) / RATE_PER_ROUTE;
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    loop {
        ticker.tick().await;
        let now = started.elapsed();
        if now >= duration {
            break;
        }
        while next_phase < TIMELINE.len()
            && now.as_secs_f64() >= TIMELINE[next_phase].start * duration.as_secs_f64()
        {
            let phase = &TIMELINE[next_phase];
            for mock in &mocks {
                mock.clear_faults();
            }
            for (index, fault) in phase.faults {
                let rule: FaultRule =
                    serde_json::from_str(fault).context("the demo's fault script")?;
                mocks[*index].push_fault(rule);
            }
            phase_at.push(now);
            println!(
                "{}",
                paint(
                    color,
                    "1",
                    &format!("── {:>4.1}s  {}", now.as_secs_f64(), phase.title)
                )
            );
            next_phase += 1;
        }
        for (route, name) in ROUTES.iter().enumerate() {
            n += 1;
            let stream = rng.random_bool(0.5);
            let request_id = format!("demo-{seed}-{n}");
            let (client, outcomes) = (client.clone(), Arc::clone(&outcomes));
            requests.push(tokio::spawn(async move {
                let got = send(&client, gateway, name, stream, &request_id).await;
                let done_at = started.elapsed();
                let (answered, provider, text, error) = match got {
                    Ok((provider, text)) => (true, Some(provider), Some(text), None),
                    Err(err) => (false, None, None, Some(format!("{err:#}"))),
                };
                lock(&outcomes).push(Outcome {
                    route,
                    sent_at: now,
                    done_at,
                    error,
                    answered,
                    provider,
                    request_id,
                    text,
                });
            }));
        }
        if now >= next_report {
            let current = TIMELINE[next_phase.saturating_sub(1)].title;
            reported = live_line(
                color,
                now,
                current,
                &lock(&outcomes),
                reported,
                &state.observer.status(),
                &mut seen_alerts,
            );
            next_report += Duration::from_secs(1);
        }
    }
    for mock in &mocks {
        mock.clear_faults();
    }
    for request in requests {
        let _ = request.await;
    }
    let outcomes = lock(&outcomes).clone();
    let journal = journal_check(&config, &outcomes).await;

    let outage_start = phase_at.get(1).copied().unwrap_or_default();
    println!();
    print_table(&outcomes, outage_start, duration);
    match journal {
        Ok((journaled, missing)) => println!(
            "\njournal (durability sync): {journaled} requests recorded; answers missing from it: {missing} (RPO 0)"
        ),
        Err(err) => println!("\njournal: could not be read back: {err:#}"),
    }
    println!(
        "\nWhat happened: the primary's outage took route one down; route two failed over to openai until openai \
browned out too; route three kept answering from gemini. Try it on your own providers with `bulwark drill`."
    );

    let _ = stop_tx.send(());
    server.await??;
    for mock in mocks {
        mock.shutdown().await;
    }
    Ok(ExitCode::SUCCESS)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn paint(color: bool, code: &str, text: &str) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// Mocks with latencies in the range of the real services (time to first token
/// 100–150 ms, then a token every 15–20 ms).
async fn start_mocks() -> anyhow::Result<Vec<MockServer>> {
    let shapes = [
        ("anthropic", 150, 20),
        ("openai", 100, 15),
        ("gemini", 120, 18),
    ];
    let mut mocks = Vec::new();
    for (name, latency_ms, token_delay_ms) in shapes {
        let mock = MockServer::start(&format!("mock-{name}"))
            .await
            .context("cannot start a mock provider")?;
        mock.set_behavior(Behavior {
            latency_ms,
            token_delay_ms,
            reply_tokens: Some(12),
            ..Behavior::named(format!("mock-{name}"))
        });
        mocks.push(mock);
    }
    Ok(mocks)
}

/// One line per second: per route, answered/sent in that second and who served last;
/// the breakers; then any alert that started or stopped firing. Returns how many
/// outcomes have been reported.
fn live_line(
    color: bool,
    now: Duration,
    phase: &str,
    outcomes: &[Outcome],
    reported: usize,
    status: &bulwark_observe::StatusReport,
    seen_alerts: &mut HashMap<String, String>,
) -> usize {
    let fresh = &outcomes[reported.min(outcomes.len())..];
    let mut cells = Vec::new();
    for (route, name) in ROUTES.iter().enumerate() {
        let mine: Vec<&Outcome> = fresh.iter().filter(|o| o.route == route).collect();
        let ok = mine.iter().filter(|o| o.answered).count();
        let last = mine
            .iter()
            .rev()
            .find_map(|o| o.provider.as_deref())
            .unwrap_or("-");
        let cell = format!("{name} {ok}/{} {last:<9}", mine.len());
        let code = if mine.is_empty() || ok == mine.len() {
            "32"
        } else if ok == 0 {
            "31"
        } else {
            "33"
        };
        cells.push(paint(color, code, &cell));
    }
    let mut breakers = Vec::new();
    if let Some(route) = status.routes.iter().find(|r| r.name == "three") {
        for t in &route.targets {
            let state = if t.state == "closed" {
                t.state.clone()
            } else {
                paint(color, "31", &t.state.to_uppercase())
            };
            breakers.push(format!("{} {state}", t.provider));
        }
    }
    println!(
        "  {:>4.1}s  {:<28} {}  │ {}",
        now.as_secs_f64(),
        phase,
        cells.join("  "),
        breakers.join(", ")
    );
    let firing: HashSet<String> = status.alerts.iter().map(|a| a.dedup_key.clone()).collect();
    for alert in &status.alerts {
        if seen_alerts
            .insert(alert.dedup_key.clone(), alert.summary.clone())
            .is_none()
        {
            println!(
                "         {} {}",
                paint(
                    color,
                    "35",
                    &format!("ALERT {}", alert.severity.to_uppercase())
                ),
                alert.summary
            );
        }
    }
    let resolved: Vec<String> = seen_alerts
        .keys()
        .filter(|k| !firing.contains(*k))
        .cloned()
        .collect();
    for key in resolved {
        if let Some(summary) = seen_alerts.remove(&key) {
            println!("         {} {summary}", paint(color, "36", "RESOLVED"));
        }
    }
    outcomes.len()
}

fn print_table(outcomes: &[Outcome], outage_start: Duration, duration: Duration) {
    println!(
        "Measured on this timeline ({}):",
        humantime::format_duration(Duration::from_secs(duration.as_secs()))
    );
    println!(
        "  {:<44} {:>8} {:>9} {:>13} {:>17} {:>14} {:>20}",
        "configuration",
        "requests",
        "answered",
        "availability",
        "time to fail over",
        "requests lost",
        "as monthly downtime"
    );
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for route in 0..ROUTES.len() {
        let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.route == route).collect();
        for o in &mine {
            if let Some(err) = &o.error {
                *reasons
                    .entry(format!(
                        "{}: {}",
                        ROUTES[route],
                        err.chars().take(150).collect::<String>()
                    ))
                    .or_default() += 1;
            }
        }
        let sent = mine.len();
        let answered = mine.iter().filter(|o| o.answered).count();
        let availability = if sent == 0 {
            0.0
        } else {
            answered as f64 / sent as f64
        };
        let failover = mine
            .iter()
            .filter(|o| o.answered && o.sent_at >= outage_start)
            .filter(|o| o.provider.as_deref().is_some_and(|p| p != PROVIDERS[0]))
            .map(|o| o.done_at.saturating_sub(outage_start))
            .min()
            .map_or_else(|| "-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
        let label = format!(
            "{} provider{} ({})",
            route + 1,
            if route == 0 { "" } else { "s" },
            PROVIDERS[..=route].join(" → ")
        );
        let downtime_hours = (1.0 - availability) * 30.0 * 24.0;
        println!(
            "  {label:<44} {sent:>8} {answered:>9} {:>12.1}% {failover:>17} {:>14} {:>18.1} h",
            availability * 100.0,
            sent - answered,
            downtime_hours
        );
    }
    println!(
        "  (time to fail over: from the primary's outage to the first answer from another provider;\n   monthly downtime: this timeline's unavailability as a share of 30 days)"
    );
    if std::env::var_os("BULWARK_DEMO_WHY").is_some() {
        for (reason, n) in reasons {
            println!("  lost ×{n}: {reason}");
        }
    }
}

/// Every answered request must be `completed` in the journal with the same text.
async fn journal_check(config: &Config, outcomes: &[Outcome]) -> anyhow::Result<(usize, usize)> {
    let entries = crate::drill::reconcile::read_journal(
        &config.journal,
        std::time::SystemTime::UNIX_EPOCH,
        "demo-",
    )
    .await?;
    let missing = outcomes
        .iter()
        .filter(|o| o.answered)
        .filter(|o| match entries.get(&o.request_id) {
            Some(e) => e.status != "completed" || Some(&e.text) != o.text.as_ref(),
            None => true,
        })
        .count();
    Ok((entries.len(), missing))
}

fn demo_config(mocks: &[MockServer], journal: &std::path::Path) -> anyhow::Result<Config> {
    let yaml = format!(
        r#"
listen: 127.0.0.1:0
journal: {{path: "{j}", durability: sync}}
providers:
  - {{name: anthropic, kind: anthropic, api_key: demo-key-anthropic, base_url: "{a}"}}
  - {{name: openai, kind: openai, api_key: demo-key-openai, base_url: "{o}/v1"}}
  - {{name: gemini, kind: gemini, api_key: demo-key-gemini, base_url: "{g}"}}
routes:
  - model: one
    timeouts: {{first_token: 1s, total: 10s}}
    circuit_breaker: {{open_for: 3s}}
    targets:
      - {{provider: anthropic, model: claude-sonnet-4-5}}
  - model: two
    timeouts: {{first_token: 1s, total: 10s}}
    circuit_breaker: {{open_for: 3s}}
    targets:
      - {{provider: anthropic, model: claude-sonnet-4-5}}
      - {{provider: openai, model: gpt-4.1}}
  - model: three
    timeouts: {{first_token: 1s, total: 10s}}
    circuit_breaker: {{open_for: 3s}}
    targets:
      - {{provider: anthropic, model: claude-sonnet-4-5}}
      - {{provider: openai, model: gpt-4.1}}
      - {{provider: gemini, model: gemini-2.5-pro}}
alerts:
  evaluate_every: 250ms
  rules:
    success_rate: {{for: 2s, min_calls: 4}}
    latency: {{for: 2s}}
"#,
        a = mocks[0].url(),
        o = mocks[1].url(),
        g = mocks[2].url(),
        j = journal.display()
    );
    Ok(bulwark_server::config::parse(
        std::path::Path::new("<demo>"),
        &yaml,
        &|_| None,
    )?)
}

/// One OpenAI-format request to the gateway; returns (provider, answer text) when a
/// complete answer arrived.
async fn send(
    client: &reqwest::Client,
    gateway: std::net::SocketAddr,
    route: &str,
    stream: bool,
    request_id: &str,
) -> anyhow::Result<(String, String)> {
    let body = serde_json::json!({
        "model": route,
        "messages": [{"role": "user", "content": format!("demo question {request_id}")}],
        "stream": stream,
    });
    let response = client
        .post(format!("http://{gateway}/v1/chat/completions"))
        .header("x-request-id", request_id)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let provider = response
        .headers()
        .get("x-bulwark-provider")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_string();
    let text = response.text().await?;
    anyhow::ensure!(status.is_success(), "status {status}");
    // The same test of a complete answer as the drill's callers.
    let answer = if stream {
        crate::drill::traffic::stream_answer(&text)
    } else {
        crate::drill::traffic::json_answer(&text)
    }
    .map_err(anyhow::Error::msg)?;
    Ok((provider, answer))
}
