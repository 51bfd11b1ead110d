//! [`SqliteStore`]'s manifests and tags ([`Manifests`]).

use async_trait::async_trait;
use berth_oci::{Digest, Reference, RepoName, Tag};
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, emit, ensure_repo, limit_of, repo_id};
use crate::error::{Error, Result};
use crate::metadata::{
    Expired, ManifestRecord, Manifests, NewManifest, Origin, Page, ReferenceCheck, Referrer, check_reference, db_size,
    manifest_deleted, manifest_pushed, parse_digest, repository_created, size_of, tag_deleted, unix_now,
};

/// Refuses a push decided under a tag mutability that is no longer the repository's, or
/// one that would move an immutable tag to another manifest ([`crate::metadata::TagGuard`]).
fn check_tags(conn: &rusqlite::Connection, id: i64, m: &NewManifest) -> Result<()> {
    if super::repositories::tag_mutability(conn, id)? != m.mutability.setting {
        return Err(Error::MutabilityChanged(m.repo.clone()));
    }
    let digest = m.digest.to_string();
    for tag in &m.mutability.immutable {
        let current: Option<String> = conn
            .query_row(
                "SELECT digest FROM tags WHERE repository_id = ?1 AND name = ?2",
                params![id, tag.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        if current.is_some_and(|d| d != digest) {
            return Err(Error::TagImmutable { repo: m.repo.clone(), tag: tag.clone() });
        }
    }
    Ok(())
}

#[async_trait]
impl Manifests for SqliteStore {
    async fn put_manifest(&self, m: &NewManifest, origin: &Origin) -> Result<()> {
        let (m, origin) = (m.clone(), origin.clone());
        self.write(move |tx| {
            let (id, created) = ensure_repo(tx, &m.repo)?;
            // The writer's lock (`BEGIN IMMEDIATE`) holds from here to commit: the setting and
            // the tags read below cannot change before the tags are written.
            if !created && !m.tags.is_empty() {
                check_tags(tx, id, &m)?;
            }
            let check = m.references == ReferenceCheck::Present;
            for required in m.blobs.iter().filter(|_| check) {
                let size: Option<i64> = tx
                    .query_row(
                        "SELECT b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
                         WHERE rb.repository_id = ?1 AND rb.digest = ?2",
                        params![id, required.digest.to_string()],
                        |r| r.get(0),
                    )
                    .optional()?;
                check_reference(required, size.map(size_of))?;
            }
            for required in m.manifests.iter().filter(|_| check) {
                let size: Option<i64> = tx
                    .query_row(
                        "SELECT size FROM manifests WHERE repository_id = ?1 AND digest = ?2",
                        params![id, required.digest.to_string()],
                        |r| r.get(0),
                    )
                    .optional()?;
                check_reference(required, size.map(size_of))?;
            }
            let now = unix_now();
            let digest = m.digest.to_string();
            let annotations = m.annotations.as_ref().map(|a| serde_json::to_string(a).unwrap_or_default());
            let inserted = tx.execute(
                "INSERT INTO manifests (repository_id, digest, media_type, artifact_type, size, content, subject, \
                 annotations, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
                params![
                    id,
                    digest,
                    m.media_type,
                    m.artifact_type,
                    db_size(m.content.len() as u64),
                    m.content,
                    m.subject.as_ref().map(|s| s.to_string()),
                    annotations,
                    now
                ],
            )?;
            if inserted > 0 {
                for child in m.blobs.iter().chain(&m.manifests) {
                    tx.execute(
                        "INSERT INTO manifest_references (repository_id, manifest_digest, child_digest) \
                         VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                        params![id, digest, child.digest.to_string()],
                    )?;
                }
            }
            for tag in &m.tags {
                tx.execute(
                    "INSERT INTO tags (repository_id, name, digest, updated_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest, \
                     updated_at = excluded.updated_at",
                    params![id, tag.as_str(), digest, now],
                )?;
            }
            let mut events = Vec::with_capacity(m.tags.len() + 1);
            if created {
                events.push(repository_created(&m.repo, &origin));
            }
            events.extend(manifest_pushed(&m, &origin));
            emit(tx, &events)
        })
        .await
    }

    async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>> {
        let repo = repo.to_string();
        let reference = reference.clone();
        self.with_conn(move |c| {
            let row: Option<(String, String, Vec<u8>)> = match &reference {
                Reference::Tag(tag) => c
                    .query_row(
                        "SELECT m.digest, m.media_type, m.content FROM tags t \
                         JOIN repositories r ON r.id = t.repository_id \
                         JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest \
                         WHERE r.name = ?1 AND t.name = ?2",
                        params![repo, tag.as_str()],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?,
                Reference::Digest(digest) => c
                    .query_row(
                        "SELECT m.digest, m.media_type, m.content FROM manifests m \
                         JOIN repositories r ON r.id = m.repository_id WHERE r.name = ?1 AND m.digest = ?2",
                        params![repo, digest.to_string()],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?,
            };
            row.map(|(digest, media_type, content)| {
                Ok(ManifestRecord { digest: parse_digest(digest)?, media_type, content })
            })
            .transpose()
        })
        .await
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest, origin: &Origin) -> Result<bool> {
        let (repo, digest, origin) = (repo.clone(), digest.clone(), origin.clone());
        let deleted = self.write(move |tx| remove_manifest(tx, &repo, &digest, None, &origin)).await?;
        Ok(deleted == Expired::Deleted)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag, origin: &Origin) -> Result<bool> {
        let (repo, tag, origin) = (repo.clone(), tag.to_string(), origin.clone());
        self.write(move |tx| {
            let Some(id) = repo_id(tx, &repo)? else { return Ok(false) };
            let deleted: Option<String> = tx
                .query_row(
                    "DELETE FROM tags WHERE repository_id = ?1 AND name = ?2 RETURNING digest",
                    params![id, tag],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(digest) = deleted else { return Ok(false) };
            let media_type: Option<String> = tx
                .query_row(
                    "SELECT media_type FROM manifests WHERE repository_id = ?1 AND digest = ?2",
                    params![id, digest],
                    |r| r.get(0),
                )
                .optional()?;
            emit(tx, &[tag_deleted(repo.as_str(), &tag, &digest, media_type, &origin)])?;
            Ok(true)
        })
        .await
    }

    async fn list_tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>> {
        let (repo, page) = (repo.clone(), page.clone());
        self.with_conn(move |c| {
            let Some(id) = repo_id(c, &repo)? else { return Ok(None) };
            let mut stmt = c.prepare_cached(
                "SELECT name FROM tags WHERE repository_id = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
            )?;
            let rows =
                stmt.query_map(params![id, page.last.unwrap_or_default(), limit_of(page.limit)], |r| r.get(0))?;
            Ok(Some(rows.collect::<rusqlite::Result<Vec<String>>>()?))
        })
        .await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        page: &Page,
    ) -> Result<Vec<Referrer>> {
        let (repo, subject, filter) = (repo.to_string(), subject.to_string(), artifact_type.map(str::to_owned));
        let (last, limit) = (page.last.clone(), limit_of(page.limit));
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations FROM manifests m \
                 JOIN repositories r ON r.id = m.repository_id \
                 WHERE r.name = ?1 AND m.subject = ?2 AND (?3 IS NULL OR m.artifact_type = ?3) \
                 AND (?4 IS NULL OR (m.created_at, m.digest) > \
                      (SELECT p.created_at, p.digest FROM manifests p WHERE p.repository_id = r.id AND p.digest = ?4)) \
                 ORDER BY m.created_at, m.digest LIMIT ?5",
            )?;
            let rows = stmt.query_map(params![repo, subject, filter, last, limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (digest, media_type, size, artifact_type, annotations) = row?;
                let annotations = annotations
                    .map(|a| serde_json::from_str(&a).map_err(|e| Error::Corrupt(format!("annotations: {e}"))))
                    .transpose()?;
                out.push(Referrer {
                    digest: parse_digest(digest)?,
                    media_type,
                    size: size_of(size),
                    artifact_type,
                    annotations,
                });
            }
            Ok(out)
        })
        .await
    }
}

/// Deletes a manifest of `repo` with its tags, emitting `tag.delete`s and `manifest.delete`
/// (tags and references go with it, ON DELETE CASCADE). With `planned` (a lifecycle run),
/// only while its tags are exactly those (sorted) and no manifest lists it.
pub(super) fn remove_manifest(
    tx: &rusqlite::Transaction<'_>,
    repo: &RepoName,
    digest: &Digest,
    planned: Option<&[String]>,
    origin: &Origin,
) -> Result<Expired> {
    let Some(id) = repo_id(tx, repo)? else { return Ok(Expired::Gone) };
    let column = digest.to_string();
    let found: Option<(String, i64)> = tx
        .query_row(
            "SELECT media_type, size FROM manifests WHERE repository_id = ?1 AND digest = ?2",
            params![id, column],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((media_type, size)) = found else { return Ok(Expired::Gone) };
    let tags: Vec<String> = {
        let mut stmt =
            tx.prepare_cached("SELECT name FROM tags WHERE repository_id = ?1 AND digest = ?2 ORDER BY name")?;
        let rows = stmt.query_map(params![id, column], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    if let Some(planned) = planned {
        if tags != planned {
            return Ok(Expired::TagsChanged);
        }
        let listed = tx
            .query_row(
                "SELECT 1 FROM manifest_references WHERE repository_id = ?1 AND child_digest = ?2 LIMIT 1",
                params![id, column],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if listed {
            return Ok(Expired::Referenced);
        }
    }
    tx.execute("DELETE FROM manifests WHERE repository_id = ?1 AND digest = ?2", params![id, column])?;
    emit(tx, &manifest_deleted(repo, digest, &media_type, size_of(size), &tags, origin))?;
    Ok(Expired::Deleted)
}
