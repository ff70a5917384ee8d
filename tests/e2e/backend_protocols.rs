//! HTTPS, HTTP/2 and gRPC to backends, end to end: real demo backends in HTTPS and gRPC mode,
//! a test CA made here, a tonic client through the real switchyard.

use crate::support;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use backend_server::grpc::demo::demo_client::DemoClient;
use backend_server::grpc::demo::{CountRequest, EchoRequest};
use backend_server::{BackendState, Behaviour, RunningBackend, ServeOptions};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use support::*;

/// A CA, and server certificates it signs, written as PEM files.
struct TestCa {
    dir: TempDir,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = TempDir::new();
        dir.write("ca.pem", &cert.pem());
        TestCa { dir, cert, key }
    }

    fn ca_file(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    /// A certificate for `names` (IP addresses or DNS names); (cert, key) paths.
    fn issue(&self, file: &str, names: &[&str]) -> (String, String) {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let c = self.dir.write(&format!("{file}.pem"), &cert.pem());
        let k = self
            .dir
            .write(&format!("{file}-key.pem"), &key.serialize_pem());
        (c.display().to_string(), k.display().to_string())
    }
}

async fn tls_backend(
    name: &str,
    cert: &(String, String),
    client_ca: Option<&str>,
) -> RunningBackend {
    let tls = backend_server::tls::server_config(
        cert.0.as_ref(),
        cert.1.as_ref(),
        client_ca.map(std::path::Path::new),
    )
    .unwrap();
    backend_server::spawn_with(
        "127.0.0.1:0".parse().unwrap(),
        BackendState::new(name, Behaviour::default()),
        ServeOptions {
            tls: Some(tls),
            grpc: false,
        },
    )
    .await
    .unwrap()
}

async fn grpc_backend(name: &str, behaviour: Behaviour) -> RunningBackend {
    backend_server::spawn_with(
        "127.0.0.1:0".parse().unwrap(),
        BackendState::new(name, behaviour),
        ServeOptions {
            tls: None,
            grpc: true,
        },
    )
    .await
    .unwrap()
}

const CHECKS: &str = "    health_check:\n      interval: 200ms\n      timeout: 150ms\n      healthy_threshold: 1\n      unhealthy_threshold: 1\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_backends_are_verified_against_the_group_ca() {
    let ca = TestCa::new("good");
    let other = TestCa::new("other");
    let good = tls_backend("good", &ca.issue("good", &["127.0.0.1"]), None).await;
    let wrong_name = tls_backend("wrong-name", &ca.issue("wrong", &["elsewhere.test"]), None).await;
    let other_ca = tls_backend("other-ca", &other.issue("other", &["127.0.0.1"]), None).await;
    let settings = format!(
        "    protocol: https\n    tls:\n      ca_file: {}\n{CHECKS}    passive_health:\n      enabled: false\n",
        ca.ca_file()
    );
    let sy = Switchyard::start(&single_group(
        "",
        &settings,
        &backend_list(&[&good, &wrong_name, &other_ca]),
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let answers = load(&sy.url("/x"), 60, 3).await;
    assert!(
        answers.iter().all(|a| a.status == 200),
        "{:?}",
        statuses(&answers)
    );
    assert_eq!(
        shares(&answers).get("good").copied(),
        Some(60),
        "{:?}",
        shares(&answers)
    );
    assert_eq!(
        wrong_name.state().requests_served() + other_ca.state().requests_served(),
        0
    );
    let m = sy.metrics().await;
    for bad in [&wrong_name, &other_ca] {
        let label = bad.addr().to_string();
        assert!(
            metric_sum(
                &m,
                "lb_health_checks_total",
                &[("backend", &label), ("result", "failure")]
            ) >= 1.0,
            "{m}"
        );
        assert!(
            metric_sum(
                &m,
                "lb_health_check_failures_total",
                &[("backend", &label), ("kind", "tls")]
            ) >= 1.0,
            "{m}"
        );
        assert_eq!(metric_sum(&m, "lb_backend_up", &[("backend", &label)]), 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_mtls_backend_answers_only_with_a_client_certificate() {
    let ca = TestCa::new("mtls");
    let client_ca = TestCa::new("clients");
    let backend = tls_backend(
        "mtls",
        &ca.issue("server", &["127.0.0.1"]),
        Some(&client_ca.ca_file()),
    )
    .await;
    let base = format!(
        "    protocol: https\n    tls:\n      ca_file: {}\n",
        ca.ca_file()
    );
    let without = Switchyard::start(&single_group(
        "",
        &format!("{base}    health_check:\n      enabled: false\n    max_retries: 0\n"),
        &backend_list(&[&backend]),
    ))
    .await;
    let refused = get(&client(None), &without.url("/x")).await;
    assert_eq!(refused.status, 502, "{refused:?}");
    // The attempt's outcome is recorded once the answer has gone out: wait for it.
    let label = backend.addr().to_string();
    let counted = eventually(Duration::from_secs(5), || async {
        let m = without.metrics().await;
        metric_sum(&m, "lb_upstream_errors_total", &[("backend", &label)]) >= 1.0
    })
    .await;
    assert!(counted, "{}", without.metrics().await);
    let (cert, key) = client_ca.issue("client", &["switchyard.test"]);
    let with = Switchyard::start(&single_group(
        "",
        &format!("{base}      client_cert: {cert}\n      client_key: {key}\n    health_check:\n      enabled: false\n"),
        &backend_list(&[&backend]),
    ))
    .await;
    let answer = get(&client(None), &with.url("/x")).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.backend.as_deref(), Some("mtls"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http1_upstreams_reuse_their_connections() {
    let plain = backend("h1", 0).await;
    assert_connections_reused(&plain, "", "HTTP/1.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_upstreams_reuse_their_connections() {
    let ca = TestCa::new("h2");
    let plain = backend("h2c", 0).await;
    let tls = tls_backend("h2tls", &ca.issue("h2", &["127.0.0.1"]), None).await;
    assert_connections_reused(&plain, "    protocol_version: http2\n", "HTTP/2.0").await;
    let settings = format!(
        "    protocol: https\n    protocol_version: http2\n    tls:\n      ca_file: {}\n",
        ca.ca_file()
    );
    assert_connections_reused(&tls, &settings, "HTTP/2.0").await;
}

/// 1000 requests from 8 clients through a group of `backend` with `settings` all succeed,
/// reach it as `version`, and open at most one upstream connection per concurrent client
/// (Pingora may open a second one while the first is briefly out of its pool), never one per
/// request.
async fn assert_connections_reused(backend: &RunningBackend, settings: &str, version: &str) {
    let settings = format!("{settings}    health_check:\n      enabled: false\n");
    let sy = Switchyard::start(&single_group("", &settings, &backend_list(&[backend]))).await;
    let answers = load(&sy.url("/x"), 1000, 8).await;
    assert!(
        answers.iter().all(|a| a.status == 200),
        "{:?}",
        statuses(&answers)
    );
    let seen = backend.state().recent_requests();
    assert!(
        seen.iter().all(|r| r.version == version),
        "{:?}",
        seen.first()
    );
    let connections = backend.state().connections_accepted();
    assert!(
        connections <= 8,
        "{} new upstream connections for 1000 requests",
        connections
    );
}

fn grpc_config(backends: &[&RunningBackend], extra_route: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:{{PORT}}\nproxy:\n  h2c: true\ntarget_groups:\n  - name: grpc\n    strategy: adaptive\n    protocol_version: grpc\n    backends:\n{}{CHECKS}    passive_health:\n      enabled: false\n    fail_open: false\nroutes:\n  - path_prefix: /\n    target_group: grpc\n{extra_route}",
        backend_list(backends)
    )
}

async fn grpc_client(port: u16) -> DemoClient<tonic::transport::Channel> {
    DemoClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_calls_reach_every_backend_and_streams_pass_through() {
    let backends = [
        grpc_backend("g1", Behaviour::default()).await,
        grpc_backend("g2", Behaviour::default()).await,
        grpc_backend("g3", Behaviour::default()).await,
    ];
    let sy = Switchyard::start(&grpc_config(&backends.iter().collect::<Vec<_>>(), "")).await;
    let mut c = grpc_client(sy.port).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for i in 0..90 {
        let reply = c
            .echo(EchoRequest {
                message: format!("m{i}"),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.message, format!("m{i}"));
        *seen.entry(reply.backend).or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    let mut stream = c
        .count(CountRequest { up_to: 50 })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(item) = stream.message().await.unwrap() {
        n += 1;
        assert_eq!(item.n, n);
    }
    assert_eq!(n, 50, "the whole stream, then its trailers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backend_answering_unavailable_stops_getting_calls() {
    let failing = Behaviour {
        error_rate: 1.0,
        error_status: 503,
        ..Behaviour::default()
    };
    let backends = [
        grpc_backend(
            "ok1",
            Behaviour {
                delay_ms: 5,
                ..Behaviour::default()
            },
        )
        .await,
        grpc_backend(
            "ok2",
            Behaviour {
                delay_ms: 5,
                ..Behaviour::default()
            },
        )
        .await,
        grpc_backend("unavailable", failing).await,
    ];
    let sy = Switchyard::start(&grpc_config(&backends.iter().collect::<Vec<_>>(), "")).await;
    let mut c = grpc_client(sy.port).await;
    let mut failures = 0;
    for i in 0..200 {
        if let Err(status) = c
            .echo(EchoRequest {
                message: format!("m{i}"),
            })
            .await
        {
            assert_eq!(status.code(), tonic::Code::Unavailable);
            failures += 1;
        }
    }
    // The fast UNAVAILABLE answers are failures to the latency estimate, not fast successes.
    assert!(
        failures * 20 < 200,
        "{failures} of 200 calls went to the failing backend"
    );
    let m = sy.metrics().await;
    let label = backends[2].addr().to_string();
    assert!(
        metric_sum(
            &m,
            "lb_upstream_errors_total",
            &[("backend", &label), ("kind", "grpc_status")]
        ) >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_clients_get_grpc_statuses_from_the_proxy_itself() {
    let down = grpc_backend(
        "down",
        Behaviour {
            healthy: false,
            ..Behaviour::default()
        },
    )
    .await;
    let sy = Switchyard::start(&grpc_config(&[&down], "")).await;
    // NOT_SERVING fails the gRPC health check: no backend is left.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut c = grpc_client(sy.port).await;
    let err = c
        .echo(EchoRequest {
            message: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("no backend"), "{err:?}");

    let up = grpc_backend("up", Behaviour::default()).await;
    let limited = "    rate_limit: {rate: 1, burst: 1, key: global}\n";
    let sy = Switchyard::start(&grpc_config(&[&up], limited)).await;
    let mut c = grpc_client(sy.port).await;
    assert!(c
        .echo(EchoRequest {
            message: "1".into()
        })
        .await
        .is_ok());
    let err = c
        .echo(EchoRequest {
            message: "2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    let m = sy.metrics().await;
    assert_eq!(metric_sum(&m, "lb_rate_limited_total", &[]), 1.0);
}

#[allow(dead_code)]
fn addr(b: &RunningBackend) -> SocketAddr {
    b.addr()
}

/// A backend run by `python3`: its own `http.server`, a real HTTP/1.0 server (it answers
/// `HTTP/1.0` and closes after each answer), or [`HEAD_ECHO`]. Killed on drop.
struct PythonBackend(ListeningProcess);

/// A server that answers every HTTP/1.1 request with its head exactly as received, and
/// writes one response header in mixed case (`X-Echo-CaSe`).
const HEAD_ECHO: &str = r#"
import socketserver, sys
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            head = b""
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                head += line
                if line in (b"\r\n", b"\n"):
                    break
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Echo-CaSe: yes\r\n\r\n" % len(head) + head)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
"#;

impl PythonBackend {
    /// An HTTP/1.0 server (`python3 -m http.server`) of the files of `dir`; with `cgi`,
    /// also running its `cgi-bin/` scripts, whose output goes out without a
    /// `Content-Length`, ended by closing the connection.
    async fn http_1_0(dir: &TempDir, cgi: bool) -> PythonBackend {
        let mut args = vec!["-m", "http.server", "--bind", "127.0.0.1"];
        if cgi {
            args.push("--cgi");
        }
        let dir = dir.path().to_str().unwrap().to_string();
        Self::start(&args, &["--directory", &dir]).await
    }

    /// The [`HEAD_ECHO`] server.
    async fn head_echo() -> PythonBackend {
        Self::start(&["-c", HEAD_ECHO], &[]).await
    }

    /// `python3 ARGS PORT REST`, once it listens on PORT.
    async fn start(args: &[&str], rest: &[&str]) -> PythonBackend {
        let python = require_tool("python3", "apt-get install python3");
        let port = free_port();
        let mut command = std::process::Command::new(python);
        command.args(args).arg(port.to_string()).args(rest);
        PythonBackend(ListeningProcess::start(command, port, Duration::from_secs(10)).await)
    }

    /// A switchyard with `proxy` settings and one group of just this backend.
    async fn behind_switchyard_with(&self, proxy: &str) -> Switchyard {
        Switchyard::start(&single_group(
            proxy,
            "",
            &format!("      - address: 127.0.0.1:{}\n", self.0.port),
        ))
        .await
    }

    /// A switchyard with one group of just this backend.
    async fn behind_switchyard(&self) -> Switchyard {
        self.behind_switchyard_with("").await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_http_1_0_backend_is_answered_as_http_1_1_on_a_kept_connection() {
    use tokio::io::AsyncWriteExt;
    let dir = TempDir::new();
    dir.write("hello.txt", "hello from an HTTP/1.0 server\n");
    let old = PythonBackend::http_1_0(&dir, false).await;
    let sy = old.behind_switchyard().await;
    let mut s = sy.connect().await;
    for _ in 0..3 {
        s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_responses(&mut s, 1).await.pop().unwrap_or_default();
        // RFC 9110 2.5: an intermediary sends its own HTTP version.
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert!(
            answer.ends_with("hello from an HTTP/1.0 server\n"),
            "{answer}"
        );
        assert!(
            !answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_without_length_reaches_http_1_1_clients_chunked_and_http_1_0_clients_as_is() {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = TempDir::new();
    std::fs::create_dir(dir.path().join("cgi-bin")).unwrap();
    let script = dir.write(
        "cgi-bin/stream.py",
        "#!/usr/bin/env python3\nprint(\"Content-Type: text/plain\")\nprint()\nprint(\"streamed without a length\")\n",
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let old = PythonBackend::http_1_0(&dir, true).await;
    let sy = old.behind_switchyard().await;

    // HTTP/1.1: chunked, and the connection stays open.
    let mut s = sy.connect().await;
    s.write_all(b"GET /cgi-bin/stream.py HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"0\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let chunked = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(chunked.contains("transfer-encoding: chunked"), "{chunked}");
    assert!(chunked.contains("streamed without a length"), "{chunked}");

    // HTTP/1.0 (even asking for keep-alive): no chunked framing, the body as the backend sent
    // it, ended by closing the connection, which the answer announces.
    let mut s = sy.connect().await;
    s.write_all(b"GET /cgi-bin/stream.py HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_close(&mut s, Duration::from_secs(5))
        .await
        .expect("the connection was not closed after the body");
    let lower = answer.to_ascii_lowercase();
    assert!(!lower.contains("transfer-encoding"), "{answer}");
    assert!(lower.contains("\r\nconnection: close\r\n"), "{answer}");
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    assert_eq!(body, "streamed without a length\n", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn header_names_keep_their_case_unless_lowercase_is_asked_for() {
    use tokio::io::AsyncWriteExt;
    let echo = PythonBackend::head_echo().await;
    let request = b"GET /case HTTP/1.1\r\nHost: x\r\nuser-AGENT: t\r\nX-CuStOm: v\r\n\r\n";
    for (proxy, backend_saw, client_saw) in [
        (
            "",
            ["Host: x", "user-AGENT: t", "X-CuStOm: v"],
            "X-Echo-CaSe: yes",
        ),
        (
            "  header_case: lowercase\n",
            ["Host: x", "user-agent: t", "x-custom: v"],
            "x-echo-case: yes",
        ),
    ] {
        let sy = echo.behind_switchyard_with(proxy).await;
        let mut s = sy.connect().await;
        s.write_all(request).await.unwrap();
        let answer = read_responses(&mut s, 1).await.pop().unwrap_or_default();
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        for field in backend_saw {
            assert!(
                body.contains(&format!("\r\n{field}\r\n")),
                "{proxy}: {body}"
            );
        }
        assert!(
            head.contains(&format!("\r\n{client_saw}")),
            "{proxy}: {head}"
        );
    }
}
