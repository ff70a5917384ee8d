//! Active health checks: a backend made unhealthy stops receiving traffic after its
//! thresholds and comes back when healthy; a fully unhealthy group fails open.

mod support;
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
            "fail_open={fail_open}: unexpected answers; log:\n{}",
            sy.log_text()
        );
    }
}
