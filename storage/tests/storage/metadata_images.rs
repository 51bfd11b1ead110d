//! Images and last pull times ([`Images`](berth_storage::metadata::Images)), part of the
//! metadata suite: run against every store. Each case works on repositories of its own and
//! deletes them at the end.

use berth_oci::{Digest, RepoName, Tag};
use berth_storage::MetadataStore;
use berth_storage::metadata::{NewManifest, NewRepository, Origin, RepositoryDeleted, RequiredContent, unix_now};

const ANON: &Origin =
    &Origin { actor: None, request_id: None, addr: None, method: None, host: None, scheme: None, user_agent: None };

const IMAGE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

fn tags(names: &[&str]) -> Vec<Tag> {
    names.iter().map(|t| t.parse().unwrap()).collect()
}

fn image(r: &RepoName, body: &str, blobs: &[(&Digest, u64)], tag_names: &[&str]) -> NewManifest {
    NewManifest {
        repo: r.clone(),
        digest: Digest::sha256_of(body.as_bytes()),
        media_type: IMAGE.into(),
        artifact_type: Some("application/vnd.oci.image.config.v1+json".into()),
        content: body.as_bytes().to_vec(),
        subject: None,
        annotations: None,
        blobs: blobs.iter().map(|(d, size)| RequiredContent { digest: (*d).clone(), size: *size }).collect(),
        manifests: vec![],
        tags: tags(tag_names),
        mutability: Default::default(),
        references: Default::default(),
    }
}

fn index(r: &RepoName, body: &str, children: &[&NewManifest], tag_names: &[&str]) -> NewManifest {
    NewManifest {
        media_type: INDEX.into(),
        artifact_type: None,
        manifests: children
            .iter()
            .map(|c| RequiredContent { digest: c.digest.clone(), size: c.content.len() as u64 })
            .collect(),
        ..image(r, body, &[], tag_names)
    }
}

pub async fn suite(store: &dyn MetadataStore) {
    listing(store).await;
    pulls(store).await;
    concurrent_batches(store).await;
}

/// Every manifest with its tags, sizes, subject and children, ordered by digest; one image
/// alone; nothing for a repository that does not exist.
async fn listing(store: &dyn MetadataStore) {
    let r = repo("images/listing");
    assert_eq!(store.list_images(&r).await.unwrap(), None, "no such repository");
    store.create_repository(&r, &NewRepository::with_key(None), ANON).await.unwrap();
    assert_eq!(store.list_images(&r).await.unwrap(), Some(vec![]), "a repository without images");

    let [config, layer_a, layer_b] = ["config", "layer-a", "layer-b"].map(|s| Digest::sha256_of(s.as_bytes()));
    for (d, size) in [(&config, 100), (&layer_a, 2_000), (&layer_b, 30_000)] {
        store.link_blob(&r, d, size, true, None, ANON).await.unwrap();
    }
    let before = unix_now();
    let amd64 = image(&r, r#"{"images":"amd64"}"#, &[(&config, 100), (&layer_a, 2_000), (&layer_b, 30_000)], &[]);
    let arm64 = image(&r, r#"{"images":"arm64"}"#, &[(&config, 100), (&layer_a, 2_000)], &["v1-arm", "arm"]);
    store.put_manifest(&amd64, ANON).await.unwrap();
    store.put_manifest(&arm64, ANON).await.unwrap();
    let multi = index(&r, r#"{"images":"index"}"#, &[&arm64, &amd64], &["v1", "latest"]);
    store.put_manifest(&multi, ANON).await.unwrap();
    let mut signature = image(&r, r#"{"images":"signature"}"#, &[(&config, 100)], &[]);
    signature.subject = Some(multi.digest.clone());
    signature.artifact_type = Some("application/vnd.dev.cosign.artifact.sig.v1+json".into());
    store.put_manifest(&signature, ANON).await.unwrap();
    let after = unix_now();

    let listed = store.list_images(&r).await.unwrap().expect("the repository");
    let digests: Vec<&Digest> = listed.iter().map(|i| &i.digest).collect();
    let mut sorted = vec![&amd64.digest, &arm64.digest, &multi.digest, &signature.digest];
    sorted.sort_by_key(|d| d.to_string());
    assert_eq!(digests, sorted, "every manifest, ordered by digest");
    let find = |d: &Digest| listed.iter().find(|i| &i.digest == d).unwrap().clone();

    let one = find(&amd64.digest);
    assert_eq!(one.media_type, IMAGE);
    assert_eq!(one.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
    assert_eq!(one.size, amd64.content.len() as u64, "the manifest's own size");
    assert_eq!(one.blobs_size, 32_100, "config and layers added up");
    assert!(one.tags.is_empty(), "untagged");
    assert!((before..=after).contains(&one.pushed_at), "{} not in {before}..={after}", one.pushed_at);
    assert_eq!((one.last_pulled_at, one.subject.clone()), (None, None));
    assert!(one.children.is_empty(), "an image has no child manifests");

    let two = find(&arm64.digest);
    assert_eq!(two.tags, ["arm", "v1-arm"], "tags sorted");
    assert_eq!(two.blobs_size, 2_100);

    let idx = find(&multi.digest);
    assert_eq!(idx.media_type, INDEX);
    assert_eq!(idx.tags, ["latest", "v1"]);
    assert_eq!(idx.blobs_size, 0, "an index references no blobs");
    let mut children = vec![amd64.digest.clone(), arm64.digest.clone()];
    children.sort_by_key(|d| d.to_string());
    assert_eq!(idx.children, children, "an index's children, sorted");
    assert_eq!(idx.size, multi.content.len() as u64);

    let sig = find(&signature.digest);
    assert_eq!(sig.subject.as_ref(), Some(&multi.digest), "a referrer names its subject");
    assert_eq!(sig.artifact_type.as_deref(), Some("application/vnd.dev.cosign.artifact.sig.v1+json"));
    assert_eq!(sig.blobs_size, 100);

    // One image alone reads the same as in the listing.
    assert_eq!(store.image(&r, &multi.digest).await.unwrap(), Some(idx.clone()));
    assert_eq!(store.image(&r, &amd64.digest).await.unwrap(), Some(one));
    assert_eq!(store.image(&r, &Digest::sha256_of(b"images-missing")).await.unwrap(), None);
    assert_eq!(store.image(&repo("images/none"), &multi.digest).await.unwrap(), None);

    // A tag moved to another manifest leaves the first; a deleted manifest leaves the listing.
    let moved = NewManifest { tags: tags(&["latest"]), ..arm64.clone() };
    store.put_manifest(&moved, ANON).await.unwrap();
    assert_eq!(store.image(&r, &arm64.digest).await.unwrap().unwrap().tags, ["arm", "latest", "v1-arm"]);
    assert_eq!(store.image(&r, &multi.digest).await.unwrap().unwrap().tags, ["v1"]);
    store.delete_manifest(&r, &signature.digest, ANON).await.unwrap();
    let listed = store.list_images(&r).await.unwrap().unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|i| i.digest != signature.digest));

    assert_eq!(store.delete_repository(&r, true, ANON).await.unwrap(), RepositoryDeleted::Deleted);
    assert_eq!(store.list_images(&r).await.unwrap(), None);
}

/// A batch of pulls moves each manifest's last pull time forward, never back, in one call;
/// what is not there is skipped.
async fn pulls(store: &dyn MetadataStore) {
    let (r, other) = (repo("images/pulls"), repo("images/pulls-other"));
    let config = Digest::sha256_of(b"pulls-config");
    store.link_blob(&r, &config, 10, true, None, ANON).await.unwrap();
    store.link_blob(&other, &config, 10, true, None, ANON).await.unwrap();
    let a = image(&r, r#"{"pulls":"a"}"#, &[(&config, 10)], &["a"]);
    let b = image(&r, r#"{"pulls":"b"}"#, &[(&config, 10)], &["b"]);
    // The same manifest in another repository: its pull time is its own.
    let a_elsewhere = NewManifest { repo: other.clone(), ..a.clone() };
    for m in [&a, &b, &a_elsewhere] {
        store.put_manifest(m, ANON).await.unwrap();
    }
    let pulled_at = |repo: &RepoName, d: &Digest| {
        let (repo, d) = (repo.clone(), d.clone());
        async move { store.image(&repo, &d).await.unwrap().unwrap().last_pulled_at }
    };
    assert_eq!(pulled_at(&r, &a.digest).await, None, "never pulled");
    assert_eq!(store.record_pulls(&[], 1_000).await.unwrap(), 0, "an empty batch");

    let missing = Digest::sha256_of(b"pulls-missing");
    let batch = [
        (r.clone(), a.digest.clone()),
        (r.clone(), a.digest.clone()),
        (r.clone(), missing.clone()),
        (repo("images/pulls-none"), a.digest.clone()),
    ];
    assert_eq!(store.record_pulls(&batch, 1_000).await.unwrap(), 1, "one manifest, once; the rest skipped");
    assert_eq!(pulled_at(&r, &a.digest).await, Some(1_000));
    assert_eq!(pulled_at(&r, &b.digest).await, None, "not in the batch");
    assert_eq!(pulled_at(&other, &a.digest).await, None, "the same digest in another repository");

    // An older batch (a replica flushing late) does not move it back.
    let both = [(r.clone(), a.digest.clone()), (r.clone(), b.digest.clone()), (other.clone(), a.digest.clone())];
    assert_eq!(store.record_pulls(&both, 900).await.unwrap(), 2, "b and the other repository's a");
    assert_eq!(pulled_at(&r, &a.digest).await, Some(1_000), "never back");
    assert_eq!(pulled_at(&r, &b.digest).await, Some(900));
    assert_eq!(store.record_pulls(&both, 2_000).await.unwrap(), 3);
    let listed = store.list_images(&r).await.unwrap().unwrap();
    assert!(listed.iter().all(|i| i.last_pulled_at == Some(2_000)), "{listed:?}");
    assert_eq!(store.record_pulls(&both, 2_000).await.unwrap(), 0, "the same time again moves nothing");

    for repo in [&r, &other] {
        assert_eq!(store.delete_repository(repo, true, ANON).await.unwrap(), RepositoryDeleted::Deleted);
    }
}

/// Replicas flushing at once, their batches naming the same manifests in other orders: every
/// batch commits (none fails on the others' row locks), and each manifest ends with the
/// latest time.
async fn concurrent_batches(store: &dyn MetadataStore) {
    let r = repo("images/concurrent");
    let config = Digest::sha256_of(b"concurrent-config");
    store.link_blob(&r, &config, 10, true, None, ANON).await.unwrap();
    let mut pulls = Vec::new();
    for i in 0..20 {
        let m = image(&r, &format!("{{\"concurrent\":{i}}}"), &[(&config, 10)], &[]);
        store.put_manifest(&m, ANON).await.unwrap();
        pulls.push((r.clone(), m.digest));
    }
    let batches: Vec<(Vec<_>, i64)> = (0..8i64)
        .map(|k| {
            let mut batch = pulls.clone();
            batch.rotate_left((k as usize * 7) % pulls.len());
            if k % 2 == 1 {
                batch.reverse();
            }
            (batch, 5_000 + k)
        })
        .collect();
    let results = futures::future::join_all(batches.iter().map(|(batch, at)| store.record_pulls(batch, *at))).await;
    for result in results {
        result.unwrap();
    }
    let listed = store.list_images(&r).await.unwrap().unwrap();
    assert_eq!(listed.len(), 20);
    assert!(listed.iter().all(|i| i.last_pulled_at == Some(5_007)), "the latest time wins: {listed:?}");
    assert_eq!(store.delete_repository(&r, true, ANON).await.unwrap(), RepositoryDeleted::Deleted);
}
