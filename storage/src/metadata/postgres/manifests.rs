//! [`PostgresStore`]'s manifests and tags ([`Manifests`]).

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use berth_oci::{Digest, Reference, RepoName, Tag};
use deadpool_postgres::GenericClient;
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::AsyncMessage;

use super::{ATTEMPTS, PostgresStore, db_limit, emit, ensure_repo};
use crate::error::{Causes, Error, Result};
use crate::metadata::postgres_tls::PgTls;
use crate::metadata::{
    Change, Expired, ManifestRecord, Manifests, NewManifest, Origin, Page, ReferenceCheck, Referrer, RequiredContent,
    check_reference, db_size, manifest_deleted, manifest_pushed, parse_digest, repository_created, size_of,
    tag_deleted, unix_now,
};

/// The channel on which manifest and tag changes are announced (see postgres_v2.sql).
const CHANGES_CHANNEL: &str = "berth_manifests";

/// Listens on [`CHANGES_CHANNEL`] over a connection of its own and passes each change on,
/// reconnecting when the connection drops. After every (re)connection it sends
/// [`Change::Unknown`]: what happened while nobody listened is lost. It stops when no one
/// subscribes any more.
async fn listen(config: tokio_postgres::Config, tls: PgTls, tx: broadcast::Sender<Change>) {
    let mut backoff = Duration::from_millis(100);
    while tx.receiver_count() > 0 {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                // The connection must be driven (polled for messages) while LISTEN runs.
                let statement = format!("LISTEN {CHANGES_CHANNEL}");
                let ok = {
                    let mut listening = std::pin::pin!(client.batch_execute(&statement));
                    loop {
                        tokio::select! {
                            r = &mut listening => break r.is_ok(),
                            m = messages.next() => if !matches!(m, Some(Ok(_))) { break false },
                        }
                    }
                };
                if ok {
                    backoff = Duration::from_millis(100);
                    let _ = tx.send(Change::Unknown);
                    tracing::debug!("listening for metadata changes");
                    loop {
                        match tokio::time::timeout(Duration::from_secs(30), messages.next()).await {
                            Ok(Some(Ok(AsyncMessage::Notification(n)))) => {
                                let change = n.payload().parse().map_or(Change::Unknown, Change::Repository);
                                let _ = tx.send(change);
                            }
                            Ok(Some(Ok(_))) => {}
                            Ok(Some(Err(e))) => {
                                tracing::warn!(error = %Causes(&e), "PostgreSQL listener connection failed; reconnecting");
                                break;
                            }
                            Ok(None) => break,
                            Err(_) if tx.receiver_count() == 0 => return,
                            Err(_) => {}
                        }
                    }
                }
                let _ = tx.send(Change::Unknown);
            }
            Err(e) => tracing::warn!(error = %Causes(&e), "PostgreSQL listener cannot connect; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Checks every reference against the sizes found (digest → size), in the manifest's order,
/// so the error names the first one missing, as SQLite does.
fn check_references(required: &[RequiredContent], found: &[tokio_postgres::Row]) -> Result<()> {
    for r in required {
        let digest = r.digest.to_string();
        let mut size = None;
        for row in found {
            if row.try_get::<_, &str>(0)? == digest {
                size = Some(size_of(row.try_get(1)?));
            }
        }
        check_reference(r, size)?;
    }
    Ok(())
}

fn digests(required: &[RequiredContent]) -> Vec<String> {
    required.iter().map(|r| r.digest.to_string()).collect()
}

#[async_trait]
impl Manifests for PostgresStore {
    fn changes(&self) -> Option<broadcast::Receiver<Change>> {
        let mut started = false;
        let tx = self.changes.get_or_init(|| {
            started = true;
            broadcast::channel(1024).0
        });
        let rx = tx.subscribe();
        if started {
            tokio::spawn(listen(self.config.clone(), self.tls.clone(), tx.clone()));
        }
        Some(rx)
    }

    async fn put_manifest(&self, m: &NewManifest, origin: &Origin) -> Result<()> {
        let digest = m.digest.to_string();
        let annotations = m.annotations.as_ref().map(|a| serde_json::to_string(a).unwrap_or_default());
        let subject = m.subject.as_ref().map(|s| s.to_string());
        let size = db_size(m.content.len() as u64);
        let children: Vec<String> = m.blobs.iter().chain(&m.manifests).map(|c| c.digest.to_string()).collect();
        // Sorted: concurrent pushes lock shared tags in the same order, so they cannot deadlock.
        let tags: Vec<&str> = m.tags.iter().map(Tag::as_str).collect::<BTreeSet<_>>().into_iter().collect();
        let immutable: Vec<&str> = m.mutability.immutable.iter().map(Tag::as_str).collect();
        transaction!(self, |tx| {
            let (id, created) = ensure_repo(&tx, &m.repo).await?;
            if !created && !tags.is_empty() {
                // FOR SHARE until commit: a change of the setting (an UPDATE) waits for this
                // push, and this read waits for a change in flight, then sees it.
                let row = tx
                    .query_one(
                        "SELECT tag_mutability, tag_mutability_exclusions FROM repositories WHERE id = $1 FOR SHARE",
                        &[&id],
                    )
                    .await?;
                if super::repositories::setting_of(row.try_get(0)?, row.try_get(1)?)? != m.mutability.setting {
                    return Err(Error::MutabilityChanged(m.repo.clone()));
                }
            }
            // The checks hold until commit: the rows stay locked against unlink and delete.
            let check = m.references == ReferenceCheck::Present;
            if check && !m.blobs.is_empty() {
                let found = tx
                    .query(
                        "SELECT rb.digest, b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
                         WHERE rb.repository_id = $1 AND rb.digest = ANY($2) FOR KEY SHARE OF rb",
                        &[&id, &digests(&m.blobs)],
                    )
                    .await?;
                check_references(&m.blobs, &found)?;
            }
            if check && !m.manifests.is_empty() {
                let found = tx
                    .query(
                        "SELECT digest, size FROM manifests WHERE repository_id = $1 AND digest = ANY($2) \
                         FOR KEY SHARE",
                        &[&id, &digests(&m.manifests)],
                    )
                    .await?;
                check_references(&m.manifests, &found)?;
            }
            let now = unix_now();
            let mut attempt = 0;
            loop {
                let inserted = tx
                    .execute(
                        "INSERT INTO manifests (repository_id, digest, media_type, artifact_type, size, content, \
                         subject, annotations, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT DO NOTHING",
                        &[
                            &id,
                            &digest,
                            &m.media_type,
                            &m.artifact_type,
                            &size,
                            &m.content,
                            &subject,
                            &annotations,
                            &now,
                        ],
                    )
                    .await?;
                if inserted > 0 {
                    tx.execute(
                        "INSERT INTO manifest_references (repository_id, manifest_digest, child_digest) \
                         SELECT $1, $2, unnest($3::text[]) ON CONFLICT DO NOTHING",
                        &[&id, &digest, &children],
                    )
                    .await?;
                    break;
                }
                // Already there: keep it there until commit (a racing delete waits), unless a
                // delete committed in between, in which case insert it again.
                let kept = tx
                    .query_opt(
                        "SELECT 1 FROM manifests WHERE repository_id = $1 AND digest = $2 FOR KEY SHARE",
                        &[&id, &digest],
                    )
                    .await?;
                attempt += 1;
                if kept.is_some() {
                    break;
                }
                if attempt >= ATTEMPTS {
                    return Err(Error::Conflict);
                }
            }
            if !tags.is_empty() {
                // An immutable tag is not moved: ON CONFLICT waits for a concurrent push of the
                // same tag to commit and evaluates the WHERE on the row it committed, so of two
                // pushes of different manifests to one new immutable tag, the second finds the
                // first's and writes nothing. The tags written come back; one missing is an
                // immutable tag that names another manifest, and the whole push is undone.
                let written = tx
                    .query(
                        "INSERT INTO tags (repository_id, name, digest, updated_at) \
                         SELECT $1, unnest($2::text[]), $3, $4 \
                         ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest, \
                         updated_at = excluded.updated_at \
                         WHERE tags.digest = excluded.digest OR NOT (tags.name = ANY($5::text[])) \
                         RETURNING name",
                        &[&id, &tags, &digest, &now, &immutable],
                    )
                    .await?;
                if written.len() != tags.len() {
                    let written: BTreeSet<&str> =
                        written.iter().map(|r| r.try_get(0)).collect::<Result<_, tokio_postgres::Error>>()?;
                    let held = m.mutability.immutable.iter().find(|t| !written.contains(t.as_str()));
                    return Err(match held {
                        Some(tag) => Error::TagImmutable { repo: m.repo.clone(), tag: tag.clone() },
                        None => Error::Conflict,
                    });
                }
            }
            let mut events = Vec::with_capacity(m.tags.len() + 1);
            if created {
                events.push(repository_created(&m.repo, origin));
            }
            events.extend(manifest_pushed(m, origin));
            emit(&tx, &events).await?;
        })
    }

    async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>> {
        let client = self.client().await?;
        let row = match reference {
            Reference::Tag(tag) => {
                let stmt = client
                    .prepare_cached(
                        "SELECT m.digest, m.media_type, m.content FROM tags t \
                         JOIN repositories r ON r.id = t.repository_id \
                         JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest \
                         WHERE r.name = $1 AND t.name = $2",
                    )
                    .await?;
                client.query_opt(&stmt, &[&repo.as_str(), &tag.as_str()]).await?
            }
            Reference::Digest(digest) => {
                let stmt = client
                    .prepare_cached(
                        "SELECT m.digest, m.media_type, m.content FROM manifests m \
                         JOIN repositories r ON r.id = m.repository_id WHERE r.name = $1 AND m.digest = $2",
                    )
                    .await?;
                client.query_opt(&stmt, &[&repo.as_str(), &digest.to_string()]).await?
            }
        };
        row.map(|r| {
            Ok(ManifestRecord {
                digest: parse_digest(r.try_get(0)?)?,
                media_type: r.try_get(1)?,
                content: r.try_get(2)?,
            })
        })
        .transpose()
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest, origin: &Origin) -> Result<bool> {
        let deleted = transaction!(self, |tx| remove_manifest(&tx, repo, digest, None, origin).await?);
        Ok(deleted? == Expired::Deleted)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag, origin: &Origin) -> Result<bool> {
        transaction!(self, |tx| {
            let deleted = tx
                .query_opt(
                    "DELETE FROM tags t USING repositories r WHERE r.id = t.repository_id AND r.name = $1 \
                     AND t.name = $2 RETURNING t.digest, (SELECT m.media_type FROM manifests m \
                     WHERE m.repository_id = t.repository_id AND m.digest = t.digest)",
                    &[&repo.as_str(), &tag.as_str()],
                )
                .await?;
            match deleted {
                None => false,
                Some(row) => {
                    let digest: String = row.try_get(0)?;
                    let event = tag_deleted(repo.as_str(), tag.as_str(), &digest, row.try_get(1)?, origin);
                    emit(&tx, &[event]).await?;
                    true
                }
            }
        })
    }

    async fn list_tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>> {
        // One statement (one snapshot): no row when the repository does not exist, one row with
        // a NULL name when it has no tags on this page.
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT t.name FROM repositories r LEFT JOIN LATERAL \
                 (SELECT name FROM tags WHERE repository_id = r.id AND name > $2 ORDER BY name COLLATE \"C\" LIMIT $3) t \
                 ON true WHERE r.name = $1",
            )
            .await?;
        let rows =
            client.query(&stmt, &[&repo.as_str(), &page.last.as_deref().unwrap_or_default(), &db_limit(page)]).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut names = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(name) = row.try_get::<_, Option<String>>(0)? {
                names.push(name);
            }
        }
        Ok(Some(names))
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        page: &Page,
    ) -> Result<Vec<Referrer>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations FROM manifests m \
                 JOIN repositories r ON r.id = m.repository_id \
                 WHERE r.name = $1 AND m.subject = $2 AND ($3::text IS NULL OR m.artifact_type = $3) \
                 AND ($4::text IS NULL OR (m.created_at, m.digest COLLATE \"C\") > \
                      (SELECT p.created_at, p.digest COLLATE \"C\" FROM manifests p \
                       WHERE p.repository_id = r.id AND p.digest = $4)) \
                 ORDER BY m.created_at, m.digest COLLATE \"C\" LIMIT $5",
            )
            .await?;
        let rows = client
            .query(&stmt, &[&repo.as_str(), &subject.to_string(), &artifact_type, &page.last, &db_limit(page)])
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let annotations = row
                .try_get::<_, Option<String>>(4)?
                .map(|a| serde_json::from_str(&a).map_err(|e| Error::Corrupt(format!("annotations: {e}"))))
                .transpose()?;
            out.push(Referrer {
                digest: parse_digest(row.try_get(0)?)?,
                media_type: row.try_get(1)?,
                size: size_of(row.try_get(2)?),
                artifact_type: row.try_get(3)?,
                annotations,
            });
        }
        Ok(out)
    }
}

/// Deletes a manifest of `repo` with its tags, emitting `tag.delete`s and `manifest.delete`
/// (tags and references go with it, ON DELETE CASCADE). With `planned` (a lifecycle run),
/// only while its tags are exactly those (sorted) and no manifest lists it.
pub(super) async fn remove_manifest(
    tx: &impl GenericClient,
    repo: &RepoName,
    digest: &Digest,
    planned: Option<&[String]>,
    origin: &Origin,
) -> Result<Expired> {
    let column = digest.to_string();
    // The manifest first: a push that would point a tag at it (which share-locks it through
    // the tag's foreign key, or keeps it when it exists) waits for this deletion, or this one
    // for the push.
    let found = tx
        .query_opt(
            "SELECT m.repository_id, m.media_type, m.size FROM manifests m \
             JOIN repositories r ON r.id = m.repository_id WHERE r.name = $1 AND m.digest = $2 \
             FOR UPDATE OF m",
            &[&repo.as_str(), &column],
        )
        .await?;
    let Some(row) = found else { return Ok(Expired::Gone) };
    let (id, media_type, size): (i64, String, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    // Locked too: a push moving one of them elsewhere commits first, and then the tag is no
    // longer this manifest's (re-checked on the new row).
    let tags: Vec<String> = tx
        .query(
            "SELECT name FROM tags WHERE repository_id = $1 AND digest = $2 ORDER BY name COLLATE \"C\" FOR UPDATE",
            &[&id, &column],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    if let Some(planned) = planned {
        if tags != planned {
            return Ok(Expired::TagsChanged);
        }
        // In a later statement than the lock: an index pushed meanwhile (which holds this
        // manifest FOR KEY SHARE) has committed, or waits for us.
        let listed = tx
            .query_opt(
                "SELECT 1 FROM manifest_references WHERE repository_id = $1 AND child_digest = $2 LIMIT 1",
                &[&id, &column],
            )
            .await?
            .is_some();
        if listed {
            return Ok(Expired::Referenced);
        }
    }
    tx.execute("DELETE FROM manifests WHERE repository_id = $1 AND digest = $2", &[&id, &column]).await?;
    emit(tx, &manifest_deleted(repo, digest, &media_type, size_of(size), &tags, origin)).await?;
    Ok(Expired::Deleted)
}
