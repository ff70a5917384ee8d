//! The experiment's output: Markdown tables (with a header saying what was run, where and
//! when) and latency CDF plots.

use std::path::Path;

use super::{ExperimentArgs, ProfileResult};

/// What a `tables.md` starts with: commit, date, command and the like-with-like rules.
pub fn header(args: &ExperimentArgs) -> String {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let when = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "# Strategy experiment\n\nOne run: commit `{commit}`, Unix time {when}; profile `{}`, {} requests per run \
         (degrading: {}), {} connections.\n\nNo contender runs active health checks or passive ejection \
         (NGINX `max_fails=0`, HAProxy without `check`, Switchyard with both off), except Switchyard's \
         `fastest`, which ranks by its active probes (marked).\n",
        args.profile,
        args.requests,
        humantime::format_duration(args.degrading_duration),
        args.connections
    )
}

/// The result table of a profile.
pub fn table(result: &ProfileResult) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## profile: {} (backends: {})\n",
        result.profile,
        result.backends.join(", ")
    );
    let _ = writeln!(
        out,
        "| proxy | p50 ms | p99 ms | p99.9 ms | req/s | non-2xx | errors | share per backend |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for row in &result.rows {
        let s = &row.summary;
        let non2xx: u64 = s
            .status_codes
            .iter()
            .filter(|(c, _)| !(200..300).contains(*c))
            .map(|(_, n)| n)
            .sum();
        let shares: Vec<String> = result
            .backends
            .iter()
            .map(|b| {
                let share = s
                    .backends
                    .iter()
                    .find(|x| &x.backend == b)
                    .map(|x| x.share)
                    .unwrap_or(0.0);
                format!("{b} {:.0}%", share * 100.0)
            })
            .collect();
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.1} | {:.0} | {} | {} | {} |",
            row.proxy,
            s.latency.p50_ms,
            s.latency.p99_ms,
            s.latency.p999_ms,
            s.requests_per_second,
            non2xx,
            s.errors,
            shares.join(", ")
        );
    }
    for note in &result.missing {
        let _ = writeln!(out, "\nNot compared: {note}.");
    }
    out
}

/// Latency CDF per contender (log-scale latency) as an SVG.
pub fn plot_cdf(result: &ProfileResult, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let max_ms = result
        .rows
        .iter()
        .flat_map(|r| r.summary.cdf.iter().map(|p| p[1]))
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("latency CDF — profile {}", result.profile),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((0.1f64..max_ms * 1.2).log_scale(), 0f64..1.0)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("fraction of requests")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (i, row) in result.rows.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = row
            .summary
            .cdf
            .iter()
            .map(|p| (p[1].max(0.1), p[0]))
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(row.proxy.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
