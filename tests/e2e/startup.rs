//! Starting and stopping: a port already in use is one clear line and a non-zero exit within
//! seconds, nothing half-started; SIGTERM stops an idle instance at once (whatever its grace
//! period) and lets requests in flight finish first.

use crate::support;
use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// A configuration without any shutdown settings (Pingora's defaults: 300 s grace period).
fn plain_config(backends: &str) -> String {
    format!(
        "pid_file: {{DIR}}/sy.pid\nupgrade_sock: {{DIR}}/sy.sock\nlisteners:\n  - address: 127.0.0.1:{{PORT}}\ntarget_groups:\n  - name: g\n    backends:\n{backends}routes:\n  - path_prefix: /\n    target_group: g\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_port_exits_at_once_naming_the_address() {
    let a = backend("a", 0).await;
    let first = Switchyard::start_exact(&plain_config(&backend_list(&[&a]))).await;
    let dir = TempDir::new();
    // Same listener, another pid file, upgrade socket and admin port.
    let yaml = std::fs::read_to_string(first.conf_path())
        .unwrap()
        .replace(
            &first.dir().path().display().to_string(),
            &dir.path().display().to_string(),
        )
        .replace(
            &format!(":{}", first.admin_port),
            &format!(":{}", free_port()),
        );
    let conf = dir.write("second.yaml", &yaml);
    let started = Instant::now();
    let out = Command::new(switchyard_bin())
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let address = format!("127.0.0.1:{}", first.port);
    assert!(
        stderr.contains("listeners[0].address")
            && stderr.contains(&address)
            && stderr.contains("already in use"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("listening for HTTP"),
        "claimed to listen: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(get(&client(None), &first.url("/x")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_an_idle_instance_at_once() {
    let a = backend("a", 0).await;
    let mut sy = Switchyard::start_exact(&plain_config(&backend_list(&[&a]))).await;
    assert_eq!(get(&client(None), &sy.url("/x")).await.status, 200);
    let started = Instant::now();
    sy.signal("-TERM");
    let status = sy.wait_exit(Duration::from_secs(5)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(!sy.log_text().contains(" ERROR "), "{}", sy.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_request_in_flight_finish() {
    let slow = backend("slow", 1500).await;
    let mut sy = Switchyard::start_exact(&plain_config(&backend_list(&[&slow]))).await;
    let url = sy.url("/slow");
    let request = tokio::spawn(async move { get(&client(None), &url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    sy.signal("-TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sy.has_exited(), "exited with a request in flight");
    let answer = request.await.unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let status = sy.wait_exit(Duration::from_secs(2)).await;
    assert!(status.is_some(), "still running 2 s after its last request");
}

/// `THP_enabled` of a process, as the kernel reports it (Linux 6.0 and later).
fn huge_pages_enabled(pid: u32) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("THP_enabled:"))?;
    Some(line.split_whitespace().nth(1)? == "1")
}

/// The heap stays on 4 KiB pages, which halved the resident set after a 500-connection load,
/// unless `MIMALLOC_ALLOW_THP` in the environment allows huge pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_huge_pages_are_off_unless_the_environment_allows_them() {
    let a = backend("a", 0).await;
    let config = single_group("", "", &backend_list(&[&a]));
    let default = Switchyard::start(&config).await;
    let allowed = Switchyard::start_with_env(&config, &[("MIMALLOC_ALLOW_THP", "1".into())]).await;
    let Some(default_enabled) = huge_pages_enabled(default.pid()) else {
        eprintln!("this kernel does not report THP_enabled in /proc/PID/status; not checked");
        return;
    };
    assert!(!default_enabled, "huge pages are on by default");
    assert_eq!(huge_pages_enabled(allowed.pid()), Some(true));
    for sy in [&default, &allowed] {
        assert_eq!(get(&client(None), &sy.url("/")).await.status, 200);
    }
}

/// Every other test runs with tokio's own global queue interval; a proxy set to look at the
/// global queue every other task (the fair-scheduling setting) serves as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_with_a_short_global_queue_interval_serves_every_request() {
    let a = backend("a", 0).await;
    let b = backend("b", 0).await;
    let config = format!(
        "runtime_global_queue_interval: 2\n{}",
        single_group("", "", &backend_list(&[&a, &b]))
    );
    let sy = Switchyard::start(&config).await;
    let answers = load(&sy.url("/"), 400, 40).await;
    assert_eq!(statuses(&answers), HashMap::from([(200, 400)]));
    let shares = shares(&answers);
    assert_eq!((shares["a"], shares["b"]), (200, 200), "{shares:?}");
}
