//! The strategy experiment end to end (short): on the `flaky` profile, adaptive routing sends
//! far fewer requests to the backend answering fast 503s than round robin does.

use std::path::Path;

use loadtest::experiment::{profiles, run_profile, ExperimentArgs};

use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_beats_round_robin_on_a_flaky_backend() {
    let out = std::env::temp_dir().join(format!("switchyard-experiment-{}", std::process::id()));
    let args = ExperimentArgs {
        profile: "flaky".into(),
        strategies: vec!["round_robin".into(), "adaptive".into()],
        requests: 400,
        degrading_duration: std::time::Duration::from_secs(2),
        connections: 8,
        switchyard: None,
        out: Some(out.clone()),
        no_peers: true,
    };
    std::fs::create_dir_all(&out).unwrap();
    let profile = profiles("flaky").unwrap().remove(0);
    let result = run_profile(&profile, &args, Path::new(env!("CARGO_BIN_EXE_switchyard")))
        .await
        .unwrap();
    let failures = |name: &str| -> u64 {
        let row = result.rows.iter().find(|r| r.proxy == name).unwrap();
        assert_eq!(row.summary.requests, 400);
        row.summary.status_codes.get(&503).copied().unwrap_or(0)
    };
    let (rr, adaptive) = (
        failures("switchyard round_robin"),
        failures("switchyard adaptive"),
    );
    // Round robin sends it a quarter of the requests, half of which fail (~50).
    assert!(rr >= 25, "round robin should hit the flaky backend: {rr}");
    assert!(adaptive * 3 < rr, "adaptive {adaptive} vs round robin {rr}");
    let table = loadtest::experiment::table(&result);
    assert!(table.contains("switchyard adaptive"));
    loadtest::experiment::plot_cdf(&result, &out.join("flaky.svg")).unwrap();
    assert!(std::fs::read_to_string(out.join("flaky.svg"))
        .unwrap()
        .contains("<svg"));
    let _ = std::fs::remove_dir_all(out);
}

/// Pids of running processes named `name`.
fn processes(name: &str) -> std::collections::BTreeSet<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_run_like_switchyard_and_leave_no_process_behind() {
    support::require_tool("nginx", "apt-get install nginx");
    support::require_tool("haproxy", "apt-get install haproxy");
    let before: Vec<_> = ["nginx", "haproxy"].iter().map(|n| processes(n)).collect();
    let args = ExperimentArgs {
        profile: "flaky".into(),
        strategies: vec!["round_robin".into()],
        requests: 200,
        degrading_duration: std::time::Duration::from_secs(1),
        connections: 4,
        switchyard: None,
        out: None,
        no_peers: false,
    };
    let profile = profiles("flaky").unwrap().remove(0);
    let result = run_profile(&profile, &args, Path::new(env!("CARGO_BIN_EXE_switchyard")))
        .await
        .unwrap();
    let names: Vec<&str> = result.rows.iter().map(|r| r.proxy.as_str()).collect();
    assert!(
        names.contains(&"nginx round robin") && names.contains(&"haproxy leastconn"),
        "{names:?}"
    );
    assert!(result.missing.is_empty(), "{:?}", result.missing);
    // Like with like: round robin everywhere sends the flaky backend a quarter of the traffic
    // (no health check or ejection pulls it out for anyone).
    for row in result.rows.iter().filter(|r| r.proxy.contains("round")) {
        let share = row
            .summary
            .backends
            .iter()
            .find(|b| b.backend == "b0-flaky")
            .map(|b| b.share)
            .unwrap_or(0.0);
        assert!((0.15..0.35).contains(&share), "{}: {share}", row.proxy);
    }
    let after: Vec<_> = ["nginx", "haproxy"].iter().map(|n| processes(n)).collect();
    for (b, a) in before.iter().zip(&after) {
        let left: Vec<_> = a.difference(b).collect();
        assert!(left.is_empty(), "processes left behind: {left:?}");
    }
}
