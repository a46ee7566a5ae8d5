//! The archive contract (tests/contract) against a real PostgreSQL server: the one at
//! `KNHK_TEST_POSTGRES_URL` (.ci/run starts a throwaway cluster from Debian's package and sets
//! it). Each test works in a database of its own (tests/pg_scratch: without the variable it
//! prints a "SKIPPED:" line and passes, except under CI).

mod contract;
mod pg_scratch;

use std::sync::Arc;

use knhk_archive::PgArchive;
use knhk_engine::archive::CaseArchive;
use pg_scratch::Database;
use tokio_postgres::NoTls;

/// A fresh archive in a new database, or None (skipped, said so) without a server.
fn fresh(test: &str) -> Option<(Database, Arc<PgArchive>)> {
    let db = pg_scratch::fresh(test)?;
    let a = PgArchive::open(db.config.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.kind(), "postgres");
    Some((db, Arc::new(a)))
}

#[test]
fn store_get_list_page_replace_and_retention() {
    let Some((_db, a)) = fresh("store") else {
        return;
    };
    contract::store_get_list_page_replace_and_retention(&*a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_cases_are_archived_before_eviction_and_read_back() {
    let Some((_db, a)) = fresh("evict") else {
        return;
    };
    contract::finished_cases_are_archived_before_eviction_and_read_back(a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_archive_fails_nothing_is_evicted_and_creation_says_why() {
    let Some((_db, a)) = fresh("down") else {
        return;
    };
    contract::while_the_archive_fails_nothing_is_evicted_and_creation_says_why(a).await;
}

/// The events view gives SQL one row per event, with lifecycle names and positions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_view_and_a_connection_opened_again() {
    let Some((db, a)) = fresh("view") else {
        return;
    };
    contract::finished_cases_are_archived_before_eviction_and_read_back(a.clone()).await;
    let (client, conn) = db
        .config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT lifecycle, count(*) FROM knhk_events GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![("complete".to_string(), 80), ("start".to_string(), 80)]
    );
    // no timer ran in these cases: the view's by_timer column says so
    let timed: i64 = client
        .query_one("SELECT count(*) FROM knhk_events WHERE by_timer", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert_eq!(timed, 0);
    // The archive's connections are ended by the server (an administrator, a restart): the
    // next calls connect again.
    client
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            db.name
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Termination is asynchronous: wait until the archive's backends are gone.
    let t0 = std::time::Instant::now();
    loop {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&db.name],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .get(0);
        if n == 0 {
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "backends not ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let a2 = a.clone();
    let count = tokio::task::spawn_blocking(move || {
        // The first call may find its connection broken (and fail); the next one reconnects.
        let _ = a2.count();
        a2.count()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(count, Ok(40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_deleted_with_its_history_leaves_memory_and_the_archive() {
    let Some((_db, a)) = fresh("history") else {
        return;
    };
    contract::a_version_deleted_with_its_history_leaves_memory_and_the_archive(a).await;
}
