//! What cluster mode does not do yet is refused at start with a line naming it, never ignored
//! (docs/cluster.md): `--durability sync`, an SQLite archive, a cluster-wide cap of live
//! cases. The refusals come before any connection, so no NATS or etcd is needed.

use std::process::Command;

fn serve_cluster(extra: &[&str]) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!("knhk-cluster-flags-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_knhk"))
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "off",
            "--nats",
            "nats://127.0.0.1:1",
            "--etcd",
            "http://127.0.0.1:1",
            "--node-id",
            "a",
            "--advertise",
            "127.0.0.1:1",
            "--data-dir",
        ])
        .arg(&dir)
        .args(extra)
        .output()
        .expect("run knhk");
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cluster_mode_refuses_what_it_does_not_do() {
    for (flags, named) in [
        (
            &["--durability", "sync"][..],
            "--durability sync is refused",
        ),
        (
            &["--durability", "relaxed", "--archive", "sqlite"][..],
            "--archive sqlite (a node's own file",
        ),
        (
            &[
                "--durability",
                "relaxed",
                "--max-live-cases-per-namespace",
                "5",
            ][..],
            "--max-live-cases-per-namespace",
        ),
    ] {
        let (code, stderr) = serve_cluster(flags);
        assert_eq!(code, Some(2), "{flags:?}: exit code; stderr: {stderr}");
        assert!(
            stderr.contains(named),
            "{flags:?}: stderr should name {named:?}: {stderr}"
        );
    }
}
