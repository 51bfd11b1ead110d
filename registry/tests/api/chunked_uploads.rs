//! Uploads in parts on the local disk, appended in place to one data file per session:
//! interleaved sessions, a racing writer at the same offset, a restart with a crashed
//! writer's bytes left in the file, a wrong digest at the end; each encrypted (the default)
//! and plaintext.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::support::*;

#[derive(Clone, Copy, Debug)]
enum AtRest {
    Sealed,
    Plain,
}

const BOTH: [AtRest; 2] = [AtRest::Sealed, AtRest::Plain];

async fn server(at_rest: AtRest) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let config = configured(dir.path(), at_rest);
    TestServer::start_with(dir, config).await
}

fn configured(dir: &Path, at_rest: AtRest) -> berth_registry::config::Config {
    let mut config = config_in(dir);
    config.encryption.enabled = matches!(at_rest, AtRest::Sealed);
    config
}

/// The upload's data file, from its location `/v2/<repo>/blobs/uploads/<id>`.
fn data_file(t: &TestServer, location: &str) -> PathBuf {
    let id = location.trim_end_matches('/').rsplit('/').next().unwrap().split('?').next().unwrap();
    t.dir.path().join("blobs").join("uploads").join(id).join("data")
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

async fn patch(t: &TestServer, location: &str, at: usize, bytes: &[u8]) -> reqwest::Response {
    t.client
        .patch(location)
        .header("Content-Range", format!("{at}-{}", at + bytes.len() - 1))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap()
}

async fn finish(t: &TestServer, location: &str, digest: &str) -> reqwest::Response {
    let sep = if location.contains('?') { '&' } else { '?' };
    t.client.put(format!("{location}{sep}digest={digest}")).send().await.unwrap()
}

async fn pulled(t: &TestServer, repo: &str, digest: &str) -> Vec<u8> {
    let r = t.client.get(t.url(&format!("/v2/{repo}/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn interleaved_patches_on_two_uploads_each_get_their_own_bytes() {
    for at_rest in BOTH {
        let t = server(at_rest).await;
        let (x, y) = (data(2_345_678, 1), data(1_999_999, 2));
        let (lx, ly) = (t.start_upload("parts/x").await, t.start_upload("parts/y").await);
        // Pieces of uneven sizes, around segment boundaries, alternating between sessions.
        let cuts = [0usize, 1, 65_536, 65_537, 700_000, 1_999_999];
        for w in cuts.windows(2) {
            assert_eq!(patch(&t, &lx, w[0], &x[w[0]..w[1]]).await.status(), 202, "{at_rest:?}");
            assert_eq!(patch(&t, &ly, w[0], &y[w[0]..w[1]]).await.status(), 202, "{at_rest:?}");
        }
        assert_eq!(patch(&t, &lx, 1_999_999, &x[1_999_999..]).await.status(), 202);
        assert_eq!(std::fs::metadata(data_file(&t, &lx)).map(|m| m.len() > 0).ok(), Some(true), "one data file");
        let (dx, dy) = (sha256(&x), sha256(&y));
        assert_eq!(finish(&t, &ly, &dy).await.status(), 201);
        assert_eq!(finish(&t, &lx, &dx).await.status(), 201);
        assert_eq!(pulled(&t, "parts/x", &dx).await, x, "{at_rest:?}");
        assert_eq!(pulled(&t, "parts/y", &dy).await, y, "{at_rest:?}");
        assert!(files_under(&t.dir.path().join("blobs").join("uploads")).is_empty(), "nothing left staged");
        t.server.stop().await;
    }
}

#[tokio::test]
async fn a_racing_patch_at_the_same_offset_is_refused_and_the_stored_bytes_stay_intact() {
    for at_rest in BOTH {
        let t = server(at_rest).await;
        let location = t.start_upload("parts/race").await;
        let head = data(100_000, 3);
        assert_eq!(patch(&t, &location, 0, &head).await.status(), 202);
        let (slow, rival) = (data(3 << 20, 4), data(3 << 20, 5));
        let at = head.len();
        let file = data_file(&t, &location);
        let staged = std::fs::metadata(&file).unwrap().len();
        // The slow client sends 2 MiB (enough for the server to write some to the file),
        // then waits before sending the rest.
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let first = bytes::Bytes::from(slow[..2 << 20].to_vec());
        let rest = bytes::Bytes::from(slow[2 << 20..].to_vec());
        let pieces = futures::stream::once(async move { Ok::<_, std::io::Error>(first) })
            .chain(futures::stream::once(async move {
                let _ = wait.await;
                Ok(rest)
            }))
            .boxed();
        let slow_request = t
            .client
            .patch(&location)
            .header("Content-Range", format!("{at}-{}", at + slow.len() - 1))
            .header("Content-Length", slow.len().to_string())
            .body(reqwest::Body::wrap_stream(pieces))
            .send();
        let slow_request = tokio::spawn(slow_request);
        // Until the slow writer holds the file (its bytes reach it): polled, with a deadline.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) <= staged {
            assert!(Instant::now() < deadline, "{at_rest:?}: the slow body never reached the file");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The rival waits for the slow writer's lock, then finds the session moved on.
        let rival_request = {
            let (client, location, rival) = (t.client.clone(), location.clone(), rival.clone());
            tokio::spawn(async move {
                client
                    .patch(&location)
                    .header("Content-Range", format!("{at}-{}", at + rival.len() - 1))
                    .body(rival)
                    .send()
                    .await
                    .unwrap()
            })
        };
        go.send(()).unwrap();
        assert_eq!(slow_request.await.unwrap().unwrap().status(), 202, "{at_rest:?}");
        let r = rival_request.await.unwrap();
        assert_eq!(r.status(), 416, "{at_rest:?}: a second writer at the same offset");
        assert_eq!(r.headers()["range"], format!("0-{}", at + slow.len() - 1).as_str(), "where the winner left it");
        // Now behind the session: refused too.
        assert_eq!(patch(&t, &location, at, &rival).await.status(), 416);
        let blob = [head.as_slice(), slow.as_slice()].concat();
        let digest = sha256(&blob);
        assert_eq!(finish(&t, &location, &digest).await.status(), 201, "{at_rest:?}");
        assert_eq!(pulled(&t, "parts/race", &digest).await, blob, "{at_rest:?}: the winner's bytes, intact");
        t.server.stop().await;
    }
}

#[tokio::test]
async fn an_upload_resumes_after_a_restart_past_a_crashed_writers_bytes() {
    for at_rest in BOTH {
        let t = server(at_rest).await;
        let blob = data(3_000_001, 6);
        let (a, b) = blob.split_at(1_234_567);
        let location = t.start_upload("parts/restart").await;
        assert_eq!(patch(&t, &location, 0, a).await.status(), 202);
        let path = location.trim_start_matches(&t.server.url()).to_owned();
        let file = data_file(&t, &location);
        let TestServer { server, dir, .. } = t;
        server.stop().await;
        // A writer killed after its write and before its compare-and-swap left bytes that
        // no session recorded.
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&file).unwrap();
            f.write_all(&data(555_555, 7)).unwrap();
        }
        let config = configured(dir.path(), at_rest);
        let t = TestServer::start_with(dir, config).await;
        let status = t.client.get(t.url(&path)).send().await.unwrap();
        assert_eq!(status.status(), 204);
        assert_eq!(status.headers()["range"], format!("0-{}", a.len() - 1).as_str());
        assert_eq!(patch(&t, &t.url(&path), a.len(), b).await.status(), 202, "{at_rest:?}");
        let digest = sha256(&blob);
        assert_eq!(finish(&t, &t.url(&path), &digest).await.status(), 201, "{at_rest:?}");
        assert_eq!(pulled(&t, "parts/restart", &digest).await, blob, "{at_rest:?}");
        t.server.stop().await;
    }
}

#[tokio::test]
async fn a_wrong_digest_at_the_end_leaves_nothing_behind() {
    for at_rest in BOTH {
        let t = server(at_rest).await;
        let blob = data(1_500_000, 8);
        let location = t.start_upload("parts/wrong").await;
        assert_eq!(patch(&t, &location, 0, &blob[..700_000]).await.status(), 202);
        assert_eq!(patch(&t, &location, 700_000, &blob[700_000..]).await.status(), 202);
        assert!(
            files_under(&t.dir.path().join("blobs")).contains(&data_file(&t, &location)),
            "{at_rest:?}: staged in one data file"
        );
        let r = finish(&t, &location, &sha256(b"something else")).await;
        assert_eq!(r.status(), 400, "{at_rest:?}");
        assert!(r.text().await.unwrap().contains("DIGEST_INVALID"));
        let left = files_under(&t.dir.path().join("blobs"));
        assert!(left.is_empty(), "{at_rest:?}: left behind {left:?}");
        assert_eq!(t.client.get(&location).send().await.unwrap().status(), 404, "the session is gone");
        t.server.stop().await;
    }
}
