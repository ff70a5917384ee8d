//! Human-readable output.

use std::fmt::Write;

use super::Summary;

/// The summary as a short text report.
pub fn render(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Summary: {} ({}, {} connections)",
        s.url, s.mode, s.connections
    );
    let _ = writeln!(out, "  Duration:      {:.3} s", s.duration_s);
    let _ = writeln!(
        out,
        "  Requests:      {} ({} responses, {} errors)",
        s.requests, s.responses, s.errors
    );
    let _ = writeln!(
        out,
        "  Requests/sec:  {:.1} (successes/sec {:.1})",
        s.requests_per_second, s.successes_per_second
    );
    let _ = writeln!(out, "  Received:      {} bytes", s.bytes_received);
    let l = &s.latency;
    let _ = writeln!(out, "\nLatency (ms):");
    let _ = writeln!(
        out,
        "  min {:.3}  mean {:.3}  max {:.3}",
        l.min_ms, l.mean_ms, l.max_ms
    );
    let _ = writeln!(
        out,
        "  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms
    );
    let _ = writeln!(out, "\nStatus codes:");
    for (code, n) in &s.status_codes {
        let _ = writeln!(out, "  [{code}] {n}");
    }
    if !s.error_kinds.is_empty() {
        let _ = writeln!(out, "\nErrors:");
        for (kind, n) in &s.error_kinds {
            let _ = writeln!(out, "  {kind}: {n}");
        }
    }
    if !s.backends.is_empty() {
        let _ = writeln!(out, "\nResponses per backend:");
        for b in &s.backends {
            let _ = writeln!(
                out,
                "  {:<24} {:>8}  {:>5.1} %",
                b.backend,
                b.responses,
                b.share * 100.0
            );
        }
    }
    out
}
