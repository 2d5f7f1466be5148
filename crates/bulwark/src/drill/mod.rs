//! `bulwark drill`: a disaster-recovery drill. It breaks something on purpose on a
//! gateway it starts itself, measures what callers experienced, checks the numbers
//! against the journal and the metrics, and judges the result against the
//! configuration's `objectives`.
//!
//! # Layout
//!
//! ```text
//!  scenario.rs  built-in name or YAML file ─▶ Scenario (steps) ─▶ resolve ─▶ Plan (timed actions)
//!  live.rs      bulwark serve (child, gateway.rs) ◀── traffic.rs: N callers, /v1/chat/completions
//!                    ▲  ▲                         ◀── watch.rs: /admin/status every 100 ms
//!                    │  └── POST /admin/chaos, SIGKILL + restart, restore + fresh gateway (the plan)
//!                    └───── /metrics at the start, before each kill, at the end (metrics.rs)
//!  analyze.rs   outcomes + status samples ─▶ success rate, latency, timeline, RTO, chart series
//!  reconcile.rs outcomes ⇄ journal(s) (status, text) ⇄ bulwark_requests_total; RPO
//!  report.rs    ─▶ PATH.json, PATH.md (objectives: PASS/FAIL), chart.rs ─▶ PATH.svg
//! ```
//!
//! The gateway runs as a child process (`current_exe() serve --config FILE --listen
//! 127.0.0.1:0`) so a kill is a real SIGKILL. Faults go through the gateway's chaos
//! API, which fakes failures inside the gateway without calling the provider: against
//! a real deployment's configuration the drill rehearses failover onto the real
//! secondary providers. Each drill uses a fresh admin token, passed to the gateway
//! in `BULWARK_ADMIN_TOKEN`; the configuration's own token is never read or copied.
//!
//! The drill's gateway writes to the configuration's journal (as the real gateway
//! would); the user's journal is never deleted or rewritten. A site loss restores
//! into a new file beside the report and starts the fresh gateway with a copy of the
//! configuration without `backup:` (in a private temporary directory, deleted at the
//! end), so the drill never ships into the real backup's history.

mod analyze;
mod chart;
mod gateway;
mod live;
mod metrics;
pub(crate) mod reconcile;
mod report;
pub mod scenario;
pub(crate) mod traffic;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bulwark_core::config::journal::Durability;
use bulwark_core::config::{Config, RouteConfig};
use rand::Rng;

use report::{AlertReport, ConfigInfo, Counters, Counts, DrillCounts, Report, RouteInfo};
use scenario::{ActionKind, AfterKill, Source};

const DEFAULT_DURATION: Duration = Duration::from_secs(60);

/// `bulwark drill` arguments.
#[derive(Debug, clap::Args)]
pub struct DrillArgs {
    /// The gateway's configuration (YAML); its `objectives:` decide pass or fail.
    #[arg(long, short, env = "BULWARK_CONFIG")]
    pub config: PathBuf,
    /// primary-down, brownout, 429-storm, flapping, all-down, kill-restart, site-loss,
    /// site-loss-abrupt, or the path of a YAML scenario file.
    #[arg(long)]
    pub scenario: String,
    /// Write PATH.md, PATH.json and PATH.svg (a directory: drill-<scenario>-<time>
    /// in it) [default: ./drill-<scenario>-<time>].
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// How long traffic runs; the scenario's steps scale with it [default: the
    /// scenario's, else 60s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// The route to drill [default: the scenario's, else the config's first route].
    #[arg(long)]
    pub route: Option<String>,
}

/// One line of progress: drill time, then the event.
pub fn say(at_ms: u64, text: &str) {
    println!("{:>7.2}s  {text}", at_ms as f64 / 1000.0);
}

pub async fn run(args: DrillArgs) -> anyhow::Result<ExitCode> {
    let config = bulwark_server::config::load(&args.config)?;
    let source = scenario::locate(&args.scenario)?;
    let file_route = match &source {
        Source::File(s, _) => s.route.clone(),
        Source::BuiltIn(_) => None,
    };
    let route = pick_route(
        &config,
        args.route.as_deref().or(file_route.as_deref()),
        &args.config,
    )?;
    let (scenario, origin) = match source {
        Source::BuiltIn(name) => (
            scenario::built_in(name, route).context("unknown built-in scenario")?,
            "built-in".to_string(),
        ),
        Source::File(s, path) => (s, path),
    };
    let duration = args
        .duration
        .or(scenario.duration.map(|d| d.0))
        .unwrap_or(DEFAULT_DURATION);
    let plan = scenario::resolve(&scenario, origin.clone(), &config, route, duration)
        .map_err(|e| anyhow::anyhow!("scenario {} ({origin}): {e}", scenario.name))?;
    let report_base = report_base(args.report.as_deref(), &plan.name);
    if let Some(dir) = report_base.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the report directory {}", dir.display()))?;
    }
    let mut rng = rand::rng();
    let admin_token: String = (0..40)
        .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
        .collect();
    let run_id = format!("{:08x}", rng.random::<u32>());

    print_header(&plan, &config, &args.config, route);
    let exe = std::env::current_exe().context("cannot find the bulwark executable")?;
    let setup = live::LiveSetup {
        plan: &plan,
        config: &config,
        config_path: &args.config,
        route,
        exe,
        admin_token,
        run_id: run_id.clone(),
        report_base: &report_base,
    };
    let recorded = live::execute(&setup).await?;
    let report = assemble(&plan, &config, &args.config, route, &run_id, recorded).await;

    let json_path = with_suffix(&report_base, "json");
    let md_path = with_suffix(&report_base, "md");
    let svg_path = with_suffix(&report_base, "svg");
    let svg_name = svg_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    std::fs::write(&md_path, report::markdown(&report, &svg_name))
        .with_context(|| format!("cannot write {}", md_path.display()))?;
    std::fs::write(&svg_path, chart::svg(&report))
        .with_context(|| format!("cannot write {}", svg_path.display()))?;

    println!();
    for line in report::summary(&report) {
        println!("{line}");
    }
    println!(
        "report: {} ({} and {})",
        md_path.display(),
        json_path.display(),
        svg_path.display()
    );
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn pick_route<'a>(
    config: &'a Config,
    name: Option<&str>,
    path: &Path,
) -> anyhow::Result<&'a RouteConfig> {
    let names = || {
        config
            .routes
            .iter()
            .map(|r| r.model.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(name) => config
            .routes
            .iter()
            .find(|r| r.model == name)
            .with_context(|| {
                format!(
                    "{}: no route named {name:?} (routes: {})",
                    path.display(),
                    names()
                )
            }),
        None => config.routes.first().with_context(|| {
            format!(
                "{}: no routes; a drill sends its traffic to a route",
                path.display()
            )
        }),
    }
}

/// `--report` without a `.md`/`.json`/`.svg` extension; `drill-<name>-<time>` in
/// the current directory, or in `--report` when that is a directory.
fn report_base(given: Option<&Path>, scenario: &str) -> PathBuf {
    match given {
        Some(dir) if dir.is_dir() => dir.join(report_base(None, scenario)),
        Some(path) => match path.extension().and_then(|e| e.to_str()) {
            Some("md" | "json" | "svg") => path.with_extension(""),
            _ => path.to_path_buf(),
        },
        None => {
            let stamp: String = humantime::format_rfc3339_seconds(SystemTime::now())
                .to_string()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect();
            let safe: String = scenario
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            PathBuf::from(format!("drill-{safe}-{stamp}"))
        }
    }
}

fn with_suffix(base: &Path, ext: &str) -> PathBuf {
    let mut name = base
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".{ext}"));
    base.with_file_name(name)
}

fn print_header(plan: &scenario::Plan, config: &Config, path: &Path, route: &RouteConfig) {
    let targets: Vec<String> = route
        .targets
        .iter()
        .map(|t| format!("{}/{}", t.provider, t.model))
        .collect();
    println!(
        "bulwark drill: scenario {} ({}){}",
        plan.name,
        plan.source,
        if plan.description.is_empty() {
            String::new()
        } else {
            format!(": {}", plan.description)
        }
    );
    println!(
        "config {}, route {}: {} (primary {})",
        path.display(),
        route.model,
        targets.join(" → "),
        targets.first().map_or("-", String::as_str)
    );
    println!(
        "{} of traffic: {} callers, one request per {} each; journal durability {}",
        humantime::format_duration(plan.duration),
        plan.traffic.callers,
        humantime::format_duration(plan.traffic.interval.0),
        config.journal.durability.as_str()
    );
    for action in &plan.actions {
        let what = match &action.kind {
            ActionKind::Chaos {
                targets,
                fault,
                duration,
            } => format!(
                "chaos {} {} for {}",
                targets.join(", "),
                serde_json::to_string(fault).unwrap_or_default(),
                humantime::format_duration(*duration)
            ),
            ActionKind::Kill {
                then,
                after,
                wait_for_backup,
            } => format!(
                "SIGKILL the gateway{}, then {} after {}",
                if *wait_for_backup {
                    " (once the backup has shipped everything)"
                } else {
                    ""
                },
                match then {
                    AfterKill::Restart => "restart it on the same journal",
                    AfterKill::Restore => "start a fresh gateway on a journal restored from backup",
                },
                humantime::format_duration(*after)
            ),
            ActionKind::ClearChaos => "clear every chaos rule".to_string(),
        };
        println!("  plan {:>7.2}s  {what}", action.at.as_secs_f64());
    }
}

/// Turns what was recorded into the report: measures, journal and metrics checks,
/// objectives.
async fn assemble(
    plan: &scenario::Plan,
    config: &Config,
    config_path: &Path,
    route: &RouteConfig,
    run_id: &str,
    rec: live::Recorded,
) -> Report {
    let primary = route
        .targets
        .first()
        .map(|t| (t.provider.clone(), format!("{}/{}", t.provider, t.model)))
        .unwrap_or_default();
    let outcomes = &rec.outcomes;
    let mut notes = rec.notes;
    let timeline = analyze::timeline(
        outcomes,
        &rec.observed,
        &primary.0,
        rec.injection_ms,
        rec.fault_end_ms,
    );
    let callers = analyze::caller_stats(outcomes.iter());
    let incident = match (rec.injection_ms, rec.fault_end_ms) {
        (Some(from), Some(to)) => analyze::caller_stats(
            outcomes
                .iter()
                .filter(|o| o.sent_ms >= from && o.sent_ms <= to),
        ),
        _ => analyze::CallerStats::default(),
    };
    let rto = analyze::rto(outcomes, rec.injection_ms);
    let mut kills = rec.kills;
    for (i, k) in kills.iter_mut().enumerate() {
        let generation = u32::try_from(i + 1).unwrap_or(u32::MAX);
        k.first_answer_ms = outcomes
            .iter()
            .filter(|o| o.complete && o.generation == generation)
            .map(|o| o.done_ms)
            .min();
    }
    let kills_ms: Vec<u64> = kills.iter().map(|k| k.at_ms).collect();

    // Journals: each gateway's own, then the one that survived.
    let prefix = format!("drill-{run_id}-");
    let since = rec
        .started_wall
        .checked_sub(Duration::from_secs(60))
        .unwrap_or(rec.started_wall);
    let mut journals = Vec::new();
    let mut rpo = None;
    if config.journal.durability == Durability::Off {
        notes.push(
            "journal.durability is off: nothing to check answers against, RPO not measurable"
                .into(),
        );
    } else {
        let mut paths: Vec<(PathBuf, Vec<u32>)> = Vec::new();
        for g in &rec.generations {
            match paths.iter_mut().find(|(p, _)| *p == g.journal) {
                Some((_, gens)) => gens.push(g.generation),
                None => paths.push((g.journal.clone(), vec![g.generation])),
            }
        }
        let mut surviving = None;
        for (path, gens) in &paths {
            let cfg = bulwark_core::config::journal::JournalConfig {
                path: path.clone(),
                ..config.journal.clone()
            };
            match reconcile::read_journal(&cfg, since, &prefix).await {
                Ok(entries) => {
                    journals.push(reconcile::check_journal(
                        path,
                        gens,
                        outcomes,
                        &entries,
                        &kills_ms,
                        config.journal.bodies,
                    ));
                    surviving = Some((path.clone(), entries));
                }
                Err(err) => {
                    notes.push(format!(
                        "could not read the journal {}: {err:#}",
                        path.display()
                    ));
                    surviving = None;
                }
            }
        }
        if let Some((path, entries)) = surviving {
            rpo = Some(reconcile::rpo(
                &path,
                outcomes,
                &entries,
                &kills_ms,
                rec.end_ms,
                config.journal.bodies,
            ));
        }
    }

    // Metrics, per gateway.
    let mut metric_checks = Vec::new();
    let mut counters = Counters::default();
    for g in &rec.generations {
        let (Some(before), Some(after)) = (&g.baseline, &g.last) else {
            notes.push(format!(
                "gateway {}: /metrics could not be scraped {}; its counters are not compared",
                g.generation,
                if g.baseline.is_none() {
                    "at its start"
                } else {
                    "at its end"
                }
            ));
            continue;
        };
        let route_filter = [("route", route.model.as_str())];
        let requests = metrics::delta(
            &before.grouped("bulwark_requests_total", &route_filter, &["outcome"]),
            &after.grouped("bulwark_requests_total", &route_filter, &["outcome"]),
        );
        metric_checks.push(reconcile::check_metrics(
            g.generation,
            &requests,
            outcomes,
            g.killed,
        ));
        metrics::add(&mut counters.requests, &requests);
        for (into, name, filter, by) in [
            (
                &mut counters.upstream_attempts,
                "bulwark_upstream_attempts_total",
                &[][..],
                &["provider", "outcome"][..],
            ),
            (
                &mut counters.failovers,
                "bulwark_failovers_total",
                &route_filter[..],
                &["from", "to"][..],
            ),
            (
                &mut counters.alerts,
                "bulwark_alerts_total",
                &[][..],
                &["rule", "severity"][..],
            ),
        ] {
            let d = metrics::delta(
                &before.grouped(name, filter, by),
                &after.grouped(name, filter, by),
            );
            metrics::add(into, &d);
        }
    }
    let agree = journals.iter().all(|j| j.mismatch_count == 0)
        && !metric_checks.is_empty()
        && metric_checks.iter().all(|m| m.agree);

    let drill = DrillCounts {
        sent: outcomes.len() as u64,
        reached_gateway: outcomes.iter().filter(|o| o.status.is_some()).count() as u64,
        answered: outcomes.iter().filter(|o| o.complete).count() as u64,
        error_status: outcomes
            .iter()
            .filter(|o| !o.complete && o.status.is_some_and(|s| s != 200))
            .count() as u64,
        broken_answer: outcomes
            .iter()
            .filter(|o| !o.complete && o.status == Some(200))
            .count() as u64,
        no_response: outcomes.iter().filter(|o| o.status.is_none()).count() as u64,
    };

    let alerts = rec
        .observed
        .alerts
        .iter()
        .map(|a| AlertReport {
            seen: a.clone(),
            after_injection_ms: rec.injection_ms.map(|i| {
                i64::try_from(a.fired_ms).unwrap_or(i64::MAX) - i64::try_from(i).unwrap_or(0)
            }),
        })
        .collect();

    for k in &kills {
        if let Some(after) = plan.actions.iter().find_map(|a| match a.kind {
            ActionKind::Kill { after, .. } if after > Duration::ZERO => Some(after),
            _ => None,
        }) {
            notes.push(format!(
                "the RTO includes the {} the scenario waited before bringing a gateway back",
                humantime::format_duration(after)
            ));
        }
        if k.then == AfterKill::Restore {
            let interval = config.backup.as_ref().map_or_else(
                || "-".to_string(),
                |b| humantime::format_duration(b.interval.0).to_string(),
            );
            if k.waited_for_backup_ms.is_some() {
                notes.push("site loss after the backup had shipped every record (traffic paused before the kill): the RPO measures the backup and restore path alone".into());
            } else {
                notes.push(format!(
                    "site loss with traffic running: answers younger than backup.interval ({interval}) plus the upload time at the loss may be in no backup yet; that is the RPO of losing the machine, and it is what records_lost measures"
                ));
            }
            notes.push("the restored journal is kept beside the report; the fresh gateway ran without `backup:` so the real backup's history is untouched".into());
        }
    }
    if !kills.is_empty() {
        notes.push("requests in flight at a kill may end either way in the journal (interrupted, in flight, or completed without the caller seeing the end); they are not disagreements".into());
    }
    notes.push("the admin token of this drill was generated for it and passed to the gateway in BULWARK_ADMIN_TOKEN".into());

    let objectives = report::judge(&config.objectives, &callers, &rto, rpo.as_ref());
    let passed = objectives.iter().all(|o| o.pass);
    let duration_ms = traffic::millis(plan.duration);
    Report {
        bulwark_version: env!("CARGO_PKG_VERSION").to_string(),
        scenario: plan.clone(),
        config: ConfigInfo {
            path: config_path.display().to_string(),
            summary: report::redacted_config(config),
        },
        route: RouteInfo {
            name: route.model.clone(),
            primary: primary.1,
            targets: route
                .targets
                .iter()
                .map(|t| format!("{}/{}", t.provider, t.model))
                .collect(),
        },
        started_at: humantime::format_rfc3339_millis(rec.started_wall).to_string(),
        finished_at: humantime::format_rfc3339_millis(rec.finished_wall).to_string(),
        duration_ms,
        timeline,
        kills,
        events: rec.events,
        callers,
        incident,
        rto,
        rpo,
        alerts,
        breaker_transitions: rec.observed.transitions.clone(),
        serving: rec.observed.serving.clone(),
        counts: Counts {
            drill,
            journals,
            metrics: metric_checks,
            agree,
        },
        counters,
        objectives,
        passed,
        bucket_ms: analyze::bucket_width(duration_ms),
        series: analyze::buckets(outcomes, duration_ms),
        notes: dedup(notes),
    }
}

fn dedup(notes: Vec<String>) -> Vec<String> {
    let mut seen = BTreeMap::new();
    notes
        .into_iter()
        .filter(|n| seen.insert(n.clone(), ()).is_none())
        .collect()
}
