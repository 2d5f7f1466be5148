//! `/metrics` scrapes: a small reader of the Prometheus text format (counters only)
//! and the deltas of Bulwark's counters over a gateway's part of the drill.

use std::collections::BTreeMap;

/// One sample line: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a scrape (comments and malformed lines skipped).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        Scrape {
            samples: text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .filter_map(parse_line)
                .collect(),
        }
    }

    /// Sum of `name` over the samples whose labels include every `(key, value)` of
    /// `filter`, grouped by the values of `by` (joined with `/`).
    pub fn grouped(
        &self,
        name: &str,
        filter: &[(&str, &str)],
        by: &[&str],
    ) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.samples.iter().filter(|s| s.name == name) {
            if !filter
                .iter()
                .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
            {
                continue;
            }
            let key = by
                .iter()
                .map(|k| s.labels.get(*k).map_or("", String::as_str))
                .collect::<Vec<_>>()
                .join("/");
            *out.entry(key).or_insert(0.0) += s.value;
        }
        out
    }
}

/// `after - before`, per key; keys only in `after` count from 0 (a counter first
/// seen during the drill).
pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

/// Adds `more` into `into`.
pub fn add(into: &mut BTreeMap<String, f64>, more: &BTreeMap<String, f64>) {
    for (k, v) in more {
        *into.entry(k.clone()).or_insert(0.0) += v;
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let (labels, rest) = if let Some(body) = rest.strip_prefix('{') {
        parse_labels(body)?
    } else {
        (BTreeMap::new(), rest)
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `key="value",key2="v\"2"} rest` → labels and `rest`.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        let after = s[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                other => value.push(other),
            }
        };
        labels.insert(key, value);
        s = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP bulwark_requests_total caller requests
# TYPE bulwark_requests_total counter
bulwark_requests_total{route="chat",outcome="success"} 40
bulwark_requests_total{route="chat",outcome="failed_upstream"} 3
bulwark_requests_total{route="other",outcome="success"} 7
bulwark_failovers_total{route="chat",from="a",to="b"} 2
bulwark_alerts_total{rule="breaker_open",severity="warning",note="say \"hi\""} 1
bulwark_journal_rpo_seconds 0.25
"#;

    #[test]
    fn counters_group_by_labels_and_subtract() {
        let scrape = Scrape::parse(TEXT);
        let by_outcome =
            scrape.grouped("bulwark_requests_total", &[("route", "chat")], &["outcome"]);
        assert_eq!(by_outcome.get("success"), Some(&40.0));
        assert_eq!(by_outcome.get("failed_upstream"), Some(&3.0));
        assert_eq!(by_outcome.len(), 2);
        let failovers = scrape.grouped("bulwark_failovers_total", &[], &["from", "to"]);
        assert_eq!(failovers.get("a/b"), Some(&2.0));
        let alerts = scrape.grouped("bulwark_alerts_total", &[], &["rule", "note"]);
        assert_eq!(alerts.get("breaker_open/say \"hi\""), Some(&1.0));
        assert_eq!(
            scrape
                .grouped("bulwark_journal_rpo_seconds", &[], &[])
                .get(""),
            Some(&0.25)
        );
        let before = BTreeMap::from([("success".to_string(), 10.0)]);
        let d = delta(&before, &by_outcome);
        assert_eq!(d.get("success"), Some(&30.0));
        assert_eq!(d.get("failed_upstream"), Some(&3.0));
    }
}
