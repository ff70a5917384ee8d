//! The hooks' decisions on plain requests: which status the client gets, which headers, whether
//! its connection stays open, and whether a failed attempt goes to another backend. The e2e
//! tests run the same steps through Pingora on real connections.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};

use super::super::ctx::RequestCtx;
use super::super::downstream::{Downstream, RawHead};
use super::super::{Switchyard, BACKEND_HEADER};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::shutdown::Leaving;

/// A client's side of one request, as plain values, recording what the hooks do to it.
struct Client {
    req: RequestHeader,
    /// Sent over HTTP/1 (with a raw head) rather than HTTP/2.
    h1: bool,
    ip: Option<IpAddr>,
    tls: bool,
    shutting_down: bool,
    replay: Option<Bytes>,
    outgrew_replay: bool,
    // What the hooks did:
    closes: bool,
    read_timeout: Option<Duration>,
    head: Option<ResponseHeader>,
    body: Vec<u8>,
    ended: bool,
}

impl Client {
    /// An HTTP/1.1 request from 192.0.2.7 over plain TCP.
    fn h1(method: &str, target: &str) -> Self {
        let mut req = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        req.insert_header("host", "example.test").unwrap();
        Self {
            req,
            h1: true,
            ip: Some("192.0.2.7".parse().unwrap()),
            tls: false,
            shutting_down: false,
            replay: None,
            outgrew_replay: false,
            closes: false,
            read_timeout: None,
            head: None,
            body: Vec::new(),
            ended: false,
        }
    }

    fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.req.insert_header(name, value).unwrap();
        self
    }

    fn status(&self) -> Option<u16> {
        self.head.as_ref().map(|h| h.status.as_u16())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head
            .as_ref()
            .and_then(|h| h.headers.get(name))
            .map(|v| v.to_str().unwrap())
    }
}

impl Downstream for Client {
    fn req_header(&self) -> &RequestHeader {
        &self.req
    }

    fn raw_head(&self) -> Option<RawHead> {
        self.h1.then(|| {
            let mut text = format!("{} {} HTTP/1.1\r\n", self.req.method, self.req.uri);
            for (name, value) in &self.req.headers {
                text.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
            }
            text.push_str("\r\n");
            RawHead {
                bytes: Bytes::from(text),
                line_escaped: false,
            }
        })
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.ip
    }

    fn is_tls(&self) -> bool {
        self.tls
    }

    fn is_http2(&self) -> bool {
        !self.h1
    }

    fn is_process_shutting_down(&self) -> bool {
        self.shutting_down
    }

    fn response_status(&self) -> Option<u16> {
        self.status()
    }

    fn body_outgrew_replay_buffer(&self) -> bool {
        self.outgrew_replay
    }

    fn replay_buffer(&self) -> Option<Bytes> {
        self.replay.clone().filter(|_| !self.outgrew_replay)
    }

    fn close_after_response(&mut self) {
        self.closes = true;
    }

    fn set_read_timeout(&mut self, timeout: Duration) {
        self.read_timeout = Some(timeout);
    }

    async fn write_response_header(
        &mut self,
        head: Box<ResponseHeader>,
        end: bool,
    ) -> pingora_error::Result<()> {
        assert!(self.head.is_none(), "a second response head");
        self.head = Some(*head);
        self.ended = end;
        Ok(())
    }

    async fn write_response_body(&mut self, body: Bytes, end: bool) -> pingora_error::Result<()> {
        assert!(
            self.head.is_some() && !self.ended,
            "a body outside a response"
        );
        self.body.extend_from_slice(&body);
        self.ended = end;
        Ok(())
    }
}

/// Two demo backends in group `web` (round robin, two retries), and routes in front of them.
const CONFIG: &str = "
listeners:
  - address: 127.0.0.1:8080
proxy:
  decision_headers: true
  max_header_bytes: 512
  hsts:
    max_age: 1d
target_groups:
  - name: web
    backends:
      - address: 127.0.0.1:9001
      - address: 127.0.0.1:9002
    max_retries: 2
routes:
  - path_prefix: /web
    target_group: web
  - path_prefix: /api
    target_group: web
    strip_prefix: true
  - path: /limited
    target_group: web
    rate_limit:
      rate: 1
      burst: 1
  - path: /fixed
    fixed_response:
      status: 418
      body: short and stout
  - path: /status
    status_page: true
";

async fn switchyard() -> Switchyard {
    let config = crate::config::parse(CONFIG, "hooks.yaml").expect("test configuration");
    let runtime = Runtime::start(config, Metrics::new(true)).await.unwrap();
    Switchyard::new(runtime, Leaving::default(), false)
}

/// Run a request's first steps; `Ok(true)` when the proxy answered it itself.
async fn admit(proxy: &Switchyard, client: &mut Client, ctx: &mut RequestCtx) -> bool {
    proxy.begin(client, ctx);
    proxy.admit(client, ctx).await.unwrap()
}

/// Run a request's first steps, which must answer it in the proxy.
async fn answered(proxy: &Switchyard, client: &mut Client) -> RequestCtx {
    let mut ctx = RequestCtx::new();
    assert!(
        admit(proxy, client, &mut ctx).await,
        "sent to a backend instead of answered"
    );
    ctx
}

/// Run a request's first steps, which must send it to a backend, and pick that backend.
async fn forwarded(
    proxy: &Switchyard,
    client: &mut Client,
) -> (RequestCtx, Box<pingora_core::upstreams::peer::HttpPeer>) {
    let mut ctx = RequestCtx::new();
    assert!(
        !admit(proxy, client, &mut ctx).await,
        "answered by the proxy"
    );
    let peer = proxy.choose_peer(&mut ctx).unwrap();
    (ctx, peer)
}

/// `resp`, from the backend of a forwarded request, as the client will get it.
fn prepared(
    proxy: &Switchyard,
    client: &mut Client,
    ctx: &RequestCtx,
    mut resp: ResponseHeader,
) -> ResponseHeader {
    proxy.prepare_response(client, &mut resp, ctx).unwrap();
    resp
}

fn body(client: &Client) -> &str {
    std::str::from_utf8(&client.body).unwrap()
}

#[tokio::test]
async fn a_path_without_a_route_gets_404_and_the_connection_stays_open() {
    let proxy = switchyard().await;
    let mut client = Client::h1("GET", "/nowhere");
    let ctx = answered(&proxy, &mut client).await;
    assert_eq!(client.status(), Some(404));
    assert_eq!(body(&client), "no route for this request\n");
    assert_eq!(ctx.local_status, Some(404));
    assert!(!client.closes);
    assert!(client.ended);
}

#[tokio::test]
async fn dot_segments_in_the_path_get_400() {
    let proxy = switchyard().await;
    let mut client = Client::h1("GET", "/web/../admin");
    answered(&proxy, &mut client).await;
    assert_eq!(client.status(), Some(400));
}

#[tokio::test]
async fn a_head_over_the_limit_gets_431_and_closes_the_connection() {
    let proxy = switchyard().await;
    let mut client = Client::h1("GET", "/web").with_header("x-padding", &"a".repeat(600));
    answered(&proxy, &mut client).await;
    assert_eq!(client.status(), Some(431));
    assert!(
        client.closes,
        "bytes after an oversized head must not be read as a request"
    );
}

#[tokio::test]
async fn a_fixed_response_to_head_has_its_length_and_no_body() {
    let proxy = switchyard().await;
    let mut get = Client::h1("GET", "/fixed");
    assert!(admit(&proxy, &mut get, &mut RequestCtx::new()).await);
    assert_eq!(get.status(), Some(418));
    assert_eq!(body(&get), "short and stout");

    let mut head = Client::h1("HEAD", "/fixed");
    assert!(admit(&proxy, &mut head, &mut RequestCtx::new()).await);
    assert_eq!(head.status(), Some(418));
    assert_eq!(head.header("content-length"), Some("15"));
    assert!(head.body.is_empty() && head.ended);
}

#[tokio::test]
async fn a_refused_grpc_call_gets_its_grpc_status_in_a_200() {
    let proxy = switchyard().await;
    let mut client = Client::h1("POST", "/nowhere").with_header("content-type", "application/grpc");
    client.h1 = false;
    let ctx = answered(&proxy, &mut client).await;
    assert_eq!(client.status(), Some(200));
    assert_eq!(client.header("grpc-status"), Some("12"));
    assert!(client.ended && client.body.is_empty(), "trailers-only");
    assert_eq!(
        ctx.local_status,
        Some(404),
        "logs and metrics see the refusal"
    );
}

#[tokio::test]
async fn over_the_rate_limit_gets_429_with_retry_after() {
    let proxy = switchyard().await;
    let mut first = Client::h1("GET", "/limited");
    assert!(!admit(&proxy, &mut first, &mut RequestCtx::new()).await);
    assert_eq!(first.status(), None, "the first request goes to a backend");

    let mut second = Client::h1("GET", "/limited");
    assert!(admit(&proxy, &mut second, &mut RequestCtx::new()).await);
    assert_eq!(second.status(), Some(429));
    assert_eq!(second.header("retry-after"), Some("1"));

    let mut other = Client::h1("GET", "/limited");
    other.ip = Some("192.0.2.8".parse().unwrap());
    assert!(
        !admit(&proxy, &mut other, &mut RequestCtx::new()).await,
        "another client has its own bucket"
    );
}

#[tokio::test]
async fn a_forwarded_request_gets_its_body_timeout_and_alternating_backends() {
    let proxy = switchyard().await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let mut client = Client::h1("GET", "/web/x");
        let (ctx, _) = forwarded(&proxy, &mut client).await;
        assert_eq!(client.read_timeout, Some(Duration::from_secs(30)));
        seen.push(ctx.backend_addr().unwrap().port());
    }
    assert_eq!(seen[0..2], seen[2..4], "round robin repeats");
    assert_ne!(seen[0], seen[1], "round robin alternates");
}

/// A request forwarded to `web` whose first attempt lost its backend connection.
async fn failed_attempt(proxy: &Switchyard, client: &mut Client) -> Box<Error> {
    let (mut ctx, peer) = forwarded(proxy, client).await;
    let e = Error::create(ErrorType::ReadError, ErrorSource::Upstream, None, None);
    Switchyard::proxy_failed(client, &peer, e, &mut ctx, false)
}

#[tokio::test]
async fn only_replayable_requests_are_retried_on_another_backend() {
    let proxy = switchyard().await;
    let e = failed_attempt(&proxy, &mut Client::h1("GET", "/web")).await;
    assert!(e.retry(), "an idempotent request nothing was answered to");

    let e = failed_attempt(&proxy, &mut Client::h1("POST", "/web")).await;
    assert!(!e.retry(), "a POST may have been acted on");

    let mut big = Client::h1("PUT", "/web");
    big.outgrew_replay = true;
    let e = failed_attempt(&proxy, &mut big).await;
    assert!(!e.retry(), "the body is no longer there to send again");

    let mut answered = Client::h1("GET", "/web");
    answered.head = Some(ResponseHeader::build(200, None).unwrap());
    let e = failed_attempt(&proxy, &mut answered).await;
    assert!(!e.retry(), "the client already has part of an answer");
}

#[tokio::test]
async fn a_chunked_answer_to_an_http_1_0_client_loses_chunking_and_closes() {
    let proxy = switchyard().await;
    let mut client = Client::h1("GET", "/web");
    client.req.set_version(http::Version::HTTP_10);
    let (ctx, _) = forwarded(&proxy, &mut client).await;
    let mut resp = ResponseHeader::build(200, None).unwrap();
    resp.insert_header("transfer-encoding", "chunked").unwrap();
    resp.set_version(http::Version::HTTP_10);
    let resp = prepared(&proxy, &mut client, &ctx, resp);
    assert!(!resp.headers.contains_key("transfer-encoding"));
    assert_eq!(resp.version, http::Version::HTTP_11);
    assert!(client.closes, "the body ends with the connection");
}

#[tokio::test]
async fn responses_name_the_backend_and_carry_hsts_only_over_tls() {
    let proxy = switchyard().await;
    for tls in [false, true] {
        let mut client = Client::h1("GET", "/web");
        client.tls = tls;
        let (ctx, _) = forwarded(&proxy, &mut client).await;
        let resp = prepared(
            &proxy,
            &mut client,
            &ctx,
            ResponseHeader::build(200, None).unwrap(),
        );
        let backend = ctx.backend_addr().unwrap().to_string();
        assert_eq!(resp.headers.get(BACKEND_HEADER).unwrap(), backend.as_str());
        let hsts = resp.headers.get("strict-transport-security");
        assert_eq!(hsts.is_some(), tls, "tls={tls}");
        assert!(!resp.headers.contains_key("connection"));
        assert!(!client.closes);
    }
}

#[tokio::test]
async fn while_the_process_stops_responses_close_their_connections() {
    let proxy = switchyard().await;
    let mut client = Client::h1("GET", "/web");
    client.shutting_down = true;
    let (ctx, _) = forwarded(&proxy, &mut client).await;
    let resp = prepared(
        &proxy,
        &mut client,
        &ctx,
        ResponseHeader::build(200, None).unwrap(),
    );
    assert_eq!(resp.headers.get("connection").unwrap(), "close");
    assert!(client.closes);
}

#[tokio::test]
async fn a_failed_attempt_is_answered_once_and_closes_the_connection() {
    let proxy = switchyard().await;
    let mut client = Client::h1("GET", "/web");
    let mut ctx = RequestCtx::new();
    assert!(!admit(&proxy, &mut client, &mut ctx).await);
    let e = Error::create(ErrorType::ConnectRefused, ErrorSource::Upstream, None, None);
    let failure = Switchyard::answer_failure(&mut client, &e, &mut ctx).await;
    assert_eq!(failure.error_code, 502);
    assert_eq!(client.status(), Some(502));
    assert!(client.closes);

    // A response already under way is not followed by a second head.
    let mut started = Client::h1("GET", "/web");
    started.head = Some(ResponseHeader::build(200, None).unwrap());
    let failure = Switchyard::answer_failure(&mut started, &e, &mut RequestCtx::new()).await;
    assert_eq!(failure.error_code, 502);
    assert_eq!(started.status(), Some(200));
}

#[tokio::test]
async fn a_finished_request_is_counted_with_the_status_the_client_got() {
    let proxy = switchyard().await;
    let mut client = Client::h1("GET", "/nowhere").with_header("content-type", "application/grpc");
    let mut ctx = answered(&proxy, &mut client).await;
    proxy.finish(&client, None, &mut ctx);
    let text = String::from_utf8(proxy.runtime.metrics.encode()).unwrap();
    let counted = text
        .lines()
        .find(|l| l.starts_with("lb_http_requests_total{") && l.contains("code=\"404\""));
    assert!(counted.is_some_and(|l| l.ends_with(" 1")), "{text}");
}

#[tokio::test]
async fn the_status_page_reports_each_group() {
    let proxy = switchyard().await;
    let mut client = Client::h1("GET", "/status");
    assert!(admit(&proxy, &mut client, &mut RequestCtx::new()).await);
    assert_eq!(client.status(), Some(200));
    let page: serde_json::Value = serde_json::from_str(body(&client)).unwrap();
    assert_eq!(page["groups"][0]["name"], "web");
    assert_eq!(page["groups"][0]["total"], 2);
}

#[tokio::test]
async fn the_backend_gets_forwarding_headers_and_the_path_without_the_prefix() {
    let proxy = switchyard().await;
    let mut client =
        Client::h1("GET", "/api/users?id=3").with_header("x-forwarded-for", "10.0.0.1");
    client.tls = true;
    let mut ctx = RequestCtx::new();
    assert!(!admit(&proxy, &mut client, &mut ctx).await);
    let mut upstream = client.req.clone();
    Switchyard::prepare_upstream_request(&client, &mut upstream, &ctx).unwrap();
    let header = |name: &str| upstream.headers.get(name).unwrap().to_str().unwrap();
    assert_eq!(header("x-forwarded-for"), "10.0.0.1, 192.0.2.7");
    assert_eq!(header("x-forwarded-proto"), "https");
    assert_eq!(header("x-forwarded-host"), "example.test");
    assert_eq!(upstream.uri.to_string(), "/users?id=3");
}
