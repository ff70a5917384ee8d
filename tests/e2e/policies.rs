//! Traffic policies end to end with real demo backends: weighted splits (with stickiness), a
//! progressive canary that promotes a healthy canary and rolls back a failing one, shadow
//! traffic, and fault injection.

use crate::support;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use support::*;

/// Two groups `v1` (backend `a`) and `v2` (backend `b`) and a route `/shop` with `policy`
/// (YAML lines indented four spaces, after `path_prefix`).
fn two_groups(a: &str, b: &str, route: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:{{PORT}}\nproxy:\n  decision_headers: true\ntarget_groups:\n  - name: v1\n    backends:\n{a}    health_check:\n      interval: 500ms\n      timeout: 400ms\n  - name: v2\n    backends:\n{b}    health_check:\n      interval: 500ms\n      timeout: 400ms\nroutes:\n  - path_prefix: /shop\n{route}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_90_10_split_sends_ten_percent_to_the_canary() {
    let (a, b) = (backend("a", 0).await, backend("b", 0).await);
    let route = "    forward:\n      - {target_group: v1, weight: 90}\n      - {target_group: v2, weight: 10}\n";
    let sy = Switchyard::start(&two_groups(
        &backend_list(&[&a]),
        &backend_list(&[&b]),
        route,
    ))
    .await;
    let answers = load(&sy.url("/shop"), 10_000, 16).await;
    assert!(
        answers.iter().all(|x| x.status == 200),
        "{:?}",
        statuses(&answers)
    );
    let canary = shares(&answers).get("b").copied().unwrap_or(0) as f64 / 10_000.0;
    assert!((0.085..=0.115).contains(&canary), "canary share {canary}");
    let decision = answers[0].headers["x-switchyard-decision"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(decision.starts_with("target_group=v"), "{decision}");
    let m = sy.metrics().await;
    assert!(metric_sum(&m, "lb_http_requests_total", &[("target_group", "v2")]) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_stickiness_keeps_each_client_on_its_group() {
    let (a, b) = (backend("a", 0).await, backend("b", 0).await);
    for by in ["cookie", "client_ip"] {
        let route = format!(
            "    forward:\n      - {{target_group: v1, weight: 50}}\n      - {{target_group: v2, weight: 50}}\n    stickiness:\n      by: {by}\n{}",
            if by == "cookie" { "      duration: 1h\n" } else { "" }
        );
        let sy = Switchyard::start(&two_groups(
            &backend_list(&[&a]),
            &backend_list(&[&b]),
            &route,
        ))
        .await;
        let mut groups_seen = HashSet::new();
        for client_no in 0..50u8 {
            let source: IpAddr = format!("127.0.1.{}", client_no + 1).parse().unwrap();
            let c = client(Some(source));
            let mut cookie: Option<String> = None;
            let mut seen = HashSet::new();
            for _ in 0..8 {
                let mut req = c.get(sy.url("/shop"));
                if let Some(v) = &cookie {
                    req = req.header("cookie", v);
                }
                let resp = req.send().await.unwrap();
                if let Some(set) = resp.headers().get("set-cookie") {
                    cookie = Some(set.to_str().unwrap().split(';').next().unwrap().to_string());
                }
                seen.insert(resp.headers()["x-backend"].to_str().unwrap().to_string());
            }
            assert_eq!(
                seen.len(),
                1,
                "{by}: client {client_no} moved between groups: {seen:?}"
            );
            groups_seen.extend(seen);
        }
        assert_eq!(groups_seen.len(), 2, "{by}: 50 clients all on one group");
    }
}

/// `/status` of the canary route.
async fn canary_status(sy: &Switchyard) -> serde_json::Value {
    let status = sy.status().await;
    status["routes"]["rules"][0]["split"]["canary"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_healthy_canary_is_promoted_through_every_step() {
    let (a, b) = (backend("a", 2).await, backend("b", 2).await);
    // Both groups answer alike, but the p99 of a few dozen requests on a busy machine can
    // differ several-fold between them: the latency bound is set out of reach here (the
    // latency rollback is tested with time passed in, in `policy::canary`), so this test is
    // about the steps and the promotion only.
    let route = "    forward:\n      - {target_group: v1}\n      - {target_group: v2}\n    canary:\n      baseline: v1\n      canary: v2\n      steps: [10, 50, 100]\n      interval: 2s\n      min_requests: 10\n      max_p99_ratio: 1000\n";
    let sy = Switchyard::start(&two_groups(
        &backend_list(&[&a]),
        &backend_list(&[&b]),
        route,
    ))
    .await;
    let load = BackgroundLoad::start(&sy.url("/shop"), 4, Duration::from_millis(5));
    let promoted = eventually(Duration::from_secs(20), || async {
        canary_status(&sy).await["phase"] == "promoted"
    })
    .await;
    let (ok, failed) = load.stop().await;
    let status = canary_status(&sy).await;
    assert!(promoted, "not promoted: {status}");
    let weights: Vec<u64> = status["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, vec![10, 50, 100], "{status}");
    assert!(failed.is_empty() && ok > 100, "{ok} ok, {failed:?}");
    let m = sy.metrics().await;
    assert_eq!(
        metric_sum(&m, "lb_canary_weight", &[("target_group", "v2")]),
        100.0
    );
    assert_eq!(metric_sum(&m, "lb_canary_rollbacks_total", &[]), 0.0);
    // Everything now goes to the canary.
    let after = shares(&load_n(&sy, 40).await);
    assert_eq!(after.get("b").copied(), Some(40), "{after:?}");
}

async fn load_n(sy: &Switchyard, n: usize) -> Vec<Answer> {
    load(&sy.url("/shop"), n, 2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_canary_is_rolled_back_within_its_step() {
    let (a, b) = (backend("a", 2).await, backend("b", 2).await);
    let interval = Duration::from_secs(4);
    let route = "    forward:\n      - {target_group: v1}\n      - {target_group: v2}\n    canary:\n      baseline: v1\n      canary: v2\n      steps: [20, 50, 100]\n      interval: 4s\n      min_requests: 10\n";
    let sy = Switchyard::start(&two_groups(
        &backend_list(&[&a]),
        &backend_list(&[&b]),
        route,
    ))
    .await;
    let load = BackgroundLoad::start(&sy.url("/shop"), 4, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The canary starts failing during its first step (20 %).
    control(
        &b,
        serde_json::json!({"error_rate": 1.0, "error_status": 503}),
    )
    .await;
    let failing_since = Instant::now();
    let rolled_back = eventually(interval, || async {
        canary_status(&sy).await["phase"] == "rolled_back"
    })
    .await;
    let took = failing_since.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let served_after = b.state().requests_served();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed) = load.stop().await;
    let status = canary_status(&sy).await;
    assert!(
        rolled_back,
        "not rolled back within one step ({interval:?}): {status}"
    );
    assert!(
        status["history"].to_string().contains("error rate"),
        "{status}"
    );
    // Bound on what clients saw: at most the canary's 20 % share of the requests of one
    // analysis window. The load sent ok+failed requests over about 1.5 s plus `took`.
    let sent = ok + failed.len() as u64;
    let window_share =
        (0.2 * sent as f64 * interval.as_secs_f64() / (took.as_secs_f64() + 1.0)).ceil() as usize;
    assert!(
        failed.len() <= window_share,
        "{} failed requests (of {sent}), bound {window_share}",
        failed.len()
    );
    assert!(failed.iter().all(|s| *s == 503), "{failed:?}");
    assert_eq!(
        b.state().requests_served(),
        served_after,
        "a rolled-back canary still got requests"
    );
    let m = sy.metrics().await;
    assert_eq!(metric_sum(&m, "lb_canary_rollbacks_total", &[]), 1.0, "{m}");
    assert_eq!(
        metric_sum(&m, "lb_canary_weight", &[("target_group", "v2")]),
        0.0
    );
    assert!(sy.log_text().contains("rolled back"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirrored_requests_reach_the_shadow_and_never_slow_the_client() {
    let primary = backend("primary", 0).await;
    let shadow = backend("shadow", 2000).await;
    let route = "    target_group: v1\n    strip_prefix: true\n    mirror:\n      target_group: v2\n      percent: 100\n      queue: 4\n      concurrency: 2\n      timeout: 5s\n";
    let sy = Switchyard::start(&two_groups(
        &backend_list(&[&primary]),
        &backend_list(&[&shadow]),
        route,
    ))
    .await;
    let c = client(None);
    let started = Instant::now();
    for i in 0..40 {
        let resp = c
            .post(sy.url(&format!("/shop/item/{i}?q=1")))
            .header("x-test", format!("t{i}"))
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-backend"], "primary");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "clients waited for the 2 s shadow: {:?}",
        started.elapsed()
    );
    // The first copies arrived with method, path (prefix stripped), query, headers and body.
    let arrived = eventually(Duration::from_secs(8), || async {
        !shadow.state().recent_requests().is_empty()
    })
    .await;
    assert!(arrived, "no copy reached the shadow");
    let seen = shadow.state().recent_requests();
    let first = &seen[0];
    assert_eq!(first.method, "POST");
    assert!(
        first.target.starts_with("/item/") && first.target.ends_with("?q=1"),
        "{first:?}"
    );
    let header = |name: &str| {
        first
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert!(
        header("x-test").is_some_and(|v| v.starts_with('t')),
        "{first:?}"
    );
    assert_eq!(header("x-switchyard-shadow").as_deref(), Some("1"));
    assert_eq!(first.body_bytes, 5);
    // 40 copies, 2 in flight and 4 queued at most: most were dropped, and counted.
    let m = sy.metrics().await;
    let dropped = metric_sum(&m, "lb_shadow_requests_total", &[("result", "dropped")]);
    assert!(dropped >= 20.0, "dropped {dropped}: {m}");
    let done = eventually(Duration::from_secs(12), || async {
        metric_sum(
            &sy.metrics().await,
            "lb_shadow_requests_total",
            &[("result", "ok")],
        ) >= 1.0
    })
    .await;
    assert!(done, "no shadow answer counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn injected_aborts_hit_their_share_and_only_requests_with_the_header() {
    let (a, b) = (backend("a", 0).await, backend("b", 0).await);
    let route = "    target_group: v1\n    fault:\n      abort: {percent: 20, status: 503}\n";
    let sy = Switchyard::start(&two_groups(
        &backend_list(&[&a]),
        &backend_list(&[&b]),
        route,
    ))
    .await;
    let answers = load(&sy.url("/shop"), 5000, 16).await;
    let st = statuses(&answers);
    let aborted = st.get(&503).copied().unwrap_or(0) as f64 / 5000.0;
    assert!((0.17..=0.23).contains(&aborted), "{st:?}");
    assert_eq!(
        st.get(&200).copied().unwrap_or(0) + st.get(&503).copied().unwrap_or(0),
        5000
    );
    let m = sy.metrics().await;
    let counted = metric_sum(&m, "lb_faults_injected_total", &[("kind", "abort")]);
    assert_eq!(counted as usize, st[&503]);
    assert!(sy.log_text().contains("fault=\"abort 503\""));

    // Header-scoped: requests without the header are never touched.
    let route = "    target_group: v1\n    fault:\n      abort: {percent: 100, status: 500}\n      header: x-chaos\n";
    let sy = Switchyard::start(&two_groups(
        &backend_list(&[&a]),
        &backend_list(&[&b]),
        route,
    ))
    .await;
    let c = client(None);
    let mut by_header: HashMap<bool, Vec<u16>> = HashMap::new();
    for i in 0..40 {
        let with = i % 2 == 0;
        let mut req = c.get(sy.url("/shop"));
        if with {
            req = req.header("x-chaos", "1");
        }
        by_header
            .entry(with)
            .or_default()
            .push(req.send().await.unwrap().status().as_u16());
    }
    assert!(by_header[&true].iter().all(|s| *s == 500), "{by_header:?}");
    assert!(by_header[&false].iter().all(|s| *s == 200), "{by_header:?}");
}
