//! Round robin spreads evenly and honours weights.

use crate::support;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_backends_share_300_requests_within_ten_percent() {
    let b = [
        backend("a", 0).await,
        backend("b", 0).await,
        backend("c", 0).await,
    ];
    let sy = Switchyard::start(&single_group(
        "",
        "    strategy: round_robin\n",
        &backend_list(&[&b[0], &b[1], &b[2]]),
    ))
    .await;
    let answers = load(&sy.url("/x"), 300, 6).await;
    assert!(answers.iter().all(|a| a.status == 200));
    let s = shares(&answers);
    for name in ["a", "b", "c"] {
        let n = s.get(name).copied().unwrap_or(0);
        assert!((90..=110).contains(&n), "{name} got {n}: {s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weights_are_honoured() {
    let heavy = backend("heavy", 0).await;
    let light = backend("light", 0).await;
    let sy = Switchyard::start(&format!(
        "listeners:\n  - address: 127.0.0.1:{{PORT}}\ntarget_groups:\n  - name: g\n    backends:\n      - address: {}\n        weight: 3\n      - address: {}\n        weight: 1\nroutes:\n  - path_prefix: /\n    target_group: g\n",
        heavy.addr(),
        light.addr()
    ))
    .await;
    let answers = load(&sy.url("/"), 400, 4).await;
    let s = shares(&answers);
    let (h, l) = (
        s.get("heavy").copied().unwrap_or(0),
        s.get("light").copied().unwrap_or(0),
    );
    assert_eq!(h + l, 400, "{s:?}");
    assert!((270..=330).contains(&h), "3:1 weights gave {s:?}");
}
