//! An upload survives a restart of the server between two chunks.

use crate::support::*;

#[tokio::test]
async fn upload_continues_after_restart() {
    let t = TestServer::start().await;
    let blob = data(3_000_001, 1);
    let (a, b) = blob.split_at(1_234_567);
    let location = t.start_upload("restart/me").await;
    let r = t
        .client
        .patch(&location)
        .header("Content-Range", format!("0-{}", a.len() - 1))
        .body(a.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let path = location.trim_start_matches(&t.server.url()).to_owned();

    // Stop the server; start a new one on the same data folder (on a new port).
    let TestServer { server, dir, .. } = t;
    server.stop().await;
    let config = config_in(dir.path());
    let t = TestServer::start_with(dir, config).await;

    let status = t.client.get(t.url(&path)).send().await.unwrap();
    assert_eq!(status.status(), 204);
    assert_eq!(status.headers()["range"], format!("0-{}", a.len() - 1).as_str());
    let r = t
        .client
        .patch(t.url(&path))
        .header("Content-Range", format!("{}-{}", a.len(), blob.len() - 1))
        .body(b.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let digest = sha256(&blob);
    let r = t.client.put(format!("{}?digest={digest}", t.url(&path))).send().await.unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let pulled = t.client.get(t.url(&format!("/v2/restart/me/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(pulled.bytes().await.unwrap().as_ref(), blob.as_slice());
    t.server.stop().await;
}
