//! Issue 4, must-show 2: site loss. A gateway ships its journal to a backup target
//! (a local directory; an S3-compatible server on 127.0.0.1 when
//! `BULWARK_TEST_S3_ENDPOINT` is set) under steady traffic, is killed with `kill -9`
//! and its disk thrown away; `bulwark restore` rebuilds the journal, `bulwark verify`
//! checks it, and a fresh gateway serves from it.
//!
//! Measured and printed: RPO as records lost (answers callers received that the
//! restored journal lacks) and as time (how old the oldest lost answer was at the
//! kill), and RTO (from starting the restore to the first answer served by the
//! gateway on the restored journal).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bulwark_mock::MockServer;

use crate::support::{BIN, Gateway, journal_export, send, write_config};

const INTERVAL_MS: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_loss_restore_from_a_local_directory() {
    let backups = tempfile::tempdir().unwrap();
    let to = format!("file://{}", backups.path().display());
    site_loss(
        "file",
        &format!("backup: {{to: \"{to}\", interval: {INTERVAL_MS}ms}}"),
        &to,
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_loss_restore_from_s3() {
    let Ok(endpoint) = std::env::var("BULWARK_TEST_S3_ENDPOINT") else {
        println!(
            "skipped: set BULWARK_TEST_S3_ENDPOINT (moto_server on 127.0.0.1) to run the S3 site-loss test"
        );
        return;
    };
    let bucket = std::env::var("BULWARK_TEST_S3_BUCKET").unwrap_or_else(|_| "bulwark-test".into());
    // The bucket may not exist yet on a fresh S3 server (409 when it does).
    let created = crate::support::client()
        .put(format!("{}/{bucket}", endpoint.trim_end_matches('/')))
        .send()
        .await
        .unwrap();
    assert!(
        created.status().is_success() || created.status().as_u16() == 409,
        "cannot create bucket {bucket}: {}",
        created.status()
    );
    let prefix = format!("site-loss-{}", uuid_like());
    let to = format!("s3://{bucket}/{prefix}");
    let section = format!(
        "backup: {{to: \"{to}\", interval: {INTERVAL_MS}ms, endpoint: \"{endpoint}\", region: us-east-1, allow_http: true}}"
    );
    site_loss("s3", &section, &to, Some(&section)).await;
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

async fn site_loss(label: &str, backup_section: &str, from: &str, restore_cfg: Option<&str>) {
    let mock = MockServer::start("upstream").await.unwrap();
    let site = tempfile::tempdir().unwrap();
    let journal = site.path().join("journal.db");
    let config = write_config(site.path(), &mock.url(), &journal, backup_section);
    let mut gateway = Gateway::start(&config).await;
    let url = gateway.url("/v1/chat/completions");
    let client = crate::support::client();

    // Steady traffic from two callers; record when each answer arrived.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..2 {
        let (client, url, stop) = (client.clone(), url.clone(), Arc::clone(&stop));
        let label = label.to_string();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("{label}-c{c}-{i}");
                match send(&client, &url, &id, i % 3 == 0, &[]).await {
                    Some(r) => got.push((r, started.elapsed())),
                    None => break,
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            got
        }));
    }
    tokio::time::sleep(Duration::from_millis(4 * INTERVAL_MS + 170)).await;
    gateway.kill9().await;
    let killed_at = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut received = Vec::new();
    for task in tasks {
        received.extend(task.await.unwrap());
    }
    // The site is gone: the journal and its WAL with it.
    drop(site);
    assert!(!journal.exists());

    // Restore onto a new machine and serve again.
    let new_site = tempfile::tempdir().unwrap();
    let restored = new_site.path().join("journal.db");
    let rto_start = Instant::now();
    let mut restore = std::process::Command::new(BIN);
    restore
        .args(["restore", "--from", from, "--to"])
        .arg(&restored);
    if let Some(section) = restore_cfg {
        let cfg = new_site.path().join("restore.yaml");
        std::fs::write(
            &cfg,
            format!("providers:\n  - {{name: x, kind: openai, api_key: k, base_url: \"http://127.0.0.1:9/v1\"}}\n{section}\n"),
        )
        .unwrap();
        restore.arg("--config").arg(&cfg);
    }
    let out = restore.output().unwrap();
    assert!(
        out.status.success(),
        "restore failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let new_config = write_config(new_site.path(), &mock.url(), &restored, "");
    let gateway = Gateway::start(&new_config).await;
    let first = send(
        &client,
        &gateway.url("/v1/chat/completions"),
        "after-restore",
        false,
        &[],
    )
    .await
    .unwrap();
    let rto = rto_start.elapsed();
    assert_eq!(first.status, 200);
    assert!(first.complete_text.is_some());
    drop(gateway);

    let verify = std::process::Command::new(BIN)
        .arg("verify")
        .arg(&restored)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "verify failed: {}",
        String::from_utf8_lossy(&verify.stdout)
    );

    let entries = journal_export(&restored).await;
    let answered: Vec<_> = received
        .iter()
        .filter(|(r, _)| r.complete_text.is_some())
        .collect();
    let lost: Vec<_> = answered
        .iter()
        .filter(|(r, _)| {
            entries
                .get(&r.id)
                .is_none_or(|e| e["status"] != "completed")
        })
        .collect();
    let rpo_time = lost
        .iter()
        .map(|(_, at)| killed_at.saturating_sub(*at))
        .max()
        .unwrap_or_default();
    println!(
        "site loss ({label}): {} answers before the kill, {} of them lost with the site (RPO {} records, {:?} of answers); RTO {:?} (restore + start + first answer); backup interval {INTERVAL_MS} ms",
        answered.len(),
        lost.len(),
        lost.len(),
        rpo_time,
        rto
    );
    for (r, _) in &answered {
        if let Some(entry) = entries.get(&r.id)
            && entry["status"] == "completed"
        {
            assert_eq!(
                &crate::support::journal_text(entry),
                r.complete_text.as_ref().unwrap(),
                "{}: restored answer differs",
                r.id
            );
        }
    }
    assert!(
        answered.len() > 20,
        "too little traffic: {}",
        answered.len()
    );
    // What was lost is only what had not been shipped yet: younger than the interval
    // plus one shipment's time.
    assert!(
        rpo_time <= Duration::from_millis(INTERVAL_MS * 2 + 500),
        "lost answers up to {rpo_time:?} old; shipping every {INTERVAL_MS} ms should bound that"
    );
    assert!(
        lost.len() < answered.len() / 2,
        "most answers must survive the site loss ({} of {} lost)",
        lost.len(),
        answered.len()
    );
}
