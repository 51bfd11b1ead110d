//! What the `berth` binary does at start, run as a user runs it: only `serve` creates a
//! registry (every other command pointed where none is refuses and leaves nothing behind);
//! `serve` binds its port and loads its certificate before it creates anything; the warnings
//! about the settings are `serve`'s, said once per start, never a command's; and with
//! authentication off there is no administrator and no password file until a start with it on.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// How long `berth serve` may take to say it is serving.
const PATIENCE: Duration = Duration::from_secs(60);

/// `berth ARGS` in `cwd`, with only `env` in its environment (none of the caller's `BERTH_*`
/// or `RUST_LOG`), and `stdin` on its standard input.
fn berth(cwd: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .current_dir(cwd)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every command that opens the stores, with arguments that would make it do its work.
const COMMANDS: &[&[&str]] = &[
    &["admin", "user", "list"],
    &["admin", "user", "create", "alice", "--no-password"],
    &["keys", "list"],
    &["keys", "create", "team"],
    &["webhooks", "list"],
    &["deliveries", "list"],
    &["task-def", "resolve", "-", "--host", "localhost:5000"],
    &["repository", "delete", "team/app"],
    &["scrub"],
    &["login-token", "--user", "admin"],
];

/// The files and folders under `dir`, as paths relative to it, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            found.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn commands_refuse_where_there_is_no_registry_and_create_nothing() {
    let root = tempfile::tempdir().unwrap();
    let absent = root.path().join("absent");
    let absent_arg = absent.to_str().unwrap();
    for command in COMMANDS {
        // Run in an empty folder: the default data folder, ./berth-data.
        let o = berth(root.path(), command, &[], "{}");
        assert_eq!(o.status.code(), Some(1), "{command:?}: {o:?}");
        assert!(
            stderr(&o).contains("no registry at ./berth-data (use --data-dir or --config"),
            "{command:?}: {}",
            stderr(&o)
        );
        assert_eq!(stdout(&o), "", "{command:?}");

        // Named with --data-dir.
        let args: Vec<&str> = command.iter().copied().chain(["--data-dir", absent_arg]).collect();
        let o = berth(root.path(), &args, &[], "{}");
        assert_eq!(o.status.code(), Some(1), "{command:?}: {o:?}");
        assert!(
            stderr(&o).contains(&format!("no registry at {absent_arg} (use --data-dir or --config")),
            "{command:?}: {}",
            stderr(&o)
        );
        assert!(tree(root.path()).is_empty(), "{command:?} left {:?}", tree(root.path()));
    }
}

#[test]
fn a_folder_that_is_not_a_registry_is_refused_and_left_as_it_was() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let data_arg = data.to_str().unwrap();

    // A folder without metadata.db.
    let o = berth(root.path(), &["admin", "user", "list", "--data-dir", data_arg], &[], "");
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stderr(&o).contains(&format!("no registry at {data_arg}: it holds no metadata.db")), "{}", stderr(&o));
    assert!(tree(&data).is_empty(), "{:?}", tree(&data));

    // An empty metadata.db (a first start stopped before its schema was written): no schema
    // is written into it, no key or blob folder made beside it.
    std::fs::write(data.join("metadata.db"), b"").unwrap();
    let o = berth(root.path(), &["keys", "list", "--data-dir", data_arg], &[], "");
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stderr(&o).contains(&format!("no registry at {data_arg}: its metadata.db holds no Berth database")),
        "{}",
        stderr(&o)
    );
    assert_eq!(tree(&data), ["metadata.db"]);
    assert_eq!(std::fs::metadata(data.join("metadata.db")).unwrap().len(), 0);

    // metadata.path set explicitly: the message names that file and the key.
    let elsewhere = root.path().join("elsewhere.db");
    let env = [("BERTH_METADATA__PATH", elsewhere.to_str().unwrap())];
    let o = berth(root.path(), &["webhooks", "list", "--data-dir", data_arg], &env, "");
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stderr(&o).contains(&format!("no registry at {} (metadata.path): no such file", elsewhere.display())),
        "{}",
        stderr(&o)
    );
    assert!(!elsewhere.exists());
}

/// A registry `berth serve` made and stopped, and the log of that start: one JSON object
/// per line, up to and including "berth is serving".
fn serve_once(cwd: &Path, env: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let mut env = env.to_vec();
    env.extend([("BERTH_LISTEN", "127.0.0.1:0"), ("BERTH_LOG__FORMAT", "json"), ("BERTH_EVENTS__ENABLED", "false")]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .current_dir(cwd)
        .arg("serve")
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let value: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|_| serde_json::json!({ "message": line }));
            let serving = value["message"] == "berth is serving";
            lines.push(value);
            if serving {
                break;
            }
        }
        let _ = tx.send(lines);
    });
    let lines = rx.recv_timeout(PATIENCE);
    let _ = child.kill();
    let status = child.wait().unwrap();
    let lines = lines.unwrap_or_else(|_| panic!("berth serve did not start ({status})"));
    assert!(lines.last().is_some_and(|l| l["message"] == "berth is serving"), "berth serve stopped: {lines:#?}");
    lines
}

fn warnings(log: &[serde_json::Value]) -> Vec<String> {
    log.iter().filter(|l| l["level"] == "WARN").map(|l| l["message"].as_str().unwrap_or_default().to_owned()).collect()
}

#[test]
fn serve_warns_once_per_start_and_commands_say_nothing_on_stderr() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let data_arg = data.to_str().unwrap();
    let env = [("BERTH_DATA_DIR", data_arg)];

    // First start, with the defaults: the key beside the data is warned about once, and the
    // log says where the administrator's password is.
    let log = serve_once(root.path(), &env);
    let warned = warnings(&log);
    assert_eq!(
        warned.iter().filter(|w| w.contains("key-encryption key is kept in the data directory")).count(),
        1,
        "{warned:#?}"
    );
    let created = log.iter().find(|l| l["message"].as_str().unwrap_or("").contains("created the administrator"));
    let created = created.unwrap_or_else(|| panic!("{log:#?}"));
    assert_eq!(created["password.file"], data.join("admin-password").display().to_string());
    assert!(data.join("admin-password").is_file());

    // Commands on that registry: their output, and nothing on stderr.
    let o = berth(root.path(), &["admin", "user", "list"], &env, "");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stderr(&o), "");
    assert!(stdout(&o).contains("admin"), "{}", stdout(&o));
    // (`berth scrub` logs its progress on stderr, as the scheduled scrub does: not checked here.)
    for command in [&["keys", "list"][..], &["webhooks", "list"], &["deliveries", "list"]] {
        let o = berth(root.path(), command, &env, "");
        assert!(o.status.success(), "{command:?}: {o:?}");
        assert_eq!(stderr(&o), "", "{command:?}");
    }

    // With encryption and authentication off, serve warns about each at every start; a
    // command run with the same settings still says nothing on stderr.
    let off = [("BERTH_DATA_DIR", data_arg), ("BERTH_AUTH__ENABLED", "false"), ("BERTH_ENCRYPTION__ENABLED", "false")];
    let warned = warnings(&serve_once(root.path(), &off));
    for expected in ["encryption at rest is off", "authentication is off", "kept in the data directory"] {
        assert_eq!(warned.iter().filter(|w| w.contains(expected)).count(), 1, "{expected}: {warned:#?}");
    }
    let o = berth(root.path(), &["admin", "user", "list"], &off, "");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stderr(&o), "");
}

#[test]
fn with_authentication_off_there_is_no_administrator_until_it_is_turned_on() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let data_arg = data.to_str().unwrap();
    let off = [("BERTH_DATA_DIR", data_arg), ("BERTH_AUTH__ENABLED", "false")];
    let log = serve_once(root.path(), &off);
    assert!(data.join("metadata.db").is_file());
    assert!(!data.join("admin-password").exists(), "{:?}", tree(&data));
    assert!(!log.iter().any(|l| l["message"].as_str().unwrap_or("").contains("administrator")), "{log:#?}");
    let o = berth(root.path(), &["admin", "user", "list"], &off, "");
    assert!(o.status.success(), "{o:?}");
    assert!(!stdout(&o).contains("admin"), "{}", stdout(&o));

    // A command with authentication on does not create the administrator either: `serve` does.
    let on = [("BERTH_DATA_DIR", data_arg)];
    let o = berth(root.path(), &["admin", "user", "list"], &on, "");
    assert!(o.status.success(), "{o:?}");
    assert!(!stdout(&o).contains("admin"), "{}", stdout(&o));
    assert!(!data.join("admin-password").exists());

    // The first start with authentication on creates them, as on a fresh registry.
    let log = serve_once(root.path(), &on);
    assert!(data.join("admin-password").is_file(), "{:?}", tree(&data));
    assert!(
        log.iter().any(|l| l["message"].as_str().unwrap_or("").contains("created the administrator")
            && l["password.file"] == data.join("admin-password").display().to_string()),
        "{log:#?}"
    );
    let o = berth(root.path(), &["admin", "user", "list"], &on, "");
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("admin"), "{}", stdout(&o));
}

#[test]
fn serve_on_a_busy_port_names_the_fix_and_creates_nothing() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let next = format!("127.0.0.1:{}", addr.port() + 1);
    let args = ["serve", "--data-dir", data.to_str().unwrap(), "--listen", &addr.to_string()];
    let o = berth(root.path(), &args, &[], "");
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = stderr(&o);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(err.contains(&format!("--listen {next}")) && err.contains(&format!("BERTH_LISTEN={next}")), "{err}");
    assert!(!data.exists(), "{:?}", tree(root.path()));
    drop(held);
}

#[test]
fn serve_with_a_missing_certificate_creates_nothing() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let cert = root.path().join("cert.pem");
    let key = root.path().join("key.pem");
    let env = [("BERTH_TLS__CERT_FILE", cert.to_str().unwrap()), ("BERTH_TLS__KEY_FILE", key.to_str().unwrap())];
    let args = ["serve", "--data-dir", data.to_str().unwrap(), "--listen", "127.0.0.1:0"];
    let o = berth(root.path(), &args, &env, "");
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stderr(&o).contains(&cert.display().to_string()), "{}", stderr(&o));
    assert!(!data.exists(), "{:?}", tree(root.path()));
}

/// A PostgreSQL database without a Berth schema is no registry: a command refuses it and
/// writes no table into it; `serve` creates the schema, after which the command works.
#[test]
#[ignore = "needs PostgreSQL: eval \"$(bash .ci/postgres.sh start)\", then cargo test -- --ignored (.ci/run does)"]
fn commands_refuse_a_postgres_database_without_the_schema() {
    let url = std::env::var("BERTH_TEST_POSTGRES_URL").expect("BERTH_TEST_POSTGRES_URL (.ci/postgres.sh start)");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let schema = format!("berth_test_{}", uuid::Uuid::new_v4().simple());
    let (admin, connection) = rt.block_on(tokio_postgres::connect(&url, tokio_postgres::NoTls)).unwrap();
    rt.spawn(connection);
    rt.block_on(admin.batch_execute(&format!("CREATE SCHEMA {schema}"))).unwrap();
    let tables = || -> i64 {
        rt.block_on(
            admin.query_one("SELECT count(*) FROM information_schema.tables WHERE table_schema = $1", &[&schema]),
        )
        .unwrap()
        .get(0)
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{separator}options=-csearch_path%3D{schema}");

    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let env = [
        ("BERTH_DATA_DIR", data.to_str().unwrap()),
        ("BERTH_METADATA__BACKEND", "postgres"),
        ("BERTH_METADATA__URL", scoped.as_str()),
        ("BERTH_STORAGE__BACKEND", "memory"),
        ("BERTH_ENCRYPTION__ENABLED", "false"),
    ];
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let o = berth(root.path(), &["admin", "user", "list"], &env, "");
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        assert!(stderr(&o).contains("no registry in the PostgreSQL database"), "{}", stderr(&o));
        assert!(stderr(&o).contains("it holds no Berth schema"), "{}", stderr(&o));
        assert_eq!(tables(), 0, "a refused command wrote tables");
        assert!(!data.exists());

        // serve creates the schema and warns about the signing key it cannot seal; the
        // command then works, and says nothing on stderr.
        let warned = warnings(&serve_once(root.path(), &env));
        assert!(warned.iter().any(|w| w.contains("kept unsealed in PostgreSQL")), "{warned:#?}");
        assert!(tables() > 0);
        let o = berth(root.path(), &["admin", "user", "list"], &env, "");
        assert!(o.status.success(), "{o:?}");
        assert_eq!(stderr(&o), "");
        assert!(stdout(&o).contains("admin"), "{}", stdout(&o));
    }));
    rt.block_on(admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))).unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
