//! The garbage collector's records ([`GcStore`]), part of the metadata suite: run against
//! every store. Each case works on its own repositories and digests, and marks only within
//! a repository, so it leaves the other cases' records alone.

use berth_oci::{Digest, RepoName};
use berth_storage::Error;
use berth_storage::MetadataStore;
use berth_storage::crypt::{Run, SealedBlob};
use berth_storage::metadata::events::unix_now_ms;
use berth_storage::metadata::gc::HOLD_TTL_SECS;
use berth_storage::metadata::{
    EventKind, GcCounts, GcRun, GcState, NewManifest, NewRepository, Origin, RequiredContent, unix_now,
};

const ANON: &Origin =
    &Origin { actor: None, request_id: None, addr: None, method: None, host: None, scheme: None, user_agent: None };

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

fn digest(s: &str) -> Digest {
    Digest::sha256_of(s.as_bytes())
}

fn copy(key_name: &str, object: &str) -> SealedBlob {
    SealedBlob {
        key_name: key_name.into(),
        object: object.into(),
        size: 3,
        kek: format!("{key_name}.1"),
        wrapped: vec![7; 40],
        runs: vec![Run { first: 0, prefix: [3; 7] }],
    }
}

fn manifest(r: &RepoName, body: &str, blobs: &[&Digest]) -> NewManifest {
    NewManifest {
        repo: r.clone(),
        digest: Digest::sha256_of(body.as_bytes()),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        artifact_type: None,
        content: body.as_bytes().to_vec(),
        subject: None,
        annotations: None,
        blobs: blobs.iter().map(|d| RequiredContent { digest: (*d).clone(), size: 3 }).collect(),
        manifests: vec![],
        tags: vec![],
        mutability: Default::default(),
        references: Default::default(),
    }
}

pub async fn suite(store: &dyn MetadataStore) {
    marking_and_removal(store).await;
    holds_links_and_dooms(store).await;
    leftover_dooms_are_resumed(store).await;
    unused_copies(store).await;
    lease(store).await;
    runs(store).await;
    known_objects(store).await;
}

/// Phase (a): only unreferenced links created and seen before the cutoff are marked; only
/// those still marked, unseen and unreferenced when locked are removed.
async fn marking_and_removal(store: &dyn MetadataStore) {
    let r = repo("gc/marks");
    let [free, used, seen, pushed, read, late] =
        ["free", "used", "seen", "pushed", "read", "late"].map(|s| digest(&format!("gc-mark-{s}")));
    for d in [&free, &used, &seen, &pushed, &read, &late] {
        store.link_blob(&r, d, 3, true, None, ANON).await.unwrap();
    }
    store.put_manifest(&manifest(&r, r#"{"gc": "used"}"#, &[&used]), ANON).await.unwrap();
    // Links are created now: a cutoff in the future makes them old enough.
    let cutoff = unix_now() + 100;
    store.record_seen(&[(r.clone(), seen.clone())], cutoff + 5).await.unwrap();
    // A dry run's count: the same four links, and their blobs (linked nowhere else), 3 bytes each.
    let preview = store.gc_preview(cutoff, Some(&r)).await.unwrap();
    assert_eq!((preview.links, preview.blobs, preview.bytes), (4, 4, 12), "{preview:?}");
    assert_eq!(store.mark_links("run-1", cutoff, Some(&r), 100).await.unwrap(), 4, "free, pushed, read, late");
    assert_eq!(store.mark_links("run-1", cutoff, Some(&r), 100).await.unwrap(), 0, "marked once");
    assert!(store.repo_blob_entry(&r, &free).await.unwrap().unwrap().marked);
    assert!(!store.repo_blob_entry(&r, &used).await.unwrap().unwrap().marked, "referenced");
    assert!(!store.repo_blob_entry(&r, &seen).await.unwrap().unwrap().marked, "seen after the cutoff");
    assert_eq!(store.mark_links("run-1", cutoff, Some(&repo("gc/other")), 100).await.unwrap(), 0);

    // While marked: a manifest now references `pushed`, a client read `read`, and `late`
    // was seen (a flush of the batched reads).
    store.put_manifest(&manifest(&r, r#"{"gc": "pushed"}"#, &[&pushed]), ANON).await.unwrap();
    assert!(store.unmark_link(&r, &read, cutoff + 5).await.unwrap());
    assert!(!store.repo_blob_entry(&r, &read).await.unwrap().unwrap().marked);
    store.record_seen(&[(r.clone(), late.clone())], cutoff + 5).await.unwrap();

    let (removed, taken) = store.remove_marked_links("run-1", cutoff, 100).await.unwrap();
    assert_eq!(removed, vec![(free.clone(), 3)], "only the link nothing protects");
    assert_eq!(taken, 3, "free, pushed and late were still marked");
    assert_eq!(store.repo_blob(&r, &free).await.unwrap(), None);
    for d in [&used, &seen, &pushed, &read, &late] {
        let entry = store.repo_blob_entry(&r, d).await.unwrap().unwrap_or_else(|| panic!("{d} kept"));
        assert!(!entry.marked, "{d}: marks of what was kept are cleared");
    }
    assert_eq!(store.remove_marked_links("run-1", cutoff, 100).await.unwrap(), (vec![], 0));
    assert!(!store.unmark_link(&r, &free, unix_now()).await.unwrap(), "a removed link is not brought back");

    // Another run's leftover mark does not hide a candidate from the next run.
    let again = digest("gc-mark-again");
    store.link_blob(&r, &again, 3, true, None, ANON).await.unwrap();
    assert_eq!(store.mark_links("run-dead", cutoff, Some(&r), 100).await.unwrap(), 1);
    assert_eq!(store.mark_links("run-2", cutoff, Some(&r), 100).await.unwrap(), 1);
    assert_eq!(store.remove_marked_links("run-2", cutoff, 100).await.unwrap().0, vec![(again.clone(), 3)]);
    // Linking again clears a mark and counts as seen.
    store.link_blob(&r, &again, 3, true, None, ANON).await.unwrap();
    assert_eq!(store.mark_links("run-3", cutoff, Some(&r), 100).await.unwrap(), 1);
    store.link_blob(&r, &again, 3, true, None, ANON).await.unwrap();
    assert!(!store.repo_blob_entry(&r, &again).await.unwrap().unwrap().marked);
}

/// Phase (b) and the writers: a live hold refuses a doom; a doom refuses a hold and a link
/// until the doom is forgotten; a dead hold does not count.
async fn holds_links_and_dooms(store: &dyn MetadataStore) {
    let r = repo("gc/holds");
    let (held, linked, dead) = (digest("gc-hold-held"), digest("gc-hold-linked"), digest("gc-hold-dead"));
    for d in [&held, &linked, &dead] {
        store.link_blob(&r, d, 3, true, None, ANON).await.unwrap();
    }
    assert!(store.unlink_blob(&r, &held).await.unwrap());
    assert!(store.unlink_blob(&r, &dead).await.unwrap());
    let now = unix_now();

    // Both unlinked blobs are listed (by pages), the linked one is not.
    let mut unlinked = Vec::new();
    let mut after: Option<Digest> = None;
    loop {
        let page = store.unlinked_blobs(after.as_ref(), 2).await.unwrap();
        let Some(last) = page.last().cloned() else { break };
        unlinked.extend(page);
        after = Some(last);
    }
    assert!(unlinked.contains(&held) && unlinked.contains(&dead) && !unlinked.contains(&linked), "{unlinked:?}");

    assert!(store.hold_blob("hold-1", &held, now).await.unwrap());
    assert!(store.hold_blob("hold-2", &dead, now - HOLD_TTL_SECS - 1).await.unwrap());
    let doomed = store.doom_blobs("run-h", &[held.clone(), linked.clone(), dead.clone()], now).await.unwrap();
    let doomed_digests: Vec<&Digest> = doomed.iter().map(|d| &d.digest).collect();
    assert_eq!(doomed_digests, vec![&dead], "a live hold and a link refuse; a dead hold does not");
    assert!(doomed[0].whole && doomed[0].plain && doomed[0].size == 3 && doomed[0].copies.is_empty(), "{doomed:?}");
    assert!(store.is_doomed(&dead).await.unwrap() && !store.is_doomed(&held).await.unwrap());
    assert!(!store.unlinked_blobs(None, 100_000).await.unwrap().contains(&dead), "doomed: not listed again");

    // The writer of a doomed digest is refused, and waits.
    assert!(!store.hold_blob("hold-3", &dead, now).await.unwrap());
    let err = store.link_blob(&r, &dead, 3, true, None, ANON).await.unwrap_err();
    assert!(matches!(err, Error::Doomed(ref d) if *d == dead), "{err:?}");
    assert_eq!(store.repo_blob(&r, &dead).await.unwrap(), None);

    // Released, the held digest can be doomed.
    store.release_holds(&["hold-1".to_owned()]).await.unwrap();
    let second = store.doom_blobs("run-h", std::slice::from_ref(&held), now).await.unwrap();
    assert_eq!(second.len(), 1);

    // Forgotten (objects deleted): the rows go, and the writers may write afresh.
    assert_eq!(store.forget_doomed(&doomed).await.unwrap(), 1);
    assert_eq!(store.forget_doomed(&second).await.unwrap(), 1);
    assert!(!store.is_doomed(&dead).await.unwrap());
    assert!(!store.unlinked_blobs(None, 100_000).await.unwrap().contains(&dead), "its blob row is gone");
    assert!(store.hold_blob("hold-4", &dead, now).await.unwrap());
    store.link_blob(&r, &dead, 3, true, None, ANON).await.unwrap();
    store.release_holds(&["hold-4".to_owned()]).await.unwrap();
    assert_eq!(store.repo_blob(&r, &dead).await.unwrap(), Some(3));
    store.release_holds(&["hold-2".to_owned()]).await.unwrap();
}

/// Phase (0): a run that died between doom and forget leaves rows any later run finishes,
/// with everything the doom covered (the plaintext and every copy).
async fn leftover_dooms_are_resumed(store: &dyn MetadataStore) {
    let r = repo("gc/resume");
    let d = digest("gc-resume");
    store.link_blob(&r, &d, 3, true, None, ANON).await.unwrap();
    store.add_blob_copy(&d, &copy("ka", "obj-resume-a")).await.unwrap();
    store.add_blob_copy(&d, &copy("kb", "obj-resume-b")).await.unwrap();
    store.unlink_blob(&r, &d).await.unwrap();
    let doomed = store.doom_blobs("run-died", std::slice::from_ref(&d), unix_now()).await.unwrap();
    assert_eq!(doomed.len(), 1);
    // The process dies here. The next run:
    let left = store.doomed(1000).await.unwrap();
    let mine: Vec<_> = left.iter().filter(|l| l.digest == d).cloned().collect();
    assert_eq!(mine, doomed, "found as it was doomed");
    assert_eq!(
        mine[0].copies,
        vec![("ka".to_owned(), "obj-resume-a".to_owned()), ("kb".to_owned(), "obj-resume-b".to_owned())]
    );
    assert_eq!(store.forget_doomed(&mine).await.unwrap(), 1);
    assert_eq!(store.blob_copy(&d, "ka").await.unwrap(), None);
    assert_eq!(store.blob_copy(&d, "kb").await.unwrap(), None);
    assert!(!store.doomed(1000).await.unwrap().iter().any(|l| l.digest == d));
}

/// Phase (c): copies for key names no repository linking the blob uses.
async fn unused_copies(store: &dyn MetadataStore) {
    let r = repo("gc/copies");
    store.create_repository(&r, &NewRepository::with_key(Some("kused".into())), ANON).await.unwrap();
    let d = digest("gc-copies");
    store.add_blob_copy(&d, &copy("kused", "obj-used")).await.unwrap();
    store.add_blob_copy(&d, &copy("kgone", "obj-gone")).await.unwrap();
    store.link_blob(&r, &d, 3, false, None, ANON).await.unwrap();

    assert!(store.hold_blob("hold-c", &d, unix_now()).await.unwrap());
    assert_eq!(store.doom_unused_copies("run-c", Some(std::slice::from_ref(&d)), unix_now(), 10).await.unwrap(), []);
    store.release_holds(&["hold-c".to_owned()]).await.unwrap();

    let doomed = store.doom_unused_copies("run-c", Some(std::slice::from_ref(&d)), unix_now(), 10).await.unwrap();
    assert_eq!(doomed.len(), 1);
    assert!(!doomed[0].whole);
    assert_eq!(doomed[0].copies, vec![("kgone".to_owned(), "obj-gone".to_owned())]);
    // Briefly doomed: a new link waits.
    assert!(matches!(store.link_blob(&r, &d, 3, false, None, ANON).await, Err(Error::Doomed(_))));
    assert_eq!(store.forget_doomed(&doomed).await.unwrap(), 1);
    assert_eq!(store.blob_copy(&d, "kgone").await.unwrap(), None);
    assert!(store.blob_copy(&d, "kused").await.unwrap().is_some(), "the copy in use stays");
    assert_eq!(store.repo_blob(&r, &d).await.unwrap(), Some(3), "and the link");
    store.link_blob(&r, &d, 3, false, None, ANON).await.unwrap();
    assert_eq!(store.doom_unused_copies("run-c", Some(std::slice::from_ref(&d)), unix_now(), 10).await.unwrap(), []);
}

/// One collector at a time: the lease.
async fn lease(store: &dyn MetadataStore) {
    let now = unix_now_ms();
    assert_eq!(store.gc_lease().await.unwrap(), None);
    store.acquire_gc_lease("a", now, 1000).await.unwrap().unwrap();
    let held = store.acquire_gc_lease("b", now, 1000).await.unwrap().unwrap_err();
    assert_eq!((held.owner.as_str(), held.expires_ms), ("a", now + 1000));
    assert!(!store.renew_gc_lease("b", now, 1000).await.unwrap());
    assert!(store.renew_gc_lease("a", now + 500, 1000).await.unwrap());
    assert!(store.acquire_gc_lease("b", now + 1200, 1000).await.unwrap().is_err(), "renewed");
    store.acquire_gc_lease("b", now + 1500, 1000).await.unwrap().unwrap();
    store.release_gc_lease("a").await.unwrap();
    assert_eq!(store.gc_lease().await.unwrap().map(|l| l.owner), Some("b".into()), "a cannot release b's");
    store.release_gc_lease("b").await.unwrap();
    assert_eq!(store.gc_lease().await.unwrap(), None);

    // Racing collectors: exactly one gets it.
    let owners: Vec<String> = (0..8).map(|i| format!("racer-{i}")).collect();
    let got = futures::future::join_all(owners.iter().map(|o| store.acquire_gc_lease(o, now, 60_000))).await;
    let winners: Vec<&String> =
        owners.iter().zip(&got).filter(|(_, g)| g.as_ref().unwrap().is_ok()).map(|(o, _)| o).collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    store.release_gc_lease(winners[0]).await.unwrap();
}

/// Runs are recorded; a run left running is interrupted when the lease is next taken; the
/// end of a run writes its `gc.completed` event with it.
async fn runs(store: &dyn MetadataStore) {
    let now = unix_now_ms();
    let mut died = GcRun {
        id: "run-died-record".into(),
        started_ms: now - 10,
        finished_ms: None,
        state: GcState::Running,
        dry_run: false,
        repository: None,
        phase: "blobs".into(),
        counts: GcCounts { links: 1, ..Default::default() },
        duration_ms: 0,
        error: None,
    };
    store.put_gc_run(&died).await.unwrap();
    store.acquire_gc_lease("next", now, 60_000).await.unwrap().unwrap();
    let mut run = GcRun { id: "run-next-record".into(), started_ms: now, ..died.clone() };
    store.put_gc_run(&run).await.unwrap();
    run.state = GcState::Completed;
    run.phase = "done".into();
    run.finished_ms = Some(now + 5);
    run.counts = GcCounts { links: 2, blobs: 3, copies: 4, unknown_objects: 5, uploads: 6, bytes: 7 };
    run.duration_ms = 5;
    let mut event = berth_storage::metadata::Event::new(EventKind::GcCompleted, "", ANON);
    event.size = Some(7);
    store.finish_gc_run(&run, &event).await.unwrap();
    store.release_gc_lease("next").await.unwrap();

    let recorded = store.gc_runs(2).await.unwrap();
    died.state = GcState::Interrupted;
    died.finished_ms = Some(now);
    assert_eq!(recorded, vec![run, died]);
    let mut after = 0;
    let mut found = None;
    loop {
        let events = store.events(after, 1000).await.unwrap();
        let Some(last) = events.last() else { break };
        after = last.seq;
        found = events.into_iter().rev().find(|e| e.id == event.id).or(found);
    }
    let found = found.expect("the gc.completed event is in the outbox");
    assert_eq!((found.kind, found.size), (EventKind::GcCompleted, Some(7)));
}

/// Phase (d) asks which listed objects the metadata knows.
async fn known_objects(store: &dyn MetadataStore) {
    let r = repo("gc/known");
    let (known, unknown) = (digest("gc-known"), digest("gc-unknown"));
    store.link_blob(&r, &known, 3, true, None, ANON).await.unwrap();
    store.add_blob_copy(&known, &copy("kk", "obj-known")).await.unwrap();
    let (digests, objects) = store
        .known_objects(
            &[known.clone(), unknown.clone()],
            &[(known.clone(), "obj-known".into()), (known.clone(), "obj-stray".into()), (unknown, "obj-known".into())],
        )
        .await
        .unwrap();
    assert_eq!(digests, vec![known]);
    assert_eq!(objects, vec!["obj-known".to_owned()]);
}
