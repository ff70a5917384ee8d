//! Switchyard's own HTTP/1 path (`proxy.http1_path: switchyard`): it serves the requests of its
//! subset itself, hands anything else to Pingora's loop on the same connection, and answers as
//! Pingora's loop would. (The whole suite also runs once more on this path, with
//! `SWITCHYARD_E2E_HTTP1_PATH=switchyard`.)

use crate::support;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const OWN_PATH: &str = "  http1_path: switchyard\n  decision_headers: true\n";

/// Connections handed to Pingora's loop, as the metric counts them.
async fn handovers(sy: &Switchyard, reason: &str) -> f64 {
    metric_sum(
        &sy.metrics().await,
        "lb_http1_handovers_total",
        &[("reason", reason)],
    )
}

async fn all_handovers(sy: &Switchyard) -> f64 {
    metric_sum(&sy.metrics().await, "lb_http1_handovers_total", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_the_subset_are_served_on_the_own_path_and_others_handed_to_pingora() {
    let (a, b) = (backend("a", 0).await, backend("b", 0).await);
    let sy = Switchyard::start(&single_group(OWN_PATH, "", &backend_list(&[&a, &b]))).await;

    // Plain GETs and a small POST on keep-alive connections: answered, spread over both
    // backends, and no connection left the own path.
    let answers = load(&sy.url("/x"), 40, 4).await;
    assert_eq!(statuses(&answers).get(&200), Some(&40), "{answers:?}");
    assert_eq!(shares(&answers).len(), 2, "both backends answer");
    let client = client(None);
    let posted = client
        .post(sy.url("/echo"))
        .body("twelve bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    assert!(posted.text().await.unwrap().contains("\"body_bytes\":12"));
    assert_eq!(all_handovers(&sy).await, 0.0);

    // A chunked upload is outside the subset: Pingora's loop serves it, and the requests after
    // it on the same connection.
    let mut s = sy.connect().await;
    s.write_all(
        b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /after HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let answers = read_responses(&mut s, 2).await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers[0].starts_with("HTTP/1.1 200"), "{}", answers[0]);
    assert!(answers[0].contains("\"body_bytes\":3"), "{}", answers[0]);
    assert!(answers[1].contains("\"path\":\"/after\""), "{}", answers[1]);
    assert_eq!(handovers(&sy, "outside_subset").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_on_the_own_path() {
    let a = backend("a", 0).await;
    let sy = Switchyard::start(&single_group(OWN_PATH, "", &backend_list(&[&a]))).await;
    let mut s = sy.connect().await;
    s.write_all(
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\nGET /4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let answers = read_responses(&mut s, 4).await;
    assert_eq!(answers.len(), 4, "{answers:?}");
    for (i, answer) in answers.iter().enumerate() {
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains(&format!("\"path\":\"/{}\"", i + 1)),
            "{answer}"
        );
    }
    assert!(answers[3]
        .to_ascii_lowercase()
        .contains("connection: close"));
    assert!(
        closes_without_more(&mut s).await,
        "closed after `Connection: close`"
    );
    assert_eq!(all_handovers(&sy).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_refusing_connections_is_retried_elsewhere_on_the_own_path() {
    let live = backend("live", 0).await;
    let dead = free_port();
    let backends = format!(
        "      - address: 127.0.0.1:{dead}\n{}",
        backend_list(&[&live])
    );
    let settings = "    health_check:\n      enabled: false\n";
    let sy = Switchyard::start(&single_group(OWN_PATH, settings, &backends)).await;
    let answers = load(&sy.url("/"), 20, 2).await;
    assert_eq!(statuses(&answers).get(&200), Some(&20), "{answers:?}");
    assert_eq!(shares(&answers).get("live"), Some(&20));
    let metrics = sy.metrics().await;
    assert!(metric_sum(&metrics, "lb_retries_total", &[]) >= 1.0);
    assert_eq!(all_handovers(&sy).await, 0.0);
}

/// A backend that answers by path with bytes written in the test: `/chunked` in two chunks
/// with a trailer, `/close` without a length (ended by closing), `/cut` with a body shorter
/// than its length, anything else `ok`.
async fn scripted_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match conn.read(&mut buf).await {
                            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&got[..end]).to_string();
                    got.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let (answer, close): (&[u8], bool) = match path.as_str() {
                        "/chunked" => (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n", false),
                        "/close" => (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", true),
                        "/cut" => (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", true),
                        _ => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
                    };
                    if conn.write_all(answer).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_and_close_delimited_answers_reach_the_client_whole_on_the_own_path() {
    let port = scripted_backend().await;
    let settings = "    health_check:\n      enabled: false\n";
    let backends = format!("      - address: 127.0.0.1:{port}\n");
    let sy = Switchyard::start(&single_group(OWN_PATH, settings, &backends)).await;
    let client = client(None);
    for _ in 0..2 {
        let chunked = client.get(sy.url("/chunked")).send().await.unwrap();
        assert_eq!(chunked.status(), 200);
        assert_eq!(chunked.text().await.unwrap(), "hello world");
    }
    // A body the backend ends by closing reaches the client chunked, on a connection that
    // stays open.
    let closed = client.get(sy.url("/close")).send().await.unwrap();
    assert_eq!(closed.status(), 200);
    let header = |name: &str| closed.headers().get(name).map(|v| v.as_bytes().to_vec());
    assert_eq!(header("transfer-encoding"), Some(b"chunked".to_vec()));
    assert_eq!(header("connection"), Some(b"keep-alive".to_vec()));
    assert_eq!(closed.text().await.unwrap(), "until the end");

    // A backend that breaks off mid-body: the client gets a response it can tell is cut, the
    // connection closes, and the backend is blamed.
    let mut s = sy.connect().await;
    s.write_all(b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let text = read_until_close(&mut s, Duration::from_secs(10))
        .await
        .expect("the connection closes");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("only this"), "{text}");
    let metrics = sy.metrics().await;
    assert!(metric_sum(&metrics, "lb_upstream_errors_total", &[]) >= 1.0);
    assert_eq!(all_handovers(&sy).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_trickles_in_is_cut_off_on_the_own_path() {
    let a = backend("a", 0).await;
    let proxy = format!("{OWN_PATH}  client_header_timeout: 1s\n");
    let sy = Switchyard::start(&single_group(&proxy, "", &backend_list(&[&a]))).await;
    let mut s = sy.connect().await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_responses(&mut s, 1).await.len(), 1);
    // The next head never ends: a byte every 300 ms.
    let mut cut = false;
    for b in b"GET /slow HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if s.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        cut || closes_without_more(&mut s).await,
        "the trickling head is cut off"
    );
}

/// What a client saw after sending `probe` on a new connection: the status of each answer, in
/// order, whether any answer came from a request the backend saw as `/smuggled`, and whether
/// the proxy closed the connection (within 3 s of the last bytes).
async fn probe(port: u16, probe: Vec<u8>) -> (Vec<u16>, bool, bool) {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return (Vec::new(), false, true);
    };
    if s.write_all(&probe).await.is_err() {
        return (Vec::new(), false, true);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&got);
    let statuses = text
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect();
    (statuses, text.contains("/smuggled"), closed)
}

/// Smuggling-shaped and malformed requests get the same answers from both HTTP/1 paths, and
/// none lets a hidden request through: whatever the own path does not take as certainly one
/// request goes to Pingora's loop, or is refused as Pingora refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_and_malformed_requests_get_the_same_answers_on_both_paths() {
    let a = backend("a", 0).await;
    let list = backend_list(&[&a]);
    let own = Switchyard::start(&single_group(OWN_PATH, "", &list)).await;
    let theirs = Switchyard::start(&single_group("  http1_path: pingora\n", "", &list)).await;
    let long = format!("X-Long: {}\r\n", "a".repeat(40_000));
    let probes: Vec<Vec<u8>> = [
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nX: y\r\n Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 05\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\nHost: x\n\nGET /2 HTTP/1.1\nHost: x\n\n",
        "GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n",
        "GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nX Y: z\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: u@x\r\n\r\n",
        "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n",
        "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET http://y/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
        "get / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.2\r\nHost: x\r\n\r\n",
        "GET /%2e%2e/admin HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET //x/y HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /\\x HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close, x-secret\r\nX-Secret: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nX-Obs: caf\u{e9}\r\n\r\n",
        "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\n: empty\r\n\r\n",
    ]
    .iter()
    .map(|p| p.as_bytes().to_vec())
    .chain([format!("GET / HTTP/1.1\r\nHost: x\r\n{long}\r\n").into_bytes()])
    .collect();
    // All at once: each waits 3 s on the connections left open.
    let answers: Vec<_> = probes
        .iter()
        .map(|p| {
            let (a, b) = (
                tokio::spawn(probe(own.port, p.clone())),
                tokio::spawn(probe(theirs.port, p.clone())),
            );
            async move { (a.await.unwrap(), b.await.unwrap()) }
        })
        .collect();
    let mut differ = Vec::new();
    for (p, both) in probes.iter().zip(answers) {
        let (ours, pingoras) = both.await;
        assert!(
            !ours.1 && !pingoras.1,
            "a hidden request got through: {:?}",
            String::from_utf8_lossy(p)
        );
        if ours != pingoras {
            differ.push(format!(
                "{:?}: own path {ours:?}, Pingora's {pingoras:?}",
                String::from_utf8_lossy(&p[..p.len().min(120)])
            ));
        }
    }
    assert!(differ.is_empty(), "answers differ:\n{}", differ.join("\n"));
}

/// A client that leaves while the backend is still working is seen at once, as on Pingora's
/// loop: its request is logged as 499 without waiting for the backend's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_while_the_backend_works_is_counted_at_once() {
    let slow = backend("slow", 4000).await;
    let settings = "    health_check:\n      enabled: false\n";
    let sy = Switchyard::start(&single_group(OWN_PATH, settings, &backend_list(&[&slow]))).await;
    let mut s = sy.connect().await;
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
    let counted = eventually(Duration::from_millis(2500), || async {
        let m = sy.metrics().await;
        metric_sum(&m, "lb_http_requests_total", &[("code", "499")]) == 1.0
    })
    .await;
    assert!(counted, "499 not recorded before the backend answered");
}
