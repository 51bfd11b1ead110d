//! Bodies stream both ways: a chunked-encoding PATCH without Content-Range (how podman and
//! docker push) and a ranged pull of the result.

use bytes::Bytes;
use futures::stream;

use crate::support::*;

#[tokio::test]
async fn chunked_transfer_encoding_patch_then_ranged_pull() {
    let t = TestServer::start().await;
    let blob = data(20 * 1024 * 1024 + 7, 2);
    let location = t.start_upload("stream/big").await;
    let pieces: Vec<Result<Bytes, std::io::Error>> =
        blob.chunks(1 << 20).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let r = t.client.patch(&location).body(reqwest::Body::wrap_stream(stream::iter(pieces))).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert!(r.headers().get("content-length").is_some());
    let digest = sha256(&blob);
    let r = t.client.put(format!("{location}?digest={digest}")).send().await.unwrap();
    assert_eq!(r.status(), 201);

    let url = t.url(&format!("/v2/stream/big/blobs/{digest}"));
    let whole = t.client.get(&url).send().await.unwrap();
    assert_eq!(whole.headers()["content-length"], blob.len().to_string().as_str());
    assert_eq!(whole.bytes().await.unwrap().len(), blob.len());
    let tail = t.client.get(&url).header("Range", "bytes=-1000").send().await.unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &blob[blob.len() - 1000..]);
    t.server.stop().await;
}

#[tokio::test]
async fn racing_chunks_at_the_same_offset_one_wins() {
    let t = TestServer::start().await;
    let location = t.start_upload("race/chunks").await;
    let send = |body: Vec<u8>| {
        t.client.patch(&location).header("Content-Range", format!("0-{}", body.len() - 1)).body(body).send()
    };
    let (a, b) = tokio::join!(send(data(1 << 20, 3)), send(data(1 << 20, 4)));
    let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [202, 416]);
    let status = t.client.get(&location).send().await.unwrap();
    assert_eq!(status.headers()["range"], format!("0-{}", (1 << 20) - 1).as_str());
    t.server.stop().await;
}
