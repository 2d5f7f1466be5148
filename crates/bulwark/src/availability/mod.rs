//! `bulwark availability`: what failover buys, in numbers.
//!
//! Two views of the same question, printed in the same table shape
//! (configuration | availability | downtime):
//!
//! - `availability simulate` ([`simulate`]): the expected availability of one, two,
//!   three … providers in failover, by Monte Carlo over outage histories, next to the
//!   textbook independent-failure value `1 − Π(1 − aᵢ)`, with a correlation knob for
//!   outages that take every provider down at once.
//! - `availability --config FILE` ([`realised`]): the availability the gateway actually
//!   delivered, per route and per provider, folded from the journal.
//!
//! This module owns the command-line surface and the number formatting both share.

mod realised;
mod simulate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

/// `bulwark availability [simulate …] | --config FILE …`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AvailabilityArgs {
    #[command(subcommand)]
    command: Option<AvailabilityCommand>,
    #[command(flatten)]
    realised: RealisedArgs,
}

#[derive(Debug, Subcommand)]
enum AvailabilityCommand {
    /// Expected availability of 1, 2, 3 … providers in failover, by Monte Carlo.
    ///
    /// Each provider alternates up and down. Outage lengths are drawn from
    /// --outage-dist with mean --mean-outage; up-periods are exponential (outages
    /// start at random), sized so that each provider's long-run availability is the
    /// one given. With --correlation ρ, part of the downtime is a common-cause outage
    /// (a cloud region, a shared dependency) that takes every provider down at once:
    /// its share is ρ of the most reliable provider's downtime, and the rest of each
    /// provider's downtime is independent. Failover cannot route around shared
    /// outages; ρ = 1 leaves only the best provider's availability.
    ///
    /// Defaults: three providers at 88 % each (about 3.6 days down a month, each)
    /// with ρ = 0.01, which gives about 99.7 % in failover; with --correlation 0 the
    /// independent value is 99.83 %.
    Simulate(simulate::SimulateArgs),
}

/// The realised report: `bulwark availability --config FILE [--since T] [--by P]`.
///
/// Reads the journal (read-only, so it works while a gateway runs) and prints per
/// route and per provider the requests, failures, availability, and downtime minutes:
/// a minute with traffic is down when more than half of what finished in it failed.
#[derive(Debug, Args)]
struct RealisedArgs {
    /// Configuration file (YAML) naming the journal.
    #[arg(long, short, env = "BULWARK_CONFIG")]
    config: Option<PathBuf>,
    /// Only requests received at or after this time: RFC 3339, or a duration ago (`7d`).
    #[arg(long)]
    since: Option<String>,
    /// One row per route and provider per day or per month (UTC).
    #[arg(long, value_enum)]
    by: Option<Period>,
    /// Print a JSON document instead of the table.
    #[arg(long)]
    json: bool,
}

/// How `--by` groups the realised report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Period {
    Day,
    Month,
}

/// Runs `bulwark availability …`.
pub async fn run(args: AvailabilityArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(AvailabilityCommand::Simulate(sim)) => simulate::run(&sim),
        None => {
            let RealisedArgs {
                config,
                since,
                by,
                json,
            } = args.realised;
            let Some(config) = config else {
                anyhow::bail!(
                    "which journal? pass --config FILE (or set BULWARK_CONFIG) for the realised \
                     availability, or use `bulwark availability simulate` for the model"
                );
            };
            realised::run(&config, since.as_deref(), by, json).await
        }
    }
}

/// `0.9971` → `99.71 %`, with more decimals as the unavailability shrinks, so that
/// 99.998 % does not print as 100.00 %.
pub(crate) fn percent(availability: f64) -> String {
    let down = 1.0 - availability;
    let decimals = if down <= 0.0 || down >= 1e-3 {
        2
    } else if down >= 1e-4 {
        3
    } else {
        4
    };
    format!("{:.*} %", decimals, availability * 100.0)
}

/// Hours as a human amount: `52 min`, `14.4 h`, `86.4 h (3.6 days)`.
pub(crate) fn hours(h: f64) -> String {
    if h < 1.0 {
        format!("{:.0} min", h * 60.0)
    } else if h < 48.0 {
        format!("{h:.1} h")
    } else {
        format!("{h:.1} h ({:.1} days)", h / 24.0)
    }
}

/// Whole minutes as a human amount: `7 min`, `2 h 05 min`.
pub(crate) fn minutes(m: u64) -> String {
    if m < 60 {
        format!("{m} min")
    } else {
        format!("{} h {:02} min", m / 60, m % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_shows_enough_decimals_to_tell_nines_apart() {
        assert_eq!(percent(0.88), "88.00 %");
        assert_eq!(percent(0.99828), "99.83 %");
        assert_eq!(percent(0.99972), "99.972 %");
        assert_eq!(percent(0.999_985), "99.9985 %");
        assert_eq!(percent(1.0), "100.00 %");
    }

    #[test]
    fn durations_read_as_minutes_hours_or_days() {
        assert_eq!(hours(0.5), "30 min");
        assert_eq!(hours(20.0), "20.0 h");
        assert_eq!(hours(86.4), "86.4 h (3.6 days)");
        assert_eq!(minutes(7), "7 min");
        assert_eq!(minutes(125), "2 h 05 min");
    }
}
