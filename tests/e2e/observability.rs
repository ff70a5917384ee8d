//! Metrics, the status API and the dashboard, checked with real tools: values after known
//! traffic, `promtool check metrics` on a real scrape, a real Prometheus server scraping
//! switchyard, and the dashboard rendered by headless Chromium.

use crate::support;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backend_server::RunningBackend;
use support::*;

async fn cluster(extra_admin: &str) -> (Switchyard, Vec<RunningBackend>) {
    let b = vec![
        backend("a", 0).await,
        backend("b", 0).await,
        backend("c", 1).await,
    ];
    let body = format!(
        r#"
listeners:
  - address: 127.0.0.1:{{PORT}}
admin:
  address: 127.0.0.1:{{ADMIN}}
{extra_admin}target_groups:
  - name: cluster1
    strategy: round_robin
    backends:
{}    health_check:
      interval: 300ms
      timeout: 200ms
  - name: cluster2
    backends:
{}routes:
  - path_prefix: /cluster1
    target_group: cluster1
  - path_prefix: /cluster2
    target_group: cluster2
"#,
        backend_list(&[&b[0], &b[1], &b[2]]),
        backend_list(&[&b[0]])
    );
    (Switchyard::start(&body).await, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_requests_per_backend_and_describe_backends() {
    let (sy, _b) = cluster("").await;
    let answers = load(&sy.url("/cluster1"), 100, 4).await;
    assert!(answers.iter().all(|a| a.status == 200));
    let _ = get(&client(None), &sy.url("/nowhere")).await;
    tokio::time::sleep(Duration::from_millis(700)).await;

    let m = sy.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "lb_http_requests_total",
            &[("target_group", "cluster1")]
        ),
        100.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "lb_http_requests_total",
            &[("target_group", "cluster1"), ("code", "200")]
        ),
        100.0
    );
    assert_eq!(
        metric_sum(&m, "lb_http_requests_total", &[("code", "404")]),
        1.0
    );
    for backend in &_b {
        let addr = backend.addr().to_string();
        let n = metric_sum(
            &m,
            "lb_http_requests_total",
            &[("target_group", "cluster1"), ("backend", &addr)],
        );
        assert!((30.0..=37.0).contains(&n), "{addr}: {n}");
        assert_eq!(
            metric_sum(
                &m,
                "lb_backend_up",
                &[("target_group", "cluster1"), ("backend", &addr)]
            ),
            1.0
        );
        assert!(m.contains(&format!(
            "lb_backend_latency_ewma_seconds{{backend=\"{addr}\",target_group=\"cluster1\"}}"
        )));
        assert!(
            metric_sum(
                &m,
                "lb_health_checks_total",
                &[("backend", &addr), ("result", "success")]
            ) >= 1.0
        );
    }
    assert_eq!(
        metric_sum(
            &m,
            "lb_request_duration_seconds_count",
            &[("target_group", "cluster1")]
        ),
        100.0
    );
    assert_eq!(
        metric_sum(&m, "lb_backends_alive", &[("target_group", "cluster1")]),
        3.0
    );
    assert_eq!(
        metric_sum(&m, "lb_backend_inflight", &[("target_group", "cluster1")]),
        0.0
    );
    assert!(m.contains("# TYPE lb_http_requests_total counter"));
    assert!(m.contains("# TYPE lb_request_duration_seconds histogram"));
}

/// `lb_client_connections` counts the client connections open now: five kept-alive ones after
/// a request each, none once they are closed. (The same count, falling to zero, is when the
/// proxy hands memory it keeps for reuse back to the system.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_client_connections_are_counted_until_they_close() {
    use tokio::io::AsyncWriteExt;
    let (sy, _b) = cluster("").await;
    let mut open = Vec::new();
    for _ in 0..5 {
        let mut s = sy.connect().await;
        s.write_all(b"GET /cluster1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answers = read_responses(&mut s, 1).await;
        assert!(answers[0].starts_with("HTTP/1.1 200"), "{answers:?}");
        open.push(s);
    }
    let m = sy.metrics().await;
    assert_eq!(metric_sum(&m, "lb_client_connections", &[]), 5.0, "{m}");
    assert!(m.contains("# TYPE lb_client_connections gauge"));

    drop(open);
    let none_open = eventually(Duration::from_secs(5), || async {
        metric_sum(&sy.metrics().await, "lb_client_connections", &[]) == 0.0
    })
    .await;
    assert!(none_open, "connections still counted after they closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_errors_and_unhealthy_backends_show_in_metrics() {
    let (sy, b) = cluster("").await;
    control(
        &b[2],
        serde_json::json!({"healthy": false, "error_rate": 1.0, "error_status": 503}),
    )
    .await;
    let _ = load(&sy.url("/cluster1"), 30, 2).await;
    let c_addr = b[2].addr().to_string();
    let down = eventually(Duration::from_secs(5), || async {
        let m = sy.metrics().await;
        metric_sum(
            &m,
            "lb_backend_up",
            &[("backend", &c_addr), ("target_group", "cluster1")],
        ) == 0.0
            && metric_sum(&m, "lb_backends_alive", &[("target_group", "cluster1")]) == 2.0
    })
    .await;
    assert!(down, "{}", sy.metrics().await);
    let m = sy.metrics().await;
    assert!(
        metric_sum(
            &m,
            "lb_upstream_errors_total",
            &[("backend", &c_addr), ("kind", "http_5xx")]
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric_sum(
            &m,
            "lb_health_checks_total",
            &[("backend", &c_addr), ("result", "failure")]
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promtool_finds_no_problem_in_a_real_scrape() {
    let promtool = require_tool("promtool", "apt-get install prometheus");
    let (sy, _b) = cluster("").await;
    let _ = load(&sy.url("/cluster1"), 50, 2).await;
    let _ = load(&sy.url("/cluster2"), 10, 2).await;
    let text = sy.metrics().await;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_api_reports_backends_shares_and_routes() {
    let (sy, b) = cluster("").await;
    let _ = load(&sy.url("/cluster1"), 90, 3).await;
    let st = sy.status_settled().await;
    let g = &st["target_groups"][0];
    assert_eq!(g["name"], "cluster1");
    assert_eq!(g["strategy"], "round_robin");
    assert_eq!(g["healthy"], 3);
    assert_eq!(g["requests_last_minute"], 90);
    let backends = g["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 3);
    let share_sum: f64 = backends
        .iter()
        .map(|x| x["share_last_minute"].as_f64().unwrap())
        .sum();
    assert!((share_sum - 1.0).abs() < 0.01, "{share_sum}");
    for x in backends {
        assert_eq!(x["requests_last_minute"], 30, "{x}");
        assert_eq!(x["inflight"], 0);
        assert!(x["ewma_ms"].as_f64().unwrap() > 0.0);
        assert!(b
            .iter()
            .any(|bk| bk.addr().to_string() == x["address"].as_str().unwrap()));
    }
    assert_eq!(st["routes"]["rules"][0]["path"], "/cluster1");
    assert_eq!(
        st["routes"]["rules"][0]["action"]["target_group"],
        "cluster1"
    );
    // The admin port is not the proxy port, and the proxy does not serve admin paths.
    assert_eq!(get(&client(None), &sy.url("/metrics")).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_can_be_turned_off() {
    let (sy, _b) = cluster("  metrics: false\n").await;
    let _ = load(&sy.url("/cluster1"), 10, 2).await;
    assert_eq!(
        reqwest::get(sy.admin_url("/metrics"))
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        sy.status_settled().await["target_groups"][0]["requests_last_minute"],
        10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_prometheus_scrapes_switchyard() {
    let prometheus = require_tool("prometheus", "apt-get install prometheus");
    let (sy, _b) = cluster("").await;
    let _ = load(&sy.url("/cluster1"), 40, 2).await;

    let dir = TempDir::new();
    let shipped = std::fs::read_to_string(format!(
        "{}/conf/prometheus.yml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert!(
        shipped.contains("127.0.0.1:9091"),
        "conf/prometheus.yml targets the default admin address"
    );
    let conf = shipped
        .replace("127.0.0.1:9091", &format!("127.0.0.1:{}", sy.admin_port))
        .replace("scrape_interval: 5s", "scrape_interval: 1s");
    let conf_path = dir.write("prometheus.yml", &conf);
    let port = free_port();
    let mut child = Command::new(prometheus)
        .arg(format!("--config.file={}", conf_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(child_take(&mut child));

    let query = |q: &'static str| {
        let url = format!("http://127.0.0.1:{port}/api/v1/query");
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .query(&[("query", q)])
                .send()
                .await
                .ok()?;
            let v: serde_json::Value = r.json().await.ok()?;
            v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
        }
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    let (mut up, mut requests) = (None, None);
    while Instant::now() < deadline {
        up = query(r#"up{job="switchyard"}"#).await;
        requests = query(r#"sum(lb_http_requests_total{target_group="cluster1"})"#).await;
        if up == Some(1.0) && requests.is_some_and(|r| r > 0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(up, Some(1.0), "Prometheus never saw switchyard up");
    assert_eq!(requests, Some(40.0));
}

fn child_take(child: &mut std::process::Child) -> std::process::Child {
    // Move the child out so its guard owns it.
    std::mem::replace(child, Command::new("true").spawn().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_shows_backends_and_updates_in_a_real_browser() {
    let chromium = require_tool("chromium", "apt-get install chromium");
    let (sy, b) = cluster("").await;
    let _ = load(&sy.url("/cluster1"), 30, 2).await;

    let dump = |url: String| {
        let chromium = chromium.clone();
        async move {
            let profile = TempDir::new();
            let out = tokio::process::Command::new(chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--virtual-time-budget=4000",
                    "--dump-dom",
                ])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg(url)
                .output()
                .await
                .unwrap();
            String::from_utf8_lossy(&out.stdout).to_string()
        }
    };
    let first = dump(sy.admin_url("/dashboard")).await;
    for backend in &b {
        assert!(
            first.contains(&format!("data-backend=\"{}\"", backend.addr())),
            "backend {} missing from the rendered page:\n{first}",
            backend.addr()
        );
    }
    assert!(first.contains("group-cluster1") && first.contains("round_robin"));
    let total_of = |dom: &str, addr: &str| -> u64 {
        let row = dom
            .split(&format!("data-backend=\"{addr}\""))
            .nth(1)
            .unwrap_or("");
        let cell = row.split("class=\"requests-total\">").nth(1).unwrap_or("");
        cell.split('<')
            .next()
            .unwrap_or("")
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let a = b[0].addr().to_string();
    let before = total_of(&first, &a);
    assert!(before >= 9, "the page shows {before} requests for {a}");

    let _ = load(&sy.url("/cluster1"), 60, 2).await;
    let second = dump(sy.admin_url("/dashboard")).await;
    let after = total_of(&second, &a);
    assert!(
        after >= before + 19,
        "the page did not update: {before} then {after}"
    );
}
