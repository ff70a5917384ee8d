//! The proxy's memory after a burst: what it keeps for reuse goes back to the system once the
//! last client connection closes, so the resident set falls back towards where it started.

use crate::support;
use std::time::Duration;

use support::*;

/// The process's resident set now, in kB.
fn resident_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The most the process's resident set has been, in kB.
fn peak_resident_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// A kB value of `/proc/<pid>/status`, by its field name with the colon.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in kB"))
}

/// Five hundred connections at once, their requests all in flight together (the backend waits
/// 200 ms), each answered, then all closed: a third of a second later (no other activity: no
/// health checks), the resident set keeps at most a third of what the burst added at its peak.
/// The proxy runs four worker threads, and each keeps the memory it freed in its own heap, so
/// every one of them must hand it back, not only the one that closed the last connection. On
/// the test's debug build, of a burst of 11–14 MB on Switchyard's own HTTP/1 path: 18–23 %
/// kept when every thread hands it back, 42–59 % when only that one does (Pingora's loop:
/// 15–19 % of 18–20 MB). Not all of it: the upstream connections the burst opened stay in the
/// keep-alive pool, and pages that keep a block still in use stay resident (2–3 MB, whatever
/// the burst's size: with 300 connections the own path kept 26–31 %). The peak is the high-water mark: the resident set
/// read once the answers are in varies with how much the threads already gave back by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_taken_by_a_burst_goes_back_when_the_last_connection_closes() {
    burst_then_idle("").await;
}

/// The same with `work_stealing: false`, where each of the four worker threads runs a runtime
/// of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_goes_back_from_every_thread_without_work_stealing() {
    burst_then_idle("work_stealing: false\n").await;
}

/// Connections in the burst.
const BURST: usize = 500;

async fn burst_then_idle(server_keys: &str) {
    use tokio::io::AsyncWriteExt;
    let b = backend("a", 200).await;
    // The harness's header, with four worker threads instead of two; `dir` holds its pid file
    // and upgrade socket, and outlives the process.
    let dir = TempDir::new();
    let header =
        pingora_header(&dir).replace("threads: 2\n", &format!("threads: 4\n{server_keys}"));
    assert!(
        header.contains("threads: 4"),
        "the harness header names its threads"
    );
    let body = single_group("", "", &backend_list(&[&b]));
    let sy = Switchyard::start_exact(&format!("{header}{body}")).await;
    let warm = load(&sy.url("/"), 20, 2).await;
    assert!(warm.iter().all(|a| a.status == 200));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = resident_kib(sy.pid());

    let mut open = Vec::new();
    for _ in 0..BURST {
        open.push(sy.connect().await);
    }
    for s in &mut open {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
    }
    for s in &mut open {
        let answers = read_responses(s, 1).await;
        assert!(answers
            .first()
            .is_some_and(|a| a.starts_with("HTTP/1.1 200")));
    }
    drop(open);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let after = resident_kib(sy.pid());
    let peak = peak_resident_kib(sy.pid());
    eprintln!("{server_keys}before {before} kB, peak {peak} kB, after {after} kB");

    assert!(
        peak > before + 2048,
        "the burst should take some memory: before {before} kB, peak {peak} kB"
    );
    assert!(
        after <= before + (peak - before) / 3,
        "{server_keys}before {before} kB, peak {peak} kB, after {after} kB"
    );
}

/// Five hundred keep-alive connections, each with one request answered, then idle: each costs
/// the proxy little memory while it waits for its next request. On Switchyard's own HTTP/1
/// path (the default) a connection waits holding its stream and no request state (3.0 KB each
/// on the debug build; 14.2 KB when a request's state was not boxed). On Pingora's loop (the
/// suite's second run) it waits holding only its stream (vendor patch 0018), not the next
/// request's session and boxed request future; the numbers that follow are that loop's.
/// On the test's debug build, per idle connection: 22.4 KB without 0018 (or with the
/// slow-client guard's stream not passing the wait through), 9.3 KB with it, 7.0 KB with 0019,
/// 5.9 KB with 0021 too, 4.4 KB with 0022 too and 2.9 KB with 0023 too; 4.2–4.3 KB with all
/// but 0022 and 4.4 KB with all but 0023, so the limit of 3.5 KB fails without either. The
/// release build: 24.4, 9.0, 6.7, 5.5, 4.2 and 2.5 KB; NGINX 0.6, HAProxy 1.1
/// (`bench/idle-connections.sh`).
#[tokio::test]
async fn idle_keep_alive_connections_hold_little_memory() {
    const CONNECTIONS: u64 = 500;
    let b = backend("a", 0).await;
    let sy = Switchyard::start(&single_group("", "", &backend_list(&[&b]))).await;
    let warm = load(&sy.url("/"), 20, 2).await;
    assert!(warm.iter().all(|a| a.status == 200));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = resident_kib(sy.pid());

    // One connection after the other, each answered before the next opens: what stays is what
    // idle connections hold, not what many requests in flight at once took.
    let mut open = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut s = sy.connect().await;
        assert!(answered_200(&mut s).await);
        open.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = resident_kib(sy.pid());
    let per_connection = per_connection("idle connections", before, held, CONNECTIONS);
    assert!(
        per_connection < 3584,
        "{per_connection} bytes per idle connection (before {before} kB, held {held} kB)"
    );
    // Still served: the next request on an idle connection is answered.
    assert!(answered_200(&mut open[0]).await);
}

/// Whether a `GET /` sent on `s` is answered with a 200.
async fn answered_200(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncWriteExt;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answers = read_responses(s, 1).await;
    answers
        .first()
        .is_some_and(|a| a.starts_with("HTTP/1.1 200"))
}

/// Bytes of resident set per connection that `held` kB adds to `before` kB; printed with them.
fn per_connection(what: &str, before: u64, held: u64, connections: u64) -> u64 {
    let bytes = held.saturating_sub(before) * 1024 / connections;
    eprintln!("{connections} {what}: before {before} kB, held {held} kB, {bytes} bytes each");
    bytes
}

/// The same over TLS: 400 HTTP/1.1 connections over TLS 1.3, each a client of its own with one
/// request answered, then idle. While idle, each waits holding only its TLS stream: rustls's
/// readiness comes from whether it holds plaintext not yet read and from the socket (vendor
/// patch 0020). Per idle connection, on the test's debug build: 34.1–34.9 KB without that
/// patch, 19.3–19.6 KB with it, 17.4 KB with 0021 too, 15.9–16.0 KB with 0022 too and
/// 14.3 KB with 0023 too (release build: 34.0, 18.5, 17.3, 16.0 and 14.4 KB; NGINX 17.0–17.1,
/// HAProxy 15.8; `bench/idle-connections.sh --tls`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_tls_keep_alive_connections_hold_little_memory() {
    const CONNECTIONS: u64 = 400;
    let b = backend("a", 0).await;
    let tls = TlsListener::new();
    let sy = Switchyard::start(&format!(
        r#"{}target_groups:
  - name: g
    backends:
{}routes:
  - path_prefix: /
    target_group: g
"#,
        tls.yaml,
        backend_list(&[&b])
    ))
    .await;
    sy.wait_listener(tls.port).await;
    let client = || {
        tls.client()
            .http1_only()
            .pool_idle_timeout(None)
            .build()
            .unwrap()
    };
    let url = tls.url("/");
    let first = client();
    assert_eq!(first.get(&url).send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = resident_kib(sy.pid());

    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let c = client();
        let resp = c.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
        clients.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = resident_kib(sy.pid());
    let per_connection = per_connection("idle TLS connections", before, held, CONNECTIONS);
    assert!(
        per_connection < 27 * 1024,
        "{per_connection} bytes per idle TLS connection (before {before} kB, held {held} kB)"
    );
    // Still served on a kept connection.
    assert_eq!(clients[0].get(&url).send().await.unwrap().status(), 200);
}
