//! The `loadtest` binary against real demo backends on loopback.

use std::process::Command;
use std::time::{Duration, Instant};

use backend_server::{BackendState, Behaviour, RunningBackend};

async fn backend(name: &str, delay_ms: u64) -> RunningBackend {
    let b = Behaviour {
        delay_ms,
        ..Behaviour::default()
    };
    backend_server::spawn("127.0.0.1:0".parse().unwrap(), BackendState::new(name, b))
        .await
        .unwrap()
}

async fn loadtest(args: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadtest"));
    cmd.args(args).arg("--json");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_every_request_and_names_the_backend() {
    let b = backend("solo", 0).await;
    let url = format!("http://{}/x", b.addr());
    let r = loadtest(&[&url, "-n", "300", "-c", "4"]).await;
    assert_eq!(r["requests"], 300);
    assert_eq!(r["responses"], 300);
    assert_eq!(r["status_codes"]["200"], 300);
    assert_eq!(r["backends"][0]["backend"], "solo");
    assert_eq!(r["backends"][0]["responses"], 300);
    assert_eq!(b.state().requests_served(), 300);
    assert!(r["latency"]["p50_ms"].as_f64().unwrap() <= r["latency"]["p99_ms"].as_f64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_runs_stop_by_themselves() {
    let b = backend("solo", 1).await;
    let url = format!("http://{}/", b.addr());
    let t = Instant::now();
    let r = loadtest(&[&url, "-z", "1s", "-c", "2"]).await;
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(r["requests"].as_u64().unwrap() > 50);
    assert!((0.9..2.0).contains(&r["duration_s"].as_f64().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_measures_from_the_intended_send_time() {
    let b = backend("slow", 100).await;
    let url = format!("http://{}/", b.addr());
    // 10 requests due within 100 ms, one connection: each waits for the previous ones.
    let open = loadtest(&[&url, "-n", "10", "-q", "100", "-c", "1"]).await;
    let closed = loadtest(&[&url, "-n", "10", "-c", "1"]).await;
    let open_p99 = open["latency"]["p99_ms"].as_f64().unwrap();
    let closed_p99 = closed["latency"]["p99_ms"].as_f64().unwrap();
    assert!(closed_p99 < 400.0, "closed loop p99 {closed_p99}");
    assert!(
        open_p99 > 700.0,
        "open loop hid the queueing: p99 {open_p99}"
    );
    assert_eq!(open["mode"], "open loop at 100 req/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_are_counted_not_fatal() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let r = loadtest(&[&url, "-n", "20", "-c", "2"]).await;
    assert_eq!(r["errors"], 20);
    assert_eq!(r["error_kinds"]["connect"], 20);
}
