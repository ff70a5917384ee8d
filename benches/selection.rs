//! Cost of one backend selection per strategy at 3, 100 and 10 000 backends, through the
//! same path the proxy uses (`TargetGroup::pick`: strategy iterator + health + ejection).
//!
//! Run: `cargo bench --bench selection`. Results: `bench/selection.md`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use switchyard::config::*;
use switchyard::selection::stats::Outcome;
use switchyard::selection::StrategyKind;
use switchyard::target_group::TargetGroup;

fn group(strategy: StrategyKind, n: usize) -> TargetGroup {
    let backends = (0..n)
        .map(|i| BackendSpec {
            address: SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 8080)),
            weight: 1,
        })
        .collect();
    let config = TargetGroupConfig {
        name: "bench".into(),
        strategy,
        backends,
        ec2: None,
        deregistration_delay: Duration::from_secs(300),
        health_check: HealthCheckSettings {
            enabled: false,
            path: "/health".into(),
            host: None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            expected_status: StatusRanges(vec![(200, 399)]),
        },
        passive: PassiveSettings {
            enabled: true,
            max_failures: 5,
            ejection_time: Duration::from_secs(30),
        },
        fail_open: true,
        timeouts: UpstreamTimeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(1),
            write: Duration::from_secs(1),
            idle: Duration::from_secs(1),
        },
        max_retries: 2,
        latency: LatencySettings::default(),
        sticky: StickySettings::default(),
        shed: None,
    };
    let g = TargetGroup::new(config, None);
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(g.refresh())
        .unwrap();
    // Give every backend a latency and a probe, so the scores differ.
    let now = Instant::now();
    for (i, s) in g.registry.all().iter().enumerate() {
        let ms = 1 + (i % 50) as u64;
        s.record(
            Outcome::Success(Duration::from_millis(ms)),
            now,
            &g.config.passive,
        );
        g.registry
            .record_probe(&s.addr(), Duration::from_millis(ms), true);
    }
    g
}

fn selection(c: &mut Criterion) {
    let strategies = [
        StrategyKind::RoundRobin,
        StrategyKind::LeastConn,
        StrategyKind::Sticky,
        StrategyKind::Adaptive,
        StrategyKind::P2c,
        StrategyKind::Fastest,
    ];
    let mut bench = c.benchmark_group("select");
    bench
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    for strategy in strategies {
        for n in [3usize, 100, 10_000] {
            let g = group(strategy, n);
            let mut client = 0u32;
            bench.bench_with_input(BenchmarkId::new(strategy.name(), n), &n, |b, _| {
                b.iter(|| {
                    client = client.wrapping_add(1);
                    let key = client.to_be_bytes();
                    black_box(g.pick(&key, &[], Instant::now()).map(|p| p.addr))
                })
            });
        }
    }
    bench.finish();
}

criterion_group!(benches, selection);
criterion_main!(benches);
