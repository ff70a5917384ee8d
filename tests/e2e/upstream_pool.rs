//! Idle upstream keep-alive connections: reused while fresh, closed by the proxy at the
//! group's `idle_timeout`, and not kept half-open after the backend closed them.
//!
//! The backend here is a plain TCP server written in the test, so that the test sees every
//! connection the proxy opens and when the proxy closes it.

use crate::support;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the test backend saw on one connection.
#[derive(Debug)]
enum Seen {
    /// A request was answered on connection `n` (numbered from 0 in accept order).
    Answered(usize),
    /// The proxy closed connection `n`, this long after its last answer.
    ClosedByProxy(usize, Duration),
}

/// A keep-alive HTTP/1.1 backend that answers every request with `200 ok` and the number of
/// its connection in `x-backend`; with `close_after_answer`, it closes each connection that
/// long after its first answer.
async fn plain_backend(
    close_after_answer: Option<Duration>,
) -> (u16, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for n in 0.. {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve(conn, n, close_after_answer, tx.clone()));
        }
    });
    (port, rx)
}

async fn serve(
    mut conn: TcpStream,
    n: usize,
    close_after_answer: Option<Duration>,
    seen: mpsc::UnboundedSender<Seen>,
) {
    let mut pending = Vec::new();
    let mut last_answer = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let read = match conn.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = seen.send(Seen::ClosedByProxy(n, last_answer.elapsed()));
                return;
            }
            Ok(read) => read,
        };
        pending.extend_from_slice(&buf[..read]);
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            pending.drain(..end + 4);
            let answer =
                format!("HTTP/1.1 200 OK\r\nx-backend: conn {n}\r\ncontent-length: 2\r\n\r\nok");
            conn.write_all(answer.as_bytes()).await.unwrap();
            last_answer = Instant::now();
            let _ = seen.send(Seen::Answered(n));
            if let Some(pause) = close_after_answer {
                tokio::time::sleep(pause).await;
                return; // dropping `conn` closes it
            }
        }
    }
}

fn group(port: u16, idle_timeout: &str) -> String {
    single_group(
        "",
        &format!("    health_check:\n      enabled: false\n    idle_timeout: {idle_timeout}\n"),
        &format!("      - address: 127.0.0.1:{port}\n"),
    )
}

async fn next(seen: &mut mpsc::UnboundedReceiver<Seen>, within: Duration) -> Option<Seen> {
    tokio::time::timeout(within, seen.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_upstream_connection_is_reused_then_closed_at_the_idle_timeout() {
    let (port, mut seen) = plain_backend(None).await;
    let sy = Switchyard::start(&group(port, "2s")).await;
    let client = client(None);

    // Two requests in a row travel on one upstream connection.
    for _ in 0..2 {
        let answer = get(&client, &sy.url("/")).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.backend.as_deref(), Some("conn 0"));
    }
    let mut answered = 0;
    while answered < 2 {
        match next(&mut seen, Duration::from_secs(5)).await {
            Some(Seen::Answered(0)) => answered += 1,
            other => panic!("expected answers on connection 0, saw {other:?}"),
        }
    }

    // Then, left idle, the proxy closes it: after the idle timeout, not long after.
    match next(&mut seen, Duration::from_secs(15)).await {
        Some(Seen::ClosedByProxy(0, idle)) => {
            assert!(
                idle >= Duration::from_millis(1500),
                "closed after only {idle:?} idle"
            );
        }
        other => panic!("expected the proxy to close connection 0, saw {other:?}"),
    }

    // A request after that opens a new connection and is served.
    let answer = get(&client, &sy.url("/")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.backend.as_deref(), Some("conn 1"));
}

/// The proxy's sockets to `port` in state CLOSE_WAIT (the backend closed, the proxy not yet).
fn close_wait_sockets_to(port: u16) -> usize {
    const CLOSE_WAIT: &str = "08";
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields[2].rsplit(':').next().unwrap();
            u16::from_str_radix(remote_port, 16) == Ok(port) && fields[3] == CLOSE_WAIT
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_backend_closed_is_not_kept_half_open_nor_reused() {
    // The backend closes the connection once the proxy has put it in its pool.
    let (port, _seen) = plain_backend(Some(Duration::from_millis(500))).await;
    // A long idle timeout: only noticing the backend's close lets the proxy let go of it.
    let sy = Switchyard::start(&group(port, "300s")).await;
    let client = client(None);

    let answer = get(&client, &sy.url("/")).await;
    assert_eq!(
        (answer.status, answer.backend.as_deref()),
        (200, Some("conn 0"))
    );

    // Well after the backend's close (the proxy looks at idle connections every second),
    // the proxy has let go of its side.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        close_wait_sockets_to(port),
        0,
        "the proxy still holds the closed connection half-open"
    );

    // The next request does not try the dead connection: it is answered on a new one.
    let answer = get(&client, &sy.url("/")).await;
    assert_eq!(
        (answer.status, answer.backend.as_deref()),
        (200, Some("conn 1"))
    );
}
