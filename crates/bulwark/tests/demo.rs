//! Issue 6, must-show 1: `bulwark demo` runs with no keys and no services, exits 0,
//! and its table shows the measured gain of failover on one fault timeline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The availability column of the row starting with `label`.
fn availability(out: &str, label: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no row {label:?} in:\n{out}"));
    let cell = line
        .split_whitespace()
        .find(|w| w.ends_with('%'))
        .unwrap_or_else(|| panic!("no percentage in {line:?}"));
    cell.trim_end_matches('%').parse().unwrap()
}

#[test]
fn demo_shows_failover_gain_and_exits_zero() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(["demo", "--duration", "15s", "--seed", "7"])
        .env_remove("BULWARK_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    assert!(
        !stdout.contains("\x1b["),
        "plain output when not on a terminal"
    );
    for phase in [
        "normal",
        "primary outage",
        "secondary brown-out",
        "recovery",
    ] {
        assert!(stdout.contains(phase), "timeline phase {phase:?} not shown");
    }
    assert!(
        stdout.contains("anthropic OPEN"),
        "breaker states are shown live"
    );
    assert!(stdout.contains("ALERT"), "alerts are shown as they fire");
    let one = availability(&stdout, "1 provider");
    let two = availability(&stdout, "2 providers");
    let three = availability(&stdout, "3 providers");
    assert!(
        one < 90.0,
        "the primary's outage must cost the single provider: {one}"
    );
    assert!(
        two > one && three > two,
        "failover must pay: {one} < {two} < {three}"
    );
    assert!(
        three >= 95.0,
        "three providers ride out this timeline: {three}"
    );
    assert!(
        stdout.contains("answers missing from it: 0"),
        "every answer is in the journal"
    );
}
