//! The report's chart, written by hand as SVG: caller success rate per bucket (bars),
//! the provider that served most answers per bucket (a coloured band), and marks for
//! the injection, the end of the fault, kills and the recovery.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::report::Report;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 24.0;
const PLOT_TOP: f64 = 92.0;
const PLOT_HEIGHT: f64 = 200.0;
const BAND_TOP: f64 = 320.0;
const BAND_HEIGHT: f64 = 26.0;
const HEIGHT: f64 = 416.0;

/// Colours of the route's targets' providers, in priority order.
const PALETTE: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948",
];
const NO_ANSWER: &str = "#e15759";
const ANSWERED: &str = "#59a14f";
const FAILED: &str = "#f3b0b0";

pub fn svg(r: &Report) -> String {
    let duration = r.duration_ms.max(1) as f64;
    let plot_width = WIDTH - LEFT - RIGHT;
    let x = |ms: u64| LEFT + plot_width * (ms as f64 / duration).min(1.0);
    let mut colors: BTreeMap<String, &str> = BTreeMap::new();
    for target in &r.route.targets {
        let provider = target.split('/').next().unwrap_or(target).to_string();
        let next = PALETTE[colors.len() % PALETTE.len()];
        colors.entry(provider).or_insert(next);
    }
    for b in &r.series {
        if let Some(p) = &b.provider {
            let next = PALETTE[colors.len() % PALETTE.len()];
            colors.entry(p.clone()).or_insert(next);
        }
    }

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">DR drill {} on route {}: caller success rate and serving provider</text>"#,
        esc(&r.scenario.name),
        esc(&r.route.name)
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="40" fill="#555">success rate of the requests sent in each {} ms; RTO {:.2}s; {} of {} answered</text>"##,
        r.bucket_ms,
        r.rto.ms as f64 / 1000.0,
        r.callers.answered,
        r.callers.sent
    );

    // Axes and grid.
    for pct in [0u32, 25, 50, 75, 100] {
        let y = PLOT_TOP + PLOT_HEIGHT * (1.0 - f64::from(pct) / 100.0);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{pct}%</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let step_s = tick_step(duration / 1000.0);
    let mut t = 0.0;
    while t <= duration / 1000.0 + 1e-9 {
        let px = LEFT + plot_width * (t * 1000.0 / duration);
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="#999"/><text x="{px:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}s</text>"##,
            BAND_TOP + BAND_HEIGHT,
            BAND_TOP + BAND_HEIGHT + 5.0,
            BAND_TOP + BAND_HEIGHT + 18.0,
            trim_float(t)
        );
        t += step_s;
    }

    // Success-rate bars and the serving band.
    for b in &r.series {
        let x0 = x(b.from_ms);
        let x1 = x(b.from_ms + r.bucket_ms);
        let w = (x1 - x0 - 1.0).max(0.5);
        if b.sent > 0 {
            // Answered share in green from the bottom, the rest in red above it.
            let rate = b.answered as f64 / b.sent as f64;
            let h = PLOT_HEIGHT * rate;
            let _ = writeln!(
                s,
                r#"<rect x="{x0:.1}" y="{PLOT_TOP}" width="{w:.1}" height="{:.1}" fill="{FAILED}"/><rect x="{x0:.1}" y="{:.1}" width="{w:.1}" height="{h:.1}" fill="{ANSWERED}"><title>{:.1}s: {}/{} answered</title></rect>"#,
                PLOT_HEIGHT - h,
                PLOT_TOP + PLOT_HEIGHT - h,
                b.from_ms as f64 / 1000.0,
                b.answered,
                b.sent
            );
        }
        let (fill, label) = match &b.provider {
            Some(p) => (colors.get(p).copied().unwrap_or("#999"), p.as_str()),
            None if b.sent > 0 => (NO_ANSWER, "no answer"),
            None => ("#eee", "no requests"),
        };
        let _ = writeln!(
            s,
            r#"<rect x="{x0:.1}" y="{BAND_TOP}" width="{:.1}" height="{BAND_HEIGHT}" fill="{fill}"><title>{:.1}s: {}</title></rect>"#,
            (x1 - x0).max(0.5),
            b.from_ms as f64 / 1000.0,
            esc(label)
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">serving</text>"##,
        LEFT - 6.0,
        BAND_TOP + BAND_HEIGHT / 2.0 + 4.0
    );

    // Marks.
    let t = &r.timeline;
    let mut marks: Vec<(u64, &str, &str)> = Vec::new();
    // A kill is the injection, and a gateway back up ends it: one mark each.
    if let Some(ms) = t
        .injection_ms
        .filter(|ms| r.kills.iter().all(|k| k.at_ms != *ms))
    {
        marks.push((ms, "#c00", "injection"));
    }
    if let Some(ms) = t
        .fault_end_ms
        .filter(|ms| r.kills.iter().all(|k| k.back_ms != *ms))
    {
        marks.push((ms, "#777", "fault ends"));
    }
    if let Some(ms) = t.recovery_ms {
        marks.push((ms, "#2a7", "recovery"));
    }
    for k in &r.kills {
        marks.push((k.at_ms, "#000", "kill"));
        marks.push((k.back_ms, "#555", "back up"));
    }
    marks.sort_by_key(|m| m.0);
    let mut last_label_x = f64::MIN;
    let mut row = 0;
    for (ms, color, label) in marks {
        let px = x(ms);
        let _ = writeln!(
            s,
            r#"<line x1="{px:.1}" y1="{PLOT_TOP}" x2="{px:.1}" y2="{:.1}" stroke="{color}" stroke-width="1.5" stroke-dasharray="5,3"/>"#,
            BAND_TOP + BAND_HEIGHT
        );
        // Labels above the plot, staggered when they would overlap.
        row = if px - last_label_x < 75.0 {
            (row + 1) % 3
        } else {
            0
        };
        last_label_x = px;
        let y = PLOT_TOP - 6.0 - 13.0 * f64::from(row);
        let _ = writeln!(
            s,
            r#"<line x1="{px:.1}" y1="{y:.1}" x2="{px:.1}" y2="{PLOT_TOP}" stroke="{color}" stroke-width="1"/><text x="{:.1}" y="{y:.1}" fill="{color}">{label}</text>"#,
            px + 3.0
        );
    }

    // Legend.
    let mut lx = LEFT;
    let ly = HEIGHT - 22.0;
    let mut legend: Vec<(String, &str)> = colors.iter().map(|(p, c)| (p.clone(), *c)).collect();
    legend.push(("no answer".to_string(), NO_ANSWER));
    legend.push(("answered (bars)".to_string(), ANSWERED));
    legend.push(("failed (bars)".to_string(), FAILED));
    for (name, color) in legend {
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 10.0,
            lx + 16.0,
            esc(&name)
        );
        lx += 28.0 + 7.0 * name.chars().count() as f64;
    }
    s.push_str("</svg>\n");
    s
}

/// A tick every 1, 2, 5, 10, … seconds, about ten ticks in all.
fn tick_step(seconds: f64) -> f64 {
    let raw = (seconds / 10.0).max(0.1);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(raw)
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step(60.0), 10.0);
        assert_eq!(tick_step(6.0), 1.0);
        assert_eq!(tick_step(8.0), 1.0);
        assert_eq!(tick_step(300.0), 50.0);
        assert_eq!(esc("a<b&\"c\""), "a&lt;b&amp;&quot;c&quot;");
    }
}
