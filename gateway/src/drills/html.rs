//! A drill report as one self-contained HTML page: the figures, the checks, and a
//! per-second timeline of the target's answers by outcome as inline SVG, with the onset,
//! detect, failover, fault-end and recovery marks. No script, no external asset.

use std::fmt::Write;

use super::report::{Report, TimelineSecond};

/// Escapes text for HTML (partner ids and URLs are partner-controlled).
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const OUTCOMES: [(&str, &str); 4] = [
    ("live", "#2e7d32"),
    ("cached", "#1565c0"),
    ("stale", "#f9a825"),
    ("failed", "#c62828"),
];

fn count(s: &TimelineSecond, outcome: &str) -> u64 {
    match outcome {
        "live" => s.answers.live,
        "cached" => s.answers.cached,
        "stale" => s.answers.stale,
        _ => s.answers.failed,
    }
}

/// The timeline as SVG: one stacked bar per second, marks as dashed lines.
fn timeline(report: &Report) -> String {
    let (width, height, left, bottom) = (900.0_f64, 260.0_f64, 40.0_f64, 30.0_f64);
    let seconds = report.timeline.len().max(1) as f64;
    let peak = report
        .timeline
        .iter()
        .map(|s| OUTCOMES.iter().map(|(o, _)| count(s, o)).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let plot_w = width - left - 10.0;
    let plot_h = height - bottom - 10.0;
    let bar = plot_w / seconds;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="answers per second by outcome">"#
    );
    let _ = write!(
        svg,
        r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#333"/><text x="4" y="16" font-size="11">{peak}/s</text><text x="{left}" y="{}" font-size="11">0 s</text><text x="{}" y="{}" font-size="11" text-anchor="end">{} s</text>"##,
        height - bottom,
        width - 10.0,
        height - bottom,
        height - 12.0,
        width - 10.0,
        height - 12.0,
        report.timeline.len()
    );
    for (i, s) in report.timeline.iter().enumerate() {
        let mut y = height - bottom;
        for (outcome, colour) in OUTCOMES {
            let n = count(s, outcome);
            if n == 0 {
                continue;
            }
            let h = n as f64 / peak * plot_h;
            y -= h;
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}" fill="{colour}"><title>{}s: {n} {outcome}</title></rect>"#,
                left + i as f64 * bar,
                (bar - 1.0).max(1.0),
                s.second
            );
        }
    }
    let marks = [
        ("onset", report.marks.onset_ms, "#555"),
        ("detect", report.marks.detect_ms, "#6a1b9a"),
        ("failover", report.marks.failover_ms, "#00838f"),
        ("fault end", report.marks.fault_end_ms, "#555"),
        ("recovered", report.marks.recovered_ms, "#2e7d32"),
    ];
    for (k, (name, at, colour)) in marks.into_iter().enumerate() {
        let Some(at) = at else { continue };
        let x = left + at as f64 / 1000.0 * bar;
        let _ = write!(
            svg,
            r#"<line x1="{x:.1}" y1="10" x2="{x:.1}" y2="{}" stroke="{colour}" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" font-size="11" fill="{colour}">{name}</text>"#,
            height - bottom,
            x + 3.0,
            22 + 13 * k
        );
    }
    svg.push_str("</svg>");
    svg
}

fn figure(v: Option<u64>, unit: &str) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v} {unit}"))
}

/// The page.
pub fn page(report: &Report) -> String {
    let f = &report.figures;
    let target = &report.request.target;
    let mut out = String::new();
    let title = format!(
        "Drill {} — {} on {}",
        report.id,
        report.request.fault.name(),
        target.partner
    );
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}td,th{{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}}.pass{{color:#2e7d32}}.fail{{color:#c62828}}.key span{{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}}</style></head><body><h1>{t}</h1>"#,
        t = esc(&title)
    );
    let verdict = if report.verdict.passed {
        r#"<span class="pass">passed</span>"#
    } else {
        r#"<span class="fail">failed</span>"#
    };
    let _ = write!(
        out,
        "<p>State <b>{:?}</b>, verdict <b>{verdict}</b>. Started {} by {}; endpoint {}, capability {}, rate {}, {} s.</p>",
        report.state,
        esc(&report.started_at),
        esc(&report.actor),
        esc(target.endpoint.as_deref().unwrap_or("all")),
        target.capability.map_or("all", |c| c.name()),
        report.request.rate,
        report.request.duration_s
    );
    out.push_str(r#"<p class="key">"#);
    for (outcome, colour) in OUTCOMES {
        let _ = write!(out, r#"<span style="background:{colour}"></span>{outcome}"#);
    }
    out.push_str("</p>");
    out.push_str(&timeline(report));
    out.push_str("<h2>Figures</h2><table>");
    let rows = [
        ("time to detect", figure(f.time_to_detect_ms, "ms")),
        ("time to failover", figure(f.time_to_failover_ms, "ms")),
        ("time to recover", figure(f.time_to_recover_ms, "ms")),
        ("frontend requests", f.frontend_requests.to_string()),
        ("frontend non-2xx", f.frontend_non_2xx.to_string()),
        (
            "answers live / cached / stale / failed",
            format!(
                "{} / {} / {} / {}",
                f.answers.live, f.answers.cached, f.answers.stale, f.answers.failed
            ),
        ),
        ("partner attempts", f.partner_attempts.to_string()),
        ("faults injected", f.injected.to_string()),
        (
            "retry amplification",
            f.amplification.map_or("—".into(), |a| format!("{a:.2}")),
        ),
    ];
    for (name, value) in rows {
        let _ = write!(out, "<tr><th>{name}</th><td>{}</td></tr>", esc(&value));
    }
    out.push_str("</table><h2>Checks</h2><table><tr><th>check</th><th>limit</th><th>actual</th><th></th></tr>");
    for c in &report.verdict.checks {
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td class="{}">{}</td></tr>"#,
            c.name,
            c.limit,
            c.actual.map_or("—".into(), |a| format!("{a:.2}")),
            if c.passed { "pass" } else { "fail" },
            if c.passed { "pass" } else { "fail" }
        );
    }
    out.push_str("</table></body></html>\n");
    out
}
