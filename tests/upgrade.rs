//! Zero-downtime operations: a graceful upgrade (new process with `-u`, SIGQUIT to the old
//! one) under a bounded load of more than 20 s loses no request; every response is counted.

mod support;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_upgrade_under_load_loses_no_request() {
    let a = backend("a", 2).await;
    let b = backend("b", 2).await;
    let mut old = Switchyard::start(&single_group("", "", &backend_list(&[&a, &b]))).await;

    // Closed-loop load from 4 clients for 22 s, bounded by time; every outcome is counted.
    let stop = Arc::new(AtomicBool::new(false));
    let url = old.url("/work");
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, url) = (stop.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            let c = client(None);
            let (mut ok, mut failed) = (0u64, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let a = get(&c, &url).await;
                if a.status == 200 {
                    ok += 1;
                } else {
                    failed.push(a.status);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (ok, failed)
        }));
    }

    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut new = old.spawn_upgrade();
    // The new process must be waiting on the upgrade socket before the old one lets go.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let quit = Command::new("kill")
        .args(["-QUIT", &old.pid().to_string()])
        .status()
        .unwrap();
    assert!(quit.success());

    tokio::time::sleep(Duration::from_secs(17)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0u64, Vec::new());
    for w in workers {
        let (o, f) = w.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    let old_gone = eventually(Duration::from_secs(10), || {
        let exited = old.has_exited();
        async move { exited }
    })
    .await;
    let new_alive = new.try_wait().unwrap().is_none();
    let _ = new.kill();
    let _ = new.wait();

    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the upgrade: {failed:?}",
        failed.len(),
        ok + failed.len() as u64
    );
    assert!(ok > 1000, "only {ok} requests in 22 s");
    assert!(old_gone, "the old process did not exit after SIGQUIT");
    assert!(new_alive, "the new process died");
    // Requests after the old process left were served by the new one.
    assert_eq!(
        get(&client(None), &url).await.status,
        0,
        "killed new process no longer answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_mode_writes_its_pid_and_stops_on_sigterm() {
    let a = backend("a", 0).await;
    let dir = TempDir::new();
    let port = free_port();
    let admin = free_port();
    let pid_file = dir.path().join("sy.pid");
    let yaml = format!(
        "version: 1\nthreads: 1\npid_file: {}\nupgrade_sock: {}/sy.sock\nerror_log: {}/sy.log\ngrace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\n\
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
    let stopped = eventually(Duration::from_secs(10), || async {
        get(&client(None), &url).await.status == 0
    })
    .await;
    assert!(stopped, "the daemon kept serving after SIGTERM");
}
