//! Selection strategies end to end: real demo backends with different latencies, a real
//! switchyard, bounded concurrent load, and assertions on which backend answered.

use crate::support;
use std::net::IpAddr;
use std::time::Duration;

use backend_server::{Behaviour, RunningBackend};
use support::*;

fn one_group(strategy: &str, backends: &[&RunningBackend], extra: &str) -> String {
    let settings = format!(
        "    strategy: {strategy}\n    health_check:\n      interval: 200ms\n      timeout: 190ms\n      healthy_threshold: 1\n      unhealthy_threshold: 2\n{extra}"
    );
    single_group(
        "  decision_headers: true\n",
        &settings,
        &backend_list(backends),
    )
}

fn count(s: &std::collections::HashMap<String, usize>, name: &str) -> usize {
    s.get(name).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_conn_sends_clearly_fewer_requests_to_a_slow_backend() {
    let (a, b, slow) = (
        backend("fast-a", 5).await,
        backend("fast-b", 5).await,
        backend("slow", 200).await,
    );
    let sy = Switchyard::start(&one_group("least_conn", &[&a, &b, &slow], "")).await;
    let answers = load(&sy.url("/"), 400, 8).await;
    assert!(answers.iter().all(|x| x.status == 200));
    let s = shares(&answers);
    let fewest_fast = count(&s, "fast-a").min(count(&s, "fast-b"));
    assert!(count(&s, "slow") * 3 < fewest_fast, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adaptive_keeps_a_slow_backend_under_ten_percent() {
    let (a, b, slow) = (
        backend("fast-a", 5).await,
        backend("fast-b", 5).await,
        backend("slow", 100).await,
    );
    let sy = Switchyard::start(&one_group("adaptive", &[&a, &b, &slow], "")).await;
    let answers = load(&sy.url("/"), 600, 6).await;
    assert!(answers.iter().all(|x| x.status == 200));
    let s = shares(&answers);
    assert!(count(&s, "slow") * 10 < 600, "{s:?}");
    assert!(
        count(&s, "fast-a") > 100 && count(&s, "fast-b") > 100,
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adaptive_shifts_traffic_away_from_a_backend_that_turns_slow() {
    let (a, b, c) = (
        backend("a", 5).await,
        backend("b", 5).await,
        backend("c", 5).await,
    );
    let sy = Switchyard::start(&one_group("adaptive", &[&a, &b, &c], "")).await;
    let before = shares(&load(&sy.url("/"), 300, 6).await);
    assert!(
        count(&before, "a") > 50,
        "a served its share before: {before:?}"
    );

    control(&a, serde_json::json!({"delay_ms": 150})).await;
    // Within a few seconds (here: the next few hundred requests) traffic leaves `a`.
    let _settling = load(&sy.url("/"), 100, 6).await;
    let after = shares(&load(&sy.url("/"), 300, 6).await);
    assert!(count(&after, "a") * 10 < 300, "a still got {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adaptive_does_not_reward_fast_503s() {
    let (a, b) = (backend("a", 20).await, backend("b", 20).await);
    let failing = backend_with(
        "fails-fast",
        Behaviour {
            error_rate: 1.0,
            error_status: 503,
            ..Behaviour::default()
        },
    )
    .await;
    // Passive ejection off: the failure penalty alone must keep the fast 503s away.
    let sy = Switchyard::start(&one_group(
        "adaptive",
        &[&a, &b, &failing],
        "    passive_health:
      enabled: false
",
    ))
    .await;
    let answers = load(&sy.url("/"), 300, 4).await;
    let s = shares(&answers);
    assert!(
        count(&s, "fails-fast") * 20 < 300,
        "the failing backend attracted {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p2c_prefers_fast_backends() {
    let (a, b, slow) = (
        backend("fast-a", 5).await,
        backend("fast-b", 5).await,
        backend("slow", 100).await,
    );
    let sy = Switchyard::start(&one_group("p2c", &[&a, &b, &slow], "")).await;
    let s = shares(&load(&sy.url("/"), 400, 6).await);
    assert!(count(&s, "slow") * 5 < 400, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fastest_follows_the_probe_latency() {
    let (a, b, c) = (
        backend("a", 30).await,
        backend("b", 2).await,
        backend("c", 60).await,
    );
    let sy = Switchyard::start(&one_group("fastest", &[&a, &b, &c], "")).await;
    let majority = |name: &'static str| {
        let url = sy.url("/");
        async move {
            let s = shares(&load(&url, 20, 1).await);
            count(&s, name) >= 18
        }
    };
    assert!(
        eventually(Duration::from_secs(5), || majority("b")).await,
        "b (2 ms) never became the fastest"
    );
    control(&b, serde_json::json!({"delay_ms": 120})).await;
    assert!(
        eventually(Duration::from_secs(5), || majority("a")).await,
        "traffic did not move to a (30 ms) after b slowed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sticky_clients_keep_their_backend_and_only_a_removed_backends_clients_move() {
    let b = [
        backend("a", 0).await,
        backend("b", 0).await,
        backend("c", 0).await,
    ];
    let sy = Switchyard::start(&one_group("sticky", &[&b[0], &b[1], &b[2]], "")).await;
    let clients: Vec<IpAddr> = (2..=17).map(|i| IpAddr::from([127, 0, 0, i])).collect();
    let mut owner = std::collections::HashMap::new();
    for ip in &clients {
        let c = client(Some(*ip));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..8 {
            seen.insert(get(&c, &sy.url("/")).await.backend.unwrap());
        }
        assert_eq!(seen.len(), 1, "client {ip} was spread over {seen:?}");
        owner.insert(*ip, seen.into_iter().next().unwrap());
    }
    let used: std::collections::HashSet<_> = owner.values().cloned().collect();
    assert!(used.len() >= 2, "16 clients all hashed to {used:?}");

    // Take the backend with the most clients out of service.
    let victim = used
        .iter()
        .max_by_key(|n| owner.values().filter(|o| o == n).count())
        .unwrap()
        .clone();
    let victim_backend = b.iter().find(|x| x.state().name() == victim).unwrap();
    control(victim_backend, serde_json::json!({"healthy": false})).await;
    let probe_ip = *owner.iter().find(|(_, o)| **o == victim).unwrap().0;
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(&client(Some(probe_ip)), &sy.url("/"))
                .await
                .backend
                .as_deref()
                != Some(victim.as_str())
        })
        .await
    );
    for ip in &clients {
        let now = get(&client(Some(*ip)), &sy.url("/")).await.backend.unwrap();
        if owner[ip] == victim {
            assert_ne!(now, victim, "client {ip} still on the removed backend");
        } else {
            assert_eq!(
                now, owner[ip],
                "client {ip} moved although its backend stayed"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sticky_lb_cookie_pins_a_client() {
    let b = [
        backend("a", 0).await,
        backend("b", 0).await,
        backend("c", 0).await,
    ];
    let extra = "    sticky:\n      lb_cookie:\n        name: SY\n        max_age: 1h\n";
    let sy = Switchyard::start(&one_group("sticky", &[&b[0], &b[1], &b[2]], extra)).await;
    let c = client(None);
    let first = c.get(sy.url("/")).send().await.unwrap();
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("SY=") && cookie.contains("Max-Age=3600"),
        "{cookie}"
    );
    let pinned = first.headers()["x-backend"].to_str().unwrap().to_string();
    let pair = cookie.split(';').next().unwrap().to_string();
    for _ in 0..20 {
        let r = c
            .get(sy.url("/"))
            .header("cookie", &pair)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-backend"], pinned.as_str());
        assert!(
            r.headers().get("set-cookie").is_none(),
            "a valid cookie is not re-issued"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inflight_counts_return_to_zero_after_aborts_and_errors() {
    let slow = backend("slow", 300).await;
    let flaky = backend_with(
        "flaky",
        Behaviour {
            delay_ms: 5,
            error_rate: 0.5,
            error_status: 502,
            ..Behaviour::default()
        },
    )
    .await;
    let doomed = backend("doomed", 50).await;
    let sy = Switchyard::start(&one_group(
        "least_conn",
        &[&slow, &flaky, &doomed],
        "    passive_health:\n      enabled: false\n",
    ))
    .await;

    // Clients that give up after 50 ms (aborts), upstream 502s, and a backend killed mid-run.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (c, url) = (impatient.clone(), sy.url("/"));
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let _ = c.get(&url).send().await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    doomed.kill();
    for t in tasks {
        t.await.unwrap();
    }
    // Nothing is left counted in flight once the abandoned upstream requests have finished
    // (the status is read when it shows none, or after 5 s): the status page says 0 for every
    // backend, and each sequential request's decision (made before it is counted) sees
    // nothing in flight.
    let status = sy.status_settled().await;
    for b in status["target_groups"][0]["backends"].as_array().unwrap() {
        assert_eq!(b["inflight"], 0, "leaked in-flight count: {b}");
    }
    let c = client(None);
    let mut checked = 0;
    for _ in 0..20 {
        let a = get(&c, &sy.url("/")).await;
        if let Some(decision) = a
            .headers
            .get("x-switchyard-decision")
            .and_then(|v| v.to_str().ok())
        {
            assert!(
                decision.contains("inflight=0;"),
                "leaked in-flight count: {decision}"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 15,
        "only {checked} answers carried a decision header"
    );
}
