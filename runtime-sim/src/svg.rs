//! Hand-written SVG charts: deterministic text (fixed decimals, no
//! timestamps), no plotting crate.

use std::fmt::Write as _;

/// One bar series: a legend label and a value per category.
pub struct Series<'a> {
    pub label: &'a str,
    pub values: &'a [f64],
}

const PALETTE: [&str; 4] = ["#4477aa", "#ee6677", "#228833", "#ccbb44"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A grouped bar chart: categories `0..` on the x axis (one group per
/// category, one bar per series), values on the y axis.
pub fn bar_chart(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>]) -> String {
    let (w, h) = (720.0f64, 420.0f64);
    let (ml, mr, mt, mb) = (70.0, 20.0, 50.0, 60.0);
    let (pw, ph) = (w - ml - mr, h - mt - mb);
    let cats = series
        .iter()
        .map(|s| s.values.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let vmax = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0f64, f64::max);
    // Round the axis up to a tenth (values are usually fractions).
    let ymax = if vmax <= 0.0 {
        1.0
    } else {
        ((vmax * 10.0).ceil() / 10.0).max(0.1)
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="28" text-anchor="middle" font-size="16">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    // Y grid and ticks.
    let ticks = 5;
    for t in 0..=ticks {
        let v = ymax * f64::from(t) / f64::from(ticks);
        let y = mt + ph - ph * v / ymax;
        let _ = writeln!(
            s,
            r##"<line x1="{ml:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#dddddd"/>"##,
            ml + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{v:.2}</text>"#,
            ml - 6.0,
            y + 4.0
        );
    }
    // Bars.
    let group_w = pw / cats as f64;
    let nser = series.len().max(1) as f64;
    let bar_w = group_w * 0.8 / nser;
    for (k, ser) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        for (c, &v) in ser.values.iter().enumerate() {
            let bh = ph * v.max(0.0) / ymax;
            let x = ml + group_w * c as f64 + group_w * 0.1 + bar_w * k as f64;
            let y = mt + ph - bh;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{bar_w:.1}" height="{bh:.1}" fill="{color}"><title>{}: {c} = {v:.4}</title></rect>"#,
                esc(ser.label)
            );
        }
    }
    // X labels (thinned out so they never overlap).
    let step = cats.div_ceil(25);
    for c in (0..cats).step_by(step) {
        let x = ml + group_w * (c as f64 + 0.5);
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{c}</text>"#,
            mt + ph + 18.0
        );
    }
    // Axes.
    let _ = writeln!(
        s,
        r#"<line x1="{ml:.1}" y1="{mt:.1}" x2="{ml:.1}" y2="{:.1}" stroke="black"/>"#,
        mt + ph
    );
    let _ = writeln!(
        s,
        r#"<line x1="{ml:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"#,
        mt + ph,
        ml + pw,
        mt + ph
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        ml + pw / 2.0,
        h - 18.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
        mt + ph / 2.0,
        mt + ph / 2.0,
        esc(y_label)
    );
    // Legend.
    if series.len() > 1 {
        for (k, ser) in series.iter().enumerate() {
            let y = mt + 8.0 + 18.0 * k as f64;
            let x = ml + pw - 150.0;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{}"/>"#,
                y - 10.0,
                PALETTE[k % PALETTE.len()]
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{y:.1}">{}</text>"#,
                x + 18.0,
                esc(ser.label)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// A CDF line chart of one or more samples (each sorted ascending): x is
/// the value, y the fraction of samples `<=` it. At most 400 points per
/// series are drawn; `x_max` clips the axis (`None`: the largest value).
pub fn cdf_chart(
    title: &str,
    x_label: &str,
    series: &[(&str, &[f64])],
    x_max: Option<f64>,
) -> String {
    let (w, h) = (720.0f64, 420.0f64);
    let (ml, mr, mt, mb) = (70.0, 20.0, 50.0, 60.0);
    let (pw, ph) = (w - ml - mr, h - mt - mb);
    let vmax = series
        .iter()
        .filter_map(|(_, v)| v.last().copied())
        .fold(0.0f64, f64::max);
    let xmax = x_max.unwrap_or(vmax);
    let xmax = if xmax > 0.0 { xmax } else { 1.0 };
    let sx = |x: f64| ml + pw * (x.min(xmax) / xmax);
    let sy = |y: f64| mt + ph - ph * y;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="28" text-anchor="middle" font-size="16">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    for t in 0..=5 {
        let f = f64::from(t) / 5.0;
        let (y, x) = (sy(f), ml + pw * f);
        let _ = writeln!(
            s,
            r##"<line x1="{ml:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#dddddd"/>"##,
            ml + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{f:.1}</text>"#,
            ml - 6.0,
            y + 4.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{:.2}</text>"#,
            mt + ph + 18.0,
            xmax * f
        );
    }
    for (k, (label, v)) in series.iter().enumerate() {
        if v.is_empty() {
            continue;
        }
        let n = v.len();
        let step = n.div_ceil(400).max(1);
        let mut pts = String::new();
        let mut idx: Vec<usize> = (0..n).step_by(step).collect();
        if idx.last() != Some(&(n - 1)) {
            idx.push(n - 1);
        }
        let _ = write!(pts, "{:.1},{:.1}", sx(v[0]), sy(0.0));
        for i in idx {
            let _ = write!(pts, " {:.1},{:.1}", sx(v[i]), sy((i + 1) as f64 / n as f64));
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{pts}"><title>{}</title></polyline>"#,
            PALETTE[k % PALETTE.len()],
            esc(label)
        );
        let y = mt + 8.0 + 18.0 * k as f64;
        let x = ml + pw - 200.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{}"/>"#,
            y + ph * 0.5 - 10.0,
            PALETTE[k % PALETTE.len()]
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            x + 18.0,
            y + ph * 0.5,
            esc(label)
        );
    }
    let _ = writeln!(
        s,
        r#"<line x1="{ml:.1}" y1="{mt:.1}" x2="{ml:.1}" y2="{:.1}" stroke="black"/>"#,
        mt + ph
    );
    let _ = writeln!(
        s,
        r#"<line x1="{ml:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"#,
        mt + ph,
        ml + pw,
        mt + ph
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        ml + pw / 2.0,
        h - 18.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">cumulative fraction</text>"#,
        mt + ph / 2.0,
        mt + ph / 2.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_one_bar_per_value_and_is_deterministic() {
        let a = [0.1, 0.6, 0.3];
        let b = [0.0, 0.5, 0.4, 0.1];
        let series = [
            Series {
                label: "before",
                values: &a,
            },
            Series {
                label: "after <repair>",
                values: &b,
            },
        ];
        let svg = bar_chart("hops", "hops", "fraction", &series);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<title>").count(), 7);
        assert!(svg.contains("after &lt;repair&gt;"));
        assert_eq!(svg, bar_chart("hops", "hops", "fraction", &series));
    }

    #[test]
    fn cdf_is_one_polyline_per_series_ending_at_one() {
        let a: Vec<f64> = (1..=1000).map(|i| f64::from(i) / 100.0).collect();
        let svg = cdf_chart("rdp", "RDP", &[("overlay", &a), ("empty", &[])], None);
        assert_eq!(svg.matches("<polyline").count(), 1);
        // The last point is (x max, y = 1) at the top of the plot area.
        assert!(svg.contains(" 700.0,50.0\""), "{svg}");
        assert_eq!(
            svg,
            cdf_chart("rdp", "RDP", &[("overlay", &a), ("empty", &[])], None)
        );
    }
}
