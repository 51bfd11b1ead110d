//! Webhooks end to end: a real receiver on a local port (that can answer slowly, fail, go
//! down and come back on the same port), a registry with short timings, and the admin API's
//! view of subscriptions and deliveries.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_registry::config::{Config, Secret};
use berth_registry::events::EventsConfig;
use berth_registry::events::config::WebhookConfig;
use berth_registry::events::signature;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::support::*;

const SECRET: &str = "0123456789abcdef-webhook-secret";
const POLL: Duration = Duration::from_millis(200);
const BACKOFF_INITIAL: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const LEASE: Duration = Duration::from_secs(3);
/// The longest any wait of these tests may take.
const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------
// The receiver.

/// How the receiver answers a request.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// At once, with this status.
    Status(u16),
    /// 200 after this long.
    Slow(Duration),
    /// 503 with `Retry-After: <seconds>`.
    RetryAfter(u64),
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    at: Instant,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    /// What the receiver answered; `None` while it has not (yet) answered.
    status: Option<u16>,
}

impl Hit {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or_else(|| panic!("no {name} header in {self:?}"))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    fn event_id(&self) -> String {
        self.header("berth-event-id").to_owned()
    }

    fn event_type(&self) -> String {
        self.header("berth-event-type").to_owned()
    }
}

#[derive(Debug)]
struct ReceiverState {
    hits: Mutex<Vec<Hit>>,
    /// Answers for the next requests, in order; then `mode`.
    script: Mutex<VecDeque<Mode>>,
    mode: Mutex<Mode>,
}

/// A webhook receiver on `127.0.0.1:<port>`, recording every request. `stop` closes the
/// port (and every open connection); `resume` listens on the same port again.
struct Receiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ReceiverState {
            hits: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            mode: Mutex::new(Mode::Status(200)),
        });
        let task = tokio::spawn(serve(listener, state.clone()));
        Receiver { addr, state, task: Mutex::new(Some(task)) }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Closes the port: connections are refused until `resume`.
    async fn stop(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens on the same port again.
    async fn resume(&self) {
        let start = Instant::now();
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if start.elapsed() < Duration::from_secs(5) => {
                    eprintln!("rebinding {}: {e}; trying again", self.addr);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.addr),
            }
        };
        let task = tokio::spawn(serve(listener, self.state.clone()));
        *self.task.lock().unwrap() = Some(task);
    }

    fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Answers the next requests with `modes`, one each, before falling back to the mode.
    fn script(&self, modes: impl IntoIterator<Item = Mode>) {
        self.state.script.lock().unwrap().extend(modes);
    }

    fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }

    fn hits_on(&self, path: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.path == path).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }
}

/// Accepts connections until aborted; aborting drops every connection with it.
async fn serve(listener: TcpListener, state: Arc<ReceiverState>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| answer(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn answer(state: Arc<ReceiverState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mode = state.script.lock().unwrap().pop_front().unwrap_or(*state.mode.lock().unwrap());
    let index = {
        let mut hits = state.hits.lock().unwrap();
        hits.push(Hit { at, path: parts.uri.path().to_owned(), headers: parts.headers, body, status: None });
        hits.len() - 1
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    let status = match mode {
        Mode::Status(s) => s,
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            200
        }
        Mode::RetryAfter(s) => {
            response.headers_mut().insert("retry-after", s.to_string().parse().unwrap());
            503
        }
    };
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    state.hits.lock().unwrap()[index].status = Some(status);
    Ok(response)
}

// ---------------------------------------------------------------------------------------
// Helpers.

/// Webhook settings short enough for tests.
fn events_config() -> EventsConfig {
    EventsConfig {
        poll_interval: POLL,
        backoff_initial: BACKOFF_INITIAL,
        backoff_max: BACKOFF_MAX,
        lease: LEASE,
        ..EventsConfig::default()
    }
}

fn config_with_events(dir: &std::path::Path) -> Config {
    Config { events: events_config(), ..config_in(dir) }
}

async fn start_server() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_events(dir.path());
    TestServer::start_with(dir, config).await
}

/// Polls `check` until it gives a value; past `limit`, panics with `what` and the last
/// reason `check` gave.
async fn eventually<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(why) if start.elapsed() > limit => panic!("timed out after {limit:?} waiting for {what}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn send_json(r: reqwest::RequestBuilder) -> (u16, Value) {
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, value)
}

/// PUTs webhook `name`; with a 1 s timeout unless `spec` says otherwise (short, to match
/// these tests' short lease).
async fn put_webhook(t: &TestServer, name: &str, mut spec: Value) -> (u16, Value) {
    if spec.get("timeout").is_none() {
        spec["timeout"] = json!("1s");
    }
    send_json(t.client.put(t.url(&format!("/api/v1/webhooks/{name}"))).json(&spec)).await
}

/// Creates webhook `name`, expecting 201.
async fn create_webhook(t: &TestServer, name: &str, spec: Value) -> Value {
    let (status, body) = put_webhook(t, name, spec).await;
    assert_eq!(status, 201, "creating webhook {name}: {body}");
    body
}

async fn deliveries(t: &TestServer, query: &str) -> Vec<Value> {
    let (status, body) = send_json(t.client.get(t.url(&format!("/api/v1/deliveries?{query}")))).await;
    assert_eq!(status, 200, "{body}");
    body["deliveries"].as_array().unwrap().clone()
}

async fn delivery(t: &TestServer, id: i64) -> Value {
    let (status, body) = send_json(t.client.get(t.url(&format!("/api/v1/deliveries/{id}")))).await;
    assert_eq!(status, 200, "delivery {id}: {body}");
    body
}

/// Waits until delivery `id` is in `state`; returns it with its attempts log.
async fn wait_state(t: &TestServer, id: i64, state: &str) -> Value {
    eventually(&format!("delivery {id} to be {state}"), WAIT, async || {
        let d = delivery(t, id).await;
        if d["state"] == state { Ok(d) } else { Err(d.to_string()) }
    })
    .await
}

/// The only delivery of `subscription`, once there is one.
async fn only_delivery(t: &TestServer, subscription: &str) -> Value {
    let list = deliveries(t, &format!("subscription={subscription}")).await;
    assert_eq!(list.len(), 1, "deliveries of {subscription}: {list:?}");
    list[0].clone()
}

/// The events recorded for `repo`, in the order they were made.
async fn recorded_events(t: &TestServer, repo: &str) -> Vec<Value> {
    let (status, body) = send_json(t.client.get(t.url("/api/v1/events?after=0&limit=1000"))).await;
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().unwrap().iter().filter(|e| e["repository"] == repo).cloned().collect()
}

fn unix_now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn error_message(body: &Value) -> String {
    body["errors"][0]["message"].as_str().unwrap_or_else(|| panic!("no errors[0].message in {body}")).to_owned()
}

// ---------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn webhook_receives_signed_cloudevent_for_push() {
    let rx = Receiver::start().await;
    let t = start_server().await;
    create_webhook(&t, "ce", json!({ "url": rx.url("/hook"), "secret": SECRET, "timeout": "1s" })).await;

    let repo = "hooks/signed";
    let (digest, size) = push_manifest(&t, repo, "v1", "signed").await;
    let hits = eventually("create, blob push and manifest push to arrive", WAIT, async || {
        let hits: Vec<Hit> = rx.hits().into_iter().filter(Hit::ok).collect();
        if hits.iter().any(|h| h.event_type() == "manifest.push") { Ok(hits) } else { Err(format!("{hits:?}")) }
    })
    .await;

    // In order, each once.
    let kinds: Vec<String> = hits.iter().map(Hit::event_type).collect();
    assert_eq!(kinds, ["repository.create", "blob.push", "manifest.push"], "{hits:?}");

    let push = hits.iter().find(|h| h.event_type() == "manifest.push").unwrap();
    let body = push.json();
    assert_eq!(push.path, "/hook");
    assert_eq!(push.header("content-type"), "application/cloudevents+json");
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["type"], "dev.berth.manifest.push");
    assert_eq!(body["subject"], format!("{repo}:v1"));
    assert_eq!(body["data"]["repository"], repo);
    assert_eq!(body["data"]["tag"], "v1");
    assert_eq!(body["data"]["digest"], digest);
    assert_eq!(body["data"]["size"], size);
    assert_eq!(body["data"]["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let id = body["id"].as_str().unwrap();
    assert_eq!(push.header("idempotency-key"), id);
    assert_eq!(push.header("berth-event-id"), id);
    assert_eq!(push.header("berth-delivery-attempt"), "1");
    let delivery_id: i64 = push.header("berth-delivery").parse().unwrap();
    assert_eq!(delivery(&t, delivery_id).await["event"]["id"], id);

    // The signature: with the secret, over this body, recently.
    let sig = push.header("berth-signature");
    assert!(sig.starts_with("t=") && sig.contains(",v1="), "{sig}");
    let now = unix_now_s();
    assert_eq!(signature::verify(SECRET, sig, &push.body, now, 300), Ok(()));
    assert!(signature::verify("another-secret-0123456789", sig, &push.body, now, 300).is_err());
    let mut tampered = push.body.to_vec();
    tampered.extend_from_slice(b" ");
    assert!(signature::verify(SECRET, sig, &tampered, now, 300).is_err());
    for h in &hits {
        assert_eq!(signature::verify(SECRET, h.header("berth-signature"), &h.body, now, 300), Ok(()), "{h:?}");
        assert_eq!(h.header("idempotency-key"), h.json()["id"].as_str().unwrap());
        assert_eq!(h.json()["type"], format!("dev.berth.{}", h.event_type()));
    }
    let blob = hits.iter().find(|h| h.event_type() == "blob.push").unwrap().json();
    assert_eq!(blob["data"]["digest"], sha256(b"{\"seed\":\"signed\"}"));
    assert_eq!(blob["data"]["repository"], repo);
    t.server.stop().await;
}

#[tokio::test]
async fn receiver_down_then_up_loses_nothing_and_keeps_order() {
    let rx = Receiver::start().await;
    rx.stop().await;
    let t = start_server().await;
    create_webhook(&t, "line", json!({ "url": rx.url("/line"), "secret": SECRET, "max_attempts": 50 })).await;

    let repo = "hooks/line";
    let mut expected: Vec<(String, Option<String>)> = vec![("repository.create".into(), None)];
    for i in 0..5 {
        let tag = format!("t{i}");
        push_manifest(&t, repo, &tag, &format!("line-{i}")).await;
        expected.push(("blob.push".into(), None));
        expected.push(("manifest.push".into(), Some(tag)));
    }
    let r = t.client.delete(t.url(&format!("/v2/{repo}/manifests/t2"))).send().await.unwrap();
    assert_eq!(r.status(), 202);
    expected.push(("tag.delete".into(), Some("t2".into())));

    // The receiver is down: the line's head fails (and nothing behind it is tried).
    eventually("a failed attempt while the receiver is down", WAIT, async || {
        // `retrying`: pending after a failed attempt, as the counts and /metrics name it.
        let list = deliveries(&t, "subscription=line&state=retrying").await;
        let tried: Vec<&Value> = list.iter().filter(|d| d["attempts"].as_u64().unwrap() > 0).collect();
        assert_eq!(tried.len(), list.len(), "{list:?}");
        match tried.as_slice() {
            [d] if d["last_error"].as_str().unwrap().contains("connect") => Ok(()),
            _ => Err(format!("{list:?}")),
        }
    })
    .await;
    assert!(rx.hits().is_empty());

    rx.resume().await;
    let made = recorded_events(&t, repo).await;
    assert_eq!(made.len(), expected.len(), "{made:?}");
    let hits = eventually("every event to arrive", WAIT, async || {
        let ok: Vec<Hit> = rx.hits().into_iter().filter(Hit::ok).collect();
        if ok.len() >= expected.len() { Ok(ok) } else { Err(format!("{} of {} arrived", ok.len(), expected.len())) }
    })
    .await;

    // Each exactly once, in the order made.
    let mut seen = HashMap::new();
    for h in &hits {
        *seen.entry(h.event_id()).or_insert(0) += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "duplicates: {seen:?}");
    let got_ids: Vec<String> = hits.iter().map(Hit::event_id).collect();
    let made_ids: Vec<String> = made.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(got_ids, made_ids, "arrival order differs from the order the events were made");
    let got: Vec<(String, Option<String>)> =
        hits.iter().map(|h| (h.event_type(), h.json()["data"]["tag"].as_str().map(str::to_owned))).collect();
    assert_eq!(got, expected);
    for d in deliveries(&t, "subscription=line").await {
        assert_eq!(d["state"], "delivered", "{d}");
    }
    t.server.stop().await;
}

#[tokio::test]
async fn slow_receiver_times_out_and_is_retried() {
    let rx = Receiver::start().await;
    // First too slow for the 500 ms timeout, then "come back in a second", then fine.
    rx.script([Mode::Slow(Duration::from_millis(1500)), Mode::RetryAfter(1)]);
    let t = start_server().await;
    let spec = json!({ "url": rx.url("/slow"), "secret": SECRET, "events": ["manifest.push"], "timeout": "500ms" });
    create_webhook(&t, "slow", spec).await;
    push_manifest(&t, "hooks/slow", "v1", "slow").await;

    let id = eventually("the delivery to exist", WAIT, async || {
        let list = deliveries(&t, "subscription=slow").await;
        list.first().map(|d| d["id"].as_i64().unwrap()).ok_or_else(|| "no delivery".to_owned())
    })
    .await;
    let d = wait_state(&t, id, "delivered").await;
    let log = d["attempts_log"].as_array().unwrap();
    assert_eq!(log.len(), 3, "{d}");
    let first = &log[0];
    assert!(first["status"].is_null(), "{first}");
    let error = first["error"].as_str().unwrap();
    assert!(error.contains("timeout") && error.contains("500 ms"), "{error}");
    assert!(first["duration_ms"].as_u64().unwrap() >= 500, "{first}");
    assert_eq!(log[1]["status"], 503, "{d}");
    assert!(log[1]["error"].as_str().unwrap().contains("503"), "{d}");
    // Retry-After: 1 is honoured.
    let gap = log[2]["at_ms"].as_i64().unwrap() - log[1]["at_ms"].as_i64().unwrap();
    assert!(gap >= 1000, "the attempt after Retry-After: 1 came {gap} ms later");
    assert_eq!(log[2]["status"], 200, "{d}");
    assert!(log[2]["error"].is_null(), "{d}");
    assert_eq!(d["attempts"], 3);
    assert_eq!(d["last_status"], 200);

    let hits = rx.hits();
    assert_eq!(hits.len(), 3, "{hits:?}");
    let attempts: Vec<&str> = hits.iter().map(|h| h.header("berth-delivery-attempt")).collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert!(hits.iter().all(|h| h.event_id() == hits[0].event_id()));
    t.server.stop().await;
}

#[tokio::test]
async fn failing_receiver_backs_off_then_dead_letters() {
    let rx = Receiver::start().await;
    rx.set_mode(Mode::Status(500));
    let t = start_server().await;
    let spec = json!({ "url": rx.url("/fail"), "secret": SECRET, "events": ["manifest.push"], "max_attempts": 3 });
    create_webhook(&t, "failing", spec).await;
    push_manifest(&t, "hooks/fail", "v1", "fail-1").await;

    let id = only_delivery(&t, "failing").await["id"].as_i64().unwrap();
    let d = wait_state(&t, id, "dead").await;
    assert_eq!(d["attempts"], 3, "{d}");
    let log = d["attempts_log"].as_array().unwrap();
    assert_eq!(log.len(), 3, "{d}");
    for a in log {
        assert_eq!(a["status"], 500, "{d}");
        assert!(a["error"].as_str().unwrap().contains("500"), "{d}");
    }
    let hits = rx.hits();
    assert_eq!(hits.len(), 3, "{hits:?}");
    assert!(hits.iter().all(|h| h.status == Some(500)));
    // Backing off: delays drawn from the upper half of backoff_initial × 2^(n-1).
    let gap1 = hits[1].at - hits[0].at;
    let gap2 = hits[2].at - hits[1].at;
    assert!(gap1 >= BACKOFF_INITIAL / 2, "first retry after {gap1:?}");
    assert!(gap2 >= BACKOFF_INITIAL, "second retry after {gap2:?} (first after {gap1:?})");
    let logged_gap = log[2]["at_ms"].as_i64().unwrap() - log[1]["at_ms"].as_i64().unwrap();
    assert!(logged_gap >= BACKOFF_INITIAL.as_millis() as i64, "{d}");

    let metrics = t.client.get(t.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("berth_webhook_deliveries{subscription=\"failing\",state=\"dead\"} 1\n"), "{metrics}");
    assert!(metrics.contains("berth_webhook_attempts_total{result=\"dead_lettered\"} 1\n"), "{metrics}");
    assert!(metrics.contains("berth_webhook_attempts_total{result=\"failed\"} 2\n"), "{metrics}");

    // The receiver is fixed: a replay sends it again.
    rx.set_mode(Mode::Status(200));
    let (status, body) =
        send_json(t.client.post(t.url("/api/v1/deliveries/replay?state=dead&subscription=failing"))).await;
    assert_eq!((status, &body), (200, &json!({ "replayed": 1 })));
    let d = wait_state(&t, id, "delivered").await;
    let log = d["attempts_log"].as_array().unwrap();
    assert_eq!(log.len(), 4, "the log keeps the attempts before the replay: {d}");
    assert_eq!(log[3]["status"], 200);
    assert_eq!(rx.hits().iter().filter(|h| h.ok()).count(), 1);

    // Another dead one is purged (and the delivered one stays).
    rx.set_mode(Mode::Status(500));
    push_manifest(&t, "hooks/fail", "v2", "fail-2").await;
    let other = eventually("a second delivery", WAIT, async || {
        let list = deliveries(&t, "subscription=failing").await;
        list.iter().find(|d| d["id"] != id).map(|d| d["id"].as_i64().unwrap()).ok_or_else(|| format!("{list:?}"))
    })
    .await;
    wait_state(&t, other, "dead").await;
    let (status, body) =
        send_json(t.client.post(t.url("/api/v1/deliveries/purge?state=dead&subscription=failing"))).await;
    assert_eq!((status, &body), (200, &json!({ "purged": 1 })));
    let r = t.client.get(t.url(&format!("/api/v1/deliveries/{other}"))).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(only_delivery(&t, "failing").await["id"], id);
    // A purge that names nothing is refused.
    let (status, body) = send_json(t.client.post(t.url("/api/v1/deliveries/purge"))).await;
    assert_eq!(status, 400, "{body}");
    t.server.stop().await;
}

#[tokio::test]
async fn killed_mid_delivery_is_delivered_after_restart() {
    let rx = Receiver::start().await;
    // Held for 1.5 s, within the 2 s timeout: long enough to stop the registry mid-request.
    rx.set_mode(Mode::Slow(Duration::from_millis(1500)));
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_events(dir.path());
    let t = TestServer::start_with(dir, config.clone()).await;
    let spec = json!({ "url": rx.url("/held"), "secret": SECRET, "events": ["manifest.push"], "timeout": "2s" });
    create_webhook(&t, "held", spec).await;
    push_manifest(&t, "hooks/held", "v1", "held").await;

    // The request is in flight, the receiver holding it: the registry dies.
    let first = eventually("the first request to arrive", WAIT, async || {
        rx.hits().first().cloned().ok_or_else(|| "nothing yet".to_owned())
    })
    .await;
    let TestServer { server, dir, .. } = t;
    server.stop().await;
    let stopped = Instant::now();
    assert!(stopped - first.at < Duration::from_millis(1500), "the server stopped after the receiver answered");
    rx.set_mode(Mode::Status(200));

    let t = TestServer::start_with(dir, config).await;
    let restarted = Instant::now();
    let again =
        eventually("the delivery to be sent again after the lease", LEASE + Duration::from_secs(10), async || {
            let hits = rx.hits();
            hits.iter().find(|h| h.at > restarted && h.ok()).cloned().ok_or_else(|| format!("{hits:?}"))
        })
        .await;
    assert_eq!(again.event_id(), first.event_id());
    let waited = again.at - first.at;
    assert!(waited >= LEASE - Duration::from_millis(500), "sent again after {waited:?}, before the lease ended");
    assert!(waited <= LEASE + Duration::from_secs(3), "sent again only after {waited:?}");
    let d = only_delivery(&t, "held").await;
    let d = wait_state(&t, d["id"].as_i64().unwrap(), "delivered").await;
    assert_eq!(d["event"]["id"], first.event_id().as_str());
    t.server.stop().await;
}

#[tokio::test]
async fn filters_choose_what_is_sent() {
    let rx = Receiver::start().await;
    let t = start_server().await;
    let spec = json!({
        "url": rx.url("/filtered"), "secret": SECRET,
        "events": ["manifest.push"], "repositories": ["team/*"], "tags": ["v*"],
    });
    create_webhook(&t, "filtered", spec).await;
    let spec = json!({ "url": rx.url("/distribution"), "secret": SECRET, "format": "distribution" });
    create_webhook(&t, "dist", spec).await;
    let spec = json!({ "url": rx.url("/ecr"), "secret": SECRET, "format": "ecr" });
    create_webhook(&t, "ecr", spec).await;

    let (digest, size) = push_manifest(&t, "team/app", "v1", "filters-1").await;
    push_manifest(&t, "team/app", "latest", "filters-2").await;
    push_manifest(&t, "other/app", "v1", "filters-3").await;

    // Deliveries are made when events are: what has none now never gets one.
    let filtered = only_delivery(&t, "filtered").await;
    assert_eq!(filtered["event"]["repository"], "team/app");
    assert_eq!(filtered["event"]["tag"], "v1");
    // distribution: 3 blob pushes and 3 manifest pushes (no repository.create); ecr: 3 pushes.
    let all = eventually("every delivery to be delivered", WAIT, async || {
        let list = deliveries(&t, "").await;
        let counts = (list.len(), list.iter().all(|d| d["state"] == "delivered"));
        if counts == (10, true) { Ok(list) } else { Err(format!("{list:?}")) }
    })
    .await;
    let count = |sub: &str| all.iter().filter(|d| d["subscription"] == sub).count();
    assert_eq!((count("filtered"), count("dist"), count("ecr")), (1, 6, 3));

    let hits = rx.hits_on("/filtered");
    assert_eq!(hits.len(), 1, "{hits:?}");
    let body = hits[0].json();
    assert_eq!((&body["data"]["repository"], &body["data"]["tag"]), (&json!("team/app"), &json!("v1")));

    let dist = rx.hits_on("/distribution");
    assert_eq!(dist.len(), 6, "{dist:?}");
    for h in &dist {
        assert_eq!(h.header("content-type"), "application/vnd.docker.distribution.events.v2+json");
        assert_eq!(signature::verify(SECRET, h.header("berth-signature"), &h.body, unix_now_s(), 300), Ok(()));
        assert_eq!(h.json()["events"][0]["id"], h.event_id().as_str());
    }
    assert!(!dist.iter().any(|h| h.event_type() == "repository.create"));
    let pushed = dist
        .iter()
        .map(Hit::json)
        .find(|b| b["events"][0]["target"]["repository"] == "team/app" && b["events"][0]["target"]["tag"] == "v1")
        .unwrap_or_else(|| panic!("no team/app:v1 push in {dist:?}"));
    let e = &pushed["events"][0];
    assert_eq!(e["action"], "push");
    assert_eq!(e["target"]["digest"], digest);
    assert_eq!(e["target"]["size"], size);
    assert_eq!(e["target"]["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    // As the pushing client addressed the registry.
    assert_eq!(e["target"]["url"], format!("{}/v2/team/app/manifests/{digest}", t.server.url()));
    assert_eq!(
        dist.iter().filter(|h| h.json()["events"][0]["target"]["mediaType"] == "application/octet-stream").count(),
        3
    );

    let ecr = rx.hits_on("/ecr");
    assert_eq!(ecr.len(), 3, "{ecr:?}");
    let pushed = ecr
        .iter()
        .map(Hit::json)
        .find(|b| b["detail"]["repository-name"] == "team/app" && b["detail"]["image-tag"] == "v1")
        .unwrap_or_else(|| panic!("no team/app:v1 push in {ecr:?}"));
    assert_eq!(ecr[0].header("content-type"), "application/json");
    assert_eq!(pushed["detail-type"], "ECR Image Action");
    assert_eq!(pushed["source"], "aws.ecr");
    assert_eq!(pushed["detail"]["action-type"], "PUSH");
    assert_eq!(pushed["detail"]["image-digest"], digest);
    t.server.stop().await;
}

#[tokio::test]
async fn config_file_webhooks_are_synced_and_read_only() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_with_events(dir.path());
    let hook = WebhookConfig {
        name: "from-file".into(),
        url: rx.url("/file"),
        secret: Secret::from(SECRET.to_owned()),
        events: vec!["manifest.push".into()],
        repositories: vec![],
        tags: vec![],
        format: None,
        headers: [("X-Team".to_owned(), "platform".to_owned())].into(),
        timeout: Duration::from_secs(1),
        max_attempts: 4,
        enabled: true,
    };
    config.events.webhooks = vec![hook.clone()];
    let t = TestServer::start_with(dir, config.clone()).await;

    let r = t.client.get(t.url("/api/v1/webhooks")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains(SECRET), "the secret is shown: {text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    let hooks = list["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1, "{list}");
    let w = &hooks[0];
    assert_eq!(w["name"], "from-file");
    assert_eq!(w["source"], "config");
    assert_eq!(w["url"], rx.url("/file"));
    assert_eq!(w["events"], json!(["manifest.push"]));
    assert_eq!(w["max_attempts"], 4);
    assert!(w.get("secret").is_none(), "{w}");
    let (status, one) = send_json(t.client.get(t.url("/api/v1/webhooks/from-file"))).await;
    assert_eq!(status, 200);
    assert!(one.get("secret").is_none() && one["source"] == "config", "{one}");

    // Read-only through the API.
    let (status, body) = put_webhook(&t, "from-file", json!({ "url": rx.url("/elsewhere"), "secret": SECRET })).await;
    assert_eq!(status, 409, "{body}");
    assert!(error_message(&body).contains("configuration file"), "{body}");
    let (status, body) = send_json(t.client.delete(t.url("/api/v1/webhooks/from-file"))).await;
    assert_eq!(status, 409, "{body}");

    // It delivers, with its own headers and signed with its secret.
    push_manifest(&t, "hooks/file", "v1", "file").await;
    let hit = eventually("the config webhook's delivery", WAIT, async || {
        rx.hits().into_iter().find(Hit::ok).ok_or_else(|| "nothing yet".to_owned())
    })
    .await;
    assert_eq!(hit.header("x-team"), "platform");
    assert_eq!(signature::verify(SECRET, hit.header("berth-signature"), &hit.body, unix_now_s(), 300), Ok(()));

    // Synced at each start: changed, then removed with the file.
    let TestServer { server, dir, .. } = t;
    server.stop().await;
    config.events.webhooks = vec![WebhookConfig { url: rx.url("/moved"), max_attempts: 7, ..hook }];
    let t = TestServer::start_with(dir, config.clone()).await;
    let (_, w) = send_json(t.client.get(t.url("/api/v1/webhooks/from-file"))).await;
    assert_eq!((&w["url"], &w["max_attempts"], &w["source"]), (&json!(rx.url("/moved")), &json!(7), &json!("config")));
    let TestServer { server, dir, .. } = t;
    server.stop().await;
    config.events.webhooks = vec![];
    let t = TestServer::start_with(dir, config).await;
    let (_, list) = send_json(t.client.get(t.url("/api/v1/webhooks"))).await;
    assert_eq!(list["webhooks"], json!([]), "{list}");
    t.server.stop().await;
}

#[tokio::test]
async fn webhook_validation_errors_are_clear() {
    let rx = Receiver::start().await;
    let t = start_server().await;
    for (spec, want) in [
        (json!({ "url": "not a url", "secret": SECRET }), "url"),
        (json!({ "url": "ftp://example.com/hook", "secret": SECRET }), "http:// or https://"),
        (json!({ "url": rx.url("/v"), "secret": "short" }), "secret: at least 16"),
        (json!({ "url": rx.url("/v"), "secret": SECRET, "events": ["manifest.pushed"] }), "unknown event type"),
        (json!({ "url": rx.url("/v"), "secret": SECRET, "format": "xml" }), "unknown payload format"),
        (json!({ "url": rx.url("/v"), "secret": SECRET, "timeout": "1h" }), "timeout"),
    ] {
        let (status, body) = put_webhook(&t, "bad", spec.clone()).await;
        assert_eq!(status, 400, "{spec} → {body}");
        assert_eq!(body["errors"][0]["code"], "INVALID_REQUEST", "{body}");
        let message = error_message(&body);
        assert!(message.contains(want), "{spec}: {message:?} should name {want:?}");
    }
    let (status, body) = put_webhook(&t, "bad name!", json!({ "url": rx.url("/v"), "secret": SECRET })).await;
    assert_eq!(status, 400, "{body}");
    let (_, list) = send_json(t.client.get(t.url("/api/v1/webhooks"))).await;
    assert_eq!(list["webhooks"], json!([]), "a refused webhook was saved: {list}");

    // Without a secret: one is generated and shown once.
    let created = create_webhook(&t, "generated", json!({ "url": rx.url("/gen"), "events": ["manifest.push"] })).await;
    let secret = created["secret"].as_str().unwrap_or_else(|| panic!("no generated secret in {created}")).to_owned();
    assert!(secret.len() >= 16, "{secret}");
    let r = t.client.get(t.url("/api/v1/webhooks/generated")).send().await.unwrap();
    let text = r.text().await.unwrap();
    assert!(!text.contains(&secret) && !text.contains("\"secret\""), "{text}");
    let text = t.client.get(t.url("/api/v1/webhooks")).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains(&secret) && !text.contains("\"secret\""), "{text}");
    // Replaced without a secret: it keeps the one it has, and does not show it.
    let (status, replaced) =
        put_webhook(&t, "generated", json!({ "url": rx.url("/gen"), "events": ["manifest.push"] })).await;
    assert_eq!(status, 200, "{replaced}");
    assert!(replaced.get("secret").is_none(), "{replaced}");

    // Deliveries are signed with the generated secret.
    push_manifest(&t, "hooks/gen", "v1", "gen").await;
    let hit = eventually("a delivery", WAIT, async || {
        rx.hits().into_iter().find(Hit::ok).ok_or_else(|| "nothing yet".to_owned())
    })
    .await;
    assert_eq!(signature::verify(&secret, hit.header("berth-signature"), &hit.body, unix_now_s(), 300), Ok(()));
    t.server.stop().await;
}

#[tokio::test]
async fn task_definition_pins_images() {
    let t = start_server().await;
    let (digest, _) = push_manifest(&t, "team/web", "live", "web").await;
    let host = t.server.addr.to_string();
    let resolve = async |query: &str, images: &[&str]| {
        let definitions: Vec<Value> =
            images.iter().enumerate().map(|(i, image)| json!({ "name": format!("c{i}"), "image": image })).collect();
        let doc = json!({ "family": "web", "containerDefinitions": definitions });
        send_json(t.client.post(t.url(&format!("/api/v1/task-definitions/resolve{query}"))).json(&doc)).await
    };

    let live = format!("{host}/team/web:live");
    let (status, body) = resolve("", &[&live]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["family"], "web");
    assert_eq!(body["containerDefinitions"][0]["name"], "c0");
    assert_eq!(body["containerDefinitions"][0]["image"], format!("{host}/team/web@{digest}"));
    // Already pinned: stays as it is.
    let pinned = format!("{host}/team/web@{digest}");
    let (status, body) = resolve("", &[&pinned]).await;
    assert_eq!((status, &body["containerDefinitions"][0]["image"]), (200, &json!(pinned)), "{body}");

    // Every unresolved image is reported, each with its own code.
    let no_tag = format!("{host}/team/web:nope");
    let no_repo = format!("{host}/team/missing:live");
    let (status, body) = resolve("", &[&live, &no_tag, &no_repo]).await;
    assert_eq!(status, 404, "{body}");
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{body}");
    assert_eq!(errors[0]["code"], "MANIFEST_UNKNOWN");
    assert_eq!(errors[0]["detail"]["image"], no_tag.as_str());
    assert!(errors[0]["message"].as_str().unwrap().contains(&no_tag), "{body}");
    assert_eq!(errors[1]["code"], "NAME_UNKNOWN");
    assert_eq!(errors[1]["detail"]["image"], no_repo.as_str());
    assert!(errors[1]["message"].as_str().unwrap().contains(&no_repo), "{body}");

    // Images on other registries.
    let foreign = "registry.example.com/team/web:live";
    let (status, body) = resolve("", &[&live, foreign]).await;
    assert_eq!(status, 400, "{body}");
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["code"], "UNSUPPORTED");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(message.contains(foreign), "{body}");
    // The fix in the HTTP caller's terms (`berth task-def resolve` says --keep-foreign: cli.rs).
    assert!(message.contains("foreign=keep") && !message.contains("--keep-foreign"), "{body}");
    let (status, body) = resolve("?foreign=keep", &[&live, foreign]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["containerDefinitions"][0]["image"], format!("{host}/team/web@{digest}"));
    assert_eq!(body["containerDefinitions"][1]["image"], foreign);
    t.server.stop().await;
}

#[tokio::test]
async fn repository_delete_emits_event() {
    let rx = Receiver::start().await;
    let t = start_server().await;
    let spec = json!({ "url": rx.url("/gone"), "secret": SECRET, "events": ["repository.delete"] });
    create_webhook(&t, "gone", spec).await;
    push_manifest(&t, "team/gone", "v1", "gone").await;

    let r = t.client.delete(t.url("/api/v1/repositories?name=team/gone")).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    // The fix in the HTTP caller's terms (`berth repository delete` says --force: cli.rs).
    assert!(error_message(&body).contains("force=true"), "{body}");
    assert!(!error_message(&body).contains("--force"), "{body}");
    assert!(deliveries(&t, "subscription=gone").await.is_empty(), "a refused delete made an event");

    let r = t.client.delete(t.url("/api/v1/repositories?name=team/gone&force=true")).send().await.unwrap();
    assert_eq!(r.status(), 204, "{:?}", r.text().await);
    let hit = eventually("the repository.delete event", WAIT, async || {
        rx.hits().into_iter().find(Hit::ok).ok_or_else(|| "nothing yet".to_owned())
    })
    .await;
    assert_eq!(hit.event_type(), "repository.delete");
    let body = hit.json();
    assert_eq!(body["type"], "dev.berth.repository.delete");
    assert_eq!(body["data"]["repository"], "team/gone");
    assert_eq!(body["subject"], "team/gone");

    let r = t.client.get(t.url("/v2/team/gone/tags/list")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = t.client.delete(t.url("/api/v1/repositories?name=team/gone&force=true")).send().await.unwrap();
    assert_eq!(r.status(), 404, "deleting it again");
    assert_eq!(rx.hits().len(), 1);
    t.server.stop().await;
}

/// The end of a garbage collection is an event: `gc.completed`, with the run's summary,
/// delivered to a subscription that asks for it.
#[tokio::test]
async fn gc_completed_is_delivered() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_events(dir.path());
    let t = TestServer::start_tuned(dir, config, &|s| {
        s.gc.grace = Duration::ZERO;
        s.gc.mark_wait = Duration::from_millis(100);
    })
    .await;
    create_webhook(&t, "gc", json!({ "url": rx.url("/gc"), "secret": SECRET, "events": ["gc.completed"] })).await;
    let (status, run) = send_json(t.client.post(t.url("/api/v1/gc")).json(&json!({}))).await;
    assert_eq!(status, 200, "{run}");
    let hit = eventually("gc.completed to arrive", WAIT, async || {
        let hits = rx.hits_on("/gc");
        hits.into_iter().find(Hit::ok).ok_or_else(|| "no delivery yet".to_owned())
    })
    .await;
    assert_eq!(hit.event_type(), "gc.completed");
    let body = hit.json();
    assert_eq!(body["data"]["gc"]["run"], run["id"], "{body}");
    assert_eq!(body["data"]["gc"]["blobs"], run["blobs"], "{body}");
    // A dry run reports nothing.
    let (status, _) = send_json(t.client.post(t.url("/api/v1/gc")).json(&json!({"dry_run": true}))).await;
    assert_eq!(status, 200);
    tokio::time::sleep(POLL * 4).await;
    assert_eq!(rx.hits_on("/gc").len(), 1, "only the real run's event");
    t.server.stop().await;
}
