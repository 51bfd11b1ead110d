//! Signing in to a registry the way real clients do, shared by the suite, `berth-replicas`
//! and `berth-bench`.
//!
//! [`Auth::discover`] learns the registry's challenge once, from `GET /v2/`: none (the
//! registry is open), `Basic`, or `Bearer` (the Docker token protocol: a token service at
//! `realm`, tokens for `service`). Then every request to a registry path goes through
//! [`Auth::execute`], which attaches credentials *before* sending: Basic as is, or a token
//! for the scopes the request's path needs. A request body that streams cannot be sent
//! twice, so a challenge must never be learnt by a failed upload; only a replayable
//! request (no body, or one in memory) is retried, once, after a 401 that names a new
//! challenge or scope.
//!
//! Tokens are asked for with the widest access the tools use on a repository
//! (`repository:<name>:pull,push,delete`; a token service grants the intersection with
//! what the user may do), plus `pull` on the source of a cross-repository mount as a second
//! `scope` parameter, and cached per scope set until shortly before `expires_in`.
//!
//! Invariants:
//! - Credentials only go to the registry's own origins (the base URLs given) and to the
//!   token realm it names; a URL elsewhere (a redirect target, a CDN) gets nothing.
//! - A request that already carries `Authorization` is sent as is: cases that test the
//!   protocol set their own.
//! - The password never appears in `Debug` output or messages.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Request, Response, StatusCode, Url};

use crate::check::{CaseResult, Failure};

/// A user name and password (or access key and secret).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password; never printed.
    pub password: String,
}

impl Credentials {
    /// `username` with `password`.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self { username: username.into(), password: password.into() }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"***").finish()
    }
}

/// The command-line flags every tool shares: `--username` / `--password`, or the
/// `OCI_USERNAME` / `OCI_PASSWORD` variables the OCI conformance suite reads.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CredentialArgs {
    /// User to sign in as when the registry asks (with --password)
    #[arg(long, env = "OCI_USERNAME", requires = "password")]
    pub username: Option<String>,
    /// Password for --username (prefer the environment variable: arguments show in `ps`)
    #[arg(long, env = "OCI_PASSWORD", hide_env_values = true, requires = "username")]
    pub password: Option<String>,
}

impl CredentialArgs {
    /// The credentials, when both flags are given.
    pub fn credentials(&self) -> Option<Credentials> {
        match (&self.username, &self.password) {
            (Some(username), Some(password)) => Some(Credentials::new(username, password)),
            _ => None,
        }
    }
}

// ---- challenges ------------------------------------------------------------------------

/// One challenge of a `WWW-Authenticate` header (RFC 9110 §11.6.1): a scheme and its
/// parameters (names lower-cased, values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme as sent (`Bearer`, `Basic`, ...); compare with [`Challenge::is`].
    pub scheme: String,
    /// `name=value` parameters in order.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// Whether the scheme is `scheme` (case-insensitive).
    pub fn is(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }

    /// The value of parameter `name`, if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The scopes of the `scope` parameter (space-separated).
    pub fn scopes(&self) -> Vec<String> {
        self.param("scope")
            .map(|s| s.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

/// Parses a `WWW-Authenticate` value: one or more comma-separated challenges, each a scheme
/// followed by `name=value` or `name="quoted, \"value\""` parameters (a token68 after the
/// scheme is skipped). Unreadable input yields the challenges read before it.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut p = Parser { s: header.as_bytes(), i: 0 };
    let mut challenges = Vec::new();
    loop {
        p.skip(|b| b == b',' || b.is_ascii_whitespace());
        let scheme = p.token();
        if scheme.is_empty() {
            // The end, or something unreadable: keep what was read.
            return challenges;
        }
        let mut challenge = Challenge { scheme, params: Vec::new() };
        let mut first = true;
        loop {
            p.skip(|b| b.is_ascii_whitespace());
            let had_comma = p.peek() == Some(b',');
            p.skip(|b| b == b',' || b.is_ascii_whitespace());
            let start = p.i;
            let name = p.token();
            if name.is_empty() {
                break;
            }
            p.skip(|b| b.is_ascii_whitespace());
            let before_equals = p.i;
            p.skip(|b| b == b'=');
            let equals = p.i - before_equals;
            p.skip(|b| b.is_ascii_whitespace());
            let at_end = matches!(p.peek(), None | Some(b','));
            if first && !had_comma && (equals == 0 || at_end) {
                // A token68 (`Negotiate abc==`): neither a parameter nor a new scheme.
                first = false;
                continue;
            }
            if equals != 1 {
                // A name without '=': the next challenge's scheme.
                p.i = start;
                break;
            }
            let value = if p.peek() == Some(b'"') { p.quoted() } else { p.token() };
            challenge.params.push((name.to_ascii_lowercase(), value));
            first = false;
        }
        challenges.push(challenge);
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip(&mut self, f: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
    }

    /// A token (RFC 9110 §5.6.2), leniently: visible characters up to a separator that
    /// matters here. Bare parameter values may hold `/` and `:` (`realm=http://h/token`).
    fn token(&mut self) -> String {
        let start = self.i;
        self.skip(|b| b.is_ascii_graphic() && !b"\",;=\\".contains(&b));
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    /// A quoted string starting at `"`, with `\` escapes; an unterminated one runs to the end.
    fn quoted(&mut self) -> String {
        let mut out = Vec::new();
        self.i += 1;
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(next) = self.peek() {
                        out.push(next);
                        self.i += 1;
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Every challenge of every `WWW-Authenticate` header of an answer.
pub fn challenges_of(headers: &HeaderMap) -> Vec<Challenge> {
    headers.get_all(WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok()).flat_map(parse_challenges).collect()
}

// ---- scopes ----------------------------------------------------------------------------

/// The scopes a request to `tail` (the path after the registry's `/v2`, e.g.
/// `/a/b/tags/list`) needs, as the tools ask for them: the widest access on the repository
/// it names, `pull` on `mount_from` (the source of a cross-repository mount),
/// `registry:catalog:*` for the catalog, none for `/v2/`.
pub fn scopes_for(tail: &str, mount_from: Option<&str>) -> Vec<String> {
    let rest = tail.strip_prefix('/').unwrap_or(tail);
    if rest.is_empty() {
        return Vec::new();
    }
    if rest == "_catalog" {
        return vec!["registry:catalog:*".to_owned()];
    }
    let Some(name) = repository_of(rest) else {
        return Vec::new();
    };
    let mut scopes = vec![format!("repository:{name}:pull,push,delete")];
    if let Some(from) = mount_from
        && !from.is_empty()
        && from != name
    {
        scopes.push(format!("repository:{from}:pull"));
    }
    scopes
}

/// The `from` of a mount request (`?mount=<digest>&from=<repository>`).
fn mount_source(url: &Url) -> Option<String> {
    let mut mount = false;
    let mut from = None;
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "mount" => mount = true,
            "from" => from = Some(value.into_owned()),
            _ => {}
        }
    }
    from.filter(|_| mount)
}

/// The repository a registry path names, parsed from the right like a registry's router:
/// `<name>/tags/list`, `<name>/manifests/<ref>`, `<name>/blobs/uploads/[<id>]`,
/// `<name>/blobs/<digest>`, `<name>/referrers/<digest>`.
fn repository_of(rest: &str) -> Option<String> {
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let at = |i: usize| segs.get(i).copied().unwrap_or_default();
    let end = if n >= 3 && at(n - 2) == "tags" && at(n - 1) == "list" {
        n - 2
    } else if n >= 4 && at(n - 3) == "blobs" && at(n - 2) == "uploads" {
        n - 3
    } else if n >= 3 && ["manifests", "blobs", "referrers"].contains(&at(n - 2)) {
        n - 2
    } else {
        return None;
    };
    let name = segs[..end].join("/");
    (!name.is_empty()).then_some(name)
}

// ---- the client side -------------------------------------------------------------------

/// How the registry wants to be signed in to, as its challenge said.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scheme {
    /// No challenge: the registry answered `/v2/` without one.
    Open,
    Basic,
    Bearer {
        realm: Url,
        service: Option<String>,
    },
}

#[derive(Debug, Clone)]
struct Cached {
    token: String,
    fresh_until: Instant,
}

/// One token slot per scope set; its async lock makes concurrent requests for the same
/// scopes wait for one fetch instead of each asking the token service.
type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// Signs requests in for one registry (one or more base URLs of it). Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    bases: Vec<Url>,
    credentials: Option<Credentials>,
    basic: Option<HeaderValue>,
    scheme: RwLock<Scheme>,
    tokens: Mutex<HashMap<String, Slot>>,
    refusals: Mutex<Refusals>,
}

/// Signed requests answered 401: the retry hides them from the caller, but each says a
/// credential that should have worked did not (a token one replica issued and another
/// refused, a token refused before `expires_in`).
#[derive(Debug, Default)]
struct Refusals {
    count: usize,
    first: Vec<String>,
}

/// How many refusals are kept word for word.
const REFUSALS_KEPT: usize = 5;

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("bases", &self.inner.bases)
            .field("credentials", &self.inner.credentials)
            .field("scheme", &self.scheme())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long before `expires_in` a token is replaced: a tenth of its life, at most 30 s.
fn fresh_for(expires_in: Duration) -> Duration {
    expires_in.saturating_sub((expires_in / 10).min(Duration::from_secs(30)))
}

impl Auth {
    /// An `Auth` for the registry at `bases` (replicas of one registry share one), sending
    /// token requests with `http`. Until [`Auth::discover`] (or a 401 on a replayable
    /// request) it treats the registry as open.
    pub fn new(http: reqwest::Client, bases: &[Url], credentials: Option<Credentials>) -> CaseResult<Self> {
        // reqwest's own encoder builds the Basic header (no base64 dependency for one line).
        let basic = match (&credentials, bases.first()) {
            (Some(c), Some(base)) => {
                let probe = http.get(base.clone()).basic_auth(&c.username, Some(&c.password)).build()?;
                probe.headers().get(AUTHORIZATION).cloned()
            }
            _ => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                bases: bases.to_vec(),
                credentials,
                basic,
                scheme: RwLock::new(Scheme::Open),
                tokens: Mutex::new(HashMap::new()),
                refusals: Mutex::new(Refusals::default()),
            }),
        })
    }

    /// The credentials given, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.inner.credentials.as_ref()
    }

    /// How many signed requests were answered 401 (and retried), with the first few as
    /// `METHOD path -> 401 (challenge)`.
    pub fn refusals(&self) -> (usize, Vec<String>) {
        let refusals = lock(&self.inner.refusals);
        (refusals.count, refusals.first.clone())
    }

    fn refused(&self, what: String, headers: &HeaderMap) {
        let mut refusals = lock(&self.inner.refusals);
        refusals.count += 1;
        if refusals.first.len() < REFUSALS_KEPT {
            let challenge = headers.get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("no challenge");
            refusals.first.push(format!("{what} -> 401 ({challenge})"));
        }
    }

    fn scheme(&self) -> Scheme {
        self.inner.scheme.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_scheme(&self, scheme: Scheme) {
        let mut current = self.inner.scheme.write().unwrap_or_else(PoisonError::into_inner);
        if *current != scheme {
            *current = scheme;
            lock(&self.inner.tokens).clear();
        }
    }

    /// Learns the challenge from an unauthenticated `GET <base>/v2/` answered within
    /// `timeout`. Fails only when the registry cannot be reached or answers neither 200 nor
    /// a 401 with a usable challenge. Returns a line saying what was learnt.
    pub async fn discover(&self, base: &Url, timeout: Duration) -> CaseResult<String> {
        let url = Url::parse(&format!("{}/v2/", base.as_str().trim_end_matches('/')))
            .map_err(|e| Failure::new(format!("cannot build the /v2/ URL of {base}: {e}")))?;
        let response = self.inner.http.get(url).timeout(timeout).send().await?;
        let status = response.status();
        let challenges = challenges_of(response.headers());
        let _ = response.bytes().await;
        if status != StatusCode::UNAUTHORIZED {
            self.set_scheme(Scheme::Open);
            return Ok(format!("GET /v2/ answered {}: no sign-in needed", status.as_u16()));
        }
        match self.adopt(&challenges) {
            Some(Scheme::Bearer { realm, service }) => Ok(format!(
                "token auth: realm {realm}, service {}{}",
                service.as_deref().unwrap_or("(none)"),
                if self.inner.credentials.is_some() { "" } else { "; no credentials given: anonymous tokens" }
            )),
            Some(Scheme::Basic) if self.inner.credentials.is_some() => Ok("Basic auth".to_owned()),
            Some(Scheme::Basic) => {
                Err(Failure::new("GET /v2/ asks for Basic credentials and none were given (--username/--password)"))
            }
            Some(Scheme::Open) | None => {
                Err(Failure::new(format!("GET /v2/ answered 401 without a Bearer or Basic challenge: {challenges:?}")))
            }
        }
    }

    /// Takes the first usable challenge (Bearer with a valid realm before Basic) as the
    /// scheme from now on; returns it.
    fn adopt(&self, challenges: &[Challenge]) -> Option<Scheme> {
        let bearer = challenges.iter().find_map(|c| {
            let realm = Url::parse(c.param("realm")?).ok()?;
            c.is("bearer").then(|| Scheme::Bearer { realm, service: c.param("service").map(str::to_owned) })
        });
        let scheme = bearer.or_else(|| challenges.iter().any(|c| c.is("basic")).then_some(Scheme::Basic))?;
        self.set_scheme(scheme.clone());
        Some(scheme)
    }

    /// The path after `/v2` when `url` is on one of the registry's bases.
    fn registry_tail<'u>(&self, url: &'u Url) -> Option<&'u str> {
        self.inner.bases.iter().find_map(|base| {
            if base.origin() != url.origin() {
                return None;
            }
            let rest = url.path().strip_prefix(base.path().trim_end_matches('/'))?;
            let tail = rest.strip_prefix("/v2")?;
            (tail.is_empty() || tail.starts_with('/')).then_some(tail)
        })
    }

    /// Sends `request` with `client`, signed in as described in the module docs. A request
    /// that is not to a registry path, or already carries `Authorization`, is sent as is.
    pub async fn execute(&self, client: &reqwest::Client, mut request: Request) -> CaseResult<Response> {
        let managed = !request.headers().contains_key(AUTHORIZATION) && self.registry_tail(request.url()).is_some();
        if !managed {
            return Ok(client.execute(request).await?);
        }
        self.authorize(&mut request).await?;
        let signed = request.headers().contains_key(AUTHORIZATION);
        let what = format!("{} {}", request.method(), request.url().path());
        let replay = request.try_clone();
        let response = client.execute(request).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        if signed {
            self.refused(what, response.headers());
        }
        let Some(mut again) = replay else {
            return Ok(response);
        };
        if !self.answer(response.headers(), &mut again).await? {
            return Ok(response);
        }
        // Read the short error body so the connection goes back to the pool.
        let _ = response.bytes().await;
        Ok(client.execute(again).await?)
    }

    /// Signs `request` as [`Auth::execute`] would before sending it, for a caller that sends
    /// it some other way; a request not to a registry path, or already signed, is left as is.
    pub async fn sign(&self, request: &mut Request) -> CaseResult<()> {
        if !request.headers().contains_key(AUTHORIZATION) && self.registry_tail(request.url()).is_some() {
            self.authorize(request).await?;
        }
        Ok(())
    }

    /// Attaches what the current scheme needs to a request to a registry path.
    async fn authorize(&self, request: &mut Request) -> CaseResult<()> {
        match self.scheme() {
            Scheme::Open => {}
            Scheme::Basic => {
                if let Some(basic) = &self.inner.basic {
                    request.headers_mut().insert(AUTHORIZATION, basic.clone());
                }
            }
            Scheme::Bearer { realm, service } => {
                let scopes = self.request_scopes(request);
                let token = self.token(&realm, service.as_deref(), &scopes, None).await?;
                request.headers_mut().insert(AUTHORIZATION, bearer(&token)?);
            }
        }
        Ok(())
    }

    fn request_scopes(&self, request: &Request) -> Vec<String> {
        let url = request.url();
        self.registry_tail(url).map(|tail| scopes_for(tail, mount_source(url).as_deref())).unwrap_or_default()
    }

    /// After a 401: adopts its challenge and re-signs `request`. `false` when there is
    /// nothing new to try.
    async fn answer(&self, headers: &HeaderMap, request: &mut Request) -> CaseResult<bool> {
        let challenges = challenges_of(headers);
        let sent = request.headers().get(AUTHORIZATION).cloned();
        match self.adopt(&challenges) {
            Some(Scheme::Bearer { realm, service }) => {
                let mut scopes = self.request_scopes(request);
                for c in challenges.iter().filter(|c| c.is("bearer")) {
                    for scope in c.scopes() {
                        if !scopes.contains(&scope) {
                            scopes.push(scope);
                        }
                    }
                }
                let rejected = sent.as_ref().and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
                let token = self.token(&realm, service.as_deref(), &scopes, rejected).await?;
                request.headers_mut().insert(AUTHORIZATION, bearer(&token)?);
                Ok(true)
            }
            Some(Scheme::Basic) => match &self.inner.basic {
                Some(basic) if sent.as_ref() != Some(basic) => {
                    request.headers_mut().insert(AUTHORIZATION, basic.clone());
                    Ok(true)
                }
                _ => Ok(false),
            },
            Some(Scheme::Open) | None => Ok(false),
        }
    }

    /// A token for `scopes`: the cached one unless it is stale or is `rejected`.
    async fn token(
        &self,
        realm: &Url,
        service: Option<&str>,
        scopes: &[String],
        rejected: Option<&str>,
    ) -> CaseResult<String> {
        let slot = lock(&self.inner.tokens).entry(scopes.join(" ")).or_default().clone();
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref()
            && c.fresh_until > Instant::now()
            && rejected != Some(c.token.as_str())
        {
            return Ok(c.token.clone());
        }
        let started = Instant::now();
        let token = fetch_token(&self.inner.http, realm, service, scopes, self.inner.credentials.as_ref()).await?;
        let fresh = Cached { token: token.token.clone(), fresh_until: started + fresh_for(token.expires_in) };
        *cached = Some(fresh);
        Ok(token.token)
    }
}

fn bearer(token: &str) -> CaseResult<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| Failure::new("the token service returned a token that cannot be sent in a header"))
}

/// A token from the token service.
#[derive(Debug, Clone)]
pub struct Token {
    /// `token` (or `access_token`).
    pub token: String,
    /// `expires_in` (60 s when absent, as the spec says).
    pub expires_in: Duration,
}

/// The token request URL: `realm?service=..&scope=..&scope=..` (one `scope` per scope).
pub fn token_url(realm: &Url, service: Option<&str>, scopes: &[String]) -> Url {
    let mut url = realm.clone();
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = service {
            query.append_pair("service", service);
        }
        for scope in scopes {
            query.append_pair("scope", scope);
        }
    }
    url
}

/// `GET <realm>?service=..&scope=..` with Basic `credentials` when given; the token or a
/// failure saying what the token service answered.
pub async fn fetch_token(
    http: &reqwest::Client,
    realm: &Url,
    service: Option<&str>,
    scopes: &[String],
    credentials: Option<&Credentials>,
) -> CaseResult<Token> {
    let url = token_url(realm, service, scopes);
    let mut request = http.get(url).timeout(Duration::from_secs(30));
    if let Some(c) = credentials {
        request = request.basic_auth(&c.username, Some(&c.password));
    }
    let what = || {
        let scopes = if scopes.is_empty() { "none".to_owned() } else { scopes.join(" ") };
        format!("token request GET {realm} (scope {scopes})")
    };
    let response = request.send().await.map_err(|e| Failure::from(e).context(&what()))?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| Failure::from(e).context(&what()))?;
    if status != 200 {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_owned();
        return Err(Failure::new(format!(
            "{}: answered {status} ({text}){}",
            what(),
            if credentials.is_none() { "; no credentials were given (--username/--password)" } else { "" }
        )));
    }
    parse_token(&body).map_err(|f| f.context(&what()))
}

/// Reads a token answer: `token` or `access_token`, and `expires_in`.
pub fn parse_token(body: &[u8]) -> CaseResult<Token> {
    let json: serde_json::Value = serde_json::from_slice(body)?;
    let token = ["token", "access_token"]
        .iter()
        .find_map(|k| json[k].as_str().filter(|t| !t.is_empty()))
        .ok_or_else(|| Failure::new("the answer has neither `token` nor `access_token`"))?;
    let expires_in = json["expires_in"].as_u64().filter(|s| *s > 0).unwrap_or(60);
    Ok(Token { token: token.to_owned(), expires_in: Duration::from_secs(expires_in) })
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        c.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn bearer_challenge_with_commas_in_quoted_scope() {
        let cs =
            parse_challenges(r#"Bearer realm="http://host/token",service="berth",scope="repository:a/b:pull,push""#);
        assert_eq!(cs.len(), 1);
        assert!(cs[0].is("bearer"));
        assert_eq!(
            params(&cs[0]),
            [("realm", "http://host/token"), ("service", "berth"), ("scope", "repository:a/b:pull,push")]
        );
        assert_eq!(cs[0].scopes(), ["repository:a/b:pull,push"]);
    }

    #[test]
    fn several_challenges_in_one_header() {
        let cs = parse_challenges(
            r#"Basic realm="Registry Realm", Bearer realm="https://auth.example/token", service="reg",error="insufficient_scope""#,
        );
        assert_eq!(cs.len(), 2, "{cs:?}");
        assert!(cs[0].is("basic"));
        assert_eq!(params(&cs[0]), [("realm", "Registry Realm")]);
        assert!(cs[1].is("Bearer"));
        assert_eq!(cs[1].param("service"), Some("reg"));
        assert_eq!(cs[1].param("error"), Some("insufficient_scope"));
        assert_eq!(cs[1].param("ERROR"), Some("insufficient_scope"));
    }

    #[test]
    fn scopes_with_host_and_port_in_the_name() {
        let cs = parse_challenges(
            r#"Bearer realm="http://127.0.0.1:5000/token",scope="repository:localhost:5000/a/b:pull repository:c:pull,push""#,
        );
        assert_eq!(cs[0].scopes(), ["repository:localhost:5000/a/b:pull", "repository:c:pull,push"]);
        assert_eq!(cs[0].param("realm"), Some("http://127.0.0.1:5000/token"));
    }

    #[test]
    fn odd_but_valid_challenges() {
        // Bare values, spaces around '=', escapes, upper-case names, empty values.
        let cs = parse_challenges(r#"bearer Realm = "a\"b" , service=berth,scope="""#);
        assert_eq!(params(&cs[0]), [("realm", "a\"b"), ("service", "berth"), ("scope", "")]);
        // A token68 after the scheme, then another challenge.
        let cs = parse_challenges("Negotiate abc123==, Basic realm=x");
        assert_eq!(cs.len(), 2, "{cs:?}");
        assert!(cs[0].params.is_empty());
        assert_eq!(params(&cs[1]), [("realm", "x")]);
        // Schemes without parameters.
        let cs = parse_challenges("Basic, Bearer");
        assert_eq!(cs.iter().map(|c| c.scheme.as_str()).collect::<Vec<_>>(), ["Basic", "Bearer"]);
        assert!(parse_challenges("").is_empty());
        assert!(parse_challenges("  ,  ").is_empty());
        // An unterminated quote runs to the end instead of failing.
        assert_eq!(parse_challenges(r#"Bearer realm="http://h/t"#)[0].param("realm"), Some("http://h/t"));
    }

    #[test]
    fn scopes_follow_the_route() {
        let repo = |n: &str| vec![format!("repository:{n}:pull,push,delete")];
        let cases: Vec<(&str, Vec<String>)> = vec![
            ("/", vec![]),
            ("", vec![]),
            ("/_catalog", vec!["registry:catalog:*".to_owned()]),
            ("/a/b/tags/list", repo("a/b")),
            ("/a/manifests/v1", repo("a")),
            ("/a/b/manifests/", repo("a/b")),
            ("/ns/blobs/sha256:00", repo("ns")),
            ("/ns/x/blobs/uploads/", repo("ns/x")),
            ("/ns/x/blobs/uploads/0a-1", repo("ns/x")),
            ("/ns/referrers/sha256:00", repo("ns")),
            // A repository named like a route keyword still parses from the right.
            ("/manifests/manifests/latest", repo("manifests")),
            ("/a/manifests/manifests/v1", repo("a/manifests")),
            ("/blobs/uploads/blobs/uploads/", repo("blobs/uploads")),
            ("/nothing", vec![]),
            ("/manifests/v1", vec![]),
        ];
        for (tail, want) in cases {
            assert_eq!(scopes_for(tail, None), want, "{tail}");
        }
        assert_eq!(
            scopes_for("/t/blobs/uploads/", Some("src/x")),
            ["repository:t:pull,push,delete", "repository:src/x:pull"]
        );
        assert_eq!(scopes_for("/t/blobs/uploads/", Some("t")), repo("t"));
    }

    #[test]
    fn mount_source_needs_mount_and_from() -> TestResult {
        let from =
            |u: &str| -> Result<Option<String>, Box<dyn std::error::Error>> { Ok(mount_source(&Url::parse(u)?)) };
        assert_eq!(from("http://h/v2/t/blobs/uploads/?mount=sha256%3A00&from=src%2Fx")?.as_deref(), Some("src/x"));
        assert_eq!(from("http://h/v2/t/blobs/uploads/?from=s")?, None);
        assert_eq!(from("http://h/v2/t/blobs/uploads/?mount=d")?, None);
        Ok(())
    }

    #[test]
    fn token_url_repeats_scope() -> TestResult {
        let realm = Url::parse("http://h:5000/token?x=1")?;
        let url = token_url(&realm, Some("berth"), &["repository:a:pull".into(), "repository:b:pull,push".into()]);
        assert_eq!(
            url.as_str(),
            "http://h:5000/token?x=1&service=berth&scope=repository%3Aa%3Apull&scope=repository%3Ab%3Apull%2Cpush"
        );
        Ok(())
    }

    #[test]
    fn token_answers() -> TestResult {
        let t =
            parse_token(br#"{"token":"t1","access_token":"t1","expires_in":300,"issued_at":"2024-01-01T00:00:00Z"}"#)?;
        assert_eq!((t.token.as_str(), t.expires_in), ("t1", Duration::from_secs(300)));
        let t = parse_token(br#"{"access_token":"t2"}"#)?;
        assert_eq!((t.token.as_str(), t.expires_in), ("t2", Duration::from_secs(60)));
        assert!(parse_token(br#"{"token":""}"#).is_err());
        assert!(parse_token(b"not json").is_err());
        Ok(())
    }

    #[test]
    fn tokens_are_replaced_shortly_before_they_expire() {
        assert_eq!(fresh_for(Duration::from_secs(300)), Duration::from_secs(270));
        assert_eq!(fresh_for(Duration::from_secs(60)), Duration::from_secs(54));
        assert_eq!(fresh_for(Duration::from_secs(3600)), Duration::from_secs(3570));
    }

    #[test]
    fn credentials_never_print_the_password() -> TestResult {
        let c = Credentials::new("admin", "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        let auth = Auth::new(reqwest::Client::new(), &[Url::parse("http://h")?], Some(c))?;
        assert!(!format!("{auth:?}").contains("s3cret"));
        Ok(())
    }

    #[test]
    fn only_registry_paths_on_the_bases_are_signed() -> TestResult {
        let auth =
            Auth::new(reqwest::Client::new(), &[Url::parse("http://h:5000")?, Url::parse("http://g/prefix/")?], None)?;
        let tail = |u: &str| -> Result<Option<String>, Box<dyn std::error::Error>> {
            Ok(auth.registry_tail(&Url::parse(u)?).map(str::to_owned))
        };
        assert_eq!(tail("http://h:5000/v2/")?.as_deref(), Some("/"));
        assert_eq!(tail("http://h:5000/v2")?.as_deref(), Some(""));
        assert_eq!(tail("http://h:5000/v2/a/tags/list")?.as_deref(), Some("/a/tags/list"));
        assert_eq!(tail("http://g/prefix/v2/a/tags/list")?.as_deref(), Some("/a/tags/list"));
        assert_eq!(tail("http://g/v2/a/tags/list")?, None);
        assert_eq!(tail("http://h:5001/v2/")?, None);
        assert_eq!(tail("https://h:5000/v2/")?, None);
        assert_eq!(tail("http://h:5000/token")?, None);
        assert_eq!(tail("http://h:5000/v2x")?, None);
        Ok(())
    }
}
