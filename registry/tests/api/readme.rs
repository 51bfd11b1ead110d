//! README.md checked against the binary, so the two cannot drift apart: the configuration
//! keys of its table against `berth config`, every `berth` command it shows against the
//! command tree, every `BERTH_*` variable the docs and scripts name against the keys, and
//! its data-folder tree against a real data folder.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).unwrap()
}

/// The `berth` binary, run in an empty folder with no `BERTH_*` variables from the caller.
fn berth(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("BERTH_") || name.starts_with("AWS_") || name == "RUST_LOG" {
            c.env_remove(name);
        }
    }
    c
}

/// Every key `berth config` prints (dotted; a list is one key).
fn config_keys(dir: &Path) -> BTreeSet<String> {
    let out = berth(dir).arg("config").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut keys = BTreeSet::new();
    fn walk(prefix: &str, v: &serde_json::Value, keys: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    walk(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, keys);
                }
            }
            _ => {
                keys.insert(prefix.to_owned());
            }
        }
    }
    walk("", &json, &mut keys);
    keys
}

/// The text between `` ` `` pairs in `line`.
fn code_spans(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// The keys of the README's configuration table: the code spans of each row's first cell.
fn readme_table_keys(readme: &str) -> BTreeSet<String> {
    let section = readme.split("\n## Configuration\n").nth(1).expect("a Configuration section");
    let section = section.split("\n## ").next().unwrap();
    let mut keys = BTreeSet::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = line.split('|').nth(1).unwrap();
        keys.extend(code_spans(first_cell).into_iter().map(str::to_owned));
    }
    keys
}

#[test]
fn every_configuration_key_is_in_the_readme_table_and_every_row_is_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let binary = config_keys(dir.path());
    let documented = readme_table_keys(&readme());
    let undocumented: Vec<_> = binary.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&binary).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "keys `berth config` has and the README table lacks: {undocumented:?}; \
         rows of the table that are no key: {unknown:?}"
    );
}

/// Every `BERTH_*` name in `text` (not part of a longer name such as `E2E_BERTH_BIN`), with
/// the value when written `NAME=value`.
fn variables(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("BERTH_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let len =
            tail.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..len];
        rest = &tail[len..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') || name.ends_with('_') {
            continue; // a longer name, or a prefix named in prose (`BERTH_TEST_`)
        }
        let value = rest.strip_prefix('=').map(|v| {
            let v = v.split(|c: char| c.is_whitespace() || c == '`').next().unwrap_or("");
            v.trim_matches('"').to_owned()
        });
        out.push((name.to_owned(), value));
    }
    out
}

/// The documentation and the scripts that set variables for `berth`.
fn documents() -> Vec<PathBuf> {
    let root = root();
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    for folder in ["docs", "docker", "docker/e2e", ".ci"] {
        for entry in std::fs::read_dir(root.join(folder)).unwrap().flatten() {
            let path = entry.path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_file()
                && (name.ends_with(".md")
                    || name.ends_with(".sh")
                    || name.starts_with("Dockerfile")
                    || name.ends_with(".yaml")
                    || name == "run")
            {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn documented_variables_are_keys_or_the_projects_own_and_work_together() {
    let dir = tempfile::tempdir().unwrap();
    let keys = config_keys(dir.path());
    let mut assigned = std::collections::BTreeMap::new();
    let mut problems = Vec::new();
    for file in documents() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (name, value) in variables(&text) {
            if !berth_registry::config::is_key_variable(&name) {
                continue; // BERTH_CONFIG, BERTH_KEYS, BERTH_TEST_*, BERTH_CI_*, ...
            }
            let key = name["BERTH_".len()..].to_ascii_lowercase().replace("__", ".");
            if !keys.contains(&key) {
                problems.push(format!("{}: {name} names no key ({key})", file.display()));
            }
            // The README's values written out (not `<placeholders>` or `$(commands)`) are set
            // together below; scripts set other combinations (S3, PostgreSQL) of their own.
            if !file.ends_with("README.md") || file.parent() != Some(&root()) {
                continue;
            }
            if let Some(v) = value.filter(|v| !v.is_empty() && !v.contains(['<', '$'])) {
                assigned.insert(name, v);
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(assigned.contains_key("BERTH_UPLOADS__MAX_AGE"), "the README's example is found: {assigned:?}");

    // All together, with the project's own variables a CI run exports.
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, "").unwrap();
    let mut c = berth(dir.path());
    c.args(["config", "--sources"]).envs(&assigned);
    c.env("BERTH_CONFIG", &config).env("BERTH_CI_KEEP_DEBUG", "1").env("BERTH_TEST_POSTGRES_URL", "postgres://x/y");
    c.env("BERTH_CONFORMANCE_URL", "http://127.0.0.1:5000").env("BERTH_KEYS", "default.1=00");
    let out = c.output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{assigned:?}: {}", String::from_utf8_lossy(&out.stderr));
    for name in assigned.keys() {
        assert!(shown.contains(&format!("environment {name}")), "{name} not in effect:\n{shown}");
    }
}

/// `berth a b` for every `berth` command line the README shows (in code), as words.
fn readme_commands(readme: &str) -> BTreeSet<Vec<String>> {
    let mut commands = BTreeSet::new();
    let code: Vec<&str> = readme
        .split("```")
        .enumerate()
        .flat_map(|(i, part)| if i % 2 == 1 { part.lines().collect::<Vec<_>>() } else { code_spans(part) })
        .collect();
    for line in code {
        for (at, _) in line.match_indices("berth ") {
            if line[..at].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || "/-_.".contains(c)) {
                continue; // a path or another word (`target/release/berth`, `-t berth`)
            }
            let words: Vec<String> = line[at + "berth ".len()..]
                .split_whitespace()
                .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-'))
                .take(3)
                .map(str::to_owned)
                .collect();
            if !words.is_empty() {
                commands.insert(words);
            }
        }
    }
    commands
}

/// The subcommands `berth <path> --help` lists.
fn subcommands(dir: &Path, path: &[&str]) -> Vec<String> {
    let out = berth(dir).args(path).arg("--help").output().unwrap();
    assert!(out.status.success(), "berth {path:?} --help: {}", String::from_utf8_lossy(&out.stderr));
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let Some(list) = help.split("Commands:\n").nth(1) else { return Vec::new() };
    list.lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_command_the_readme_shows_exists_and_every_command_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let readme = readme();
    let shown = readme_commands(&readme);
    assert!(shown.contains(&vec!["scrub".to_owned()]), "{shown:?}");
    let mut missing = Vec::new();
    for words in &shown {
        // The words that are subcommands; the rest are arguments (`berth keys create team-a`),
        // unless the last command found needs a subcommand and the next word is none of them.
        let mut path: Vec<&str> = Vec::new();
        let mut next = subcommands(dir.path(), &path);
        for w in words {
            if !next.iter().any(|s| s == w) {
                break;
            }
            path.push(w);
            next = subcommands(dir.path(), &path);
        }
        if path.is_empty() || (path.len() < words.len() && !next.is_empty()) {
            missing.push(words.join(" "));
        }
    }
    assert!(missing.is_empty(), "the README shows commands the binary does not have: {missing:?}");
    let top: Vec<String> = subcommands(dir.path(), &[]);
    let unshown: Vec<_> = top.iter().filter(|name| !shown.iter().any(|words| words.first() == Some(*name))).collect();
    assert!(unshown.is_empty(), "commands the README never shows: {unshown:?}");
}

/// The README's data-folder tree as path patterns relative to the data folder, `<x>`
/// standing for one path segment.
fn readme_layout(readme: &str) -> Vec<String> {
    let lines: Vec<&str> = readme.lines().collect();
    let start = lines
        .windows(2)
        .position(|w| w[0].trim() == "```text" && w[1].trim() == "berth-data/")
        .expect("a ```text block starting `berth-data/`");
    let indent = lines[start].find('`').unwrap_or(0);
    let block: Vec<&str> =
        lines[start + 1..].iter().take_while(|l| l.trim() != "```").map(|l| l.get(indent..).unwrap_or("")).collect();
    let mut stack: Vec<String> = Vec::new();
    let mut patterns = Vec::new();
    for line in block.iter().skip(1) {
        let start = line.find(|c: char| !"│├└─ \u{a0}".contains(c)).unwrap_or(line.len());
        let depth = line[..start].chars().count() / 4;
        let Some(name) = line[start..].split_whitespace().next() else { continue };
        stack.truncate(depth.saturating_sub(1));
        if let Some(dir) = name.strip_suffix('/') {
            stack.push(dir.to_owned());
        } else {
            let mut path = stack.clone();
            path.push(name.to_owned());
            patterns.push(path.join("/"));
        }
    }
    patterns
}

fn matches(pattern: &str, path: &str) -> bool {
    let (p, f): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == f.len()
        && p.iter().zip(&f).all(|(p, f)| {
            if !p.contains('<') {
                return p == f;
            }
            // `<name>.<version>.key`: the literal pieces in order.
            let literals: Vec<&str> =
                p.split(['<', '>']).enumerate().filter(|(i, _)| i % 2 == 0).map(|(_, s)| s).collect();
            let mut rest = *f;
            for (i, lit) in literals.iter().enumerate() {
                match rest.find(lit) {
                    Some(at) if i > 0 || at == 0 => rest = &rest[at + lit.len()..],
                    _ => return false,
                }
            }
            literals.last().is_none_or(|l| l.is_empty() || f.ends_with(l))
        })
}

fn files_under(root: &Path, at: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(at).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
}

/// A registry with sign-in on, a plaintext repository, an encrypted one and an upload in
/// progress holds exactly the files the README's tree shows, each kind at least once.
#[tokio::test]
async fn the_data_folder_is_laid_out_as_the_readme_shows() {
    let patterns = readme_layout(&readme());
    assert!(patterns.len() >= 6, "{patterns:?}");
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("berth-data");
    let mut config = config_in(&data);
    config.auth.enabled = true;
    config.encryption.enabled = false;
    let basic = |b: reqwest::RequestBuilder| b.basic_auth("admin", Some(password(&data)));

    let t = TestServer::start_with(tempfile::tempdir().unwrap(), config.clone()).await;
    push(&t, &basic, "plain/app").await;
    t.server.stop().await;
    config.encryption.enabled = true;
    let t = TestServer::start_with(tempfile::tempdir().unwrap(), config).await;
    push(&t, &basic, "sealed/app").await;
    let upload = basic(t.client.post(t.url("/v2/sealed/app/blobs/uploads/"))).send().await.unwrap();
    assert_eq!(upload.status(), 202);
    let location = t.url(upload.headers()["location"].to_str().unwrap());
    // More than one 64 KiB segment: an encrypted upload keeps its last partial segment in
    // the database, the sealed segments in a part file.
    let r = basic(t.client.patch(&location)).body(crate::support::data(100_000, 7)).send().await.unwrap();
    assert_eq!(r.status(), 202);

    let mut files = Vec::new();
    files_under(&data, &data, &mut files);
    t.server.stop().await;
    let unexplained: Vec<_> = files.iter().filter(|f| !patterns.iter().any(|p| matches(p, f))).collect();
    let unseen: Vec<_> = patterns.iter().filter(|p| !files.iter().any(|f| matches(p, f))).collect();
    assert!(
        unexplained.is_empty() && unseen.is_empty(),
        "files the README's tree does not show: {unexplained:?}; entries of the tree no file matched: {unseen:?} \
         (patterns {patterns:?})"
    );
}

fn password(data: &Path) -> String {
    std::fs::read_to_string(data.join("admin-password")).unwrap().trim().to_owned()
}

async fn push(t: &TestServer, basic: &impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder, repo: &str) {
    let layer = data(3000, repo.len() as u8);
    let digest = sha256(&layer);
    let r = basic(t.client.post(t.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"))))
        .body(layer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{repo}");
}
