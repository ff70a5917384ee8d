//! The edge: TLS termination with HTTP/2, the HTTP→HTTPS redirect, token-bucket rate limits,
//! overload shedding and request limits, through a real switchyard and real backends.

use crate::support;
use std::time::{Duration, Instant};

use backend_server::RunningBackend;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Send raw bytes and return what came back within 5 s (until close or 64 KiB).
async fn raw(port: u16, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let _ = s.write_all(bytes).await;
    let mut buf = vec![0u8; 65536];
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while got < buf.len() && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf[got..])).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                got += n;
                if String::from_utf8_lossy(&buf[..got]).contains("\r\n\r\n") {
                    break;
                }
            }
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&buf[..got]).to_string()
}

/// Write `chunk` every `every` until the server closes the connection (up to 8 s); returns
/// how long that took, or `None` if it never did.
async fn trickle_until_closed(
    s: &mut tokio::net::TcpStream,
    chunk: &[u8],
    every: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(every).await;
        if s.write_all(chunk).await.is_err() {
            return Some(started.elapsed());
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            // A 408 answer: the connection closes right after.
            Ok(Ok(n)) if String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408") => {
                return Some(started.elapsed())
            }
            _ => {}
        }
    }
    None
}

/// Read one complete response whose body ends with `}` (the demo backend's JSON).
async fn read_json_response(s: &mut tokio::net::TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).trim_end().ends_with('}') {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a response within 5 s")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).to_string()
}

fn served(backends: &[&RunningBackend]) -> u64 {
    backends.iter().map(|b| b.state().requests_served()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_reaches_the_right_backend_over_http2_with_hsts() {
    let a = backend("a", 0).await;
    let b = backend("b", 0).await;
    let tls = TlsListener::new();
    let sy = Switchyard::start(&format!(
        r#"{}proxy:
  hsts:
    max_age: 365d
target_groups:
  - name: one
    backends:
{}  - name: two
    backends:
{}routes:
  - path_prefix: /one
    target_group: one
  - path_prefix: /two
    target_group: two
"#,
        tls.yaml,
        backend_list(&[&a]),
        backend_list(&[&b])
    ))
    .await;
    sy.wait_listener(tls.port).await;
    let tls_client = tls.client().build().unwrap();
    let resp = tls_client.get(tls.url("/two/x")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "HTTP/2 by ALPN");
    assert_eq!(resp.headers()["x-backend"], "b");
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["forwarded_proto"], "https");
    // Plain HTTP on the other listener still works, without HSTS.
    let plain = get(&client(None), &sy.url("/one")).await;
    assert_eq!(plain.backend.as_deref(), Some("a"));
    assert!(plain.headers.get("strict-transport-security").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plain_http_is_redirected_to_https_with_host_path_and_query() {
    let a = backend("a", 0).await;
    let redirect_port = free_port();
    let sy = Switchyard::start(&format!(
        "listeners:\n  - address: 127.0.0.1:{{PORT}}\n  - address: 127.0.0.1:{redirect_port}\n    redirect_https:\n      port: 8443\n      status: 308\ntarget_groups:\n  - name: g\n    backends:\n{}routes:\n  - path_prefix: /\n    target_group: g\n",
        backend_list(&[&a])
    ))
    .await;
    sy.wait_listener(redirect_port).await;
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_follow
        .get(format!(
            "http://127.0.0.1:{redirect_port}/cluster1/a?b=1&c=2"
        ))
        .header("host", "shop.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        "https://shop.example:8443/cluster1/a?b=1&c=2"
    );
    assert_eq!(
        a.state().requests_served(),
        0,
        "a redirect never reaches a backend"
    );
    drop(sy);
}

async fn limited_proxy() -> (Switchyard, RunningBackend) {
    let a = backend("a", 0).await;
    let sy = Switchyard::start(&format!(
        r#"
listeners:
  - address: 127.0.0.1:{{PORT}}
proxy:
  client_ip:
    header: X-Forwarded-For
    trusted_proxies: ["127.0.0.1/32"]
target_groups:
  - name: g
    backends:
{}routes:
  - path_prefix: /limited
    target_group: g
    rate_limit:
      rate: 50
      burst: 10
      key: global
  - path_prefix: /per-client
    target_group: g
    rate_limit:
      rate: 1
      burst: 1
      key: client_ip
      max_keys: 1000
  - path_prefix: /other
    target_group: g
"#,
        backend_list(&[&a])
    ))
    .await;
    (sy, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_gets_the_bucket_and_the_rest_429_with_retry_after() {
    let (sy, _a) = limited_proxy().await;
    let started = Instant::now();
    let answers = load(&sy.url("/limited"), 100, 10).await;
    let elapsed = started.elapsed().as_secs_f64();
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let limited: Vec<_> = answers.iter().filter(|a| a.status == 429).collect();
    // Exactly the burst, plus what refilled while the burst ran.
    let refill = (50.0 * elapsed).ceil() as usize;
    assert!(
        ok >= 10 && ok <= 10 + refill,
        "{ok} allowed in {elapsed:.3} s"
    );
    assert_eq!(ok + limited.len(), 100);
    assert!(limited
        .iter()
        .all(|a| a.headers.get("retry-after").is_some_and(|v| v == "1")));
    // Another route is unaffected.
    let other = load(&sy.url("/other"), 50, 5).await;
    assert!(other.iter().all(|a| a.status == 200));
    let m = sy.metrics().await;
    assert_eq!(
        metric_sum(&m, "lb_rate_limited_total", &[("route", "/limited")]),
        limited.len() as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_client_limits_keep_memory_bounded_over_10000_clients() {
    let (sy, _a) = limited_proxy().await;
    let c = client(None);
    // 10 000 distinct clients, named by the trusted proxy (us) in X-Forwarded-For.
    let mut first_ok = 0;
    for i in 0..10_000u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
        let r = c
            .get(sy.url("/per-client"))
            .header("x-forwarded-for", ip.to_string())
            .send()
            .await
            .unwrap();
        first_ok += (r.status() == 200) as u32;
    }
    assert_eq!(first_ok, 10_000, "every new client has a full bucket");
    // The same client twice in a row is limited.
    let again = c
        .get(sy.url("/per-client"))
        .header("x-forwarded-for", "10.0.39.15")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 429);
    let m = sy.metrics().await;
    let keys = metric_sum(&m, "lb_rate_limit_keys", &[("route", "/per-client")]);
    assert!(keys > 0.0 && keys <= 1000.0 + 16.0, "tracked keys {keys}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saturated_group_sheds_with_503_while_another_keeps_serving() {
    let slow = backend("slow", 1500).await;
    let fast = backend("fast", 0).await;
    let sy = Switchyard::start(&format!(
        r#"
listeners:
  - address: 127.0.0.1:{{PORT}}
target_groups:
  - name: slow
    max_inflight: 2
    queue:
      size: 2
      timeout: 200ms
    backends:
{}  - name: fast
    backends:
{}routes:
  - path_prefix: /slow
    target_group: slow
  - path_prefix: /fast
    target_group: fast
"#,
        backend_list(&[&slow]),
        backend_list(&[&fast])
    ))
    .await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let url = sy.url("/slow");
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let a = get(&client(None), &url).await;
            (a, t.elapsed())
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The other group answers at once while `slow` is saturated.
    let t = Instant::now();
    let fast_answers = load(&sy.url("/fast"), 20, 4).await;
    assert!(fast_answers.iter().all(|a| a.status == 200));
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "fast group slowed to {:?}",
        t.elapsed()
    );
    let mut ok = 0;
    let mut shed = 0;
    for task in tasks {
        let (a, took) = task.await.unwrap();
        match a.status {
            200 => ok += 1,
            503 => {
                shed += 1;
                assert!(
                    took < Duration::from_millis(1000),
                    "a shed request waited {took:?}"
                );
                assert_eq!(
                    a.headers.get("retry-after").map(|v| v.to_str().unwrap()),
                    Some("1")
                );
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(ok, 2, "exactly max_inflight requests were served");
    assert_eq!(shed, 8);
    let m = sy.metrics().await;
    assert_eq!(
        metric_sum(&m, "lb_shed_total", &[("target_group", "slow")]),
        8.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_and_ambiguous_requests_are_refused_before_any_backend() {
    let a = backend("a", 0).await;
    let sy = Switchyard::start(&single_group(
        "  max_header_bytes: 8192\n  max_body_bytes: 1000\n",
        "",
        &backend_list(&[&a]),
    ))
    .await;
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    assert!(raw(sy.port, big_header.as_bytes())
        .await
        .starts_with("HTTP/1.1 431"));
    let big_body = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n";
    assert!(raw(sy.port, big_body.as_bytes())
        .await
        .starts_with("HTTP/1.1 413"));
    let both = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert!(raw(sy.port, both.as_bytes())
        .await
        .starts_with("HTTP/1.1 400"));
    let two_lengths =
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello";
    let answer = raw(sy.port, two_lengths.as_bytes()).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer:?}"
    );
    let obfuscated_te =
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n";
    let answer = raw(sy.port, obfuscated_te.as_bytes()).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer:?}"
    );
    // HTTP/1.1 without Host is refused (RFC 9112 3.2); HTTP/1.0 without it is served below.
    let no_host = raw(sy.port, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(no_host.starts_with("HTTP/1.1 400"), "{no_host:?}");
    // A target that is not an absolute path is refused, not routed as `/` and forwarded as it
    // came (`GET a`); so is a space or another character that must be percent-encoded, which
    // Pingora would encode and forward (`GET /a%20b`, `GET %20/a`).
    for line in [
        "GET  /a HTTP/1.1",
        "GET a HTTP/1.1",
        "GET ?q HTTP/1.1",
        "GET * HTTP/1.1",
        "GET /a b HTTP/1.1",
        "GET /a<b> HTTP/1.1",
    ] {
        let answer = raw(sy.port, format!("{line}\r\nHost: x\r\n\r\n").as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{line}: {answer:?}");
    }
    assert_eq!(served(&[&a]), 0, "a refused request reached the backend");
    let old_client = raw(sy.port, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(old_client.starts_with("HTTP/1.1 200"), "{old_client:?}");
    assert_eq!(served(&[&a]), 1);

    // A chunked body over the limit is cut off with 413.
    let mut chunked =
        String::from("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..5 {
        chunked.push_str(&format!("190\r\n{}\r\n", "b".repeat(400)));
    }
    chunked.push_str("0\r\n\r\n");
    let answer = raw(sy.port, chunked.as_bytes()).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 413"),
        "{answer:?}"
    );
    // And the proxy keeps serving.
    assert_eq!(get(&client(None), &sy.url("/ok")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_trickling_its_body_is_dropped_after_the_body_timeout() {
    let a = backend("a", 0).await;
    let sy = Switchyard::start(&single_group(
        "  client_body_timeout: 1s\n",
        "",
        &backend_list(&[&a]),
    ))
    .await;
    let started = Instant::now();
    // Promise 100 bytes, send 10, then stall.
    let answer = raw(
        sy.port,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await;
    let took = started.elapsed();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "the stalled client was kept {took:?}"
    );
    assert_eq!(get(&client(None), &sy.url("/ok")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_trickling_its_request_head_is_disconnected() {
    let a = backend("a", 0).await;
    let sy = Switchyard::start(&single_group(
        "  client_header_timeout: 1s\n",
        "",
        &backend_list(&[&a]),
    ))
    .await;
    let mut slow = sy.connect().await;
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One header byte every 200 ms: each read is quick, the head never ends.
    let closed_after = trickle_until_closed(&mut slow, b"X", Duration::from_millis(200)).await;
    let took = closed_after.expect("the slow client was never disconnected (6 s)");
    assert!(
        took < Duration::from_secs(4),
        "disconnected only after {took:?}"
    );
    // A normal client is unaffected, also on a kept-alive connection after a slow-ish pause.
    let c = client(None);
    assert_eq!(get(&c, &sy.url("/x")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get(&c, &sy.url("/y")).await.status, 200);
    assert_eq!(a.state().requests_served(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_trickled_below_the_minimum_rate_is_cut_off_and_a_steady_one_is_not() {
    let a = backend("a", 0).await;
    let sy = Switchyard::start(&single_group(
        "  client_body_timeout: 1s\n  client_body_min_rate: 100\n",
        "",
        &backend_list(&[&a]),
    ))
    .await;
    // One byte every 300 ms: every single wait is shorter than the body timeout, so only
    // the rate floor (1 s + 1 s per 100 bytes) can end it.
    let mut slow = sy.connect().await;
    slow.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let took = trickle_until_closed(&mut slow, b"x", Duration::from_millis(300))
        .await
        .expect("the trickling client was held for 8 s");
    assert!(took < Duration::from_secs(4), "cut off only after {took:?}");

    // A slow but steady upload (2 KiB over about 2.1 s, above 100 B/s) goes through, although
    // it lasts longer than the body timeout.
    let mut steady = sy.connect().await;
    steady
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        steady.write_all(&[b'y'; 512]).await.unwrap();
    }
    let answer = read_json_response(&mut steady).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_next_request_head_on_a_kept_alive_connection_has_a_deadline_too() {
    let a = backend("a", 0).await;
    let sy = Switchyard::start(&single_group(
        "  client_header_timeout: 1s\n",
        "",
        &backend_list(&[&a]),
    ))
    .await;
    let mut s = sy.connect().await;
    s.write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_json_response(&mut s).await.starts_with("HTTP/1.1 200"));
    // An idle pause longer than the header timeout is fine (the keep-alive timeout rules it).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(b"GET /second HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let took = trickle_until_closed(&mut s, b"X", Duration::from_millis(200))
        .await
        .expect("the second, trickled head was never cut off");
    assert!(took < Duration::from_secs(4), "cut off only after {took:?}");
    assert_eq!(a.state().requests_served(), 1);
}

/// `openssl s_client` against `port` with extra flags; returns its output.
fn s_client(port: u16, flags: &[&str]) -> String {
    let openssl = require_tool("openssl", "apt-get install openssl");
    let mut cmd = std::process::Command::new(openssl);
    cmd.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-servername",
        "localhost",
    ])
    .args(flags)
    .stdin(std::process::Stdio::null());
    let out = cmd.output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A real OpenSSL server that accepts TLS 1.0 and 1.1, to prove the client offers them.
struct OldTlsServer {
    server: ListeningProcess,
    _dir: TempDir,
}

impl OldTlsServer {
    async fn start() -> Self {
        let openssl = require_tool("openssl", "apt-get install openssl");
        let dir = TempDir::new();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let made = std::process::Command::new(&openssl)
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-days",
                "1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let port = free_port();
        let mut command = std::process::Command::new(&openssl);
        command
            .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-www"])
            .args([
                "-cipher",
                "DEFAULT@SECLEVEL=0",
                "-min_protocol",
                "TLSv1",
                "-max_protocol",
                "TLSv1.1",
            ])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key);
        OldTlsServer {
            server: ListeningProcess::start(command, port, Duration::from_secs(5)).await,
            _dir: dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_offers_only_1_2_and_1_3_with_modern_ciphers_and_h2() {
    let a = backend("a", 0).await;
    let tls_port = free_port();
    let sy = Switchyard::start(&format!(
        "listeners:\n  - address: 127.0.0.1:{{PORT}}\n  - address: 127.0.0.1:{tls_port}\n    tls:\n      self_signed: true\ntarget_groups:\n  - name: g\n    backends:\n{}routes:\n  - path_prefix: /\n    target_group: g\n",
        backend_list(&[&a])
    ))
    .await;
    sy.wait_listener(tls_port).await;
    let t13 = s_client(tls_port, &["-tls1_3", "-alpn", "h2,http/1.1"]);
    assert!(
        t13.contains("TLSv1.3") && t13.contains("ALPN protocol: h2"),
        "{t13}"
    );
    let t12 = s_client(tls_port, &["-tls1_2", "-alpn", "h2,http/1.1"]);
    assert!(
        t12.contains("Protocol  : TLSv1.2") && t12.contains("GCM"),
        "{t12}"
    );
    // A client that really offers TLS 1.0/1.1 (Debian's OpenSSL refuses them itself unless
    // told SECLEVEL=0) is refused by the server with an alert.
    let control = OldTlsServer::start().await;
    for old in ["-tls1", "-tls1_1"] {
        let flags = [old, "-cipher", "DEFAULT@SECLEVEL=0"];
        let accepted = s_client(control.server.port, &flags);
        assert!(
            accepted.contains("Protocol  : TLSv1") && !accepted.contains("Cipher is (NONE)"),
            "the client does not offer {old}, so the test proves nothing: {accepted}"
        );
        let out = s_client(tls_port, &flags);
        assert!(
            out.contains("Cipher is (NONE)") && out.contains("SSL alert number"),
            "{old} was not refused by the server: {out}"
        );
    }
    // CBC, 3DES and RC4 suites are refused on TLS 1.2.
    let legacy = s_client(
        tls_port,
        &["-tls1_2", "-cipher", "AES128-SHA:DES-CBC3-SHA:RC4-SHA"],
    );
    assert!(
        legacy.contains("Cipher is (NONE)") || legacy.contains("handshake failure"),
        "{legacy}"
    );
}

/// The header names one request carried to the backend, lowercased.
fn names_seen(backend: &RunningBackend, path: &str) -> Vec<String> {
    let seen = backend.state().recent_requests();
    let request = seen
        .iter()
        .find(|r| r.target == path)
        .unwrap_or_else(|| panic!("the backend never saw {path}: {seen:?}"));
    request
        .headers
        .iter()
        .map(|(k, _)| k.to_lowercase())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_stay_between_client_and_proxy() {
    let b = backend("b", 0).await;
    let sy = Switchyard::start(&single_group(
        "",
        "    health_check:\n      enabled: false\n",
        &backend_list(&[&b]),
    ))
    .await;

    // A request with no hop-by-hop field keeps every field it has.
    let plain = raw(
        sy.port,
        b"GET /plain HTTP/1.1\r\nHost: example.test\r\nX-Kept: 1\r\nAccept: */*\r\n\r\n",
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 200"), "{plain}");
    let names = names_seen(&b, "/plain");
    assert!(names.contains(&"x-kept".to_string()), "{names:?}");
    assert!(names.contains(&"accept".to_string()), "{names:?}");

    // One with them: the standard ones and those its Connection field names are dropped.
    let hop = raw(
        sy.port,
        b"GET /hop HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, X-Private\r\n\
X-Private: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic c2VjcmV0\r\n\
TE: trailers\r\nProxy-Connection: keep-alive\r\nX-Kept: 1\r\n\r\n",
    )
    .await;
    assert!(hop.starts_with("HTTP/1.1 200"), "{hop}");
    let names = names_seen(&b, "/hop");
    for dropped in [
        "x-private",
        "keep-alive",
        "proxy-authorization",
        "te",
        "proxy-connection",
    ] {
        assert!(
            !names.contains(&dropped.to_string()),
            "{dropped} reached the backend: {names:?}"
        );
    }
    assert!(names.contains(&"x-kept".to_string()), "{names:?}");
}

/// The demo backend's JSON answer carries the path it saw.
fn path_in(answer: &str) -> Option<String> {
    let body = answer.split_once("\r\n\r\n")?.1;
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    json["path"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_requests_are_all_answered_in_order() {
    let a = backend("a", 0).await;
    let b = backend("b", 5).await;
    let sy = Switchyard::start(&single_group("", "", &backend_list(&[&a, &b]))).await;
    let mut s = sy.connect().await;
    // Four requests in one write, one of them with a body, as a pipelining client sends them.
    let pipeline = "GET /first HTTP/1.1\r\nHost: x\r\n\r\n\
                    POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
                    GET /third HTTP/1.1\r\nHost: x\r\n\r\n\
                    GET /fourth HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(pipeline.as_bytes()).await.unwrap();
    let answers = read_responses(&mut s, 4).await;
    let paths: Vec<_> = answers.iter().filter_map(|a| path_in(a)).collect();
    assert_eq!(
        paths,
        ["/first", "/second", "/third", "/fourth"],
        "answers: {answers:#?}"
    );
    assert!(answers.iter().all(|a| a.starts_with("HTTP/1.1 200")));
    assert!(answers[1].contains("\"body_bytes\":5"), "{}", answers[1]);
    assert_eq!(served(&[&a, &b]), 4);
    // The connection goes on serving afterwards.
    s.write_all(b"GET /fifth HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let fifth = read_responses(&mut s, 1).await;
    assert_eq!(
        fifth.first().and_then(|a| path_in(a)).as_deref(),
        Some("/fifth")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pipelined_upload_is_held_to_the_body_limits_not_the_head_deadline() {
    let a = backend("a", 0).await;
    let sy = Switchyard::start(&single_group(
        "  client_header_timeout: 1s\n  client_body_timeout: 5s\n  client_body_min_rate: 0\n",
        "",
        &backend_list(&[&a]),
    ))
    .await;
    let mut s = sy.connect().await;
    // The second head arrives whole with the first request; its body follows slowly, for
    // longer than the head deadline but well within the body timeout.
    s.write_all(
        b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n",
    )
    .await
    .unwrap();
    for chunk in [b"abc", b"def", b"ghi", b"jkl"] {
        tokio::time::sleep(Duration::from_millis(600)).await;
        s.write_all(chunk).await.unwrap();
    }
    let answers = read_responses(&mut s, 2).await;
    let paths: Vec<_> = answers.iter().filter_map(|a| path_in(a)).collect();
    assert_eq!(paths, ["/first", "/second"], "answers: {answers:#?}");
    assert!(answers[1].contains("\"body_bytes\":12"), "{}", answers[1]);

    // A pipelined head that never ends is still held to the head deadline: behind a request
    // that went to the backend, and behind one the proxy answers itself (no read of the
    // connection in between).
    for first in ["GET /first", "GET /a/../b"] {
        let mut slow = sy.connect().await;
        let pipeline =
            format!("{first} HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n");
        slow.write_all(pipeline.as_bytes()).await.unwrap();
        let closed_after = trickle_until_closed(&mut slow, b"X", Duration::from_millis(200)).await;
        let took = closed_after
            .unwrap_or_else(|| panic!("the head behind `{first}` was never cut off (8 s)"));
        assert!(
            took < Duration::from_secs(4),
            "behind `{first}`: cut off only after {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_after_100_continue_keeps_its_connection() {
    let a = backend("a", 0).await;
    let sy = Switchyard::start(&single_group(
        "  decision_headers: true\n",
        "",
        &backend_list(&[&a]),
    ))
    .await;
    let mut s = sy.connect().await;
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let go_on = read_responses(&mut s, 1).await.pop().unwrap_or_default();
    assert!(go_on.starts_with("HTTP/1.1 100 Continue"), "{go_on:?}");
    assert!(
        !go_on.contains("x-switchyard-decision"),
        "the decision belongs on the final answer: {go_on:?}"
    );
    s.write_all(b"hello").await.unwrap();
    let answer = read_responses(&mut s, 1).await.pop().unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.contains("\"body_bytes\":5"), "{answer}");
    assert!(answer.contains("x-switchyard-decision"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("connection: close"),
        "the upload cost its connection: {answer}"
    );
    s.write_all(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let next = read_responses(&mut s, 1).await.pop().unwrap_or_default();
    assert_eq!(path_in(&next).as_deref(), Some("/next"), "{next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bytes_after_a_refused_request_are_never_taken_for_a_request() {
    let a = backend("a", 0).await;
    let sy = Switchyard::start(&single_group(
        "  max_header_bytes: 8192\n  max_body_bytes: 1000\n",
        "",
        &backend_list(&[&a]),
    ))
    .await;
    let big_header = "a".repeat(10_000);
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let attempts = [
        // Both framings: the proxy and a backend could disagree on where the body ends.
        format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        // A declared body over the limit, with a request where the body would be.
        format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{smuggled}"),
        // A header section over the limit, followed by a request.
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big_header}\r\n\r\n{smuggled}"),
    ];
    for attempt in attempts {
        let mut s = sy.connect().await;
        s.write_all(attempt.as_bytes()).await.unwrap();
        let answers = read_responses(&mut s, 2).await;
        let shown: String = attempt.chars().take(80).collect();
        assert_eq!(answers.len(), 1, "{shown:?}… got {answers:#?}");
        assert!(
            answers[0]
                .to_ascii_lowercase()
                .contains("\r\nconnection: close\r\n"),
            "{}",
            answers[0]
        );
        assert!(answers[0].starts_with("HTTP/1.1 4"), "{}", answers[0]);
    }
    assert_eq!(served(&[&a]), 0, "a smuggled request reached the backend");
}
