//! Active health checks: a backend made unhealthy stops receiving traffic after its
//! thresholds and comes back when healthy; a fully unhealthy group fails open.

use crate::support;
use std::time::Duration;
use support::*;

fn group_yaml(backends: &str, extra: &str) -> String {
    let settings = format!(
        "    health_check:\n      path: /health\n      interval: 200ms\n      timeout: 150ms\n      healthy_threshold: 2\n      unhealthy_threshold: 2\n{extra}"
    );
    single_group("", &settings, backends)
}

async fn served_by(sy: &Switchyard, n: usize) -> std::collections::HashMap<String, usize> {
    shares(&load(&sy.url("/x"), n, 3).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unhealthy_backend_is_excluded_then_restored() {
    let b = [
        backend("a", 0).await,
        backend("b", 0).await,
        backend("c", 0).await,
    ];
    let sy = Switchyard::start(&group_yaml(&backend_list(&[&b[0], &b[1], &b[2]]), "")).await;
    assert_eq!(served_by(&sy, 30).await.len(), 3);

    control(&b[1], serde_json::json!({"healthy": false})).await;
    let excluded = eventually(Duration::from_secs(5), || async {
        !served_by(&sy, 30).await.contains_key("b")
    })
    .await;
    assert!(
        excluded,
        "b still served traffic 5 s after failing its checks"
    );
    // Stays out while unhealthy.
    assert!(!served_by(&sy, 60).await.contains_key("b"));
    assert!(sy.log_text().contains("is unhealthy"));

    control(&b[1], serde_json::json!({"healthy": true})).await;
    let restored = eventually(Duration::from_secs(5), || async {
        served_by(&sy, 30).await.contains_key("b")
    })
    .await;
    assert!(restored, "b did not get traffic back after recovering");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_with_no_healthy_backend_fails_open_or_answers_503() {
    for fail_open in [true, false] {
        let b = [backend("a", 0).await, backend("b", 0).await];
        let extra = format!("    fail_open: {fail_open}\n");
        let sy = Switchyard::start(&group_yaml(&backend_list(&[&b[0], &b[1]]), &extra)).await;
        for x in &b {
            control(x, serde_json::json!({"healthy": false})).await;
        }
        let last = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let down = eventually(Duration::from_secs(10), || async {
            let answers = load(&sy.url("/x"), 10, 2).await;
            *last.lock().unwrap() = answers.iter().map(|a| a.status).collect::<Vec<_>>();
            if fail_open {
                sy.log_text().contains("failing open") && answers.iter().all(|a| a.status == 200)
            } else {
                answers.iter().all(|a| a.status == 503)
            }
        })
        .await;
        assert!(
            down,
            "fail_open={fail_open}: unexpected answers {:?}; log:\n{}",
            last.lock().unwrap(),
            sy.log_text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_503_keeps_its_connection_only_when_it_says_so() {
    use tokio::io::AsyncWriteExt;
    let b = backend("a", 0).await;
    let sy = Switchyard::start(&group_yaml(&backend_list(&[&b]), "    fail_open: false\n")).await;
    control(&b, serde_json::json!({"healthy": false})).await;
    let refused = eventually(Duration::from_secs(10), || async {
        get(&client(None), &sy.url("/x")).await.status == 503
    })
    .await;
    assert!(refused, "the group never answered 503");

    let request = b"GET /x HTTP/1.1\r\nHost: example.test\r\n\r\n";
    let mut s = sy.connect().await;
    s.write_all(request).await.unwrap();
    let first = read_responses(&mut s, 1)
        .await
        .pop()
        .expect("a first answer");
    assert!(first.starts_with("HTTP/1.1 503"), "{first}");
    if first
        .to_ascii_lowercase()
        .contains("\r\nconnection: close\r\n")
    {
        // Announced: the proxy closes it, and a client knows not to reuse it.
        return;
    }
    // Not announced: the connection must take the next request, as a client will send it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = s.write_all(request).await;
    let second = read_responses(&mut s, 1).await.pop();
    assert!(
        second.is_some_and(|r| r.starts_with("HTTP/1.1 503")),
        "the 503 kept the connection open (no `Connection: close`) but the proxy closed it: {first}"
    );
}

/// A backend whose `/health` passes but whose requests fail with 503.
async fn failing_but_healthy(name: &str) -> backend_server::RunningBackend {
    backend_with(
        name,
        backend_server::Behaviour {
            error_rate: 1.0,
            error_status: 503,
            ..backend_server::Behaviour::default()
        },
    )
    .await
}

fn ejected(status: &serde_json::Value, port: u16) -> bool {
    status["target_groups"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| {
            b["address"]
                .as_str()
                .unwrap()
                .ends_with(&format!(":{port}"))
                && b["ejected"] == true
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passive_ejection_excludes_a_failing_backend_for_its_ejection_time() {
    let good = backend("good", 0).await;
    let bad = failing_but_healthy("bad").await;
    let extra =
        "    passive_health:\n      max_failures: 3\n      ejection_time: 3s\n    max_retries: 0\n";
    let sy = Switchyard::start(&group_yaml(&backend_list(&[&good, &bad]), extra)).await;
    let bad_label = bad.addr().to_string();

    // Round robin sends every other request to `bad` until its third 503 in a row ejects it.
    let c = client(None);
    for _ in 0..6 {
        get(&c, &sy.url("/x")).await;
    }
    let m = sy.metrics().await;
    assert_eq!(
        metric_sum(&m, "lb_backend_ejections_total", &[("backend", &bad_label)]),
        1.0,
        "{m}"
    );
    assert!(ejected(&sy.status().await, bad.addr().port()));

    // While ejected it gets nothing, though its health checks pass.
    let served = bad.state().requests_served();
    let during = load(&sy.url("/x"), 40, 2).await;
    assert!(
        during.iter().all(|a| a.status == 200),
        "{:?}",
        statuses(&during)
    );
    assert_eq!(
        bad.state().requests_served(),
        served,
        "an ejected backend got requests"
    );

    // After the ejection time it is tried again.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let after = load(&sy.url("/x"), 20, 1).await;
    assert!(
        bad.state().requests_served() > served,
        "{:?}",
        shares(&after)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ejected_but_healthy_backend_serves_when_nothing_else_is_left() {
    let good = backend("good", 0).await;
    let bad = failing_but_healthy("bad").await;
    let extra = "    passive_health:\n      max_failures: 2\n      ejection_time: 60s\n    max_retries: 0\n    fail_open: false\n";
    let sy = Switchyard::start(&group_yaml(&backend_list(&[&good, &bad]), extra)).await;
    // `good` fails its checks and leaves; `bad` is left alone and gets ejected.
    control(&good, serde_json::json!({"healthy": false})).await;
    let only_bad = eventually(Duration::from_secs(5), || async {
        served_by(&sy, 10).await.keys().all(|k| k == "bad")
    })
    .await;
    assert!(only_bad);
    let ejected_now = eventually(Duration::from_secs(5), || async {
        ejected(&sy.status().await, bad.addr().port())
    })
    .await;
    assert!(ejected_now, "bad was not ejected: {}", sy.status().await);
    // Ejection never takes a group down: the ejected backend still gets the requests (its
    // own 503s), rather than the load balancer answering "no backend".
    let answers = load(&sy.url("/x"), 10, 1).await;
    assert!(
        answers
            .iter()
            .all(|a| a.backend.as_deref() == Some("bad") && a.status == 503),
        "{answers:?}"
    );
    let m = sy.metrics().await;
    assert_eq!(
        metric_sum(&m, "lb_no_healthy_backend_total", &[]),
        0.0,
        "{m}"
    );
}
