//! Hot manifests in memory, so that a pull's manifest lookups (the most frequent request a
//! registry serves) usually cost no database round trip.
//!
//! Entries are grouped per repository. Any change to a repository's manifests or tags drops
//! that repository's entries and bumps its generation; a lookup that read the database
//! before the change carries the old generation and is not inserted, so a reader racing a
//! writer cannot put a stale entry back. Tag entries also expire after [`TAG_TTL`] and
//! digest entries after [`DIGEST_TTL`]: a backstop for changes made by another process (a
//! replica), which otherwise arrive within milliseconds through the metadata store's change
//! feed (PostgreSQL `LISTEN`/`NOTIFY`, followed by `App::open`'s task). The cache holds at most [`MAX_BYTES`] of manifests; past that
//! it starts over.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use berth_oci::{Digest, Reference, RepoName};
use bytes::Bytes;

/// How long a tag may keep pointing at a digest that another process has moved it from.
pub const TAG_TTL: Duration = Duration::from_secs(2);
/// How long a manifest deleted by another process may still be served.
pub const DIGEST_TTL: Duration = Duration::from_secs(60);
/// Bytes of manifest content kept at most.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

/// A manifest as served: cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub content: Bytes,
}

#[derive(Debug)]
struct Entry {
    manifest: Arc<Manifest>,
    inserted: Instant,
}

#[derive(Debug, Default)]
struct Repo {
    generation: u64,
    entries: HashMap<Reference, Entry>,
}

#[derive(Debug, Default)]
struct Inner {
    repos: HashMap<RepoName, Repo>,
    bytes: usize,
}

#[derive(Debug, Default)]
pub struct ManifestCache {
    inner: RwLock<Inner>,
}

/// What a lookup that missed must show to insert its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(u64);

fn ttl(reference: &Reference) -> Duration {
    match reference {
        Reference::Tag(_) => TAG_TTL,
        Reference::Digest(_) => DIGEST_TTL,
    }
}

impl ManifestCache {
    /// The cached manifest, or the generation to present when inserting after a miss.
    pub fn get(&self, repo: &RepoName, reference: &Reference) -> Result<Arc<Manifest>, Generation> {
        let Ok(inner) = self.inner.read() else { return Err(Generation(u64::MAX)) };
        let Some(r) = inner.repos.get(repo) else { return Err(Generation(0)) };
        match r.entries.get(reference) {
            Some(e) if e.inserted.elapsed() < ttl(reference) => Ok(e.manifest.clone()),
            _ => Err(Generation(r.generation)),
        }
    }

    /// Caches a manifest read from the database, unless the repository changed since the
    /// lookup that missed.
    pub fn insert(&self, repo: &RepoName, reference: &Reference, seen: Generation, manifest: Arc<Manifest>) {
        let Ok(mut inner) = self.inner.write() else { return };
        let size = manifest.content.len();
        if inner.bytes + size > MAX_BYTES {
            inner.repos.retain(|_, r| {
                r.entries.clear();
                r.generation > 0
            });
            inner.bytes = 0;
        }
        let r = inner.repos.entry(repo.clone()).or_default();
        if r.generation != seen.0 {
            return;
        }
        let old = r.entries.insert(reference.clone(), Entry { manifest, inserted: Instant::now() });
        let freed = old.map_or(0, |e| e.manifest.content.len());
        inner.bytes = inner.bytes + size - freed;
    }

    /// Drops everything cached for `repo`: call after any change to its manifests or tags.
    pub fn invalidate(&self, repo: &RepoName) {
        let Ok(mut inner) = self.inner.write() else { return };
        let r = inner.repos.entry(repo.clone()).or_default();
        r.generation += 1;
        let freed: usize = r.entries.drain().map(|(_, e)| e.manifest.content.len()).sum();
        inner.bytes -= freed;
    }

    /// Drops everything, in every repository: when changes may have been missed.
    pub fn clear(&self) {
        let Ok(mut inner) = self.inner.write() else { return };
        for r in inner.repos.values_mut() {
            r.generation += 1;
            r.entries.clear();
        }
        inner.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(body: &str) -> Arc<Manifest> {
        Arc::new(Manifest {
            digest: Digest::sha256_of(&body.as_bytes()[..body.len().min(16)]),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            content: Bytes::from(body.to_owned()),
        })
    }

    #[test]
    fn hit_after_insert_miss_after_invalidate() {
        let c = ManifestCache::default();
        let repo: RepoName = "a/b".parse().unwrap();
        let tag = Reference::Tag("latest".parse().unwrap());
        let seen = c.get(&repo, &tag).unwrap_err();
        c.insert(&repo, &tag, seen, m("one"));
        assert_eq!(c.get(&repo, &tag).unwrap().content, "one");
        c.invalidate(&repo);
        assert!(c.get(&repo, &tag).is_err());
    }

    #[test]
    fn a_reader_racing_a_writer_cannot_insert_stale_data() {
        let c = ManifestCache::default();
        let repo: RepoName = "a".parse().unwrap();
        let tag = Reference::Tag("t".parse().unwrap());
        let seen = c.get(&repo, &tag).unwrap_err(); // reader misses, goes to the database...
        c.invalidate(&repo); // ...a writer moves the tag meanwhile...
        c.insert(&repo, &tag, seen, m("old")); // ...the reader's old answer is refused
        assert!(c.get(&repo, &tag).is_err());
    }

    #[test]
    fn clear_refuses_lookups_from_before() {
        let c = ManifestCache::default();
        let repo: RepoName = "a".parse().unwrap();
        let tag = Reference::Tag("t".parse().unwrap());
        let seen = c.get(&repo, &tag).unwrap_err();
        c.insert(&repo, &tag, seen, m("one"));
        let stale = c.get(&"b".parse().unwrap(), &tag).unwrap_err();
        c.clear();
        assert!(c.get(&repo, &tag).is_err());
        let seen = c.get(&repo, &tag).unwrap_err();
        assert_ne!(seen, Generation(0));
        let _ = stale;
    }

    #[test]
    fn memory_is_bounded() {
        let c = ManifestCache::default();
        let big = "x".repeat(MAX_BYTES / 3);
        for i in 0..10 {
            let repo: RepoName = format!("r{i}").parse().unwrap();
            let tag = Reference::Tag("t".parse().unwrap());
            let seen = c.get(&repo, &tag).unwrap_err();
            c.insert(&repo, &tag, seen, m(&big));
        }
        assert!(c.inner.read().unwrap().bytes <= MAX_BYTES);
    }
}
