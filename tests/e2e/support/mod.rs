//! Shared harness for the end-to-end tests: real demo backends (in-process axum servers on
//! loopback), a real `switchyard` process, and a bounded load loop.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_server::{BackendState, Behaviour, RunningBackend};

/// Path of the `switchyard` binary under test.
pub fn switchyard_bin() -> &'static str {
    env!("CARGO_BIN_EXE_switchyard")
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start a demo backend on 127.0.0.1 (random port) with a fixed delay.
pub async fn backend(name: &str, delay_ms: u64) -> RunningBackend {
    backend_with(
        name,
        Behaviour {
            delay_ms,
            ..Behaviour::default()
        },
    )
    .await
}

/// Start a demo backend with any behaviour.
pub async fn backend_with(name: &str, behaviour: Behaviour) -> RunningBackend {
    backend_at("127.0.0.1:0".parse().unwrap(), name, behaviour).await
}

/// Start a demo backend on a given address.
pub async fn backend_at(addr: SocketAddr, name: &str, behaviour: Behaviour) -> RunningBackend {
    backend_server::spawn(addr, BackendState::new(name, behaviour))
        .await
        .expect("backend binds")
}

/// `  - address: ...` lines for a `backends:` list.
pub fn backend_list(backends: &[&RunningBackend]) -> String {
    backends
        .iter()
        .map(|b| format!("      - address: {}\n", b.addr()))
        .collect()
}

/// A config body with one listener on `{PORT}`, `proxy:` settings (lines indented two
/// spaces; none when empty), one target group `g` of `backends` (as from [`backend_list`])
/// with extra group `settings` (lines indented four spaces), and a catch-all route to it.
pub fn single_group(proxy: &str, settings: &str, backends: &str) -> String {
    let proxy = if proxy.is_empty() {
        String::new()
    } else {
        format!("proxy:\n{proxy}")
    };
    format!(
        "listeners:\n  - address: 127.0.0.1:{{PORT}}\n{proxy}target_groups:\n  - name: g\n    backends:\n{backends}{settings}routes:\n  - path_prefix: /\n    target_group: g\n"
    )
}

/// A TLS listener beside the harness's plain one: a free port and a self-signed certificate
/// for `localhost`, with the `listeners:` block that declares both.
pub struct TlsListener {
    pub port: u16,
    /// The configuration's `listeners:` block: `{PORT}` plain, then this one with TLS.
    pub yaml: String,
    ca: reqwest::Certificate,
}

impl TlsListener {
    pub fn new() -> TlsListener {
        let (cert, key) = switchyard::edge::tls::self_signed().unwrap();
        let port = free_port();
        let yaml = format!(
            "listeners:\n  - address: 127.0.0.1:{{PORT}}\n  - address: 127.0.0.1:{port}\n    tls:\n      cert: {}\n      key: {}\n",
            cert.display(),
            key.display()
        );
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
        TlsListener { port, yaml, ca }
    }

    /// `https://localhost:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// A client builder that trusts the certificate and reaches `localhost` at this listener.
    pub fn client(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .add_root_certificate(self.ca.clone())
            .resolve(
                "localhost",
                format!("127.0.0.1:{}", self.port).parse().unwrap(),
            )
    }
}

/// Change a backend's behaviour through its control endpoint, as an operator would.
pub async fn control(backend: &RunningBackend, patch: serde_json::Value) {
    let resp = reqwest::Client::new()
        .put(format!("http://{}/_control", backend.addr()))
        .json(&patch)
        .send()
        .await
        .expect("control request");
    assert_eq!(resp.status(), 200, "control update {patch} refused");
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &PathBuf {
        &self.0
    }

    /// Write `name` with `text` and return its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The runtime API token of [`Switchyard::start_controlled`].
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// Pingora keys every test config needs: private pid and upgrade paths, short grace.
pub fn pingora_header(dir: &TempDir) -> String {
    format!(
        "version: 1\nthreads: 2\npid_file: {d}/sy.pid\nupgrade_sock: {d}/sy-upgrade.sock\ngrace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\n",
        d = dir.path().display()
    )
}

/// Run `switchyard -t -c` on `yaml` (used as is) and return the process output.
pub fn check_config(yaml: &str) -> Output {
    let dir = TempDir::new();
    let path = dir.write("check.yaml", yaml);
    Command::new(switchyard_bin())
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run switchyard -t")
}

/// `yaml` with `proxy.http1_path` set to `$SWITCHYARD_E2E_HTTP1_PATH` when that is set (the
/// suite's second run, on Pingora's HTTP/1 loop), unless the test sets it itself.
pub fn with_http1_path(yaml: &str) -> String {
    match std::env::var("SWITCHYARD_E2E_HTTP1_PATH") {
        Ok(path) if !path.is_empty() && !yaml.contains("http1_path:") => {
            set_proxy_key(yaml, "http1_path", &path)
        }
        _ => yaml.to_string(),
    }
}

/// `yaml` with `key: value` in its `proxy:` section (added when absent).
pub fn set_proxy_key(yaml: &str, key: &str, value: &str) -> String {
    let line = format!("  {key}: {value}\n");
    if let Some(at) = yaml.find("\nproxy:\n") {
        let at = at + "\nproxy:\n".len();
        format!("{}{line}{}", &yaml[..at], &yaml[at..])
    } else if let Some(rest) = yaml.strip_prefix("proxy:\n") {
        format!("proxy:\n{line}{rest}")
    } else {
        format!("{yaml}\nproxy:\n{line}")
    }
}

/// A running `switchyard` process, killed on drop.
pub struct Switchyard {
    child: Child,
    pub port: u16,
    /// Port of the admin listener (metrics, status, dashboard).
    pub admin_port: u16,
    dir: TempDir,
    log: PathBuf,
}

impl Switchyard {
    /// Start switchyard with `body` (Switchyard's keys; `{PORT}` is replaced by the listener
    /// port, `{ADMIN}` by the admin port; an admin section is added when absent) after the
    /// Pingora header, and wait until it answers.
    pub async fn start(body: &str) -> Switchyard {
        Self::start_with_env(body, &[]).await
    }

    /// Like [`Self::start`], with the runtime API unlocked by [`TOKEN`] (in `{DIR}/token`).
    pub async fn start_controlled(body: &str) -> Switchyard {
        let dir = TempDir::new();
        dir.write("token", TOKEN);
        let mut body = body.to_string();
        body.push_str("admin:\n  address: 127.0.0.1:{ADMIN}\n  token_file: {DIR}/token\n");
        let yaml = format!("{}{}", pingora_header(&dir), body);
        Self::start_exact_in(dir, &yaml, &[]).await
    }

    /// Like [`Self::start`] with extra environment variables.
    pub async fn start_with_env(body: &str, env: &[(&str, String)]) -> Switchyard {
        let dir = TempDir::new();
        let yaml = format!("{}{}", pingora_header(&dir), body);
        Self::start_exact_in(dir, &yaml, env).await
    }

    /// Start switchyard with exactly `yaml` (`{PORT}`, `{ADMIN}` and `{DIR}` replaced; an
    /// admin section added when absent) and wait until it answers.
    pub async fn start_exact(yaml: &str) -> Switchyard {
        Self::start_exact_in(TempDir::new(), yaml, &[]).await
    }

    async fn start_exact_in(dir: TempDir, yaml: &str, env: &[(&str, String)]) -> Switchyard {
        // The ports were free a moment ago; another test may take one before this instance
        // binds it. Switchyard then refuses to start, naming the address: try other ports.
        let mut dir = Some(dir);
        for attempt in 1.. {
            let sy = Self::spawn_on_free_ports(dir.take().unwrap(), yaml, env);
            match sy.wait_listening().await {
                Ok(sy) => return sy,
                Err((sy, log)) if attempt < 5 && log.contains("cannot listen on") => {
                    dir = Some(sy.into_dir());
                }
                Err((_, log)) => panic!("switchyard exited early:\n{log}"),
            }
        }
        unreachable!()
    }

    fn spawn_on_free_ports(dir: TempDir, yaml: &str, env: &[(&str, String)]) -> Switchyard {
        let port = free_port();
        let admin_port = free_port();
        let mut yaml = yaml.to_string();
        if !yaml.contains("\nadmin:") {
            yaml.push_str("admin:\n  address: 127.0.0.1:{ADMIN}\n");
        }
        let yaml = with_http1_path(&yaml)
            .replace("{PORT}", &port.to_string())
            .replace("{ADMIN}", &admin_port.to_string())
            .replace("{DIR}", &dir.path().display().to_string());
        let conf = dir.write("switchyard.yaml", &yaml);
        let log = dir.path().join("switchyard.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(switchyard_bin());
        cmd.arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log_file);
        cmd.env("RUST_LOG", "info,pingora_proxy=error,pingora_core=warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn switchyard");
        Switchyard {
            child,
            port,
            admin_port,
            dir,
            log,
        }
    }

    /// The instance's directory, for another attempt (the instance has exited).
    fn into_dir(mut self) -> TempDir {
        std::mem::replace(&mut self.dir, TempDir::new())
    }

    /// Wait until the instance listens; if it exits first, give it back with its log.
    async fn wait_listening(mut self) -> Result<Switchyard, (Switchyard, String)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = format!("({status}) {}", self.log_text());
                return Err((self, log));
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // The admin listener binds on its own, usually at the same moment: give it a
                // little time (a test without an admin listener just waits this out).
                let admin_deadline = Instant::now() + Duration::from_secs(2);
                while std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).is_err()
                    && Instant::now() < admin_deadline
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                return Ok(self);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "switchyard did not listen within 20 s:\n{}",
            self.log_text()
        );
    }

    /// Wait until another of the instance's listeners (not the first one, which `start` waits
    /// for) accepts connections: each listener binds on its own.
    pub async fn wait_listener(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "listener 127.0.0.1:{port} never opened:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A raw TCP connection to the proxy's listener, for requests written by hand.
    pub async fn connect(&self) -> tokio::net::TcpStream {
        tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("the proxy accepts a connection")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    /// The admin listener's metrics text.
    ///
    /// Read once no request is in flight, waiting a second at most: an attempt's outcome is
    /// recorded just after its answer has gone out, so a test reading right after its own
    /// requests would otherwise race the recording.
    pub async fn metrics(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let text = self.metrics_now().await;
            if metric_sum(&text, "lb_backend_inflight", &[]) == 0.0 || Instant::now() >= deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The metrics page as it is now.
    async fn metrics_now(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The admin listener's status document.
    pub async fn status(&self) -> serde_json::Value {
        reqwest::get(self.admin_url("/status"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The status document once no backend has a request in flight, or after 5 s whatever
    /// it says then. A request's outcome is recorded just after its last byte reached the
    /// client, so a snapshot taken at once may still count the last request in flight.
    pub async fn status_settled(&self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let status = self.status().await;
            if nothing_in_flight(&status) || Instant::now() >= deadline {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Call the runtime API: `method` on `path` with an optional JSON body, with `token`
    /// as bearer token; returns the status and the JSON answer.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = reqwest::Client::new().request(method, self.admin_url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let json = resp.json().await.unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// Replace the configuration file's text (for a reload); `{PORT}` and `{ADMIN}` and
    /// `{DIR}` are replaced as at start.
    pub fn rewrite_config(&self, yaml: &str) {
        let yaml = with_http1_path(yaml)
            .replace("{PORT}", &self.port.to_string())
            .replace("{ADMIN}", &self.admin_port.to_string())
            .replace("{DIR}", &self.dir.path().display().to_string());
        std::fs::write(self.conf_path(), yaml).unwrap();
    }

    /// The configuration file this instance runs with.
    pub fn conf_path(&self) -> PathBuf {
        self.dir.path().join("switchyard.yaml")
    }

    /// Start a new process with `-u` and the configuration `yaml` (this one's when `None`):
    /// it checks everything, then asks this one to hand over its listeners and takes them.
    pub fn spawn_upgrade(&self, yaml: Option<&str>, env: &[(&str, String)]) -> Child {
        let conf = match yaml {
            Some(text) => self.dir.write("upgraded.yaml", &with_http1_path(text)),
            None => self.conf_path(),
        };
        let log = std::fs::File::create(self.dir.path().join("switchyard-upgraded.log")).unwrap();
        let mut cmd = Command::new(switchyard_bin());
        cmd.arg("-u")
            .arg("-c")
            .arg(conf)
            .env("RUST_LOG", "info,pingora_proxy=error")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn().expect("spawn upgraded switchyard")
    }

    /// What the upgraded process logged.
    pub fn upgrade_log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("switchyard-upgraded.log")).unwrap_or_default()
    }

    /// Send `signal` (e.g. `-TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal} failed");
    }

    /// Wait up to `timeout` for the process to exit; its exit status if it did.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything switchyard logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn dir(&self) -> &TempDir {
        &self.dir
    }
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One response as a test sees it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status, or 0 when the request failed at the transport level.
    pub status: u16,
    /// The `x-backend` header (the demo backend's name).
    pub backend: Option<String>,
    pub headers: reqwest::header::HeaderMap,
}

/// Read up to `count` complete responses (each a head and its `content-length` body) from
/// `s`, in order; fewer when the connection closes or breaks first, or nothing more comes
/// within 5 s.
pub async fn read_responses(s: &mut tokio::net::TcpStream, count: usize) -> Vec<String> {
    use tokio::io::AsyncReadExt;
    let mut answers = Vec::new();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while answers.len() < count {
        if let Some(len) = complete_response_len(&got) {
            answers.push(String::from_utf8_lossy(&got[..len]).to_string());
            got.drain(..len);
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    answers
}

/// Everything that arrives on `s` until the proxy closes the connection; `None` when it is
/// still open after `limit`.
pub async fn read_until_close(s: &mut tokio::net::TcpStream, limit: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    // A reset ends the connection as a close does: only the time limit says it stayed open.
    let _ended = tokio::time::timeout(limit, s.read_to_end(&mut got))
        .await
        .ok()?;
    Some(String::from_utf8_lossy(&got).to_string())
}

/// Length of the first complete response in `bytes` (head and `content-length` body).
fn complete_response_len(bytes: &[u8]) -> Option<usize> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&bytes[..end]);
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    (bytes.len() >= end + length).then_some(end + length)
}

/// Whether the peer closes `s` (end of stream or reset) within 5 s without sending more.
pub async fn closes_without_more(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// A keep-alive client, optionally bound to a source address.
pub fn client(source: Option<IpAddr>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(64);
    if let Some(ip) = source {
        b = b.local_address(ip);
    }
    b.build().unwrap()
}

/// GET `url` once.
pub async fn get(client: &reqwest::Client, url: &str) -> Answer {
    match client.get(url).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let backend = headers
                .get("x-backend")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let _ = resp.bytes().await;
            Answer {
                status,
                backend,
                headers,
            }
        }
        Err(_) => Answer {
            status: 0,
            backend: None,
            headers: Default::default(),
        },
    }
}

/// Send `total` GETs to `url` from `concurrency` workers (bounded by count and by a 60 s
/// deadline) and return every answer.
pub async fn load(url: &str, total: usize, concurrency: usize) -> Vec<Answer> {
    let client = client(None);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, url) = (client.clone(), next.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total
                && Instant::now() < deadline
            {
                out.push(get(&client, &url).await);
            }
            out
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Count answers per backend name.
pub fn shares(answers: &[Answer]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for a in answers {
        *m.entry(a.backend.clone().unwrap_or_else(|| "-".into()))
            .or_insert(0) += 1;
    }
    m
}

/// Count answers per status.
pub fn statuses(answers: &[Answer]) -> HashMap<u16, usize> {
    let mut m = HashMap::new();
    for a in answers {
        *m.entry(a.status).or_insert(0) += 1;
    }
    m
}

/// Poll `check` every 100 ms until it holds or `timeout` passes; returns whether it held.
/// A helper server a test starts from another program (Python's `http.server`, OpenSSL's
/// `s_server`): its output discarded, ready once it accepts on `port`, killed on drop.
pub struct ListeningProcess {
    child: Child,
    pub port: u16,
}

impl ListeningProcess {
    /// Spawn `command` and wait, up to `within`, until it accepts connections on `port`.
    pub async fn start(mut command: Command, port: u16, within: Duration) -> ListeningProcess {
        let what = format!("{command:?}");
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
        // Owned from here, so a failed wait below still kills it.
        let process = ListeningProcess { child, port };
        let listening = eventually(within, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        assert!(listening, "{what} never listened on {port}");
        process
    }
}

impl Drop for ListeningProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether no backend of any target group in a status document has a request in flight.
fn nothing_in_flight(status: &serde_json::Value) -> bool {
    status["target_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["backends"].as_array().into_iter().flatten())
        .all(|b| b["inflight"] == 0)
}

pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sum of the samples of `metric` whose labels contain every `label="value"` in `labels`.
pub fn metric_sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(metric)
                && matches!(l.as_bytes().get(metric.len()), Some(b'{') | Some(b' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// Path of an external tool, or a panic that says how to install it.
pub fn require_tool(name: &str, install_hint: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{name} is required for this test: {install_hint} (scripts/test.sh installs it)")
    })
}

/// A real EC2 API emulator (`moto_server` from PyPI) on loopback, stopped on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub async fn start() -> Moto {
        let bin = require_tool("moto_server", "pip install 'moto[server]'");
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto { child, port };
        let url = moto.endpoint();
        let up = eventually(Duration::from_secs(30), || {
            let url = url.clone();
            async move { reqwest::get(format!("{url}/moto-api/")).await.is_ok() }
        })
        .await;
        assert!(up, "moto_server did not start");
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stop the emulator (the API becomes unreachable).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// An EC2 client with test credentials; never touches instance metadata.
    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::Config::builder()
                .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
                .region(aws_sdk_ec2::config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                    "test", "test", None, None, "test",
                ))
                .endpoint_url(self.endpoint())
                .build(),
        )
    }

    /// An ELBv2 client with test credentials.
    pub fn elb(&self) -> aws_sdk_elasticloadbalancingv2::Client {
        use aws_sdk_elasticloadbalancingv2::config;
        aws_sdk_elasticloadbalancingv2::Client::from_conf(
            config::Config::builder()
                .behavior_version(config::BehaviorVersion::latest())
                .region(config::Region::new("us-east-1"))
                .credentials_provider(config::Credentials::new("test", "test", None, None, "test"))
                .endpoint_url(self.endpoint())
                .build(),
        )
    }

    /// Environment for a child process: test credentials, region, no metadata service.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", "/nonexistent".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".into()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Closed-loop GETs from a few clients until stopped (or 60 s), counting every outcome.
pub struct BackgroundLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<(u64, Vec<u16>)>>,
}

impl BackgroundLoad {
    /// Start `workers` clients sending GETs to `url`, each pausing `pause` between requests.
    pub fn start(url: &str, workers: usize, pause: Duration) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers = (0..workers)
            .map(|_| {
                let (stop, url) = (stop.clone(), url.to_string());
                tokio::spawn(async move {
                    let c = client(None);
                    let (mut ok, mut failed) = (0u64, Vec::new());
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && Instant::now() < deadline
                    {
                        match get(&c, &url).await.status {
                            200 => ok += 1,
                            other => failed.push(other),
                        }
                        tokio::time::sleep(pause).await;
                    }
                    (ok, failed)
                })
            })
            .collect();
        Self { stop, workers }
    }

    /// Stop and return (successes, statuses of the failures: 0 = transport error).
    pub async fn stop(self) -> (u64, Vec<u16>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut ok, mut failed) = (0, Vec::new());
        for w in self.workers {
            let (o, f) = w.await.unwrap();
            ok += o;
            failed.extend(f);
        }
        (ok, failed)
    }
}

/// A real `redis-server` (Debian's package) on loopback, stopped on drop.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

impl Redis {
    /// Start a Redis with no persistence on a free port.
    pub async fn start() -> Redis {
        Self::start_on(free_port()).await
    }

    async fn start_on(port: u16) -> Redis {
        let dir = TempDir::new();
        let mut redis = Redis {
            child: None,
            port,
            dir,
        };
        redis.restart().await;
        redis
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kill it (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        let bin = require_tool("redis-server", "apt-get install redis-server");
        let child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let port = self.port;
        let up = eventually(Duration::from_secs(10), || async move {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        assert!(up, "redis-server did not start");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
