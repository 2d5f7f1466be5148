//! `bulwark availability simulate`: the availability of providers in failover, by
//! Monte Carlo over outage histories.
//!
//! # The model
//!
//! Each provider alternates between up and down. Outage lengths come from the chosen
//! distribution (exponential, lognormal with σ = 1, or fixed) with the given mean;
//! up-periods are exponential, so outages start at random instants, with the mean
//! chosen so that the long-run fraction of time up equals the provider's availability:
//! `mean_up = mean_outage × a / (1 − a)`.
//!
//! Correlation ρ is a common-cause process: one more up/down alternation, shared by
//! every provider, standing for a cloud region, a DNS or CDN provider, or an upstream
//! model host they all depend on. A provider is down when the shared process is down
//! or its own process is. The shared process is down `ρ × q_min` of the time, where
//! `q_min` is the unavailability of the most reliable provider; each provider's own
//! process takes the rest (`a_own = a / a_shared`), so that every provider still has
//! exactly its given availability. For providers of equal availability this is "with
//! probability ρ, an outage of a provider is a shared outage". ρ = 0 is independent
//! failure; ρ = 1 leaves failover with only the best provider's availability.
//!
//! A failover group of the first k providers is down when the shared process is down
//! or all k own processes are down at once. Each trial draws one history of `days`
//! for the shared and for every own process (starting in the stationary state: down
//! with probability 1 − a, partway through an outage), works in intervals rather than
//! minutes, and measures the group's downtime for k = 1, 2, …; the k groups of one
//! trial share the same draws, so their differences are not sampling noise.
//!
//! Analytically, group k is up `a_shared × (1 − Π(1 − a_own,i))` of the time; with
//! ρ = 0 that is the textbook `1 − Π(1 − aᵢ)`, printed for comparison.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::{hours, percent};

/// The availability used when none is given, and the provider count.
const DEFAULT_AVAILABILITY: f64 = 0.88;
const DEFAULT_PROVIDERS: usize = 3;
/// Hours in the 30-day month downtime is reported for.
const MONTH_HOURS: f64 = 30.0 * 24.0;
/// Lognormal shape: median ≈ 0.61 × mean, and one outage in twenty lasts over 3 × mean.
const LOGNORMAL_SIGMA: f64 = 1.0;
/// Above this many drawn outages the run would take minutes: ask for fewer trials.
const MAX_OUTAGES: f64 = 50_000_000.0;

/// Arguments of `availability simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Each provider's availability, in priority order (`0.88,0.95,0.97` or `88%,95%`).
    /// Default: three providers at 0.88.
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = parse_availability,
        conflicts_with_all = ["providers", "per_provider"]
    )]
    availability: Vec<f64>,
    /// Number of providers of equal availability (default 3).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    providers: Option<u16>,
    /// Their availability (default 0.88).
    #[arg(long, value_parser = parse_availability)]
    per_provider: Option<f64>,
    /// Mean outage length (`2h`, `45m`).
    #[arg(long, default_value = "2h", value_parser = parse_hours)]
    mean_outage: f64,
    /// How outage lengths vary around the mean.
    #[arg(long, value_enum, default_value_t = OutageDist::Exponential)]
    outage_dist: OutageDist,
    /// Share of downtime that is a common-cause outage of every provider at once
    /// (0 = independent, 1 = failover gains nothing over the best provider).
    /// Default 0.01, which with 0.88 × 3 gives the ~99.7 % quoted for three providers in failover.
    #[arg(long, default_value_t = 0.01, value_parser = parse_correlation)]
    correlation: f64,
    /// Length of each simulated history.
    #[arg(long, default_value_t = 30.0, value_parser = parse_days)]
    days: f64,
    /// Number of simulated histories (4000 puts the 3-provider mean within ±0.01
    /// percentage points; a run takes well under a second).
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u32).range(1..))]
    trials: u32,
    /// Random seed, for a reproducible run (default: a fresh one, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Print a JSON document instead of the table.
    #[arg(long)]
    json: bool,
}

/// The distribution of outage lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutageDist {
    /// Memoryless: many short outages, a few long ones.
    Exponential,
    /// Heavy-tailed (σ = 1): mostly short blips, now and then a very long outage.
    Lognormal,
    /// Every outage lasts exactly the mean.
    Fixed,
}

/// Everything one simulation needs.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// Per provider, in priority order.
    pub availability: Vec<f64>,
    pub mean_outage_hours: f64,
    pub outage_dist: OutageDist,
    pub correlation: f64,
    pub days: f64,
    pub trials: u32,
    pub seed: u64,
}

/// The result: one row per failover group (the first k providers).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Simulation {
    /// Fraction of time the shared (common-cause) process is down.
    pub shared_unavailability: f64,
    pub rows: Vec<GroupRow>,
}

/// One failover group's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupRow {
    /// How many providers, from the first in priority order.
    pub providers: usize,
    pub label: String,
    /// Mean over trials.
    pub availability: f64,
    /// 5th and 95th percentile over trials (one history of `days` each).
    pub p5: f64,
    pub p95: f64,
    pub downtime_hours_per_30_days: f64,
    /// `1 − Π(1 − aᵢ)`: what independent failures would give.
    pub independent: f64,
    /// The model's exact long-run value with the correlation (what the mean tends to).
    pub expected: f64,
}

/// Runs `bulwark availability simulate`.
pub fn run(args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    let scenario = scenario_from(args);
    check_cost(&scenario)?;
    let sim = simulate(&scenario);
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = serde_json::json!({
            "scenario": scenario,
            "shared_unavailability": sim.shared_unavailability,
            "rows": sim.rows,
            "summary": summary(&scenario, &sim),
        });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, &scenario, &sim, args.seed.is_none())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn scenario_from(args: &SimulateArgs) -> Scenario {
    let availability = if args.availability.is_empty() {
        let n = args.providers.map_or(DEFAULT_PROVIDERS, usize::from);
        vec![args.per_provider.unwrap_or(DEFAULT_AVAILABILITY); n]
    } else {
        args.availability.clone()
    };
    Scenario {
        availability,
        mean_outage_hours: args.mean_outage,
        outage_dist: args.outage_dist,
        correlation: args.correlation,
        days: args.days,
        trials: args.trials,
        seed: args.seed.unwrap_or_else(|| rand::rng().random()),
    }
}

/// Refuses runs that would draw so many outages that they take minutes.
fn check_cost(s: &Scenario) -> anyhow::Result<()> {
    let horizon = s.days * 24.0;
    let per_trial: f64 = s
        .availability
        .iter()
        .map(|a| 1.0 + horizon * (1.0 - a) / s.mean_outage_hours)
        .sum();
    let outages = per_trial * f64::from(s.trials);
    if outages > MAX_OUTAGES {
        anyhow::bail!(
            "this run would draw about {outages:.0} outages; use fewer --trials, fewer --days \
             or a longer --mean-outage"
        );
    }
    Ok(())
}

/// Long-run availabilities of the shared process and of each provider's own process.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    shared: f64,
    own: Vec<f64>,
}

impl Model {
    fn new(availability: &[f64], correlation: f64) -> Model {
        let q_min = availability
            .iter()
            .map(|a| 1.0 - a)
            .fold(f64::INFINITY, f64::min);
        let q_min = if q_min.is_finite() { q_min } else { 0.0 };
        let shared = 1.0 - correlation * q_min;
        // a ≤ shared for every provider (q ≥ ρ·q_min), so own availabilities stay ≤ 1.
        let own = availability.iter().map(|a| (a / shared).min(1.0)).collect();
        Model { shared, own }
    }

    /// The first `k` providers' long-run availability in failover.
    fn expected(&self, k: usize) -> f64 {
        let all_own_down: f64 = self.own.iter().take(k).map(|a| 1.0 - a).product();
        self.shared * (1.0 - all_own_down)
    }
}

/// `1 − Π(1 − aᵢ)` over the first `k`.
fn independent(availability: &[f64], k: usize) -> f64 {
    1.0 - availability
        .iter()
        .take(k)
        .map(|a| 1.0 - a)
        .product::<f64>()
}

/// Runs the Monte Carlo. Deterministic for a given scenario (seed included).
pub fn simulate(s: &Scenario) -> Simulation {
    let model = Model::new(&s.availability, s.correlation);
    let horizon = s.days * 24.0;
    let n = s.availability.len();
    let trials = usize::try_from(s.trials).unwrap_or(usize::MAX);
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(trials); n];
    let mut rng = StdRng::seed_from_u64(s.seed);
    let draw = |a: f64, rng: &mut StdRng| {
        down_periods(a, s.mean_outage_hours, s.outage_dist, horizon, rng)
    };
    for _ in 0..trials {
        let shared = draw(model.shared, &mut rng);
        let shared_len = length(&shared);
        let mut all_own_down: Option<Vec<Span>> = None;
        for (k, a) in model.own.iter().enumerate() {
            let own = draw(*a, &mut rng);
            let group = match all_own_down {
                None => own,
                Some(previous) => intersect(&previous, &own),
            };
            // |shared ∪ group| = |shared| + |group| − |shared ∩ group|
            let down = shared_len + length(&group) - length(&intersect(&shared, &group));
            if let Some(column) = samples.get_mut(k) {
                column.push(1.0 - down / horizon);
            }
            all_own_down = Some(group);
        }
    }
    let rows = samples
        .iter_mut()
        .enumerate()
        .map(|(i, column)| {
            let k = i + 1;
            column.sort_by(f64::total_cmp);
            let mean = column.iter().sum::<f64>() / column.len().max(1) as f64;
            GroupRow {
                providers: k,
                label: label(k),
                availability: mean,
                p5: percentile(column, 0.05),
                p95: percentile(column, 0.95),
                downtime_hours_per_30_days: (1.0 - mean) * MONTH_HOURS,
                independent: independent(&s.availability, k),
                expected: model.expected(k),
            }
        })
        .collect();
    Simulation {
        shared_unavailability: 1.0 - model.shared,
        rows,
    }
}

/// A down period, in hours from the start of the history: `[start, end)`.
type Span = (f64, f64);

/// One history of a process up `a` of the time, as its down periods within `[0, horizon)`.
fn down_periods(
    a: f64,
    mean_outage: f64,
    dist: OutageDist,
    horizon: f64,
    rng: &mut StdRng,
) -> Vec<Span> {
    if a >= 1.0 {
        return Vec::new();
    }
    let mean_up = mean_outage * a / (1.0 - a);
    let mut spans = Vec::new();
    let mut t = 0.0;
    // Start in the stationary state, not freshly up, or short histories look too good.
    if rng.random::<f64>() < 1.0 - a {
        t = dist.residual(mean_outage, rng);
        spans.push((0.0, t.min(horizon)));
    }
    loop {
        t += exponential(mean_up, rng);
        if t >= horizon {
            return spans;
        }
        let outage = dist.sample(mean_outage, rng);
        spans.push((t, (t + outage).min(horizon)));
        t += outage;
    }
}

impl OutageDist {
    /// One outage length.
    fn sample(self, mean: f64, rng: &mut StdRng) -> f64 {
        match self {
            OutageDist::Exponential => exponential(mean, rng),
            OutageDist::Lognormal => lognormal(mean, 0.0, rng),
            OutageDist::Fixed => mean,
        }
    }

    /// What is left of an outage found in progress at a random instant: a length
    /// drawn in proportion to its size (long outages are more likely to be hit),
    /// times a uniform fraction.
    fn residual(self, mean: f64, rng: &mut StdRng) -> f64 {
        match self {
            // Memoryless: what is left has the same distribution.
            OutageDist::Exponential => exponential(mean, rng),
            // The size-biased lognormal(μ, σ) is lognormal(μ + σ², σ).
            OutageDist::Lognormal => {
                lognormal(mean, LOGNORMAL_SIGMA * LOGNORMAL_SIGMA, rng) * rng.random::<f64>()
            }
            OutageDist::Fixed => mean * rng.random::<f64>(),
        }
    }
}

fn exponential(mean: f64, rng: &mut StdRng) -> f64 {
    // 1 − u is in (0, 1], so the logarithm is finite.
    -mean * (1.0 - rng.random::<f64>()).ln()
}

/// A lognormal draw with the given mean and σ = `LOGNORMAL_SIGMA`, its log shifted by `shift`.
fn lognormal(mean: f64, shift: f64, rng: &mut StdRng) -> f64 {
    let sigma = LOGNORMAL_SIGMA;
    let mu = mean.ln() - sigma * sigma / 2.0 + shift;
    (mu + sigma * standard_normal(rng)).exp()
}

/// Box–Muller.
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Where both sorted, disjoint span lists are down.
fn intersect(a: &[Span], b: &[Span]) -> Vec<Span> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while let (Some(&(a0, a1)), Some(&(b0, b1))) = (a.get(i), b.get(j)) {
        let (start, end) = (a0.max(b0), a1.min(b1));
        if start < end {
            out.push((start, end));
        }
        if a1 < b1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

fn length(spans: &[Span]) -> f64 {
    spans.iter().map(|(start, end)| end - start).sum()
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let last = sorted.len().saturating_sub(1);
    let rank = (p * last as f64).round() as usize;
    sorted.get(rank.min(last)).copied().unwrap_or(f64::NAN)
}

fn label(k: usize) -> String {
    match k {
        1 => "provider 1".to_string(),
        2..=4 => {
            let names: Vec<String> = (1..=k).map(|i| i.to_string()).collect();
            format!("providers {}", names.join("+"))
        }
        _ => format!("providers 1..{k}"),
    }
}

fn count_word(n: usize) -> String {
    const WORDS: [&str; 11] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ];
    WORDS
        .get(n)
        .map_or_else(|| n.to_string(), |w| (*w).to_string())
}

/// The plain sentence on what correlation did to the result.
fn summary(s: &Scenario, sim: &Simulation) -> String {
    let Some(last) = sim.rows.last() else {
        return String::new();
    };
    if last.providers == 1 {
        return "One provider: nothing to fail over to. Add providers with \
                --availability 0.88,0.95 or --providers 3."
            .to_string();
    }
    let n = count_word(last.providers);
    if s.correlation <= 0.0 {
        return format!(
            "Correlation 0: outages are independent, so {n} providers in failover reach {}, \
             matching 1 − Π(1 − aᵢ) = {} within sampling error. Real providers share \
             dependencies (cloud regions, DNS, CDNs): try --correlation 0.05 to see what \
             shared outages cost.",
            percent(last.availability),
            percent(last.independent)
        );
    }
    format!(
        "With correlation {}, {n} providers in failover reach {} instead of {} if \
         independent: shared outages ({} a month) take every provider down at once and \
         cannot be failed over.",
        s.correlation,
        percent(last.availability),
        percent(last.independent),
        hours(sim.shared_unavailability * MONTH_HOURS)
    )
}

fn write_table(
    out: &mut impl Write,
    s: &Scenario,
    sim: &Simulation,
    fresh_seed: bool,
) -> std::io::Result<()> {
    let reproduce = if fresh_seed {
        format!(" (rerun with --seed {} to reproduce)", s.seed)
    } else {
        String::new()
    };
    writeln!(
        out,
        "Monte Carlo: {} trials of {} days, seed {}{reproduce}",
        s.trials, s.days, s.seed
    )?;
    let providers: Vec<String> = s
        .availability
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{} = {}", i + 1, percent(*a)))
        .collect();
    writeln!(
        out,
        "providers, in priority order: {}",
        providers.join(", ")
    )?;
    writeln!(
        out,
        "outages: {}, mean {}; up-periods exponential, sized to each availability",
        match s.outage_dist {
            OutageDist::Exponential => "exponential",
            OutageDist::Lognormal => "lognormal (σ = 1)",
            OutageDist::Fixed => "fixed length",
        },
        hours(s.mean_outage_hours)
    )?;
    if s.correlation > 0.0 {
        writeln!(
            out,
            "correlation {}: a shared outage takes every provider down {} of the time \
             ({} per 30 days); the rest of each provider's downtime is independent",
            s.correlation,
            percent(sim.shared_unavailability),
            hours(sim.shared_unavailability * MONTH_HOURS)
        )?;
    } else {
        writeln!(out, "correlation 0: providers fail independently")?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<18} {:>13}  {:<21} {:<20} {:>14}",
        "CONFIGURATION", "AVAILABILITY", "P5 – P95", "DOWNTIME / 30 DAYS", "IF INDEPENDENT"
    )?;
    for row in &sim.rows {
        writeln!(
            out,
            "{:<18} {:>13}  {:<21} {:<20} {:>14}",
            row.label,
            percent(row.availability),
            format!("{} – {}", percent(row.p5), percent(row.p95)),
            hours(row.downtime_hours_per_30_days),
            percent(row.independent)
        )?;
    }
    writeln!(out)?;
    writeln!(out, "{}", summary(s, sim))?;
    Ok(())
}

fn parse_availability(raw: &str) -> Result<f64, String> {
    let raw = raw.trim();
    let value = match raw.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|v| v / 100.0),
        None => raw.parse::<f64>(),
    }
    .map_err(|_| format!("{raw:?} is not an availability (0.88 or 88%)"))?;
    if value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(format!(
            "{raw:?} is outside (0, 1]: write 0.88 or 88% for 88 %"
        ))
    }
}

fn parse_hours(raw: &str) -> Result<f64, String> {
    let d = humantime::parse_duration(raw)
        .map_err(|e| format!("{raw:?} is not a duration like 2h or 45m ({e})"))?;
    let h = d.as_secs_f64() / 3600.0;
    if h > 0.0 {
        Ok(h)
    } else {
        Err("the mean outage must be longer than zero".into())
    }
}

fn parse_correlation(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{raw:?} is not a correlation between 0 and 1")),
    }
}

fn parse_days(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 3660.0 => Ok(v),
        _ => Err(format!("{raw:?} is not a number of days in (0, 3660]")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(availability: &[f64], correlation: f64, trials: u32) -> Scenario {
        Scenario {
            availability: availability.to_vec(),
            mean_outage_hours: 2.0,
            outage_dist: OutageDist::Exponential,
            correlation,
            days: 30.0,
            trials,
            seed: 7,
        }
    }

    /// Mean availability of the group of `k`, with a tolerance of five standard errors
    /// estimated from the spread across trials (p5..p95 ≈ ±1.645 σ).
    fn mean_and_tolerance(row: &GroupRow, trials: u32) -> (f64, f64) {
        let sigma = ((row.p95 - row.p5) / 3.29).max(1e-4);
        (row.availability, 5.0 * sigma / f64::from(trials).sqrt())
    }

    #[test]
    fn one_providers_simulated_availability_matches_its_input() {
        for dist in [
            OutageDist::Exponential,
            OutageDist::Lognormal,
            OutageDist::Fixed,
        ] {
            let mut s = scenario(&[0.88], 0.0, 3000);
            s.outage_dist = dist;
            let sim = simulate(&s);
            let (mean, tol) = mean_and_tolerance(&sim.rows[0], s.trials);
            assert!((mean - 0.88).abs() < tol, "{dist:?}: {mean} ± {tol}");
        }
    }

    #[test]
    fn independent_failover_matches_the_analytic_value() {
        let s = scenario(&[0.88, 0.9, 0.95], 0.0, 4000);
        let sim = simulate(&s);
        for row in &sim.rows {
            let (mean, tol) = mean_and_tolerance(row, s.trials);
            assert!(
                (mean - row.independent).abs() < tol,
                "{}: simulated {mean} vs analytic {} (± {tol})",
                row.label,
                row.independent
            );
            assert_eq!(row.expected, row.independent);
        }
        assert!((sim.rows[2].independent - (1.0 - 0.12 * 0.1 * 0.05)).abs() < 1e-12);
    }

    #[test]
    fn full_correlation_leaves_failover_no_better_than_one_provider() {
        let sim = simulate(&scenario(&[0.88, 0.88, 0.88], 1.0, 2000));
        let single = sim.rows[0].availability;
        assert!((single - 0.88).abs() < 0.01, "{single}");
        for row in &sim.rows[1..] {
            assert!(
                (row.availability - single).abs() < 1e-9,
                "{}: {}",
                row.label,
                row.availability
            );
        }
    }

    #[test]
    fn partial_correlation_matches_the_models_expected_value() {
        let s = scenario(&[0.88, 0.95, 0.97], 0.3, 4000);
        let sim = simulate(&s);
        // The shared outage share is ρ × the best provider's unavailability.
        assert!((sim.shared_unavailability - 0.3 * 0.03).abs() < 1e-12);
        for row in &sim.rows {
            let (mean, tol) = mean_and_tolerance(row, s.trials);
            assert!(
                (mean - row.expected).abs() < tol.max(5e-4),
                "{}: simulated {mean} vs expected {}",
                row.label,
                row.expected
            );
            assert!(row.expected <= row.independent + 1e-12);
        }
    }

    #[test]
    fn correlation_keeps_each_providers_own_availability() {
        let model = Model::new(&[0.88, 0.95, 0.97], 0.5);
        for (own, a) in model.own.iter().zip([0.88, 0.95, 0.97]) {
            assert!((own * model.shared - a).abs() < 1e-12);
        }
    }

    #[test]
    fn defaults_give_about_99_7_percent_for_three_providers() {
        let sim = simulate(&scenario(
            &[DEFAULT_AVAILABILITY; DEFAULT_PROVIDERS],
            0.01,
            3000,
        ));
        let three = &sim.rows[2];
        assert!(
            (0.996..0.998).contains(&three.expected),
            "{}",
            three.expected
        );
        assert!(
            (0.995..0.999).contains(&three.availability),
            "{}",
            three.availability
        );
        assert!((three.independent - 0.998272).abs() < 1e-6);
    }

    #[test]
    fn the_same_seed_gives_the_same_result() {
        let s = scenario(&[0.9, 0.95], 0.2, 300);
        assert_eq!(simulate(&s), simulate(&s));
        let other = Scenario {
            seed: 8,
            ..s.clone()
        };
        assert_ne!(simulate(&s), simulate(&other));
    }

    #[test]
    fn spans_intersect_where_both_are_down() {
        let a = [(0.0, 2.0), (5.0, 9.0)];
        let b = [(1.0, 6.0), (8.0, 10.0)];
        assert_eq!(intersect(&a, &b), vec![(1.0, 2.0), (5.0, 6.0), (8.0, 9.0)]);
        assert_eq!(length(&intersect(&a, &[])), 0.0);
    }

    #[test]
    fn availability_accepts_fractions_and_percentages() {
        assert_eq!(parse_availability("0.88"), Ok(0.88));
        assert_eq!(parse_availability("95%"), Ok(0.95));
        assert!(parse_availability("88").is_err());
        assert!(parse_availability("0").is_err());
        assert_eq!(parse_hours("90m"), Ok(1.5));
        assert!(parse_correlation("1.5").is_err());
    }

    #[test]
    fn the_summary_says_what_correlation_cost() {
        let s = scenario(&[0.88, 0.88, 0.88], 0.3, 200);
        let text = summary(&s, &simulate(&s));
        assert!(
            text.starts_with("With correlation 0.3, three providers"),
            "{text}"
        );
        assert!(text.contains("instead of 99.83 % if independent"), "{text}");
    }
}
