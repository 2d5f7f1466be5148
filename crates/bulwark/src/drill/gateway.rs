//! The gateway under drill, as a child process of the drill (`bulwark serve`), so it
//! can be killed with SIGKILL like a crashed machine; and the admin client that
//! injects faults (`/admin/chaos`), reads `/admin/status` and scrapes `/metrics`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use bulwark_observe::StatusReport;
use bulwark_router::chaos::ChaosFault;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a gateway may take to say it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a gateway may take to drain and stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Log lines kept to explain a gateway that died.
const LOG_TAIL: usize = 30;

/// How to start one gateway.
#[derive(Debug, Clone)]
pub struct Launch {
    pub exe: PathBuf,
    pub config: PathBuf,
    /// `--journal`: a restored journal instead of the config's.
    pub journal: Option<PathBuf>,
    pub listen: String,
    pub admin_token: String,
}

/// A running `bulwark serve`.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Gateway {
    /// Starts the gateway and waits for its "listening on http://ADDR" line.
    pub async fn start(launch: &Launch) -> anyhow::Result<Gateway> {
        let mut command = Command::new(&launch.exe);
        command
            .arg("serve")
            .arg("--config")
            .arg(&launch.config)
            .arg("--listen")
            .arg(&launch.listen);
        if let Some(journal) = &launch.journal {
            command.arg("--journal").arg(journal);
        }
        let mut child = command
            .env("BULWARK_ADMIN_TOKEN", &launch.admin_token)
            .env("BULWARK_LOG", "info")
            .env("BULWARK_LOG_FORMAT", "text")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", launch.exe.display()))?;
        let pid = child.id();
        let stderr = child
            .stderr
            .take()
            .context("the gateway's stderr is not readable")?;
        let log: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let mut lines = BufReader::new(stderr).lines();
        let found = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let addr = listening_addr(&line);
                remember(&log, line);
                if addr.is_some() {
                    return addr;
                }
            }
            None
        })
        .await;
        let addr = match found {
            Ok(Some(addr)) => addr,
            Ok(None) => {
                let status = child.wait().await.ok();
                anyhow::bail!(
                    "the gateway exited before listening ({}); its last log lines:\n{}",
                    status.map_or_else(|| "status unknown".to_string(), |s| s.to_string()),
                    tail(&log)
                );
            }
            Err(_) => {
                let _ = child.start_kill();
                anyhow::bail!(
                    "the gateway did not listen within {}s; its last log lines:\n{}",
                    START_TIMEOUT.as_secs(),
                    tail(&log)
                );
            }
        };
        // Keep draining its log so it never blocks on a full pipe.
        let keep = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                remember(&keep, line);
            }
        });
        Ok(Gateway {
            child,
            addr,
            pid,
            log,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL: no drain, no flush, no final backup.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.start_kill().context("cannot kill the gateway")?;
        let _ = self.child.wait().await;
        Ok(())
    }

    /// SIGTERM, so the gateway drains, ships its last records and closes the journal;
    /// SIGKILL if it has not stopped in time.
    pub async fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if terminate(self.pid)
            && tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
                .await
                .is_ok()
        {
            return;
        }
        let _ = self.kill().await;
    }

    /// The last lines the gateway logged.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

#[cfg(unix)]
fn terminate(pid: Option<u32>) -> bool {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return false;
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .is_ok()
}

#[cfg(not(unix))]
fn terminate(_pid: Option<u32>) -> bool {
    false
}

fn remember(log: &Mutex<VecDeque<String>>, line: String) {
    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
    if log.len() == LOG_TAIL {
        log.pop_front();
    }
    log.push_back(line);
}

fn tail(log: &Mutex<VecDeque<String>>) -> String {
    let log = log.lock().unwrap_or_else(|e| e.into_inner());
    log.iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `… listening on http://127.0.0.1:41234` → the address.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    const MARK: &str = "listening on http://";
    let at = line.find(MARK)?;
    let rest = &line[at + MARK.len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    addr.parse().ok()
}

/// `bulwark restore --from URL --to PATH [--config FILE]`; returns what it printed.
pub async fn restore(exe: &Path, from: &str, to: &Path, config: &Path) -> anyhow::Result<String> {
    let output = Command::new(exe)
        .arg("restore")
        .arg("--from")
        .arg(from)
        .arg("--to")
        .arg(to)
        .arg("--config")
        .arg(config)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {} restore", exe.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        anyhow::bail!(
            "restore from {from} failed ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// Where the drill's callers and admin calls go now: changes when a gateway is
/// replaced. `generation` counts gateways (0 is the first).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub base: String,
    pub generation: u32,
}

pub type SharedEndpoint = Arc<RwLock<Endpoint>>;

pub fn current(endpoint: &SharedEndpoint) -> Endpoint {
    endpoint.read().unwrap_or_else(|e| e.into_inner()).clone()
}

pub fn replace(endpoint: &SharedEndpoint, base: String, generation: u32) {
    let mut e = endpoint.write().unwrap_or_else(|e| e.into_inner());
    e.base = base;
    e.generation = generation;
}

/// The rule `POST /admin/chaos` created.
#[derive(Debug, Clone, Deserialize)]
pub struct ChaosRule {
    pub id: u64,
}

/// Admin calls to the current gateway.
#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    endpoint: SharedEndpoint,
    token: String,
}

impl Admin {
    pub fn new(endpoint: SharedEndpoint, token: String) -> anyhow::Result<Admin> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(1))
            .build()?;
        Ok(Admin {
            http,
            endpoint,
            token,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", current(&self.endpoint).base)
    }

    /// Injects `fault` on `target` (`provider` or `provider/model`) for `duration`.
    pub async fn inject(
        &self,
        target: &str,
        fault: &ChaosFault,
        duration: Duration,
    ) -> anyhow::Result<ChaosRule> {
        let body = serde_json::json!({
            "target": target,
            "fault": fault,
            "duration": humantime::format_duration(duration).to_string(),
        });
        let response = self
            .http
            .post(self.url("/admin/chaos"))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .context("POST /admin/chaos")?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status != reqwest::StatusCode::CREATED {
            anyhow::bail!("POST /admin/chaos for {target} answered {status}: {text}");
        }
        serde_json::from_str(&text).context("the answer of POST /admin/chaos")
    }

    /// Removes every chaos rule.
    pub async fn clear_chaos(&self) -> anyhow::Result<()> {
        let response = self
            .http
            .delete(self.url("/admin/chaos"))
            .bearer_auth(&self.token)
            .send()
            .await
            .context("DELETE /admin/chaos")?;
        anyhow::ensure!(
            response.status().is_success(),
            "DELETE /admin/chaos answered {}",
            response.status()
        );
        Ok(())
    }

    pub async fn status(&self) -> anyhow::Result<StatusReport> {
        let response = self
            .http
            .get(self.url("/admin/status"))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .context("GET /admin/status")?;
        anyhow::ensure!(
            response.status().is_success(),
            "GET /admin/status answered {}",
            response.status()
        );
        response
            .json::<StatusReport>()
            .await
            .context("the /admin/status document")
    }

    /// The Prometheus text of `GET /metrics` of the current gateway.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        self.metrics_of(&current(&self.endpoint).base).await
    }

    /// The Prometheus text of `GET /metrics` of the gateway at `base`.
    pub async fn metrics_of(&self, base: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .context("GET /metrics")?;
        anyhow::ensure!(
            response.status().is_success(),
            "GET /metrics answered {}",
            response.status()
        );
        Ok(response.text().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_address() {
        let line = "2026-01-01T00:00:00Z  INFO bulwark_server: bulwark listening on http://127.0.0.1:41234 addr=127.0.0.1:41234";
        assert_eq!(
            listening_addr(line),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        assert_eq!(listening_addr("starting"), None);
    }
}
