//! Do the numbers agree? The drill's own record of every request is checked against
//! the journal (each request's status and answer text) and against the gateway's
//! `bulwark_requests_total` counter; and the RPO is measured: answers callers
//! received that the surviving journal does not hold as `completed` with the same text.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use bulwark_core::config::journal::{Bodies, JournalConfig};
use bulwark_journal::{ExportFilter, Journal};
use bulwark_observe::metrics::RequestOutcome;
use serde::Serialize;

use super::traffic::Outcome;

/// What the journal holds about one request.
#[derive(Debug, Clone)]
pub struct Entry {
    pub status: String,
    pub text: String,
}

/// The drill's requests (the callers' own ids, `x-request-id`, starting with `prefix`)
/// received since `since`, by those ids.
pub async fn read_journal(
    cfg: &JournalConfig,
    since: SystemTime,
    prefix: &str,
) -> anyhow::Result<HashMap<String, Entry>> {
    let journal = Journal::open_read_only(cfg)
        .await
        .with_context(|| format!("cannot open the journal {}", cfg.path.display()))?;
    let mut out = Vec::new();
    let filter = ExportFilter {
        since: Some(since),
        status: None,
    };
    journal
        .export(&filter, &mut out)
        .await
        .with_context(|| format!("cannot export the journal {}", cfg.path.display()))?;
    let mut entries = HashMap::new();
    for line in String::from_utf8_lossy(&out).lines() {
        let v: serde_json::Value = serde_json::from_str(line).context("a journal export line")?;
        let Some(id) = v["caller_request_id"]
            .as_str()
            .filter(|id| id.starts_with(prefix))
        else {
            continue;
        };
        let text = v["response"]["content"]
            .as_array()
            .map(|blocks| blocks.iter().filter_map(|b| b["text"].as_str()).collect())
            .unwrap_or_default();
        entries.insert(
            id.to_string(),
            Entry {
                status: v["status"].as_str().unwrap_or("unknown").to_string(),
                text,
            },
        );
    }
    Ok(entries)
}

/// How a caller's request ended, in the reconciliation's terms.
fn caller_class(o: &Outcome) -> &'static str {
    match (o.complete, o.status) {
        (true, _) => "answered",
        (false, Some(200)) => "broken_answer",
        (false, Some(_)) => "error_status",
        (false, None) => "no_response",
    }
}

/// One journal file and what it says about the requests of some gateways.
#[derive(Debug, Clone, Serialize)]
pub struct JournalCheck {
    pub path: PathBuf,
    /// The gateways (generations) that wrote it.
    pub generations: Vec<u32>,
    /// Their requests in the journal, by status.
    pub by_status: BTreeMap<String, u64>,
    /// Caller's view → journal status → requests.
    pub matrix: BTreeMap<String, BTreeMap<String, u64>>,
    pub mismatch_count: u64,
    /// The first few disagreements.
    pub mismatches: Vec<String>,
}

/// Checks each request of `generations` against `entries` (that journal's view).
/// `kills_ms`: when gateways were killed (a request in flight then may end any way).
pub fn check_journal(
    path: &Path,
    generations: &[u32],
    outcomes: &[Outcome],
    entries: &HashMap<String, Entry>,
    kills_ms: &[u64],
    bodies: Bodies,
) -> JournalCheck {
    let mut check = JournalCheck {
        path: path.to_path_buf(),
        generations: generations.to_vec(),
        by_status: BTreeMap::new(),
        matrix: BTreeMap::new(),
        mismatch_count: 0,
        mismatches: Vec::new(),
    };
    for o in outcomes
        .iter()
        .filter(|o| generations.contains(&o.generation))
    {
        let entry = entries.get(&o.id);
        let status = entry.map_or("absent", |e| e.status.as_str());
        if entry.is_some() {
            *check.by_status.entry(status.to_string()).or_default() += 1;
        }
        let class = caller_class(o);
        *check
            .matrix
            .entry(class.to_string())
            .or_default()
            .entry(status.to_string())
            .or_default() += 1;
        let at_kill = kills_ms
            .iter()
            .any(|k| o.sent_ms <= *k && o.done_ms + 50 >= *k);
        let problem = match class {
            "answered" => match entry {
                None => Some("answered, but not in the journal".to_string()),
                Some(e) if e.status != "completed" => {
                    Some(format!("answered, but the journal says {}", e.status))
                }
                Some(e) if bodies == Bodies::Full && Some(&e.text) != o.text.as_ref() => {
                    Some("answered, but the journal holds another text".to_string())
                }
                Some(_) => None,
            },
            "error_status" => (status != "failed" && !at_kill).then(|| {
                format!(
                    "error {} to the caller, journal says {status}",
                    o.status.unwrap_or(0)
                )
            }),
            "broken_answer" => (status == "completed" && !at_kill)
                .then(|| "a broken answer to the caller, journal says completed".to_string()),
            _ => (status != "absent" && !at_kill)
                .then(|| format!("no response to the caller, journal says {status}")),
        };
        if let Some(problem) = problem {
            check.mismatch_count += 1;
            if check.mismatches.len() < 20 {
                check.mismatches.push(format!("{}: {problem}", o.id));
            }
        }
    }
    check
}

/// Answers callers received that the surviving journal lost.
#[derive(Debug, Clone, Serialize)]
pub struct Rpo {
    /// The journal that survived the drill (the last gateway's).
    pub journal: PathBuf,
    pub answers_checked: u64,
    pub records_lost: u64,
    /// Age, at the loss (the kill that lost it, or the end of the drill), of the
    /// oldest lost answer; 0 when nothing was lost.
    pub ms: u64,
    /// A few of the lost request ids.
    pub lost: Vec<String>,
    /// Whether answer texts were compared (`journal.bodies: full`).
    pub texts_compared: bool,
}

pub fn rpo(
    journal: &Path,
    outcomes: &[Outcome],
    surviving: &HashMap<String, Entry>,
    kills_ms: &[u64],
    end_ms: u64,
    bodies: Bodies,
) -> Rpo {
    let texts_compared = bodies == Bodies::Full;
    let mut rpo = Rpo {
        journal: journal.to_path_buf(),
        answers_checked: 0,
        records_lost: 0,
        ms: 0,
        lost: Vec::new(),
        texts_compared,
    };
    for o in outcomes.iter().filter(|o| o.complete) {
        rpo.answers_checked += 1;
        let kept = surviving.get(&o.id).is_some_and(|e| {
            e.status == "completed" && (!texts_compared || Some(&e.text) == o.text.as_ref())
        });
        if kept {
            continue;
        }
        rpo.records_lost += 1;
        let lost_at = kills_ms
            .iter()
            .copied()
            .filter(|k| *k >= o.done_ms)
            .min()
            .unwrap_or(end_ms);
        rpo.ms = rpo.ms.max(lost_at.saturating_sub(o.done_ms));
        if rpo.lost.len() < 20 {
            rpo.lost.push(o.id.clone());
        }
    }
    rpo
}

/// One gateway's counters against the drill's count of the requests it answered.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsCheck {
    pub generation: u32,
    /// `at the end of the drill`, or `just before the kill` (the counters die with
    /// the process).
    pub scraped: String,
    /// `bulwark_requests_total{route}` delta, by outcome.
    pub metrics: BTreeMap<String, u64>,
    /// The drill's requests to this gateway that got an HTTP status, by the outcome
    /// label that status maps to.
    pub drill: BTreeMap<String, u64>,
    /// For a killed gateway: the drill's count of responses before the last scrape
    /// (lower bound) and of requests sent before the kill (upper bound).
    pub bounds: Option<(u64, u64)>,
    pub agree: bool,
}

/// Builds the check of one gateway. `scrape_ms`/`kill_ms` are set for a gateway
/// that was killed after a last scrape.
pub fn check_metrics(
    generation: u32,
    metrics: &BTreeMap<String, f64>,
    outcomes: &[Outcome],
    killed: Option<(u64, u64)>,
) -> MetricsCheck {
    let mine: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.generation == generation)
        .collect();
    let metrics: BTreeMap<String, u64> = metrics
        .iter()
        .map(|(k, v)| (k.clone(), v.max(0.0).round() as u64))
        .filter(|(_, v)| *v > 0)
        .collect();
    let mut drill: BTreeMap<String, u64> = BTreeMap::new();
    // A stream that began (200) and then broke is counted by the gateway under the
    // in-band error's outcome (`failed_upstream`, `timeout`, …), which the caller
    // only sees as a broken answer.
    let mut broken = 0u64;
    for o in &mine {
        match o.status {
            Some(200) if !o.complete => broken += 1,
            Some(status) => {
                *drill
                    .entry(RequestOutcome::from_status(status).label().to_string())
                    .or_default() += 1;
            }
            None => {}
        }
    }
    if broken > 0 {
        drill.insert("broken_answer".to_string(), broken);
    }
    let total: u64 = metrics.values().sum();
    let exact = {
        let success = |m: &BTreeMap<String, u64>| m.get("success").copied().unwrap_or(0);
        let others_fit = drill
            .iter()
            .filter(|(k, _)| *k != "success" && *k != "broken_answer")
            .all(|(k, v)| metrics.get(k).copied().unwrap_or(0) >= *v);
        let drill_total: u64 = drill.values().sum();
        success(&metrics) == success(&drill) && others_fit && total == drill_total
    };
    let (scraped, bounds, agree) = match killed {
        None => ("at the end of the drill".to_string(), None, exact),
        Some((scrape_ms, kill_ms)) => {
            let lower = mine
                .iter()
                .filter(|o| o.status.is_some() && o.done_ms <= scrape_ms)
                .count() as u64;
            let upper = mine.iter().filter(|o| o.sent_ms <= kill_ms).count() as u64;
            (
                "just before the kill".to_string(),
                Some((lower, upper)),
                (lower..=upper).contains(&total),
            )
        }
    };
    MetricsCheck {
        generation,
        scraped,
        metrics,
        drill,
        bounds,
        agree,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(id: &str, done: u64, status: Option<u16>, text: Option<&str>) -> Outcome {
        Outcome {
            id: id.to_string(),
            caller: 0,
            stream: false,
            generation: 0,
            sent_ms: done.saturating_sub(50),
            done_ms: done,
            status,
            complete: text.is_some(),
            provider: Some("a".into()),
            failure: None,
            text: text.map(str::to_string),
        }
    }

    fn entry(status: &str, text: &str) -> Entry {
        Entry {
            status: status.to_string(),
            text: text.to_string(),
        }
    }

    #[test]
    fn answers_missing_or_different_in_the_journal_are_lost() {
        let outcomes = vec![
            outcome("a", 100, Some(200), Some("one")),
            outcome("b", 200, Some(200), Some("two")),
            outcome("c", 300, Some(200), Some("three")),
            outcome("d", 400, Some(503), None),
        ];
        let journal = HashMap::from([
            ("a".to_string(), entry("completed", "one")),
            ("b".to_string(), entry("completed", "other")),
            ("d".to_string(), entry("failed", "")),
        ]);
        let r = rpo(
            Path::new("j.db"),
            &outcomes,
            &journal,
            &[1000],
            2000,
            Bodies::Full,
        );
        assert_eq!((r.answers_checked, r.records_lost, r.ms), (3, 2, 800));
        let check = check_journal(
            Path::new("j.db"),
            &[0],
            &outcomes,
            &journal,
            &[],
            Bodies::Full,
        );
        assert_eq!(check.mismatch_count, 2);
        assert_eq!(check.matrix["error_status"]["failed"], 1);
        assert_eq!(check.by_status["completed"], 2);
    }

    #[test]
    fn metrics_agree_exactly_at_the_end_and_within_bounds_before_a_kill() {
        let outcomes = vec![
            outcome("a", 100, Some(200), Some("x")),
            outcome("b", 200, Some(503), None),
            outcome("c", 300, None, None),
        ];
        let m = BTreeMap::from([
            ("success".to_string(), 1.0),
            ("failed_upstream".to_string(), 1.0),
        ]);
        assert!(check_metrics(0, &m, &outcomes, None).agree);
        // A stream that broke after it began: the gateway counts its error outcome.
        let mut with_broken = outcomes.clone();
        with_broken.push(outcome("d", 350, Some(200), None));
        let m2 = BTreeMap::from([
            ("success".to_string(), 1.0),
            ("failed_upstream".to_string(), 2.0),
        ]);
        assert!(check_metrics(0, &m2, &with_broken, None).agree);
        assert!(!check_metrics(0, &m, &with_broken, None).agree);
        let short = BTreeMap::from([("success".to_string(), 1.0)]);
        assert!(!check_metrics(0, &short, &outcomes, None).agree);
        let killed = check_metrics(0, &short, &outcomes, Some((150, 320)));
        assert_eq!(killed.bounds, Some((1, 3)));
        assert!(killed.agree);
    }
}
