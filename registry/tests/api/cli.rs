//! The `berth` command as a user runs it: the real binary on a registry's data folder,
//! made first by a running server (commands other than `serve` do not create one). What it
//! prints on standard output (one line for a change, data with `--json`), its help, and its
//! errors, which name the command's own flags.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use berth_registry::config::Config;
use berth_registry::events::EventsConfig;
use serde_json::Value;

use crate::support::*;

/// Runs `berth ARGS --data-dir DIR` with the test server's settings, `stdin` on its input.
fn berth_in(dir: &Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .args(["--data-dir", dir.to_str().unwrap()])
        .env("BERTH_AUTH__ENABLED", "false")
        .env("BERTH_LOG__LEVEL", "warn")
        .env_remove("BERTH_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn berth(dir: &Path, args: &[&str]) -> Output {
    berth_in(dir, args, "")
}

/// `berth ARGS` with no data folder (help, parse errors).
fn berth_bare(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_berth")).args(args).env_remove("BERTH_CONFIG").output().unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Succeeded and printed exactly one line on standard output; returns it.
fn one_line(o: &Output) -> String {
    assert!(o.status.success(), "failed: {o:?}");
    let text = out(o);
    assert_eq!(text.lines().count(), 1, "not one line on stdout: {text:?} (stderr {:?})", err(o));
    text.trim_end().to_owned()
}

fn failed(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(out(o).is_empty(), "a failed command printed on stdout: {o:?}");
    err(o)
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{o:?}");
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out(o)))
}

/// Deliveries are polled for every 100 ms and retried only after a minute, so a failed
/// first attempt stays `retrying` while the test looks.
fn config_with_slow_retries(dir: &Path) -> Config {
    let events = EventsConfig {
        poll_interval: Duration::from_millis(100),
        backoff_initial: Duration::from_secs(60),
        ..EventsConfig::default()
    };
    Config { events, ..config_in(dir) }
}

#[test]
fn each_command_has_its_own_help() {
    let webhooks = out(&berth_bare(&["webhooks", "--help"]));
    assert!(webhooks.starts_with("Webhook subscriptions"), "{webhooks}");
    assert!(!webhooks.contains("login token"), "{webhooks}");
    let login = out(&berth_bare(&["login-token", "-h"]));
    assert!(login.starts_with("Print a login token"), "{login}");
    let user = login.lines().find(|l| l.trim_start().starts_with("--user <USER>")).unwrap_or_else(|| panic!("{login}"));
    assert!(user.ends_with("The user the token signs in as"), "{login}");
    let first_lines: Vec<String> = ["get", "list", "delete", "put"]
        .iter()
        .map(|verb| out(&berth_bare(&["admin", "policy", verb, "--help"])).lines().next().unwrap_or("").to_owned())
        .collect();
    for (i, line) in first_lines.iter().enumerate() {
        assert!(!line.contains("What a policy is attached to"), "{line}");
        assert_eq!(first_lines.iter().filter(|l| *l == line).count(), 1, "shared help: {first_lines:?} ({i})");
    }
    let list = out(&berth_bare(&["deliveries", "list", "--help"]));
    assert!(list.contains("pending, retrying, delivered or dead"), "{list}");
}

#[test]
fn health_says_what_to_do_when_nothing_answers() {
    // Nothing listens on port 1.
    let o = berth_bare(&["health", "--addr", "127.0.0.1:1"]);
    let e = failed(&o);
    assert!(e.contains("no registry answers at 127.0.0.1:1 (is `berth serve` running there?"), "{e}");
}

#[tokio::test]
async fn repository_delete_names_the_force_flag_and_says_what_it_did() {
    let t = TestServer::start().await;
    let dir = t.dir.path();
    push_manifest(&t, "team/app", "v1", "cli-delete").await;

    let refused = failed(&berth(dir, &["repository", "delete", "team/app"]));
    assert!(refused.contains("repository team/app holds 1 manifest(s)"), "{refused}");
    assert!(refused.contains("--force"), "{refused}");
    assert!(!refused.contains("force=true"), "an HTTP parameter in a CLI error: {refused}");

    assert_eq!(one_line(&berth(dir, &["repository", "delete", "team/app", "--force"])), "repository team/app deleted");
    let gone = failed(&berth(dir, &["repository", "delete", "team/app"]));
    assert!(gone.contains("no repository team/app"), "{gone}");
    t.server.stop().await;
}

#[tokio::test]
async fn task_def_resolve_names_the_keep_foreign_flag() {
    let t = TestServer::start().await;
    let dir = t.dir.path();
    let (digest, _) = push_manifest(&t, "team/web", "live", "cli-taskdef").await;
    let host = t.server.addr.to_string();
    let doc = serde_json::json!({ "containerDefinitions": [
        { "name": "web", "image": format!("{host}/team/web:live") },
        { "name": "proxy", "image": "docker.io/library/nginx:1.27" },
    ]})
    .to_string();

    let refused = failed(&berth_in(dir, &["task-def", "resolve", "-", "--host", &host], &doc));
    assert!(refused.contains("proxy: docker.io/library/nginx:1.27: on docker.io, not this registry"), "{refused}");
    assert!(refused.contains("--keep-foreign"), "{refused}");
    assert!(!refused.contains("foreign=keep"), "an HTTP parameter in a CLI error: {refused}");

    let pinned = json(&berth_in(dir, &["task-def", "resolve", "-", "--host", &host, "--keep-foreign"], &doc));
    assert_eq!(pinned["containerDefinitions"][0]["image"], format!("{host}/team/web@{digest}"));
    assert_eq!(pinned["containerDefinitions"][1]["image"], "docker.io/library/nginx:1.27");
    t.server.stop().await;
}

#[tokio::test]
async fn a_retrying_delivery_is_listed_under_the_state_the_other_views_show() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_slow_retries(dir.path());
    let t = TestServer::start_with(dir, config).await;
    let dir = t.dir.path();
    // Nothing listens on port 1: the first attempt fails at once.
    let put = berth_in(
        dir,
        &["webhooks", "put", "down", "--url", "http://127.0.0.1:1/hook", "--event", "manifest.push", "--secret-stdin"],
        &"s".repeat(20),
    );
    assert_eq!(one_line(&put), "webhook down created (http://127.0.0.1:1/hook)");
    push_manifest(&t, "team/hooked", "v1", "cli-deliveries").await;

    let start = Instant::now();
    let retrying = loop {
        let list = json(&berth(dir, &["deliveries", "list", "--state", "retrying", "--json"]));
        if let [one] = list.as_array().unwrap().as_slice() {
            break one.clone();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no retrying delivery: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(retrying["subscription"], "down");
    assert_eq!((&retrying["state"], &retrying["attempts"]), (&Value::from("retrying"), &Value::from(1)));
    let id = retrying["id"].as_i64().unwrap().to_string();

    // The same name in the table of `webhooks list`, and in `deliveries list`'s own table.
    let table = out(&berth(dir, &["webhooks", "list"]));
    let row = table.lines().find(|l| l.starts_with("down ")).unwrap_or_else(|| panic!("{table}"));
    let counts: Vec<&str> = row.split_whitespace().skip(2).take(4).collect();
    assert_eq!(counts, ["0", "1", "0", "0"], "pending retrying delivered dead: {table}");
    let listed = out(&berth(dir, &["deliveries", "list", "--webhook", "down"]));
    assert!(listed.lines().any(|l| l.contains(" retrying ")), "{listed}");
    // `pending` is what no attempt failed yet, as in the counts.
    assert_eq!(json(&berth(dir, &["deliveries", "list", "--state", "pending", "--json"])), serde_json::json!([]));
    let bad = failed(&berth(dir, &["deliveries", "list", "--state", "waiting"]));
    assert!(bad.contains("(known: pending, retrying, delivered, dead)"), "{bad}");

    let shown = out(&berth(dir, &["deliveries", "show", &id]));
    assert!(shown.starts_with(&format!("delivery {id} to webhook down: retrying")), "{shown}");
    assert!(shown.contains("attempts: 1") && shown.contains("#1"), "{shown}");
    assert_eq!(json(&berth(dir, &["deliveries", "show", &id, "--json"]))["attempts_log"].as_array().unwrap().len(), 1);

    let nothing = failed(&berth(dir, &["deliveries", "purge"]));
    assert!(nothing.contains("--webhook, --state, --repository, --id or --event"), "{nothing}");
    assert_eq!(
        one_line(&berth(dir, &["deliveries", "replay", "--state", "retrying"])),
        "1 delivery replayed: sent again, attempts starting over"
    );
    assert_eq!(one_line(&berth(dir, &["deliveries", "purge", "--webhook", "down"])), "1 delivery purged");
    assert_eq!(one_line(&berth(dir, &["webhooks", "delete", "down"])), "webhook down deleted with its deliveries");
    t.server.stop().await;
}

#[tokio::test]
async fn commands_that_change_something_print_one_line_and_data_as_json() {
    let t = TestServer::start().await;
    let dir = t.dir.path();

    let created = json(&berth(dir, &["admin", "user", "create", "carol", "--json"]));
    assert_eq!(created["name"], "carol");
    assert!(created["generated_password"].as_str().is_some_and(|p| p.len() >= 16), "{created}");
    let line = one_line(&berth(dir, &["admin", "user", "create", "dave", "--no-password"]));
    assert!(line.starts_with("user dave created (arn:"), "{line}");
    assert_eq!(
        one_line(&berth(dir, &["admin", "user", "disable", "dave"])),
        "user dave disabled (tokens already issued expire within auth.token.ttl)"
    );
    assert_eq!(one_line(&berth(dir, &["admin", "user", "enable", "dave"])), "user dave enabled");
    assert_eq!(
        one_line(&berth_in(dir, &["admin", "user", "password", "dave"], "a-new-password\n")),
        "password of user dave changed"
    );

    let key = json(&berth(dir, &["admin", "key", "create", "dave", "--json"]));
    let key_id = key["id"].as_str().unwrap().to_owned();
    assert!(key["secret"].as_str().is_some(), "{key}");
    assert_eq!(one_line(&berth(dir, &["admin", "key", "disable", &key_id])), format!("access key {key_id} disabled"));
    assert_eq!(one_line(&berth(dir, &["admin", "key", "delete", &key_id])), format!("access key {key_id} deleted"));

    // Policies: a repository's one policy is "the policy of", never "policy policy of".
    let document =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage"}]}"#;
    let stored = one_line(&berth_in(dir, &["admin", "policy", "put", "--repository", "team/app", "-"], document));
    assert_eq!(stored, "policy of repository team/app stored");
    let identity = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecr:*","Resource":"*"}]}"#;
    let stored =
        one_line(&berth_in(dir, &["admin", "policy", "put", "--user", "dave", "--name", "pull", "-"], identity));
    assert_eq!(stored, "policy pull of user dave stored");
    let got = json(&berth(dir, &["admin", "policy", "get", "--user", "dave", "--name", "pull"]));
    assert_eq!(got["Statement"][0]["Action"], "ecr:*", "get prints the document itself: {got}");
    let listed = json(&berth(dir, &["admin", "policy", "list", "--user", "dave", "--json"]));
    assert_eq!(listed[0]["name"], "pull");
    assert_eq!(
        one_line(&berth(dir, &["admin", "policy", "delete", "--repository", "team/app"])),
        "policy of repository team/app deleted"
    );
    assert_eq!(
        one_line(&berth(dir, &["admin", "tag", "team/app", "env=prod"])),
        "repository team/app: 1 set, 0 removed; tags now: env=prod"
    );
    assert_eq!(json(&berth(dir, &["admin", "tag", "team/app", "--remove", "env", "--json"])), serde_json::json!({}));
    assert_eq!(
        one_line(&berth(dir, &["admin", "user", "delete", "dave"])),
        "user dave deleted with its access keys and policies"
    );

    // Webhooks: put (created, replaced), delete; --json gives the subscription.
    let hook = json(&berth(dir, &["webhooks", "put", "h", "--url", "http://hooks.example/in", "--json"]));
    assert_eq!((hook["created"].as_bool(), hook["name"].as_str()), (Some(true), Some("h")));
    assert!(hook["secret"].as_str().is_some_and(|s| s.len() == 64), "a generated secret, shown once: {hook}");
    let replaced = one_line(&berth(dir, &["webhooks", "put", "h", "--url", "http://hooks.example/in", "--disabled"]));
    assert_eq!(replaced, "webhook h replaced (http://hooks.example/in, disabled)");
    assert_eq!(one_line(&berth(dir, &["webhooks", "delete", "h"])), "webhook h deleted with its deliveries");

    // Keys.
    assert_eq!(one_line(&berth(dir, &["keys", "create", "team-a"])), "key team-a created: version team-a.1 active");
    let made = json(&berth(dir, &["keys", "create", "team-b", "--json"]));
    assert_eq!((made["name"].as_str(), made["id"].as_str()), (Some("team-b"), Some("team-b.1")));
    let rotated = one_line(&berth(dir, &["keys", "rotate", "--key", "team-a", "--settle", "0s"]));
    assert_eq!(rotated, "key team-a rotated: team-a.2 active; 0 data keys re-wrapped from team-a.1");
    let retired = one_line(&berth(dir, &["keys", "retire", "team-a.1"]));
    assert_eq!(retired, "key team-a.1 retired: nothing depends on it; its material may be destroyed");
    t.server.stop().await;
}

/// Bad input gets a message that says what is wrong and what to type instead, never an
/// "internal error".
#[tokio::test]
async fn bad_input_is_explained_in_the_commands_terms() {
    let t = TestServer::start().await;
    let dir = t.dir.path();
    let cases: &[(&[&str], &str)] = &[
        (&["keys", "create", "Bad Name"], "\"Bad Name\" is not a key name: 1 to 63 of a-z, 0-9 and -"),
        (&["keys", "retire", "nope"], "no key version nope is recorded (`berth keys list` shows the ids"),
        (
            &["keys", "retire", "default.1"],
            "key default.1 is active: rotate to a new version first (`berth keys rotate --key default`)",
        ),
        (&["keys", "rotate", "--key", "nope", "--settle", "0s"], "no key nope is recorded"),
        (&["admin", "user", "disable", "nobody"], "no user nobody"),
        (&["admin", "key", "delete", "AKIANOPE"], "no access key AKIANOPE"),
        (&["admin", "policy", "get", "--user", "admin"], "user admin holds named policies: give --name"),
        (
            &["admin", "policy", "delete", "--registry", "--name", "x"],
            "the registry has one policy, without a name: leave out --name",
        ),
        (&["admin", "policy", "get", "--repository", "team/none"], "repository team/none has no policy"),
        (&["admin", "tag", "team/app", "novalue"], "\"novalue\": give a tag as KEY=VALUE"),
        (&["webhooks", "delete", "nope"], "no webhook nope"),
        (&["webhooks", "put", "h", "--url", "not-a-url"], "must be an http:// or https:// URL with a host"),
        (&["webhooks", "put", "h", "--url", "http://x.example", "--timeout", "soon"], "give a duration like 5s"),
        (
            &["webhooks", "put", "h", "--url", "http://x.example", "--header", "X-A"],
            "--header \"X-A\": give NAME=VALUE",
        ),
        (&["deliveries", "show", "999"], "no delivery 999"),
        (&["repository", "delete", "Team/App"], "Team/App: "),
        (&["login-token", "--user", "nobody"], "no user nobody"),
        (&["admin", "user", "create", "erin", "--password-stdin"], "no password on standard input"),
    ];
    for (args, expected) in cases {
        let e = failed(&berth(dir, args));
        assert!(e.contains(expected), "berth {}: {e:?} does not say {expected:?}", args.join(" "));
        assert!(!e.contains("internal error"), "berth {}: {e}", args.join(" "));
        let last = e.lines().last().unwrap_or_default();
        assert!(!last.contains("policy policy"), "{last}");
    }
    t.server.stop().await;
}

/// `berth usage` and `berth quota`: a quota set by the command is applied by the running
/// server at its next push; listings as tables and JSON; mistakes named in the command's terms.
#[tokio::test]
async fn usage_and_quota_commands() {
    let t = TestServer::start().await;
    let dir = t.dir.path();
    push_manifest(&t, "team/app", "v1", "cli-usage").await;

    let set = one_line(&berth(dir, &["quota", "set", "team/*", "--bytes", "1KiB", "--images", "3"]));
    assert!(
        set.starts_with("quota of team/* set: 1.0 KiB of blobs (") && set.ends_with("3 images (1 in use)"),
        "{set}"
    );
    let big = data(2000, 9);
    let r = t
        .client
        .post(t.url(&format!("/v2/team/other/blobs/uploads/?digest={}", sha256(&big))))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the server applies the quota the command set");
    let replaced = one_line(&berth(dir, &["quota", "set", "team/*", "--images", "5"]));
    assert_eq!(replaced, "quota of team/* replaced: 5 images (1 in use)");

    let listed = json(&berth(dir, &["quota", "list", "--json"]));
    assert_eq!((listed[0]["scope"].as_str(), listed[0]["source"].as_str()), (Some("team/*"), Some("api")));
    assert_eq!(listed[0]["max_images"], 5);
    let table = out(&berth(dir, &["quota", "list"]));
    assert!(table.lines().any(|l| l.starts_with("team/*") && l.contains("api")), "{table}");

    let usage = json(&berth(dir, &["usage", "--json"]));
    assert_eq!((usage["repositories"].as_u64(), usage["manifests"].as_u64()), (Some(1), Some(1)), "{usage}");
    assert_eq!(usage["repositories_page"][0]["repository"], "team/app");
    let table = out(&berth(dir, &["usage"]));
    assert!(table.lines().any(|l| l.starts_with("team/app")) && table.contains("dedupe ratio"), "{table}");
    let one = json(&berth(dir, &["usage", "--repository", "team/app", "--json"]));
    assert_eq!((one["manifests"].as_u64(), one["tags"].as_u64()), (Some(1), Some(1)));
    assert_eq!(one["quotas"][0]["scope"], "team/*");
    let text = out(&berth(dir, &["usage", "--repository", "team/app"]));
    assert!(text.starts_with("repository team/app\n") && text.contains("team/*"), "{text}");

    assert_eq!(one_line(&berth(dir, &["quota", "delete", "team/*"])), "quota of team/* deleted");
    for (args, says) in [
        (&["quota", "delete", "team/*"][..], "no quota of team/* is set through the API"),
        (&["quota", "set", "team/*"][..], "--bytes, --images or both"),
        (&["quota", "set", "team*", "--bytes", "1"][..], "team-a/*"),
        (&["quota", "set", "team/*", "--bytes", "lots"][..], "--bytes \"lots\": give a size like 10GiB"),
        (&["usage", "--repository", "none/here"][..], "no repository none/here"),
    ] {
        let e = failed(&berth(dir, args));
        assert!(e.contains(says), "{args:?}: {e}");
    }
}

#[tokio::test]
async fn gc_run_and_status() {
    let t = TestServer::start().await;
    let dir = t.dir.path();
    push_manifest(&t, "team/app", "v1", "cli-gc").await;

    let o = berth(dir, &["gc", "run", "--dry-run", "--json"]);
    assert!(o.status.success(), "{o:?}");
    let dry: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((dry["state"].as_str(), dry["dry_run"].as_bool()), (Some("completed"), Some(true)), "{dry}");
    let line = one_line(&berth(dir, &["gc", "run"]));
    assert!(line.contains(" completed; reclaimed 0 links, 0 blobs,"), "{line}");

    let o = berth(dir, &["gc", "status"]);
    assert!(o.status.success(), "{o:?}");
    let lines: Vec<String> = out(&o).lines().map(str::to_owned).collect();
    assert_eq!(lines[0], "no collection is running");
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[1].contains("completed; reclaimed") && lines[2].contains("completed; would reclaim"), "{lines:?}");
    let o = berth(dir, &["gc", "status", "--json"]);
    let status: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(status["runs"].as_array().map(Vec::len), Some(2), "{status}");

    let bad = failed(&berth(dir, &["gc", "run", "--repository", "Team/App"]));
    assert!(bad.contains("--repository Team/App"), "{bad}");

    // Another collector holds the lease: refused, saying who and where to look.
    let meta = t.server.app.registry().meta.clone();
    meta.acquire_gc_lease("other-replica", berth_storage::metadata::events::unix_now_ms(), 60_000)
        .await
        .unwrap()
        .unwrap();
    let busy = failed(&berth(dir, &["gc", "run"]));
    assert!(busy.contains("held by other-replica") && busy.contains("`berth gc status`"), "{busy}");
    let o = berth(dir, &["gc", "status"]);
    assert!(out(&o).starts_with("collecting now: other-replica"), "{o:?}");
    meta.release_gc_lease("other-replica").await.unwrap();
    t.server.stop().await;
}
