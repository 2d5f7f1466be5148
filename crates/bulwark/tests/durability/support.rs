//! The gateway as a child process (`bulwark serve`), so tests can `kill -9` it, and
//! small helpers to read answers and the journal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bulwark_journal::{ExportFilter, Journal, JournalConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_bulwark");

/// A running `bulwark serve`.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    /// The log lines written before "listening".
    pub startup_log: Vec<String>,
}

impl Gateway {
    /// Starts the gateway on `config` (which must say `listen: 127.0.0.1:0`) and waits
    /// for its "listening" log line.
    pub async fn start(config: &Path) -> Gateway {
        Gateway::start_with_env(config, &[]).await
    }

    /// [`Gateway::start`] with extra environment variables for the child.
    pub async fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Gateway {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .env("BULWARK_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut startup_log = Vec::new();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                startup_log.push(line.clone());
                if let Some(at) = line.find("listening on http://") {
                    let rest = &line[at + "listening on http://".len()..];
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect();
                    return addr.parse::<SocketAddr>().unwrap();
                }
            }
            panic!("the gateway exited before listening");
        })
        .await
        .expect("the gateway did not start within 30 s");
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Gateway {
            child,
            addr,
            startup_log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGKILL: no drain, no flush, no goodbye.
    pub async fn kill9(&mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }
}

/// Writes a config with route `chat` → the mock (OpenAI wire format) and `extra`
/// top-level YAML; returns its path.
pub fn write_config(dir: &Path, mock_url: &str, journal: &Path, extra: &str) -> PathBuf {
    let yaml = format!(
        "listen: 127.0.0.1:0\njournal: {{path: \"{j}\", durability: sync}}\n{extra}\nproviders:\n  - {{name: upstream, kind: openai, api_key: sk-test-secret-key, base_url: \"{mock_url}/v1\"}}\nroutes:\n  - model: chat\n    targets:\n      - {{provider: upstream, model: gpt-test}}\n",
        j = journal.display(),
    );
    let path = dir.join("bulwark.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

pub fn chat_body(stream: bool, prompt: &str) -> Value {
    let mut body = json!({
        "model": "chat",
        "messages": [{"role": "user", "content": prompt}],
    });
    if stream {
        body["stream"] = json!(true);
    }
    body
}

/// What a caller got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub status: u16,
    /// The whole answer's text, when the answer was complete (JSON 200, or a stream
    /// that reached `[DONE]` after a finish reason).
    pub complete_text: Option<String>,
}

/// Sends one request with request id `id`; `None` when no response status arrived
/// (connection refused or reset before headers: not accepted as far as the caller knows).
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    id: &str,
    stream: bool,
    headers: &[(&str, &str)],
) -> Option<Received> {
    let mut req = client
        .post(url)
        .header("x-request-id", id)
        .json(&chat_body(stream, &format!("question {id}")));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.ok()?;
    let status = resp.status().as_u16();
    let body = match resp.text().await {
        Ok(body) => body,
        Err(_) => {
            return Some(Received {
                id: id.to_string(),
                status,
                complete_text: None,
            });
        }
    };
    let complete_text = if status != 200 {
        None
    } else if stream {
        stream_text(&body)
    } else {
        serde_json::from_str::<Value>(&body).ok().and_then(|v| {
            v["choices"][0]["message"]["content"]
                .as_str()
                .map(str::to_string)
        })
    };
    Some(Received {
        id: id.to_string(),
        status,
        complete_text,
    })
}

/// The text of an OpenAI stream, when it finished cleanly (a finish reason, then `[DONE]`).
pub fn stream_text(body: &str) -> Option<String> {
    let mut text = String::new();
    let mut finished = false;
    let mut done = false;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).ok()?;
        if chunk.get("error").is_some() {
            return None;
        }
        if let Some(choice) = chunk["choices"].get(0) {
            if let Some(t) = choice["delta"]["content"].as_str() {
                text.push_str(t);
            }
            if choice["finish_reason"].is_string() {
                finished = true;
            }
        }
    }
    (finished && done).then_some(text)
}

/// Every request in the journal at `path`, in order.
pub async fn journal_lines(path: &Path) -> Vec<Value> {
    let journal = Journal::open_read_only(&JournalConfig::sqlite(path))
        .await
        .unwrap();
    let mut out = Vec::new();
    journal
        .export(&ExportFilter::default(), &mut out)
        .await
        .unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Every request in the journal at `path`, by the id the test sent (`x-request-id`;
/// the journal's own id is the gateway's), or the journal's id when it sent none.
pub async fn journal_export(path: &Path) -> std::collections::HashMap<String, Value> {
    journal_lines(path)
        .await
        .into_iter()
        .map(|v| {
            let id = v["caller_request_id"].as_str().or(v["id"].as_str());
            (id.unwrap().to_string(), v)
        })
        .collect()
}

/// The text of a journaled response (`ChatResponse` as stored).
pub fn journal_text(entry: &Value) -> String {
    entry["response"]["content"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<String>()
        })
        .unwrap_or_default()
}

/// A small deterministic generator for kill times (no clock, no global RNG).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_in(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        lo + (self.0 >> 33) % (hi - lo)
    }
}

/// An HTTP client for the tests (installs the TLS crypto provider reqwest needs).
pub fn client() -> reqwest::Client {
    bulwark_server::install_crypto_provider();
    reqwest::Client::new()
}
