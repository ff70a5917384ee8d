//! The contenders of an experiment: Switchyard with each strategy, and NGINX and HAProxy on
//! the same backends, configured alike so the table compares strategies and nothing else:
//!
//! - no active health checks and no passive ejection anywhere (NGINX OSS has no active checks;
//!   its passive `max_fails` is turned off, as is Switchyard's passive ejection) — except
//!   Switchyard's `fastest`, which ranks by active probes and is marked so in the table;
//! - keep-alive connections to the backends everywhere;
//! - every proxy is started in a process group of its own and stopped with the whole group
//!   (NGINX's workers, too), then waited for.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// One contender.
#[derive(Debug, Clone)]
pub enum Contender {
    Switchyard(String),
    Nginx(Option<&'static str>),
    Haproxy(&'static str),
}

/// The peers compared besides Switchyard: (table name, contender).
pub fn peers() -> Vec<(&'static str, Contender)> {
    vec![
        ("nginx round robin", Contender::Nginx(None)),
        ("nginx least_conn", Contender::Nginx(Some("least_conn"))),
        ("haproxy roundrobin", Contender::Haproxy("roundrobin")),
        ("haproxy leastconn", Contender::Haproxy("leastconn")),
    ]
}

/// A started proxy (the leader of its own process group), stopped with its group on drop.
pub struct Running(pub Child);

impl Running {
    /// Stop the whole process group: SIGTERM, up to 5 s for it to exit, then SIGKILL.
    pub fn stop(&mut self) {
        let group = Pid::from_raw(self.0.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) && group_is_empty(group) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether no process is left in process group `group`.
fn group_is_empty(group: Pid) -> bool {
    killpg(group, None).is_err()
}

impl Contender {
    /// The binary this contender needs, if not Switchyard.
    pub fn binary(&self) -> Option<&'static str> {
        match self {
            Contender::Switchyard(_) => None,
            Contender::Nginx(_) => Some("nginx"),
            Contender::Haproxy(_) => Some("haproxy"),
        }
    }

    /// Whether the contender can run here.
    pub fn available(&self) -> bool {
        let Some(bin) = self.binary() else {
            return true;
        };
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
            || Path::new("/usr/sbin").join(bin).is_file()
    }

    /// Whether this contender runs active health checks (only `fastest` does: it ranks by
    /// them).
    pub fn probes(&self) -> bool {
        matches!(self, Contender::Switchyard(s) if s == "fastest")
    }

    /// Start the contender on `port` in `dir`, in a process group of its own.
    pub fn start(
        &self,
        dir: &Path,
        port: u16,
        backends: &[SocketAddr],
        switchyard: &Path,
    ) -> anyhow::Result<Running> {
        let (program, args, env): (&Path, Vec<String>, Vec<(&str, &str)>) = match self {
            Contender::Switchyard(strategy) => {
                let path = dir.join("switchyard.yaml");
                std::fs::write(&path, switchyard_conf(dir, port, backends, strategy))?;
                (
                    switchyard,
                    vec!["-c".into(), path.display().to_string()],
                    vec![("RUST_LOG", "error")],
                )
            }
            Contender::Nginx(method) => {
                let path = dir.join("nginx.conf");
                std::fs::write(&path, nginx_conf(dir, port, backends, *method))?;
                let args = vec![
                    "-p".into(),
                    dir.display().to_string(),
                    "-c".into(),
                    path.display().to_string(),
                    "-e".into(),
                    dir.join("error.log").display().to_string(),
                ];
                (Path::new("nginx"), args, vec![])
            }
            Contender::Haproxy(balance) => {
                let path = dir.join("haproxy.cfg");
                std::fs::write(&path, haproxy_conf(port, backends, balance))?;
                let args = vec!["-db".into(), "-f".into(), path.display().to_string()];
                (Path::new("haproxy"), args, vec![])
            }
        };
        let child = Command::new(program)
            .args(args)
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(Running(child))
    }
}

fn switchyard_conf(dir: &Path, port: u16, backends: &[SocketAddr], strategy: &str) -> String {
    let list: String = backends
        .iter()
        .map(|b| format!("      - address: {b}\n"))
        .collect();
    // Probes only for `fastest`, with a timeout above every profile's latency, so a probe
    // never excludes a slow backend: membership stays the same for every contender.
    let checks = if strategy == "fastest" {
        "    health_check:\n      interval: 1500ms\n      timeout: 1200ms\n"
    } else {
        "    health_check:\n      enabled: false\n"
    };
    format!(
        "version: 1\nthreads: 2\npid_file: {d}/sy.pid\nupgrade_sock: {d}/sy.sock\ngrace_period_seconds: 0\n\
         listeners:\n  - address: 127.0.0.1:{port}\nadmin:\n  enabled: false\nproxy:\n  access_log: false\n\
         target_groups:\n  - name: g\n    strategy: {strategy}\n    passive_health:\n      enabled: false\n{checks}    backends:\n{list}\
         routes:\n  - path_prefix: /\n    target_group: g\n",
        d = dir.display()
    )
}

fn nginx_conf(dir: &Path, port: u16, backends: &[SocketAddr], method: Option<&str>) -> String {
    // max_fails=0: no passive ejection, as for the others.
    let servers: String = backends
        .iter()
        .map(|b| format!("    server {b} max_fails=0;\n"))
        .collect();
    format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
         upstream be {{\n    {m}\n{servers}    keepalive 128;\n  }}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n\
         proxy_pass http://be;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
        d = dir.display(),
        m = method.map(|m| format!("{m};")).unwrap_or_default()
    )
}

fn haproxy_conf(port: u16, backends: &[SocketAddr], balance: &str) -> String {
    // No `check` on the servers: no active health checks, as for the others.
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("  server s{i} {b}\n"))
        .collect();
    format!(
        "global\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  http-reuse always\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\nbackend be\n  balance {balance}\n{servers}"
    )
}
