//! The live part of a drill: start the gateway, run traffic and the watcher, play the
//! plan's actions at their times (chaos rules, kills, restarts, restores), stop, and
//! hand everything recorded to the analysis.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bulwark_core::config::{Config, RouteConfig};
use tokio::time::Instant;

use super::gateway::{self, Admin, Endpoint, Gateway, Launch, SharedEndpoint};
use super::metrics::Scrape;
use super::report::{Event, KillRecord};
use super::say;
use super::scenario::{ActionKind, AfterKill, Plan};
use super::traffic::{Outcome, Traffic, TrafficPlan, millis};
use super::watch::{Observed, WatchPlan, Watcher};

/// What the live run needs.
pub struct LiveSetup<'a> {
    pub plan: &'a Plan,
    pub config: &'a Config,
    pub config_path: &'a Path,
    pub route: &'a RouteConfig,
    pub exe: PathBuf,
    pub admin_token: String,
    pub run_id: String,
    /// Restored journals are written beside the report: `<report>.restored-<n>.db`.
    pub report_base: &'a Path,
}

/// One gateway's life in the drill.
#[derive(Debug, Clone)]
pub struct Generation {
    pub generation: u32,
    pub journal: PathBuf,
    pub baseline: Option<Scrape>,
    pub last: Option<Scrape>,
    /// `(last scrape started, killed)`, ms since the start, for a killed gateway.
    pub killed: Option<(u64, u64)>,
}

/// Everything the live run recorded.
pub struct Recorded {
    pub started_wall: SystemTime,
    pub finished_wall: SystemTime,
    pub outcomes: Vec<Outcome>,
    pub observed: Observed,
    pub generations: Vec<Generation>,
    pub events: Vec<Event>,
    pub kills: Vec<KillRecord>,
    pub injection_ms: Option<u64>,
    pub fault_end_ms: Option<u64>,
    pub end_ms: u64,
    pub notes: Vec<String>,
}

struct Run<'a> {
    setup: &'a LiveSetup<'a>,
    started: Instant,
    gateway: Gateway,
    launch: Launch,
    endpoint: SharedEndpoint,
    admin: Admin,
    generations: Vec<Generation>,
    events: Vec<Event>,
    kills: Vec<KillRecord>,
    injection_ms: Option<u64>,
    fault_end_ms: Option<u64>,
    notes: Vec<String>,
    /// Holds the copies of the configuration restored gateways start with.
    scratch: Vec<tempfile::TempDir>,
}

pub async fn execute(setup: &LiveSetup<'_>) -> anyhow::Result<Recorded> {
    let launch = Launch {
        exe: setup.exe.clone(),
        config: setup.config_path.to_path_buf(),
        journal: None,
        listen: "127.0.0.1:0".to_string(),
        admin_token: setup.admin_token.clone(),
    };
    let gateway = Gateway::start(&launch)
        .await
        .context("cannot start the gateway under drill")?;
    let endpoint: SharedEndpoint = Arc::new(RwLock::new(Endpoint {
        base: gateway.base_url(),
        generation: 0,
    }));
    let admin = Admin::new(Arc::clone(&endpoint), setup.admin_token.clone())?;
    let status = admin
        .status()
        .await
        .context("the gateway under drill does not answer /admin/status")?;
    anyhow::ensure!(
        status.routes.iter().any(|r| r.name == setup.route.model),
        "the gateway does not report route `{}`",
        setup.route.model
    );
    println!(
        "gateway pid {} on {} (journal {}, {})",
        gateway
            .pid
            .map_or_else(|| "?".to_string(), |p| p.to_string()),
        gateway.base_url(),
        setup.config.journal.path.display(),
        status
            .journal
            .as_ref()
            .map_or("no journal", |j| j.durability.as_str())
    );
    let baseline = admin.metrics().await.ok().map(|t| Scrape::parse(&t));
    let plan = setup.plan;
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let traffic = Traffic::start(
        TrafficPlan {
            route: setup.route.model.clone(),
            spec: plan.traffic.clone(),
            run_id: setup.run_id.clone(),
            started,
            until: plan.duration,
            timeout: setup.route.timeouts.total.0 + Duration::from_secs(5),
            drill_token: setup.admin_token.clone(),
        },
        Arc::clone(&endpoint),
    )?;
    let primary = setup
        .route
        .targets
        .first()
        .context("the route has no targets")?;
    let watcher = Watcher::start(
        WatchPlan {
            route: setup.route.model.clone(),
            primary: format!("{}/{}", primary.provider, primary.model),
            primary_provider: primary.provider.clone(),
            started,
            started_wall,
        },
        admin.clone(),
        Arc::clone(&traffic.outcomes),
    );
    let mut run = Run {
        setup,
        started,
        gateway,
        launch,
        endpoint,
        admin,
        generations: vec![Generation {
            generation: 0,
            journal: setup.config.journal.path.clone(),
            baseline,
            last: None,
            killed: None,
        }],
        events: Vec::new(),
        kills: Vec::new(),
        injection_ms: None,
        fault_end_ms: None,
        notes: Vec::new(),
        scratch: Vec::new(),
    };
    run.event(
        0,
        format!(
            "traffic starts: {} callers on route {}",
            plan.traffic.callers, setup.route.model
        ),
    );
    let result = run.play(&traffic).await;
    if let Err(err) = result {
        let log = run.gateway.log_tail();
        run.gateway.stop().await;
        return Err(err.context(format!(
            "the drill stopped; the gateway's last log lines:\n{log}"
        )));
    }
    tokio::time::sleep_until(started + plan.duration).await;
    let end_ms = millis(started.elapsed());
    run.event(
        end_ms,
        "traffic stops; waiting for requests in flight".to_string(),
    );
    let outcomes = traffic.finish().await;
    let done_ms = millis(started.elapsed());
    // Let the watcher see the last answers, then stop it.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let observed = watcher.finish().await;
    let last = run.admin.metrics().await.ok().map(|t| Scrape::parse(&t));
    if let Some(g) = run.generations.last_mut() {
        g.last = last;
    }
    if let Err(err) = run.admin.clear_chaos().await {
        run.notes
            .push(format!("could not clear chaos rules at the end: {err:#}"));
    }
    run.gateway.stop().await;
    run.event(
        done_ms,
        format!("{} requests ended; gateway stopped", outcomes.len()),
    );
    drop(run.scratch);
    Ok(Recorded {
        started_wall,
        finished_wall: SystemTime::now(),
        outcomes,
        observed,
        generations: run.generations,
        events: run.events,
        kills: run.kills,
        injection_ms: run.injection_ms,
        fault_end_ms: run.fault_end_ms,
        end_ms,
        notes: run.notes,
    })
}

impl Run<'_> {
    fn now_ms(&self) -> u64 {
        millis(self.started.elapsed())
    }

    fn event(&mut self, at_ms: u64, what: String) {
        say(at_ms, &what);
        self.events.push(Event { at_ms, what });
    }

    fn fault_until(&mut self, end_ms: u64) {
        self.fault_end_ms = Some(self.fault_end_ms.map_or(end_ms, |e| e.max(end_ms)));
    }

    async fn play(&mut self, traffic: &Traffic) -> anyhow::Result<()> {
        for action in &self.setup.plan.actions {
            tokio::time::sleep_until(self.started + action.at).await;
            match &action.kind {
                ActionKind::Chaos {
                    targets,
                    fault,
                    duration,
                } => {
                    for target in targets {
                        let rule = self
                            .admin
                            .inject(target, fault, *duration)
                            .await
                            .with_context(|| format!("cannot inject the fault on {target}"))?;
                        let at = self.now_ms();
                        self.injection_ms.get_or_insert(at);
                        self.fault_until(at + millis(*duration));
                        self.event(
                            at,
                            format!(
                                "inject: {target} {} for {} (chaos rule #{})",
                                serde_json::to_string(fault).unwrap_or_default(),
                                humantime::format_duration(*duration),
                                rule.id
                            ),
                        );
                    }
                }
                ActionKind::ClearChaos => {
                    self.admin.clear_chaos().await?;
                    let at = self.now_ms();
                    self.fault_until(at);
                    self.event(at, "chaos rules cleared".to_string());
                }
                ActionKind::Kill {
                    then,
                    after,
                    wait_for_backup,
                } => self.kill(traffic, *then, *after, *wait_for_backup).await?,
            }
        }
        Ok(())
    }

    /// SIGKILL the gateway, then restart it on its journal or restore a new one.
    async fn kill(
        &mut self,
        traffic: &Traffic,
        then: AfterKill,
        after: Duration,
        wait_for_backup: bool,
    ) -> anyhow::Result<()> {
        let waited_for_backup_ms = if wait_for_backup {
            Some(self.wait_for_backup(traffic).await?)
        } else {
            None
        };
        let scrape_ms = self.now_ms();
        let last = self.admin.metrics().await.ok().map(|t| Scrape::parse(&t));
        let generation = u32::try_from(self.generations.len()).unwrap_or(u32::MAX);
        // Requests sent from now on belong to the next gateway: a restart on the same
        // address serves them, and none can reach the killed one.
        gateway::replace(&self.endpoint, self.gateway.base_url(), generation);
        let kill_ms = self.now_ms();
        self.gateway.kill().await?;
        self.injection_ms.get_or_insert(kill_ms);
        if let Some(g) = self.generations.last_mut() {
            g.last = last;
            g.killed = Some((scrape_ms, kill_ms));
        }
        self.event(
            kill_ms,
            format!(
                "gateway killed with SIGKILL (pid {})",
                self.gateway
                    .pid
                    .map_or_else(|| "?".to_string(), |p| p.to_string())
            ),
        );
        tokio::time::sleep(after).await;
        let previous_journal = self.generations.last().map_or_else(
            || self.setup.config.journal.path.clone(),
            |g| g.journal.clone(),
        );
        let mut record = KillRecord {
            at_ms: kill_ms,
            then,
            waited_for_backup_ms,
            restore_ms: None,
            restore_output: None,
            restored_journal: None,
            back_ms: 0,
            first_answer_ms: None,
        };
        let (gateway, journal) = match then {
            AfterKill::Restart => {
                // Same address first, as a supervisor's restart would; any free port
                // if the old one cannot be bound yet.
                let same = Launch {
                    listen: self.gateway.addr.to_string(),
                    ..self.launch.clone()
                };
                let gateway = match Gateway::start(&same).await {
                    Ok(g) => g,
                    Err(_) => Gateway::start(&self.launch)
                        .await
                        .context("cannot restart the gateway after the kill")?,
                };
                (gateway, previous_journal)
            }
            AfterKill::Restore => {
                let (launch, journal) = self.restore(generation, &mut record).await?;
                let gateway = Gateway::start(&launch)
                    .await
                    .context("cannot start a gateway on the restored journal")?;
                self.launch = launch;
                (gateway, journal)
            }
        };
        self.gateway = gateway;
        // The new gateway's counters start here, before any caller reaches it.
        let baseline = self
            .admin
            .metrics_of(&self.gateway.base_url())
            .await
            .ok()
            .map(|t| Scrape::parse(&t));
        gateway::replace(&self.endpoint, self.gateway.base_url(), generation);
        let back_ms = self.now_ms();
        traffic.resume();
        record.back_ms = back_ms;
        self.fault_until(back_ms);
        self.generations.push(Generation {
            generation,
            journal: journal.clone(),
            baseline,
            last: None,
            killed: None,
        });
        self.event(
            back_ms,
            format!(
                "new gateway listening on {} (journal {}), {} after the kill",
                self.gateway.base_url(),
                journal.display(),
                super::report::secs(back_ms - kill_ms)
            ),
        );
        self.kills.push(record);
        Ok(())
    }

    /// Stops traffic, waits for requests in flight, then until the gateway reports
    /// every record shipped (`rpo_exposure_seconds: 0` measured after the drain).
    async fn wait_for_backup(&mut self, traffic: &Traffic) -> anyhow::Result<u64> {
        let from = self.now_ms();
        traffic.pause();
        self.event(
            from,
            "traffic paused: waiting for the backup to ship every record".to_string(),
        );
        let limit = self
            .setup
            .config
            .backup
            .as_ref()
            .map_or(Duration::ZERO, |b| b.interval.0 * 3)
            + Duration::from_secs(10);
        anyhow::ensure!(
            traffic.drained(limit).await,
            "requests still in flight after {}",
            humantime::format_duration(limit)
        );
        // The gateway refreshes its RPO exposure once a second: a reading taken more
        // than a second after the drain covers every record written before it.
        let drained = Instant::now();
        let deadline = drained + limit;
        loop {
            if drained.elapsed() > Duration::from_millis(1200) {
                let shipped = self
                    .admin
                    .status()
                    .await
                    .ok()
                    .and_then(|s| s.journal)
                    .and_then(|j| j.rpo_exposure_seconds)
                    .is_some_and(|e| e == 0.0);
                if shipped {
                    break;
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the backup did not ship every record within {}",
                humantime::format_duration(limit)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let at = self.now_ms();
        self.event(
            at,
            "backup has shipped every record (RPO exposure 0)".to_string(),
        );
        Ok(at - from)
    }

    /// `bulwark restore` into a new journal beside the report; the launch of a fresh
    /// gateway on it (with a copy of the configuration without `backup:`, so the
    /// drill never ships into the real backup's history).
    async fn restore(
        &mut self,
        generation: u32,
        record: &mut KillRecord,
    ) -> anyhow::Result<(Launch, PathBuf)> {
        let backup = self
            .setup
            .config
            .backup
            .as_ref()
            .context("no `backup:` section to restore from")?;
        let target = restored_path(self.setup.report_base, generation);
        let begun = Instant::now();
        let output =
            gateway::restore(&self.setup.exe, &backup.to, &target, self.setup.config_path).await?;
        let took = millis(begun.elapsed());
        record.restore_ms = Some(took);
        record.restore_output = Some(output.trim().to_string());
        record.restored_journal = Some(target.display().to_string());
        let at = self.now_ms();
        self.event(
            at,
            format!(
                "journal restored from {} into {} in {}",
                backup.to,
                target.display(),
                super::report::secs(took)
            ),
        );
        let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
        let config = without_backup(self.setup.config_path, scratch.path())?;
        self.scratch.push(scratch);
        Ok((
            Launch {
                exe: self.setup.exe.clone(),
                config,
                journal: Some(target.clone()),
                listen: "127.0.0.1:0".to_string(),
                admin_token: self.setup.admin_token.clone(),
            },
            target,
        ))
    }
}

/// `<report>.restored-<generation>.db`, beside the report.
pub fn restored_path(report_base: &Path, generation: u32) -> PathBuf {
    let mut name = report_base
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".restored-{generation}.db"));
    report_base.with_file_name(name)
}

/// Writes the configuration at `path` without its `backup:` section into `dir`
/// (as JSON, which YAML reads); `${VAR}` references stay unexpanded.
fn without_backup(path: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the file", path.display()))?;
    let mut tree: serde_json::Value = serde_saphyr::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not valid YAML: {e}", path.display()))?;
    if let Some(map) = tree.as_object_mut() {
        map.remove("backup");
    }
    let copy = dir.join("bulwark.yaml");
    std::fs::write(&copy, serde_json::to_string_pretty(&tree)?)
        .with_context(|| format!("cannot write {}", copy.display()))?;
    Ok(copy)
}
