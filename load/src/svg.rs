//! The latency distribution of a run as a self-contained SVG: a percentile plot (latency
//! against percentile, both on log scales, as HdrHistogram plots them), with p50, p99 and
//! p99.9 marked. Pure: a histogram in, a string out; the caller writes the file.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
/// Plot area margins: left (y labels), right, top (titles), bottom (x labels).
const LEFT: f64 = 90.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 60.0;
/// Points along the curve.
const STEPS: u32 = 300;
/// The marked percentiles as quantiles (as the JSON summary reads them, so that the values
/// agree), with the `id` of each marker.
const MARKS: [(f64, &str); 3] = [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")];

/// The percentile plot of `h` (nanoseconds) titled `title`; `what` names the latency ("round
/// trip", "handshake").
pub fn percentile_plot(title: &str, what: &str, h: &Histogram<u64>) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="24" font-size="15" font-weight="bold">{}</text>
"#,
        escape(title)
    );
    if h.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">no {} samples</text>"#,
            WIDTH / 2.0,
            HEIGHT / 2.0,
            escape(what)
        );
        s.push_str("</svg>\n");
        return s;
    }
    let us = |ns: u64| ns as f64 / 1e3;
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="44" fill="#444">{}: {} samples, p50 {}, p99 {}, p99.9 {}, max {}</text>"##,
        escape(what),
        h.len(),
        duration(us(h.value_at_quantile(0.5))),
        duration(us(h.value_at_quantile(0.99))),
        duration(us(h.value_at_quantile(0.999))),
        duration(us(h.max())),
    );

    // x: decades of 1/(1-p), up to what the sample count resolves (at least 99.9%).
    let decades = (h.len() as f64).log10().ceil().clamp(3.0, 6.0);
    // y: whole decades of microseconds around the curve.
    let lo = us(h.min().max(1)).log10().floor();
    let hi = us(h.max().max(1)).log10().ceil().max(lo + 1.0);
    let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let px = |x: f64| LEFT + pw * x / decades;
    let py = |v_us: f64| TOP + ph * (1.0 - (v_us.max(1e-3).log10() - lo) / (hi - lo));

    // Grid and axes.
    s.push_str(r##"<g stroke="#ddd">"##);
    for d in 0..=decades as u32 {
        let x = px(f64::from(d));
        let _ = write!(
            s,
            r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}"/>"#,
            TOP + ph
        );
    }
    let label_minor = hi - lo <= 2.0;
    let mut y_labels = String::new();
    for e in lo as i32..=hi as i32 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            if v > 10f64.powf(hi) * 1.0001 {
                break;
            }
            let y = py(v);
            let _ = write!(
                s,
                r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/>"#,
                LEFT + pw
            );
            if m == 1.0 || label_minor {
                let _ = write!(
                    y_labels,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                    LEFT - 6.0,
                    y + 4.0,
                    duration(v)
                );
            }
        }
    }
    s.push_str("</g>\n");
    let _ = writeln!(
        s,
        r##"<g stroke="#000"><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b:.1}"/><line x1="{LEFT}" y1="{b:.1}" x2="{r:.1}" y2="{b:.1}"/></g>"##,
        b = TOP + ph,
        r = LEFT + pw
    );
    let _ = writeln!(s, "<g>{y_labels}</g>");
    s.push_str("<g text-anchor=\"middle\">");
    for d in 0..=decades as u32 {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            px(f64::from(d)),
            TOP + ph + 18.0,
            percentile_label(d)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}">percentile (log scale: each step is ten times rarer)</text>"#,
        LEFT + pw / 2.0,
        HEIGHT - 14.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {:.1}) rotate(-90)">{} latency (log scale)</text></g>"#,
        TOP + ph / 2.0,
        escape(what)
    );

    // The curve: the latency at each percentile, sampled evenly along the x axis.
    s.push_str(r##"<polyline fill="none" stroke="#1f6feb" stroke-width="2" points=""##);
    for i in 0..=STEPS {
        let x = decades * f64::from(i) / f64::from(STEPS);
        let q = 1.0 - 10f64.powf(-x);
        let _ = write!(s, "{:.1},{:.1} ", px(x), py(us(h.value_at_quantile(q))));
    }
    s.push_str("\"/>\n");

    // The marked percentiles: a dashed line down to the axis, a dot and the value. The curve
    // only rises, so the value goes above and to the left of its dot, where the curve is not;
    // when that would run into the y axis, above and to the right, higher up.
    for (q, id) in MARKS {
        let x = (1.0 / (1.0 - q)).log10();
        let v = us(h.value_at_quantile(q));
        let (cx, cy) = (px(x), py(v));
        let label = format!("{id} {}", duration(v));
        // About 7 px per character at this font size.
        let width = 7.0 * label.chars().count() as f64;
        let (lx, ly, anchor) = if cx - 8.0 - width > LEFT {
            (cx - 8.0, cy - 8.0, "end")
        } else {
            (cx + 8.0, cy - 16.0, "start")
        };
        let _ = writeln!(
            s,
            r##"<g id="{id}"><line x1="{cx:.1}" y1="{cy:.1}" x2="{cx:.1}" y2="{:.1}" stroke="#d4640b" stroke-dasharray="4 3"/><circle cx="{cx:.1}" cy="{cy:.1}" r="4" fill="#d4640b"/><text x="{lx:.1}" y="{ly:.1}" text-anchor="{anchor}" fill="#d4640b" stroke="white" stroke-width="4" paint-order="stroke">{label}</text></g>"##,
            TOP + ph,
        );
    }
    s.push_str("</svg>\n");
    s
}

/// `0%`, `90%`, `99%`, `99.9%`, ... for decade `d` of 1/(1-p).
fn percentile_label(d: u32) -> String {
    match d {
        0 => "0%".to_owned(),
        1 => "90%".to_owned(),
        _ => format!("99.{}%", "9".repeat(d as usize - 2)).replace(".%", "%"),
    }
}

/// A latency in microseconds as text, in the unit that reads best.
fn duration(us: f64) -> String {
    if us < 1_000.0 {
        format!("{} µs", trim(us))
    } else if us < 1_000_000.0 {
        format!("{} ms", trim(us / 1e3))
    } else {
        format!("{} s", trim(us / 1e6))
    }
}

/// Three significant digits at most, no trailing zeros.
fn trim(v: f64) -> String {
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats;

    /// Labels read as a person would write them.
    #[test]
    fn labels() {
        let got: Vec<String> = (0..5).map(percentile_label).collect();
        assert_eq!(got, ["0%", "90%", "99%", "99.9%", "99.99%"]);
        assert_eq!(duration(123.4), "123 µs");
        assert_eq!(duration(1_500.0), "1.5 ms");
        assert_eq!(duration(20_000_000.0), "20 s");
        assert_eq!(duration(5.0), "5 µs");
    }

    /// The markers sit at the histogram's own percentiles, and markup in a title is escaped.
    #[test]
    fn marks_the_percentiles() {
        let mut h = stats::histogram();
        for i in 1..=10_000u64 {
            stats::record(&mut h, i * 1_000);
        }
        let svg = percentile_plot("a <b> & c", "round trip", &h);
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        for (q, id) in MARKS {
            let v = duration(h.value_at_quantile(q) as f64 / 1e3);
            assert!(svg.contains(&format!(">{id} {v}</text>")), "{id} {v}");
        }
        assert!(svg.contains(">p99.9 9.99 ms</text>"));
        let empty = percentile_plot("t", "handshake", &stats::histogram());
        assert!(empty.contains("no handshake samples") && empty.ends_with("</svg>\n"));
    }
}
