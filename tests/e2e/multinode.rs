//! Several nodes acting as one load balancer: rate limits shared through a real Redis
//! (`redis-server`, started here), a local fallback when Redis is down, stickiness that agrees
//! on every node, and nodes that do not depend on each other.

use crate::support;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use support::*;

fn limited(backends: &str, limit: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:{{PORT}}\ntarget_groups:\n  - name: g\n    backends:\n{backends}routes:\n  - path_prefix: /\n    target_group: g\n    rate_limit:\n{limit}"
    )
}

async fn fallback(sy: &Switchyard) -> f64 {
    metric_sum(&sy.metrics().await, "lb_rate_limit_store_fallback", &[])
}

/// Offer traffic to every node for `window` (well above the limit); the 200s in total.
async fn accepted(nodes: &[Switchyard], window: Duration) -> (usize, Vec<u16>) {
    let loads: Vec<_> = nodes
        .iter()
        .map(|n| BackgroundLoad::start(&n.url("/x"), 2, Duration::from_millis(8)))
        .collect();
    tokio::time::sleep(window).await;
    let mut ok = 0;
    let mut others = Vec::new();
    for l in loads {
        let (o, f) = l.stop().await;
        ok += o as usize;
        others.extend(f);
    }
    (ok, others)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_sharing_redis_let_through_the_rate_once() {
    let a = backend("a", 0).await;
    let redis = Redis::start().await;
    let (rate, burst) = (40.0, 20.0);
    // expected_nodes 1: were the nodes deciding alone, they would let through 3 × the rate.
    let shared = format!(
        "      rate: {rate}\n      burst: {burst}\n      key: global\n      store: {}\n      expected_nodes: 1\n",
        redis.url()
    );
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Switchyard::start(&limited(&backend_list(&[&a]), &shared)).await);
    }
    for n in &nodes {
        assert!(
            eventually(Duration::from_secs(5), || async {
                fallback(n).await == 0.0
            })
            .await
        );
    }
    let window = Duration::from_secs(6);
    let started = Instant::now();
    let (ok, others) = accepted(&nodes, window).await;
    let elapsed = started.elapsed().as_secs_f64();
    assert!(others.iter().all(|s| *s == 429), "{others:?}");
    let rate_seen = (ok as f64 - burst) / elapsed;
    assert!(
        (rate * 0.9..=rate * 1.1).contains(&rate_seen),
        "{ok} accepted in {elapsed:.1} s: {rate_seen:.1}/s for a shared limit of {rate}/s"
    );

    // Without a store each node enforces the limit on its own: about three times as much.
    let local = format!("      rate: {rate}\n      burst: {burst}\n      key: global\n");
    drop(nodes);
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Switchyard::start(&limited(&backend_list(&[&a]), &local)).await);
    }
    let started = Instant::now();
    let (ok, _) = accepted(&nodes, window).await;
    let per_node = (ok as f64 / 3.0 - burst) / started.elapsed().as_secs_f64();
    assert!(
        (rate * 0.85..=rate * 1.15).contains(&per_node),
        "{per_node:.1}/s per node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_redis_costs_no_request_and_nodes_return_to_it() {
    let a = backend("a", 0).await;
    let mut redis = Redis::start().await;
    let shared = format!(
        "      rate: 200\n      burst: 100\n      key: global\n      store: {}\n      store_timeout: 50ms\n      expected_nodes: 2\n",
        redis.url()
    );
    let nodes = [
        Switchyard::start(&limited(&backend_list(&[&a]), &shared)).await,
        Switchyard::start(&limited(&backend_list(&[&a]), &shared)).await,
    ];
    for n in &nodes {
        assert!(
            eventually(Duration::from_secs(5), || async {
                fallback(n).await == 0.0
            })
            .await
        );
    }
    let loads: Vec<_> = nodes
        .iter()
        .map(|n| BackgroundLoad::start(&n.url("/x"), 2, Duration::from_millis(5)))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();
    for n in &nodes {
        let fell_back = eventually(Duration::from_secs(3), || async {
            fallback(n).await == 1.0
        })
        .await;
        assert!(fell_back, "no fallback:\n{}", n.log_text());
        let m = n.metrics().await;
        assert!(
            metric_sum(&m, "lb_rate_limit_store_errors_total", &[]) >= 1.0,
            "{m}"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart().await;
    for n in &nodes {
        let back = eventually(Duration::from_secs(6), || async {
            fallback(n).await == 0.0
        })
        .await;
        assert!(back, "never returned to Redis:\n{}", n.log_text());
    }
    let mut served = 0;
    for l in loads {
        let (ok, others) = l.stop().await;
        served += ok;
        assert!(
            others.iter().all(|s| *s == 429),
            "requests failed: {others:?}"
        );
    }
    assert!(served > 200, "{served}");
    for n in &nodes {
        let log = n.log_text();
        assert_eq!(
            log.matches("limits fall back to local buckets").count(),
            1,
            "{log}"
        );
        assert!(log.contains("limits are shared again"), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_costs_the_other_nodes_nothing() {
    let (a, b) = (backend("a", 1).await, backend("b", 1).await);
    let body = single_group("", "", &backend_list(&[&a, &b]));
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Switchyard::start(&body).await);
    }
    let loads: Vec<_> = nodes
        .iter()
        .map(|n| BackgroundLoad::start(&n.url("/x"), 2, Duration::from_millis(2)))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    nodes[2].signal("-KILL");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut results = Vec::new();
    for l in loads {
        results.push(l.stop().await);
    }
    for (i, (ok, failed)) in results.iter().take(2).enumerate() {
        assert!(
            failed.is_empty() && *ok > 100,
            "node {i}: {ok} ok, failed {failed:?}"
        );
    }
    assert!(!results[2].1.is_empty(), "the killed node kept answering");
}

/// Which backend each client address gets from `node` (one request per client).
async fn mapping(node: &Switchyard, clients: &[IpAddr]) -> Vec<String> {
    let mut out = Vec::new();
    for ip in clients {
        let a = get(&client(Some(*ip)), &node.url("/x")).await;
        out.push(a.backend.unwrap_or_default());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sticky_clients_get_the_same_backend_from_every_node() {
    let backends = [
        backend("a", 0).await,
        backend("b", 0).await,
        backend("c", 0).await,
        backend("d", 0).await,
    ];
    let list = backend_list(&backends.iter().collect::<Vec<_>>());
    let body = single_group(
        "",
        "    strategy: sticky\n    health_check:\n      interval: 200ms\n      timeout: 150ms\n",
        &list,
    );
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Switchyard::start_controlled(&body).await);
    }
    let clients: Vec<IpAddr> = (1..=200u8)
        .map(|i| format!("127.0.2.{i}").parse().unwrap())
        .collect();
    let first = mapping(&nodes[0], &clients).await;
    for n in &nodes[1..] {
        assert_eq!(mapping(n, &clients).await, first, "nodes disagree");
    }
    let counts = first.iter().fold(HashMap::new(), |mut m, b| {
        *m.entry(b.clone()).or_insert(0) += 1;
        m
    });
    assert_eq!(counts.len(), 4, "{counts:?}");

    // Remove `c` on every node: only its clients move, and they move alike everywhere.
    let path = format!("/api/groups/g/backends/{}", backends[2].addr());
    for n in &nodes {
        assert_eq!(n.api("DELETE", &path, None, Some(TOKEN)).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = mapping(&nodes[0], &clients).await;
    for n in &nodes[1..] {
        assert_eq!(
            mapping(n, &clients).await,
            after,
            "nodes disagree after the removal"
        );
    }
    for (before, now) in first.iter().zip(&after) {
        if before == "c" {
            assert_ne!(now, "c");
        } else {
            assert_eq!(before, now, "a client of another backend moved");
        }
    }
}
