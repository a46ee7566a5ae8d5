//! The archive contract (tests/contract) against the embedded SQLite archive, in a file of a
//! temporary directory.

mod contract;

use std::path::PathBuf;
use std::sync::Arc;

use knhk_archive::SqliteArchive;

/// A fresh archive in its own directory, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fresh(name: &str) -> (Scratch, Arc<SqliteArchive>) {
    let d = std::env::temp_dir().join(format!("knhk-archive-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let a = SqliteArchive::open_in(&d).unwrap_or_else(|e| panic!("{e}"));
    (Scratch(d), Arc::new(a))
}

#[test]
fn store_get_list_page_replace_and_retention() {
    let (_d, a) = fresh("store");
    contract::store_get_list_page_replace_and_retention(&*a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_cases_are_archived_before_eviction_and_read_back() {
    let (_d, a) = fresh("evict");
    contract::finished_cases_are_archived_before_eviction_and_read_back(a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_archive_fails_nothing_is_evicted_and_creation_says_why() {
    let (_d, a) = fresh("down");
    contract::while_the_archive_fails_nothing_is_evicted_and_creation_says_why(a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_deleted_with_its_history_leaves_memory_and_the_archive() {
    let (_d, a) = fresh("history");
    contract::a_version_deleted_with_its_history_leaves_memory_and_the_archive(a).await;
}
