//! `bulwark demo`: three mock providers (Anthropic-, OpenAI- and Gemini-shaped), the
//! gateway in front of them, and a scripted outage, all in this process on loopback.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use bulwark_core::config::Config;
use bulwark_mock::{FaultRule, MockServer};

struct Phase {
    title: &'static str,
    /// Pause before the phase's traffic (lets open breakers reach half-open).
    wait: Duration,
    /// Mock index → fault JSON, applied at the start of the phase (all cleared first).
    faults: &'static [(usize, &'static str)],
}

const PHASES: &[Phase] = &[
    Phase {
        title: "normal: the primary (anthropic) serves",
        wait: Duration::ZERO,
        faults: &[],
    },
    Phase {
        title: "primary outage: anthropic answers 503",
        wait: Duration::ZERO,
        faults: &[(
            0,
            r#"{"kind":"status","status":503,"message":"demo outage"}"#,
        )],
    },
    Phase {
        title: "primary down, secondary resets connections",
        wait: Duration::ZERO,
        faults: &[
            (
                0,
                r#"{"kind":"status","status":529,"message":"demo overload"}"#,
            ),
            (1, r#"{"kind":"reset"}"#),
        ],
    },
    Phase {
        title: "recovery: faults cleared, breakers half-open after 3 s",
        wait: Duration::from_secs(4),
        faults: &[],
    },
];

pub async fn run(requests_per_phase: u32) -> anyhow::Result<ExitCode> {
    let names = ["anthropic", "openai", "gemini"];
    let mut mocks = Vec::new();
    for name in names {
        mocks.push(
            MockServer::start(&format!("mock-{name}"))
                .await
                .context("cannot start a mock provider")?,
        );
    }
    let data = tempfile::tempdir().context("cannot create a directory for the demo journal")?;
    let config = demo_config(&mocks, &data.path().join("journal.db"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_config = config.clone();
    let server = tokio::spawn(async move {
        bulwark_server::run(listener, &server_config, async {
            let _ = stop_rx.await;
        })
        .await
    });

    println!(
        "Bulwark demo: gateway on http://{gateway}, route `chat` = anthropic → openai → gemini (all mocks on loopback)\n"
    );
    let client = reqwest::Client::new();
    let mut answered = 0u32;
    let mut failed = 0u32;
    let mut rows = Vec::new();
    for (n, phase) in PHASES.iter().enumerate() {
        for mock in &mocks {
            mock.clear_faults();
        }
        for (index, fault) in phase.faults {
            let rule: FaultRule = serde_json::from_str(&format!(r#"{{"fault":{fault}}}"#))
                .context("demo fault script")?;
            mocks[*index].push_fault(rule);
        }
        println!("phase {}: {}", n + 1, phase.title);
        tokio::time::sleep(phase.wait).await;
        let mut served_by = BTreeMap::<String, u32>::new();
        for i in 0..requests_per_phase {
            let stream = i % 2 == 1;
            let started = Instant::now();
            let outcome = send(&client, gateway, stream, i).await;
            let ms = started.elapsed().as_millis();
            match outcome {
                Ok((provider, attempts, text)) => {
                    answered += 1;
                    *served_by.entry(provider.clone()).or_default() += 1;
                    println!(
                        "  {} request {:>2}: 200 from {provider:<9} after {attempts} attempt(s) in {ms:>4} ms: {}",
                        if stream { "stream" } else { "json  " },
                        i + 1,
                        shorten(&text, 48)
                    );
                }
                Err(err) => {
                    failed += 1;
                    println!("  request {:>2}: FAILED in {ms} ms: {err:#}", i + 1);
                }
            }
        }
        rows.push((phase.title, served_by));
        println!();
    }

    println!("summary");
    for (title, served_by) in &rows {
        let who: Vec<String> = served_by.iter().map(|(p, n)| format!("{p} ×{n}")).collect();
        println!("  {title:<48} served by {}", who.join(", "));
    }
    let total = answered + failed;
    println!("\n{answered} of {total} requests answered; {failed} failed.");
    let _ = stop_tx.send(());
    server.await??;
    for mock in mocks {
        mock.shutdown().await;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
  - model: chat
    circuit_breaker: {{open_for: 3s}}
    targets:
      - {{provider: anthropic, model: claude-sonnet-4-5}}
      - {{provider: openai, model: gpt-4.1}}
      - {{provider: gemini, model: gemini-2.5-pro}}
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

/// One OpenAI-format request to the gateway; returns (provider, attempts, answer text).
async fn send(
    client: &reqwest::Client,
    gateway: std::net::SocketAddr,
    stream: bool,
    i: u32,
) -> anyhow::Result<(String, String, String)> {
    let body = serde_json::json!({
        "model": "chat",
        "messages": [{"role": "user", "content": format!("demo question {}", i + 1)}],
        "stream": stream,
    });
    let response = client
        .post(format!("http://{gateway}/v1/chat/completions"))
        .json(&body)
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string()
    };
    let provider = header("x-bulwark-provider");
    let attempts = header("x-bulwark-attempts");
    let text = response.text().await?;
    anyhow::ensure!(status.is_success(), "status {status}: {text}");
    let answer = if stream {
        let mut answer = String::new();
        let mut done = false;
        for line in text.lines() {
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let chunk: serde_json::Value = serde_json::from_str(data)?;
            if let Some(delta) = chunk["choices"][0]["delta"]["content"].as_str() {
                answer.push_str(delta);
            }
        }
        anyhow::ensure!(done, "the stream ended without [DONE]");
        answer
    } else {
        let json: serde_json::Value = serde_json::from_str(&text)?;
        json["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    Ok((provider, attempts, answer))
}

fn shorten(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    }
}
