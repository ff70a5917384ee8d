//! Killing a backend under load costs clients nothing for GET requests: connect failures
//! and dropped connections are retried on another backend, and the dead one is excluded.

use crate::support;
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_backend_costs_no_failed_gets_and_is_excluded() {
    let a = backend("a", 2).await;
    let b = backend("b", 2).await;
    let c = backend("c", 2).await;
    let sy = Switchyard::start(&format!(
        r#"
listeners:
  - address: 127.0.0.1:{{PORT}}
target_groups:
  - name: g
    backends:
{}    health_check:
      interval: 300ms
      timeout: 200ms
    max_retries: 2
routes:
  - path_prefix: /
    target_group: g
"#,
        backend_list(&[&a, &b, &c])
    ))
    .await;

    let url = sy.url("/work");
    let load_task = tokio::spawn(async move { load(&url, 1500, 8).await });
    // Let the load run, then kill b mid-flight (its open connections are dropped).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let served_before_kill = b.state().requests_served();
    b.kill();
    let answers = load_task.await.unwrap();

    let st = statuses(&answers);
    assert_eq!(answers.len(), 1500);
    assert_eq!(st.get(&200).copied().unwrap_or(0), 1500, "statuses {st:?}");
    assert!(served_before_kill > 0, "b was serving before the kill");

    // Afterwards b gets nothing and nothing fails.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = load(&sy.url("/work"), 200, 4).await;
    assert!(after.iter().all(|a| a.status == 200));
    assert!(!shares(&after).contains_key("b"), "{:?}", shares(&after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_backend_is_retried_elsewhere_from_the_first_request() {
    // One address with nothing listening: every request that picks it must be retried.
    let dead = free_port();
    let a = backend("a", 0).await;
    let backends = format!("      - address: 127.0.0.1:{dead}\n{}", backend_list(&[&a]));
    let sy = Switchyard::start(&single_group(
        "",
        "    health_check:\n      enabled: false\n",
        &backends,
    ))
    .await;
    let answers = load(&sy.url("/"), 100, 4).await;
    assert_eq!(
        statuses(&answers).get(&200),
        Some(&100),
        "{:?}",
        statuses(&answers)
    );
}
