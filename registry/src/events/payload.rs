//! The three shapes a delivery's body takes: CloudEvents 1.0 (structured JSON), the CNCF
//! Distribution notification envelope, and Amazon EventBridge's "ECR Image Action".

use std::time::{Duration, UNIX_EPOCH};

use berth_storage::metadata::{Event, EventKind, PayloadFormat};
use serde_json::{Map, Value, json};

/// What every payload needs besides the event.
#[derive(Debug, Clone)]
pub struct Context {
    /// CloudEvents `source`.
    pub source: String,
    /// CloudEvents `type` prefix.
    pub type_prefix: String,
    /// The Distribution envelope's `source.instanceID` and `source.addr`.
    pub instance: String,
    pub addr: String,
    /// ECR: the account and region of the envelope and the repository ARN.
    pub account: String,
    pub region: String,
}

/// A rendered body.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

pub const CLOUDEVENTS: &str = "application/cloudevents+json";
pub const DISTRIBUTION: &str = "application/vnd.docker.distribution.events.v2+json";
pub const JSON: &str = "application/json";

/// The event types a format can express; a subscription in that format gets only these.
pub fn representable(format: PayloadFormat) -> &'static [EventKind] {
    match format {
        PayloadFormat::CloudEvents => &EventKind::ALL,
        PayloadFormat::Distribution => &[
            EventKind::ManifestPush,
            EventKind::ManifestDelete,
            EventKind::TagDelete,
            EventKind::BlobPush,
            EventKind::BlobMount,
            EventKind::RepositoryDelete,
        ],
        PayloadFormat::Ecr => &[EventKind::ManifestPush, EventKind::ManifestDelete, EventKind::TagDelete],
    }
}

pub fn render(format: PayloadFormat, event: &Event, ctx: &Context) -> Rendered {
    let (content_type, value) = match format {
        PayloadFormat::CloudEvents => (CLOUDEVENTS, cloudevent(event, ctx)),
        PayloadFormat::Distribution => (DISTRIBUTION, distribution(event, ctx)),
        PayloadFormat::Ecr => (JSON, ecr(event, ctx)),
    };
    Rendered { content_type, body: value.to_string().into_bytes() }
}

/// RFC 3339 in UTC with milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// RFC 3339 in UTC to the second (EventBridge's `time`).
fn rfc3339_s(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(ms / 1000).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn insert(map: &mut Map<String, Value>, key: &str, value: Option<impl Into<Value>>) {
    if let Some(v) = value {
        map.insert(key.to_owned(), v.into());
    }
}

/// `repo:tag`, `repo@digest` or `repo`: what the event is about.
fn subject(e: &Event) -> String {
    match (&e.tag, &e.digest) {
        (Some(t), _) => format!("{}:{t}", e.repository),
        (None, Some(d)) => format!("{}@{d}", e.repository),
        (None, None) => e.repository.clone(),
    }
}

fn cloudevent(e: &Event, ctx: &Context) -> Value {
    let mut data = Map::new();
    data.insert("repository".into(), e.repository.clone().into());
    insert(&mut data, "digest", e.digest.clone());
    insert(&mut data, "mediaType", e.media_type.clone());
    insert(&mut data, "artifactType", e.artifact_type.clone());
    insert(&mut data, "tag", e.tag.clone());
    insert(&mut data, "size", e.size);
    insert(&mut data, "fromRepository", e.from_repository.clone());
    if let Some(q) = &e.quota {
        data.insert(
            "quota".into(),
            json!({ "scope": q.scope, "dimension": q.dimension, "limit": q.limit, "used": q.used,
                "threshold": q.threshold }),
        );
    }
    if let Some(gc) = &e.gc {
        data.insert("gc".into(), serde_json::to_value(gc).unwrap_or_default());
    }
    data.insert("actor".into(), json!({ "name": e.origin.actor }));
    let mut request = Map::new();
    insert(&mut request, "id", e.origin.request_id.clone());
    insert(&mut request, "addr", e.origin.addr.clone());
    insert(&mut request, "method", e.origin.method.clone());
    insert(&mut request, "host", e.origin.host.clone());
    insert(&mut request, "useragent", e.origin.user_agent.clone());
    data.insert("request".into(), Value::Object(request));
    json!({
        "specversion": "1.0",
        "id": e.id,
        "source": ctx.source,
        "type": format!("{}.{}", ctx.type_prefix, e.kind.as_str()),
        "subject": subject(e),
        "time": rfc3339_ms(e.time_ms),
        "datacontenttype": "application/json",
        "data": Value::Object(data),
    })
}

fn distribution(e: &Event, ctx: &Context) -> Value {
    let action = match e.kind {
        EventKind::ManifestPush | EventKind::BlobPush => "push",
        EventKind::BlobMount => "mount",
        // Not representable (a subscription in this format never gets them).
        EventKind::ManifestDelete
        | EventKind::TagDelete
        | EventKind::RepositoryDelete
        | EventKind::RepositoryCreate
        | EventKind::QuotaWarning
        | EventKind::GcCompleted => "delete",
    };
    let mut target = Map::new();
    let media_type = match e.kind {
        EventKind::BlobPush | EventKind::BlobMount => Some("application/octet-stream".to_owned()),
        _ => e.media_type.clone(),
    };
    if !matches!(e.kind, EventKind::ManifestDelete | EventKind::TagDelete | EventKind::RepositoryDelete) {
        insert(&mut target, "mediaType", media_type);
        insert(&mut target, "size", e.size);
        insert(&mut target, "length", e.size);
    }
    insert(&mut target, "digest", e.digest.clone());
    target.insert("repository".into(), e.repository.clone().into());
    insert(&mut target, "tag", e.tag.clone());
    insert(&mut target, "fromRepository", e.from_repository.clone());
    let o = &e.origin;
    insert(&mut target, "url", target_url(e));
    let entry = json!({
        "id": e.id,
        "timestamp": rfc3339_ms(e.time_ms),
        "action": action,
        "target": Value::Object(target),
        "request": {
            "id": o.request_id.clone().unwrap_or_default(),
            "addr": o.addr.clone().unwrap_or_default(),
            "host": o.host.clone().unwrap_or_default(),
            "method": o.method.clone().unwrap_or_default(),
            "useragent": o.user_agent.clone().unwrap_or_default(),
        },
        "actor": { "name": o.actor.clone().unwrap_or_default() },
        "source": { "addr": ctx.addr, "instanceID": ctx.instance },
    });
    json!({ "events": [entry] })
}

/// Where the pushed content can be fetched, as the pushing client addressed this registry:
/// `<scheme>://<host>/v2/<repository>/{manifests|blobs}/<digest>`. `None` without a digest
/// or a `Host` (a change made by a command), and for deletions.
fn target_url(e: &Event) -> Option<String> {
    let kind = match e.kind {
        EventKind::ManifestPush => "manifests",
        EventKind::BlobPush | EventKind::BlobMount => "blobs",
        _ => return None,
    };
    let (host, digest) = (e.origin.host.as_deref()?, e.digest.as_deref()?);
    let scheme = e.origin.scheme.as_deref().unwrap_or("http");
    Some(format!("{scheme}://{host}/v2/{}/{kind}/{digest}", e.repository))
}

fn ecr(e: &Event, ctx: &Context) -> Value {
    let mut detail = Map::new();
    detail.insert("result".into(), "SUCCESS".into());
    detail.insert("repository-name".into(), e.repository.clone().into());
    insert(&mut detail, "image-digest", e.digest.clone());
    let action = if e.kind == EventKind::ManifestPush { "PUSH" } else { "DELETE" };
    detail.insert("action-type".into(), action.into());
    insert(&mut detail, "image-tag", e.tag.clone());
    insert(&mut detail, "manifest-media-type", e.media_type.clone());
    insert(&mut detail, "artifact-media-type", e.artifact_type.clone());
    json!({
        "version": "0",
        "id": e.id,
        "detail-type": "ECR Image Action",
        "source": "aws.ecr",
        "account": ctx.account,
        "time": rfc3339_s(e.time_ms),
        "region": ctx.region,
        "resources": [format!("arn:aws:ecr:{}:{}:repository/{}", ctx.region, ctx.account, e.repository)],
        "detail": Value::Object(detail),
    })
}

#[cfg(test)]
mod tests {
    use berth_storage::metadata::Origin;

    use super::*;

    fn ctx() -> Context {
        Context {
            source: "/berth/reg1".into(),
            type_prefix: "dev.berth".into(),
            instance: "reg1".into(),
            addr: "127.0.0.1:5000".into(),
            account: "000000000000".into(),
            region: "local".into(),
        }
    }

    fn push() -> Event {
        let origin = Origin {
            actor: Some("alice".into()),
            request_id: Some("req-1".into()),
            addr: Some("10.0.0.7:40000".into()),
            method: Some("PUT".into()),
            host: Some("reg.example:5000".into()),
            scheme: Some("https".into()),
            user_agent: Some("docker/27".into()),
        };
        let mut e = Event::new(EventKind::ManifestPush, "team/app", &origin);
        e.id = "5f0c0d52-2c2a-4d3e-9a47-1e4b7f0e9b11".into();
        e.time_ms = 1_795_000_000_123;
        e.digest = Some("sha256:aa".into());
        e.media_type = Some("application/vnd.oci.image.manifest.v1+json".into());
        e.artifact_type = Some("application/vnd.oci.image.config.v1+json".into());
        e.tag = Some("v2".into());
        e.size = Some(528);
        e
    }

    fn body(f: PayloadFormat, e: &Event) -> (String, Value) {
        let r = render(f, e, &ctx());
        (r.content_type.to_owned(), serde_json::from_slice(&r.body).unwrap())
    }

    #[test]
    fn cloudevents_structured() {
        let (ct, v) = body(PayloadFormat::CloudEvents, &push());
        assert_eq!(ct, "application/cloudevents+json");
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "dev.berth.manifest.push");
        assert_eq!(v["source"], "/berth/reg1");
        assert_eq!(v["subject"], "team/app:v2");
        assert_eq!(v["time"], "2026-11-18T11:06:40.123Z");
        assert_eq!(v["data"]["digest"], "sha256:aa");
        assert_eq!(v["data"]["tag"], "v2");
        assert_eq!(v["data"]["size"], 528);
        assert_eq!(v["data"]["actor"]["name"], "alice");
        assert_eq!(v["data"]["request"]["id"], "req-1");
        assert_eq!(v["data"]["request"]["addr"], "10.0.0.7:40000");
    }

    #[test]
    fn distribution_envelope() {
        let (ct, v) = body(PayloadFormat::Distribution, &push());
        assert_eq!(ct, DISTRIBUTION);
        let e = &v["events"][0];
        assert_eq!(e["action"], "push");
        assert_eq!(e["target"]["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(e["target"]["length"], 528);
        assert_eq!(e["target"]["repository"], "team/app");
        assert_eq!(e["target"]["tag"], "v2");
        assert_eq!(e["request"]["useragent"], "docker/27");
        assert_eq!(e["actor"]["name"], "alice");
        assert_eq!(e["source"]["instanceID"], "reg1");
        let digest = e["target"]["digest"].as_str().unwrap();
        assert_eq!(e["target"]["url"], format!("https://reg.example:5000/v2/team/app/manifests/{digest}"));
        let mut mount = Event::new(EventKind::BlobMount, "b", &Origin::default());
        mount.digest = Some("sha256:bb".into());
        mount.size = Some(3);
        mount.from_repository = Some("a".into());
        let (_, v) = body(PayloadFormat::Distribution, &mount);
        assert!(v["events"][0]["target"].get("url").is_none(), "no Host: no URL");
        assert_eq!(v["events"][0]["action"], "mount");
        assert_eq!(v["events"][0]["target"]["fromRepository"], "a");
        assert_eq!(v["events"][0]["target"]["mediaType"], "application/octet-stream");
        let mut del = Event::new(EventKind::ManifestDelete, "b", &Origin::default());
        del.digest = Some("sha256:cc".into());
        del.media_type = Some("x".into());
        let (_, v) = body(PayloadFormat::Distribution, &del);
        assert_eq!(v["events"][0]["action"], "delete");
        assert_eq!(v["events"][0]["target"], json!({"digest": "sha256:cc", "repository": "b"}));
    }

    #[test]
    fn ecr_image_action() {
        let (ct, v) = body(PayloadFormat::Ecr, &push());
        assert_eq!(ct, JSON);
        assert_eq!(v["detail-type"], "ECR Image Action");
        assert_eq!(v["source"], "aws.ecr");
        assert_eq!(v["version"], "0");
        assert_eq!(v["time"], "2026-11-18T11:06:40Z");
        assert_eq!(v["resources"][0], "arn:aws:ecr:local:000000000000:repository/team/app");
        let d = &v["detail"];
        assert_eq!(d["result"], "SUCCESS");
        assert_eq!(d["action-type"], "PUSH");
        assert_eq!(d["repository-name"], "team/app");
        assert_eq!(d["image-digest"], "sha256:aa");
        assert_eq!(d["image-tag"], "v2");
        assert_eq!(d["manifest-media-type"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(d["artifact-media-type"], "application/vnd.oci.image.config.v1+json");
        let mut del = push();
        del.kind = EventKind::TagDelete;
        assert_eq!(body(PayloadFormat::Ecr, &del).1["detail"]["action-type"], "DELETE");
    }
}
