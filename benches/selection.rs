//! Cost of one backend selection per strategy at 3, 100 and 10 000 backends, through the
//! same path the proxy uses (`TargetGroup::pick`: strategy iterator + health + ejection).
//!
//! Run: `cargo bench --bench selection`. Results: `bench/selection.md`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use switchyard::metrics::Metrics;
use switchyard::selection::stats::StatsRegistry;
use switchyard::selection::StrategyKind;
use switchyard::target_group::TargetGroup;

/// A group of `n` static backends, built from YAML by the same parser and validation as a real
/// configuration. Nothing is contacted: health checks are off, except for `fastest`, which
/// needs them; their probes never run here and results are recorded by hand below.
fn group(strategy: StrategyKind, n: usize) -> TargetGroup {
    let backends: String = (0..n)
        .map(|i| {
            format!(
                "      - address: 10.{}.{}.{}:8080\n",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            )
        })
        .collect();
    let checks = strategy == StrategyKind::Fastest;
    let yaml = format!(
        "version: 1\nlisteners:\n  - address: 127.0.0.1:8080\ntarget_groups:\n  - name: bench\n    strategy: {}\n    health_check:\n      enabled: {checks}\n    backends:\n{backends}routes:\n  - path_prefix: /\n    target_group: bench\n",
        strategy.name()
    );
    let mut config = switchyard::config::parse(&yaml, "bench.yaml").expect("bench configuration");
    let config = config.target_groups.remove(0);
    let registry = Arc::new(StatsRegistry::new(config.latency));
    let g = TargetGroup::new(config, registry, None, Metrics::new(false)).expect("group");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(g.refresh())
        .unwrap();
    // Give every backend a latency and a probe, so the scores differ.
    let now = Instant::now();
    for (i, s) in g.registry.all().iter().enumerate() {
        let latency = Duration::from_millis(1 + (i % 50) as u64);
        s.record_success(latency, now);
        s.record_probe(latency, true, 1, 1);
    }
    g.registry.probe_recorded();
    assert!(
        g.pick(b"client", &[], Instant::now(), false).is_some(),
        "{strategy:?}: no backend is ready"
    );
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
                    black_box(g.pick(&key, &[], Instant::now(), false).map(|p| p.addr))
                })
            });
        }
    }
    bench.finish();
}

criterion_group!(benches, selection);
criterion_main!(benches);
