//! The journal's command-line verbs: `journal list|export|stats`, `backup`, `restore`
//! and `verify`. Each takes configuration already parsed by `main.rs`, calls
//! `bulwark-journal`, and prints to stdout; the exit code says whether it worked.
//!
//! The `journal` verbs open the journal read-only, so they work while a gateway runs.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bulwark_journal::{
    Backup, BackupConfig, BackupTarget, ExportFilter, Journal, JournalConfig, Status,
};

/// `bulwark journal list [--status S] [--limit N]`: newest first, one line each.
pub async fn journal_list(
    cfg: &JournalConfig,
    status: Option<&str>,
    limit: usize,
) -> anyhow::Result<ExitCode> {
    let status = parse_status(status)?;
    let journal = Journal::open_read_only(cfg).await?;
    let rows = journal.list(status, limit).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<38} {:<11} {:<24} {:<20} {:<28} {:>8}",
        "ID", "STATUS", "RECEIVED", "ROUTE", "SERVED BY", "ATTEMPTS"
    )?;
    for r in &rows {
        let served = match (&r.provider, &r.model) {
            (Some(p), Some(m)) => format!("{p}/{m}"),
            _ => "-".to_string(),
        };
        writeln!(
            out,
            "{:<38} {:<11} {:<24} {:<20} {:<28} {:>8}",
            r.id,
            r.status.as_str(),
            bulwark_journal::rfc3339(r.received_at),
            r.route,
            served,
            r.attempts
        )?;
    }
    writeln!(out, "{} request(s)", rows.len())?;
    Ok(ExitCode::SUCCESS)
}

/// `bulwark journal export [--since TIME] [--status S]`: JSON lines, oldest first.
/// TIME is RFC 3339 (`2026-11-28T04:00:00Z`) or a duration ago (`1h`).
pub async fn journal_export(
    cfg: &JournalConfig,
    since: Option<&str>,
    status: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let filter = ExportFilter {
        since: since
            .map(|s| bulwark_journal::parse_time(s, SystemTime::now()))
            .transpose()
            .map_err(anyhow::Error::msg)
            .context("--since")?,
        status: parse_status(status)?,
    };
    let journal = Journal::open_read_only(cfg).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let n = journal.export(&filter, &mut out).await?;
    drop(out);
    eprintln!("exported {n} request(s)");
    Ok(ExitCode::SUCCESS)
}

/// `bulwark journal stats`: counts by status, span, size, and the backup's RPO exposure
/// when a `backup:` section is configured.
pub async fn journal_stats(
    cfg: &JournalConfig,
    backup: Option<&BackupConfig>,
) -> anyhow::Result<ExitCode> {
    let journal = Journal::open_read_only(cfg).await?;
    let mut stats = journal.stats().await?;
    let mut backup_note = None;
    if let Some(backup_cfg) = backup {
        match Backup::new(cfg, backup_cfg) {
            Ok(b) => match b.rpo_exposure().await {
                Ok(d) => stats.backup_rpo_exposure_ms = Some(millis(d)),
                Err(err) => backup_note = Some(format!("unknown ({err})")),
            },
            Err(err) => backup_note = Some(format!("n/a ({err})")),
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "backend:       {}", stats.backend)?;
    writeln!(
        out,
        "durability:    {} (RPO bound {})",
        stats.durability,
        ms(stats.rpo_bound_ms)
    )?;
    writeln!(out, "bodies:        {}", stats.bodies)?;
    writeln!(out, "requests:      {}", stats.requests)?;
    for (status, n) in &stats.by_status {
        writeln!(out, "  {status:<12} {n}")?;
    }
    writeln!(
        out,
        "records:       {} (seq {}..{})",
        stats.records,
        opt(stats.first_seq),
        opt(stats.last_seq)
    )?;
    writeln!(
        out,
        "oldest:        {}",
        stats.oldest_request.as_deref().unwrap_or("-")
    )?;
    writeln!(
        out,
        "newest:        {}",
        stats.newest_request.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "size on disk:  {} bytes", stats.size_bytes)?;
    match (backup, backup_note) {
        (None, _) => writeln!(out, "backup:        not configured")?,
        (Some(_), Some(note)) => writeln!(out, "backup RPO exposure: {note}")?,
        (Some(b), None) => writeln!(
            out,
            "backup RPO exposure: {} (oldest record not yet shipped to {})",
            ms(stats.backup_rpo_exposure_ms),
            b.to
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `bulwark backup --config FILE`: one run now (a snapshot if due or none exists,
/// then every record not yet shipped, then retention).
pub async fn backup(journal: &JournalConfig, cfg: &BackupConfig) -> anyhow::Result<ExitCode> {
    let backup = Backup::new(journal, cfg)?;
    let run = backup.run_once().await?;
    let mut out = std::io::stdout().lock();
    if let Some(snapshot) = &run.snapshot {
        writeln!(
            out,
            "snapshot:  {}/{snapshot}",
            cfg.to.trim_end_matches('/')
        )?;
    }
    for segment in &run.segments {
        writeln!(out, "segment:   {}/{segment}", cfg.to.trim_end_matches('/'))?;
    }
    for deleted in &run.deleted {
        writeln!(out, "deleted:   {deleted}")?;
    }
    writeln!(
        out,
        "shipped {} record(s); everything up to seq {} is in {}",
        run.records_shipped, run.shipped_seq, cfg.to
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `bulwark restore --from URL --to PATH [--at TIME]`, then verify. `s3` supplies
/// endpoint/region/allow_http for S3-compatible servers (else `AWS_ENDPOINT_URL`,
/// `AWS_ALLOW_HTTP`, … from the environment apply).
pub async fn restore(
    from: &str,
    to: &Path,
    at: Option<&str>,
    s3: Option<&BackupConfig>,
) -> anyhow::Result<ExitCode> {
    let at = at
        .map(|s| bulwark_journal::parse_time(s, SystemTime::now()))
        .transpose()
        .map_err(anyhow::Error::msg)
        .context("--at")?;
    let target = BackupTarget::from_url(
        from,
        s3.and_then(|c| c.endpoint.as_deref()),
        s3.and_then(|c| c.region.as_deref()),
        s3.is_some_and(|c| c.allow_http),
    )?;
    let report = bulwark_journal::restore(&target, to, at).await?;
    let mut out = std::io::stdout().lock();
    if report.verify.ok {
        writeln!(out, "restored {} from {from}", to.display())?;
    } else {
        writeln!(
            out,
            "restore from {from} FAILED verification: nothing was written to {}; the rebuilt journal is at {} for inspection",
            to.display(),
            report.verify.path
        )?;
    }
    writeln!(
        out,
        "snapshot:  {} (seq {})",
        report.snapshot, report.snapshot_seq
    )?;
    writeln!(
        out,
        "replayed:  {} record(s) from {} segment(s)",
        report.records_applied, report.segments_applied
    )?;
    writeln!(
        out,
        "last:      seq {} at {}",
        report.last_seq,
        report.last_record_at.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "took:      {:?}", report.elapsed)?;
    print_verify(&mut out, &report.verify)?;
    Ok(exit(report.verify.ok))
}

/// `bulwark verify PATH`: integrity check, checksums, contiguous seqs, index. Exit 1
/// when anything is wrong.
pub async fn verify(path: &Path) -> anyhow::Result<ExitCode> {
    let report = bulwark_journal::verify(path).await?;
    print_verify(&mut std::io::stdout().lock(), &report)?;
    Ok(exit(report.ok))
}

fn print_verify(out: &mut impl Write, r: &bulwark_journal::VerifyReport) -> std::io::Result<()> {
    writeln!(
        out,
        "verify {}: {}",
        r.path,
        if r.ok { "ok" } else { "FAILED" }
    )?;
    writeln!(out, "  integrity_check: {}", r.integrity_check)?;
    writeln!(
        out,
        "  records: {} (seq {}..{}), requests: {}",
        r.records,
        opt(r.first_seq),
        opt(r.last_seq),
        r.requests
    )?;
    for problem in &r.problems {
        writeln!(out, "  problem: {problem}")?;
    }
    if r.problem_count > r.problems.len() as u64 {
        writeln!(out, "  … {} problems in all", r.problem_count)?;
    }
    Ok(())
}

fn parse_status(raw: Option<&str>) -> anyhow::Result<Option<Status>> {
    raw.map(|s| s.parse::<Status>().map_err(anyhow::Error::msg))
        .transpose()
        .context("--status")
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ms(value: Option<u64>) -> String {
    match value {
        Some(ms) => format!("{ms} ms"),
        None => "-".to_string(),
    }
}

fn opt(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}
