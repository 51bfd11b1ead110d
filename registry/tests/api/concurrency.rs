//! Many pushes at once: none may fail, and the server still stops at once afterwards (the
//! client keeps spare connections open that never send a request; shutdown once waited out
//! their 30 s header timeout).

use futures::StreamExt;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_monolithic_pushes_all_succeed() {
    let started = std::time::Instant::now();
    let t = TestServer::start().await;
    let statuses: Vec<u16> = futures::stream::iter(0..400u32)
        .map(|i| {
            let body = data(2000 + i as usize, (i % 251) as u8);
            let url = t.url(&format!("/v2/race/r{}/blobs/uploads/?digest={}", i % 50, sha256(&body)));
            let client = t.client.clone();
            async move { client.post(url).body(body).send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    eprintln!("pushes done at {:?}", started.elapsed());
    let failed: Vec<_> = statuses.iter().filter(|s| **s != 201).collect();
    assert!(failed.is_empty(), "{} of {} pushes failed: {failed:?}", failed.len(), statuses.len());
    t.server.stop().await;
    eprintln!("stopped at {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_of_the_same_blob_all_succeed() {
    let started = std::time::Instant::now();
    let t = TestServer::start().await;
    let body = data(3_000, 9);
    let digest = sha256(&body);
    // Every push but the first dedupes, deleting its staged copy, while others stage theirs.
    let statuses: Vec<u16> = futures::stream::iter(0..1500u32)
        .map(|i| {
            let url = t.url(&format!("/v2/same/r{}/blobs/uploads/?digest={digest}", i % 100));
            let (client, body) = (t.client.clone(), body.clone());
            async move { client.post(url).body(body).send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    eprintln!("pushes done at {:?}", started.elapsed());
    let failed = statuses.iter().filter(|s| **s != 201).count();
    assert_eq!(failed, 0, "{failed} of {} pushes of the same blob failed", statuses.len());
    t.server.stop().await;
    eprintln!("stopped at {:?}", started.elapsed());
}
