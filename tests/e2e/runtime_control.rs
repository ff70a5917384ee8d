//! Changing a running balancer without a restart: hot reload (`POST /reload`, `SIGHUP`) that
//! keeps what was learned, and the runtime API (drain, weights, add, remove) behind a bearer
//! token — under load, with every response counted.

use crate::support;
use std::time::Duration;

use serde_json::json;
use support::*;

fn backend_json(status: &serde_json::Value, port: u16) -> &serde_json::Value {
    status["target_groups"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| {
            b["address"]
                .as_str()
                .unwrap()
                .ends_with(&format!(":{port}"))
        })
        .unwrap_or(&serde_json::Value::Null)
}

fn ewma_ms(status: &serde_json::Value, port: u16) -> f64 {
    backend_json(status, port)["ewma_ms"].as_f64().unwrap()
}

fn current_config(sy: &Switchyard) -> String {
    std::fs::read_to_string(sy.conf_path()).unwrap()
}

const CHECKS: &str =
    "    health_check:\n      interval: 200ms\n      timeout: 150ms\n      healthy_threshold: 2\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_keeps_what_was_learned_and_fails_no_request() {
    let (a, b) = (backend("fast-a", 5).await, backend("fast-b", 5).await);
    let slow = backend("slow", 120).await;
    let body = format!(
        "listeners:\n  - address: 127.0.0.1:{{PORT}}\ntarget_groups:\n  - name: g\n    strategy: adaptive\n    backends:\n{}{CHECKS}routes:\n  - path_prefix: /app\n    target_group: g\n",
        backend_list(&[&a, &b, &slow])
    );
    let mut sy = Switchyard::start_controlled(&body).await;
    let load = BackgroundLoad::start(&sy.url("/app"), 4, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = ewma_ms(&sy.status().await, slow.addr().port());
    assert!(before > 60.0, "the slow backend was measured: {before} ms");

    // A changed route table through the API.
    let conf = current_config(&sy);
    sy.rewrite_config(&conf.replace(
        "routes:\n",
        "routes:\n  - path_prefix: /new\n    target_group: g\n",
    ));
    let (status, answer) = sy.api("POST", "/reload", None, Some(TOKEN)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["reloaded"]["kept"], json!(["g"]), "{answer}");
    let after = ewma_ms(&sy.status().await, slow.addr().port());
    assert!(
        after > before * 0.8 && after > 60.0,
        "EWMA forgotten: {before} ms before, {after} ms after"
    );
    assert_eq!(get(&client(None), &sy.url("/new")).await.status, 200);

    // The same through SIGHUP, with the group's settings changed (it is rebuilt).
    let conf = current_config(&sy);
    sy.rewrite_config(
        &conf
            .replace(
                "routes:\n",
                "routes:\n  - path_prefix: /newer\n    target_group: g\n",
            )
            .replace("strategy: adaptive", "strategy: p2c"),
    );
    sy.signal("-HUP");
    let applied = eventually(Duration::from_secs(5), || async {
        get(&client(None), &sy.url("/newer")).await.status == 200
    })
    .await;
    assert!(applied, "SIGHUP did not reload:\n{}", sy.log_text());
    let status = sy.status().await;
    assert_eq!(status["target_groups"][0]["strategy"], "p2c");
    let rebuilt = ewma_ms(&status, slow.addr().port());
    assert!(
        rebuilt > 60.0,
        "a rebuilt group forgot its stats: {rebuilt} ms"
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed) = load.stop().await;
    assert!(
        failed.is_empty(),
        "{} failed of {}: {failed:?}",
        failed.len(),
        ok
    );
    assert!(ok > 300, "load too thin: {ok}");
    assert!(sy.wait_exit(Duration::ZERO).await.is_none());
    let m = sy.metrics().await;
    assert_eq!(
        metric_sum(&m, "lb_config_loads_total", &[("result", "success")]),
        3.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_setting_fixed_at_start_is_reported_as_needing_an_upgrade() {
    let a = backend("a", 0).await;
    let sy = Switchyard::start_controlled(&single_group("", CHECKS, &backend_list(&[&a]))).await;
    let conf = current_config(&sy);
    let changed = set_proxy_key(&conf, "header_case", "lowercase");
    reload_leaves_unapplied(&sy, &changed, "proxy.header_case changed").await;
}

/// Reload `sy` from `yaml`: the reload succeeds, says it could not apply `change`, and the
/// proxy keeps serving.
async fn reload_leaves_unapplied(sy: &Switchyard, yaml: &str, change: &str) {
    sy.rewrite_config(yaml);
    let (status, answer) = sy.api("POST", "/reload", None, Some(TOKEN)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["reloaded"]["not_applied"],
        json!([change]),
        "{answer}"
    );
    assert_eq!(get(&client(None), &sy.url("/x")).await.status, 200);
}

/// Which HTTP/1 loop serves the listeners is fixed at start too: a reload names the change
/// and the running loop keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_http1_path_is_reported_as_needing_an_upgrade() {
    let a = backend("a", 0).await;
    let body = single_group("  http1_path: switchyard\n", CHECKS, &backend_list(&[&a]));
    let sy = Switchyard::start_controlled(&body).await;
    let conf = current_config(&sy);
    let changed = conf.replace("http1_path: switchyard", "http1_path: pingora");
    reload_leaves_unapplied(&sy, &changed, "proxy.http1_path changed").await;
    let metrics = sy.metrics().await;
    assert_eq!(metric_sum(&metrics, "lb_http1_handovers_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_file_changes_nothing_and_says_where() {
    let a = backend("a", 0).await;
    let sy = Switchyard::start_controlled(&single_group("", CHECKS, &backend_list(&[&a]))).await;
    let conf = current_config(&sy);
    let broken = conf.replace("  - name: g\n", "  - name: g\n    strategy: nope\n");
    let line = broken
        .lines()
        .position(|l| l.contains("strategy: nope"))
        .unwrap()
        + 1;
    sy.rewrite_config(&broken);
    let (status, answer) = sy.api("POST", "/reload", None, Some(TOKEN)).await;
    assert_eq!(status, 422, "{answer}");
    let errors = answer["errors"].to_string();
    assert!(
        errors.contains(&format!(
            "switchyard.yaml:{line}: target_groups[0].strategy"
        )),
        "{answer}"
    );
    assert_eq!(sy.status().await["config_generation"], 0);
    assert_eq!(get(&client(None), &sy.url("/x")).await.status, 200);
    let m = sy.metrics().await;
    assert_eq!(
        metric_sum(&m, "lb_config_loads_total", &[("result", "failure")]),
        1.0
    );
    assert!(sy.log_text().contains("nothing changed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_under_load_finishes_in_flight_requests_and_stops_new_ones() {
    let a = backend("a", 20).await;
    let b = backend("b", 300).await;
    // Probes must outlast b's 300 ms (it delays its health answers too).
    let checks = "    health_check:\n      interval: 1s\n      timeout: 900ms\n";
    let sy =
        Switchyard::start_controlled(&single_group("", checks, &backend_list(&[&a, &b]))).await;
    let load = BackgroundLoad::start(&sy.url("/x"), 6, Duration::from_millis(2));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let path = format!("/api/groups/g/backends/{}/drain", b.addr());
    let (status, answer) = sy.api("POST", &path, None, Some(TOKEN)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        backend_json(&sy.status().await, b.addr().port())["state"],
        "draining"
    );
    // Requests already sent to b finish; within a second it gets nothing new.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let served = b.state().requests_served();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        b.state().requests_served(),
        served,
        "a drained backend got new requests"
    );
    assert!(
        sy.status().await["target_groups"][0]["drift"]
            .to_string()
            .contains("drained"),
        "drift not shown"
    );
    let undrain = format!("/api/groups/g/backends/{}/undrain", b.addr());
    assert_eq!(sy.api("POST", &undrain, None, Some(TOKEN)).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok, failed) = load.stop().await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 100);
    assert!(
        b.state().requests_served() > served,
        "undrain did not bring it back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weights_added_and_removed_backends_change_the_shares() {
    let (a, b) = (backend("a", 0).await, backend("b", 0).await);
    let sy =
        Switchyard::start_controlled(&single_group("", CHECKS, &backend_list(&[&a, &b]))).await;
    let path = format!("/api/groups/g/backends/{}/weight", b.addr());
    let (status, answer) = sy
        .api("PUT", &path, Some(json!({"weight": 3})), Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{answer}");
    let s = shares(&load(&sy.url("/x"), 400, 1).await);
    let b_share = s.get("b").copied().unwrap_or(0) as f64 / 400.0;
    assert!(
        (0.70..=0.80).contains(&b_share),
        "round robin 1:3 gave b {b_share}: {s:?}"
    );

    // A new backend waits for its health checks, then takes traffic.
    let c = backend("c", 0).await;
    let (status, answer) = sy
        .api(
            "POST",
            "/api/groups/g/backends",
            Some(json!({"address": c.addr().to_string()})),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        backend_json(&sy.status().await, c.addr().port())["state"],
        "initial"
    );
    let joined = eventually(Duration::from_secs(5), || async {
        shares(&load(&sy.url("/x"), 30, 1).await).contains_key("c")
    })
    .await;
    assert!(joined, "the added backend never got traffic");
    // Removing it drains it, then it is gone.
    let slow_request = {
        control(&c, json!({"delay_ms": 1500})).await;
        let url = sy.url("/x");
        tokio::spawn(async move {
            let c = client(None);
            let mut answers = Vec::new();
            for _ in 0..5 {
                answers.push(get(&c, &url).await);
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = format!("/api/groups/g/backends/{}", c.addr());
    assert_eq!(sy.api("DELETE", &path, None, Some(TOKEN)).await.0, 200);
    let state = backend_json(&sy.status().await, c.addr().port())["state"].clone();
    assert!(state == "draining" || state.is_null(), "{state}");
    assert!(slow_request.await.unwrap().iter().all(|a| a.status == 200));
    let gone = eventually(Duration::from_secs(5), || async {
        backend_json(&sy.status().await, c.addr().port()).is_null()
    })
    .await;
    assert!(gone, "the removed backend is still listed");
    assert!(!shares(&load(&sy.url("/x"), 30, 1).await).contains_key("c"));
    let drift = sy.status().await["target_groups"][0]["drift"].to_string();
    assert!(drift.contains("weight 1 → 3"), "{drift}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_need_the_token_and_bad_requests_change_nothing() {
    let (a, b) = (backend("a", 0).await, backend("b", 0).await);
    let sy =
        Switchyard::start_controlled(&single_group("", CHECKS, &backend_list(&[&a, &b]))).await;
    let drain = format!("/api/groups/g/backends/{}/drain", b.addr());
    let weight = format!("/api/groups/g/backends/{}/weight", b.addr());
    let remove = format!("/api/groups/g/backends/{}", b.addr());
    for token in [None, Some("wrong-token-0123456789")] {
        assert_eq!(sy.api("POST", &drain, None, token).await.0, 401);
        assert_eq!(
            sy.api("PUT", &weight, Some(json!({"weight": 5})), token)
                .await
                .0,
            401
        );
        assert_eq!(sy.api("DELETE", &remove, None, token).await.0, 401);
        assert_eq!(sy.api("POST", "/reload", None, token).await.0, 401);
        let add = json!({"address": "127.0.0.1:1"});
        assert_eq!(
            sy.api("POST", "/api/groups/g/backends", Some(add), token)
                .await
                .0,
            401
        );
    }
    // Malformed, unknown and oversized requests: 4xx, nothing half-applied.
    assert_eq!(
        sy.api(
            "PUT",
            &weight,
            Some(json!({"weight": 5, "x": 1})),
            Some(TOKEN)
        )
        .await
        .0,
        400
    );
    assert_eq!(
        sy.api("PUT", &weight, Some(json!({"weight": 0})), Some(TOKEN))
            .await
            .0,
        400
    );
    assert_eq!(
        sy.api(
            "POST",
            "/api/groups/nope/backends/127.0.0.1:1/drain",
            None,
            Some(TOKEN)
        )
        .await
        .0,
        404
    );
    assert_eq!(
        sy.api(
            "POST",
            "/api/groups/g/backends/127.0.0.1:1/drain",
            None,
            Some(TOKEN)
        )
        .await
        .0,
        404
    );
    let big = json!({"address": "127.0.0.1:1", "weight": 1, "pad": "x".repeat(20_000)});
    assert_eq!(
        sy.api("POST", "/api/groups/g/backends", Some(big), Some(TOKEN))
            .await
            .0,
        413
    );
    let status = sy.status().await;
    for port in [a.addr().port(), b.addr().port()] {
        let x = backend_json(&status, port);
        assert_eq!(
            (x["state"].as_str(), x["weight"].as_u64()),
            (Some("active"), Some(1)),
            "{x}"
        );
    }
    assert_eq!(status["target_groups"][0]["drift"], json!([]));
    assert_eq!(shares(&load(&sy.url("/x"), 20, 1).await).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_file_nothing_changes_and_a_public_admin_address_is_refused() {
    let a = backend("a", 0).await;
    let sy = Switchyard::start(&single_group("", "", &backend_list(&[&a]))).await;
    let (status, answer) = sy.api("POST", "/reload", None, Some(TOKEN)).await;
    assert_eq!(status, 403, "{answer}");
    let out = check_config(&format!(
        "listeners:\n  - address: 127.0.0.1:1\nadmin:\n  address: 0.0.0.0:9091\n{}",
        single_group("", "", &backend_list(&[&a]))
            .split_once("target_groups:")
            .map(|(_, t)| format!("target_groups:{t}"))
            .unwrap()
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("admin.address") && stderr.contains("token_file"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_with_unchanged_settings_keeps_its_buckets() {
    let a = backend("a", 0).await;
    let body = format!(
        "listeners:\n  - address: 127.0.0.1:{{PORT}}\ntarget_groups:\n  - name: g\n    backends:\n{}routes:\n  - path_prefix: /\n    target_group: g\n    rate_limit:\n      rate: 0.2\n      burst: 3\n",
        backend_list(&[&a])
    );
    let sy = Switchyard::start_controlled(&body).await;
    let c = client(None);
    let statuses: Vec<u16> = futures_statuses(&c, &sy.url("/x"), 4).await;
    assert_eq!(statuses, vec![200, 200, 200, 429]);
    // An unrelated change: the bucket stays empty.
    let conf = current_config(&sy);
    sy.rewrite_config(&conf.replace(
        "routes:\n",
        "routes:\n  - path: /other\n    fixed_response: {status: 204}\n",
    ));
    assert_eq!(sy.api("POST", "/reload", None, Some(TOKEN)).await.0, 200);
    assert_eq!(
        get(&c, &sy.url("/x")).await.status,
        429,
        "the bucket was refilled by a reload"
    );
    // New settings: a new bucket.
    let conf = current_config(&sy);
    sy.rewrite_config(&conf.replace("burst: 3", "burst: 5"));
    assert_eq!(sy.api("POST", "/reload", None, Some(TOKEN)).await.0, 200);
    assert_eq!(get(&c, &sy.url("/x")).await.status, 200);
}

async fn futures_statuses(c: &reqwest::Client, url: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(c, url).await.status);
    }
    out
}
