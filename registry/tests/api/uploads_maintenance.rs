//! Stale upload sessions are purged with their staged data, and so are upload folders that
//! a dead request left without a session.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn stale_uploads_are_purged_with_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.uploads.max_age = Duration::from_secs(0);
    config.uploads.purge_interval = Duration::from_secs(3600);
    let t = TestServer::start_with(dir, config).await;
    let location = t.start_upload("stale/one").await;
    // Over one encryption segment, so that a part is staged (less stays in the session).
    let r = t.client.patch(&location).body(data(200_000, 5)).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let uploads = t.dir.path().join("blobs/uploads");
    assert_eq!(std::fs::read_dir(&uploads).unwrap().count(), 1);
    // What a monolithic upload leaves when the server dies mid-body: a folder, no session.
    let orphan = uploads.join("0b5e2ab5-0000-4000-8000-00000000dead");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("000000-x"), b"partial").unwrap();

    // Age is measured in whole seconds: wait until the session is older than max_age (0 s).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let purged = t.server.app.registry().purge_stale_uploads().await.unwrap();
    assert_eq!(purged, 2, "the idle session and the orphaned folder");
    assert_eq!(t.client.get(&location).send().await.unwrap().status(), 404);
    let left = std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0); // an emptied folder may go too
    assert_eq!(left, 0, "staged parts removed");
    t.server.stop().await;
}
