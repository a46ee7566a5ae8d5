//! Slowloris on the HTTP port (issue 12, item 5): connections that never finish a request
//! head — half-sent requests, silent connections, and a client that drips one header line at
//! a time — are closed within `--http-header-timeout-ms`, while `/health/ready` keeps
//! answering in well under a second. Driven with raw TCP sockets against the real binary.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;
use support::{free_port, scratch, spawn};

const HEADER_TIMEOUT_MS: u64 = 500;

/// One complete request on its own connection: the status code and how long it took.
async fn get(addr: &str, path: &str) -> (u16, Duration) {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("response within 5 s")
        .expect("read");
    let text = String::from_utf8_lossy(&buf);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, t0.elapsed())
}

/// Waits until the server closes `s` (EOF or reset); the time from `opened`, or None if it
/// was still open after `limit`.
async fn closed_after(mut s: TcpStream, opened: Instant, limit: Duration) -> Option<Duration> {
    let mut buf = [0u8; 512];
    loop {
        let left = limit.checked_sub(opened.elapsed())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(opened.elapsed()),
            // A response to a half-sent request would be a bug; an error response
            // (408) before closing is fine: keep reading until the close.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_http_connections_are_closed_and_probes_keep_answering() {
    let dir = scratch("slowloris");
    let http = format!("127.0.0.1:{}", free_port());
    let timeout = HEADER_TIMEOUT_MS.to_string();
    let mut p = spawn(
        &dir.join("data"),
        &dir.join("server.log"),
        &["--http-addr", &http, "--http-header-timeout-ms", &timeout],
        None,
    );
    p.ready().await.expect("server ready");
    let t0 = Instant::now();
    while get(&http, "/health/ready").await.0 != 200 {
        assert!(t0.elapsed() < Duration::from_secs(20), "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 20 half-sent requests and 20 silent connections.
    let mut slow = Vec::new();
    for i in 0..40 {
        let mut s = TcpStream::connect(&http).await.expect("connect");
        let opened = Instant::now();
        if i % 2 == 0 {
            s.write_all(b"GET /health/ready HTTP/1.1\r\nHost: t\r\nX-Slow: 1\r\n")
                .await
                .expect("partial write");
        }
        slow.push((s, opened));
    }
    // One client drips a header line every 100 ms: dripping must not extend the deadline.
    let drip = tokio::spawn({
        let http = http.clone();
        async move {
            let mut s = TcpStream::connect(&http).await.expect("connect");
            let opened = Instant::now();
            let _ = s.write_all(b"GET /health/ready HTTP/1.1\r\n").await;
            for i in 0..100 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if s.write_all(format!("X-Drip-{i}: 1\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return Some(opened.elapsed());
                }
                let mut probe = [0u8; 64];
                if let Ok(Ok(0)) =
                    tokio::time::timeout(Duration::from_millis(1), s.read(&mut probe)).await
                {
                    return Some(opened.elapsed());
                }
            }
            None
        }
    });

    // The probe still answers quickly while those connections are held.
    let (code, took) = get(&http, "/health/ready").await;
    assert_eq!(code, 200);
    assert!(took < Duration::from_secs(1), "/health/ready took {took:?}");

    let limit = Duration::from_millis(HEADER_TIMEOUT_MS * 6);
    let mut times = Vec::new();
    for (i, (s, opened)) in slow.into_iter().enumerate() {
        let closed = closed_after(s, opened, limit).await;
        let t = closed.unwrap_or_else(|| {
            panic!(
                "connection {i} ({}) still open after {limit:?}: no header deadline",
                if i % 2 == 0 {
                    "half-sent request"
                } else {
                    "silent"
                }
            )
        });
        times.push(t);
    }
    let first = times.iter().min().copied().unwrap_or_default();
    assert!(
        first >= Duration::from_millis(HEADER_TIMEOUT_MS / 2),
        "closed too early ({first:?}): the deadline is {HEADER_TIMEOUT_MS} ms"
    );
    let dripped = drip.await.expect("join");
    assert!(
        dripped.is_some_and(|t| t < limit),
        "a client dripping headers was still served after {limit:?}: {dripped:?}"
    );
    // And the server still serves normally afterwards.
    assert_eq!(get(&http, "/health/ready").await.0, 200);
    eprintln!(
        "closed after {:?}..{:?}; dripping client after {dripped:?}",
        first,
        times.iter().max()
    );
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The soft limit on open files in /proc/<pid>/limits: (soft, hard).
fn open_file_limits(pid: u32) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let mut f = line["Max open files".len()..].split_whitespace();
    (
        f.next().unwrap_or_default().to_string(),
        f.next().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_file_soft_limit_is_raised_to_the_hard_limit() {
    let dir = scratch("nofile");
    // Started with a low soft limit, as many shells and service managers leave it.
    let mut p = spawn(
        &dir.join("data"),
        &dir.join("server.log"),
        &[],
        Some("ulimit -Sn 256"),
    );
    p.ready().await.expect("server ready");
    let (soft, hard) = open_file_limits(p.child.id());
    assert_eq!(
        soft, hard,
        "soft limit {soft} not raised to the hard limit {hard}"
    );
    assert!(
        p.log_text().contains("open-file limit (soft) raised"),
        "the new limit is logged"
    );
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
