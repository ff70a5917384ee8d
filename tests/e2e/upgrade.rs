//! Zero-downtime operations. `switchyard -u` checks everything that can fail (configuration,
//! certificates, the first discovery) before it asks the running instance to hand over its
//! listeners: a good upgrade under load loses no request, and an upgrade that cannot succeed
//! exits non-zero while the old process keeps serving, also with no failed request.

use crate::support;
use std::process::Command;
use std::time::Duration;

use support::*;

async fn exit_of(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_upgrade_under_load_loses_no_request() {
    let a = backend("a", 2).await;
    let b = backend("b", 2).await;
    let mut old = Switchyard::start(&single_group("", "", &backend_list(&[&a, &b]))).await;
    let url = old.url("/work");
    let load = BackgroundLoad::start(&url, 4, Duration::from_millis(2));
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The new process signals the old one itself once it is ready.
    let mut new = old.spawn_upgrade(None, &[]);
    let old_gone = old.wait_exit(Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ok, failed) = load.stop().await;
    let new_alive = new.try_wait().unwrap().is_none();
    let answered_after = get(&client(None), &url).await.status;
    let _ = new.kill();
    let _ = new.wait();

    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the upgrade: {failed:?}",
        failed.len(),
        ok + failed.len() as u64
    );
    assert!(ok > 500, "only {ok} requests");
    assert!(
        old_gone.is_some(),
        "the old process did not exit after the upgrade"
    );
    assert!(
        new_alive,
        "the new process died:\n{}",
        old.upgrade_log_text()
    );
    assert_eq!(answered_after, 200, "the new process serves");
    let logs = format!("{}{}", old.log_text(), old.upgrade_log_text());
    assert!(
        !logs.contains(" ERROR "),
        "an upgrade logs nothing at ERROR:\n{logs}"
    );
}

/// The running configuration with `edit` applied, for an upgrade that must fail.
fn broken(old: &Switchyard, edit: impl Fn(&str) -> String) -> String {
    edit(&std::fs::read_to_string(old.conf_path()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_that_cannot_succeed_leaves_the_old_process_serving() {
    let a = backend("a", 2).await;
    let mut old = Switchyard::start(&single_group("", "", &backend_list(&[&a]))).await;
    let closed = free_port();
    let fake_aws = vec![
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ("AWS_CONFIG_FILE", "/nonexistent".to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".to_string()),
    ];
    let cases = [
        (
            "an unreadable certificate",
            broken(&old, |y| {
                y.replacen(
                    "listeners:\n",
                    &format!("listeners:\n  - address: 127.0.0.1:{}\n    tls:\n      cert: /nonexistent/cert.pem\n      key: /nonexistent/key.pem\n", free_port()),
                    1,
                )
            }),
            "cannot read /nonexistent/cert.pem",
        ),
        (
            "an unreachable EC2 endpoint",
            broken(&old, |y| {
                y.replacen(
                    "target_groups:\n",
                    &format!("target_groups:\n  - name: ec2\n    ec2:\n      region: us-east-1\n      endpoint: http://127.0.0.1:{closed}\n      filters: [{{name: tag:Cluster, values: [X]}}]\n"),
                    1,
                )
            }),
            "the first discovery failed",
        ),
    ];
    for (what, yaml, reason) in cases {
        let load = BackgroundLoad::start(&old.url("/x"), 3, Duration::from_millis(5));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut new = old.spawn_upgrade(Some(&yaml), &fake_aws);
        let status = exit_of(&mut new, Duration::from_secs(45)).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (ok, failed) = load.stop().await;
        assert!(
            status.is_some_and(|s| !s.success()),
            "{what}: the upgrade did not fail ({status:?}):\n{}",
            old.upgrade_log_text()
        );
        assert!(
            old.upgrade_log_text().contains(reason),
            "{what}: no reason given:\n{}",
            old.upgrade_log_text()
        );
        assert!(!old.has_exited(), "{what}: the old process stopped");
        assert!(
            ok > 50 && failed.is_empty(),
            "{what}: {ok} ok, failed {failed:?}"
        );
    }
    assert_eq!(get(&client(None), &old.url("/x")).await.status, 200);
    let _ = old.wait_exit(Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_mode_writes_its_pid_and_stops_on_sigterm() {
    let a = backend("a", 0).await;
    let dir = TempDir::new();
    let port = free_port();
    let admin = free_port();
    let pid_file = dir.path().join("sy.pid");
    let yaml = format!(
        "version: 1\nthreads: 1\npid_file: {}\nupgrade_sock: {}/sy.sock\nerror_log: {}/sy.log\n\
         listeners:\n  - address: 127.0.0.1:{port}\nadmin:\n  address: 127.0.0.1:{admin}\ntarget_groups:\n  - name: g\n    backends:\n{}routes:\n  - path_prefix: /\n    target_group: g\n",
        pid_file.display(),
        dir.path().display(),
        dir.path().display(),
        backend_list(&[&a])
    );
    let conf = dir.write("sy.yaml", &yaml);
    let status = Command::new(switchyard_bin())
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .status()
        .unwrap();
    assert!(status.success(), "the -d parent exits 0 once forked");
    let url = format!("http://127.0.0.1:{port}/x");
    assert!(
        eventually(Duration::from_secs(10), || async {
            get(&client(None), &url).await.status == 200
        })
        .await
    );
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(pid.parse::<u32>().is_ok(), "pid file: {pid:?}");
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // No grace settings in the file: an idle daemon still stops at once.
    let stopped = eventually(Duration::from_secs(2), || async {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    })
    .await;
    assert!(stopped, "the daemon was still running 2 s after SIGTERM");
    let log = std::fs::read_to_string(dir.path().join("sy.log")).unwrap_or_default();
    assert!(!log.contains(" ERROR "), "{log}");
}
