//! Path routing to target groups, the status route, 404, prefix stripping and forwarded
//! headers, through a real switchyard process and real demo backends.

use crate::support;
use support::*;

async fn two_clusters() -> (Switchyard, Vec<backend_server::RunningBackend>) {
    let c1 = [
        backend("c1-a", 0).await,
        backend("c1-b", 0).await,
        backend("c1-c", 0).await,
    ];
    let c2 = [backend("c2-a", 0).await, backend("c2-b", 0).await];
    let body = format!(
        r#"
listeners:
  - address: 127.0.0.1:{{PORT}}
target_groups:
  - name: cluster1
    backends:
{}
  - name: cluster2
    backends:
{}
  - name: api
    backends:
{}
routes:
  - path_prefix: /cluster1
    target_group: cluster1
  - path_prefix: /cluster2
    target_group: cluster2
  - path_prefix: /api
    target_group: api
    strip_prefix: true
  - path: /
    status_page: true
  - path: /teapot
    fixed_response:
      status: 418
      body: short and stout
"#,
        backend_list(&[&c1[0], &c1[1], &c1[2]]),
        backend_list(&[&c2[0], &c2[1]]),
        backend_list(&[&c2[0]]),
    );
    let sy = Switchyard::start(&body).await;
    let mut all = Vec::from(c1);
    all.extend(c2);
    (sy, all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_path_reaches_only_its_own_group() {
    let (sy, _backends) = two_clusters().await;
    let c1 = load(&sy.url("/cluster1"), 60, 4).await;
    let c2 = load(&sy.url("/cluster2/deeper/path?x=1"), 60, 4).await;
    assert!(
        c1.iter()
            .all(|a| a.status == 200 && a.backend.as_deref().unwrap().starts_with("c1-")),
        "{:?}",
        shares(&c1)
    );
    assert!(
        c2.iter()
            .all(|a| a.status == 200 && a.backend.as_deref().unwrap().starts_with("c2-")),
        "{:?}",
        shares(&c2)
    );
    assert_eq!(shares(&c1).len(), 3);
    assert_eq!(shares(&c2).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unmatched_paths_get_404_and_root_gets_the_status_page() {
    let (sy, _backends) = two_clusters().await;
    let c = client(None);
    let miss = c.get(sy.url("/cluster10")).send().await.unwrap();
    assert_eq!(miss.status(), 404);
    assert!(miss.text().await.unwrap().contains("no route"));
    let root = c.get(sy.url("/")).send().await.unwrap();
    assert_eq!(root.status(), 200);
    let status: serde_json::Value = root.json().await.unwrap();
    assert_eq!(status["status"], "ok");
    assert_eq!(status["groups"][0]["name"], "cluster1");
    assert_eq!(status["groups"][0]["healthy"], 3);
    let teapot = c.get(sy.url("/teapot")).send().await.unwrap();
    assert_eq!(teapot.status(), 418);
    assert_eq!(teapot.text().await.unwrap(), "short and stout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefix_is_stripped_and_forwarded_headers_are_set() {
    let (sy, _backends) = two_clusters().await;
    let c = client(None);
    let resp = c
        .get(sy.url("/api/v1/items?id=7"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("host", "shop.example")
        // A client's own claims are replaced, not passed on.
        .header("X-Forwarded-Proto", "https")
        .header("x-forwarded-host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["via"], "1.1 switchyard");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["path"], "/v1/items");
    assert_eq!(body["query"], "id=7");
    assert_eq!(body["forwarded_for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(body["forwarded_proto"], "http");
    assert_eq!(body["forwarded_host"], "shop.example");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_requests_get_4xx_and_the_proxy_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (sy, backends) = two_clusters().await;
    let before: u64 = backends.iter().map(|b| b.state().requests_served()).sum();
    for raw in [
        "GET /cluster1/../cluster2 HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /cluster1/%2e%2e/cluster2 HTTP/1.1\r\nHost: x\r\n\r\n",
        "BLAH\r\n\r\n",
    ] {
        let mut s = sy.connect().await;
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 256];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(
            head.is_empty() || head.starts_with("HTTP/1.1 4"),
            "{raw:?} got {head:?}"
        );
    }
    let after: u64 = backends.iter().map(|b| b.state().requests_served()).sum();
    assert_eq!(before, after, "no malformed request reached a backend");
    assert_eq!(get(&client(None), &sy.url("/cluster1")).await.status, 200);
}
