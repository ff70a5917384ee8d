//! The strategy experiment end to end (short): on the `flaky` profile, adaptive routing sends
//! far fewer requests to the backend answering fast 503s than round robin does.

use std::path::Path;

use loadtest::experiment::{profiles, run_profile, ExperimentArgs};

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
        out: out.clone(),
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
