//! Authentication to another registry: the challenge learned from a 401, the token flow
//! (Docker's token spec: GET the realm with `service` and `scope`, Basic credentials when
//! there are some), Basic, and ECR's `GetAuthorizationToken` signed with SigV4 for an ECR
//! upstream (its password then used as Basic `AWS:<password>`).
//!
//! Tokens are cached per scope set until shortly before they expire (`expires_in`, 60 s when
//! absent), at most [`MAX_TOKENS`] of them; an ECR password until shortly before its
//! `expiresAt` (at most 12 hours). Credentials go to a realm only over HTTPS or on the
//! registry's own origin.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};

use super::{Credentials, MAX_AUTH_ANSWER_BYTES, Result, Upstream, UpstreamError, read_bounded};

/// The most scope sets whose tokens are kept.
const MAX_TOKENS: usize = 256;
/// A token's life when the token service does not say.
const DEFAULT_TOKEN_LIFE: Duration = Duration::from_secs(60);
/// The longest an ECR password is kept.
const MAX_ECR_LIFE: Duration = Duration::from_secs(12 * 3600);
/// ECR's operation name.
const ECR_TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";

/// How the registry asked to be authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Challenge {
    Basic,
    Bearer { realm: Url, service: Option<String> },
}

struct Cached {
    value: String,
    until: Instant,
}

impl Cached {
    fn fresh(&self) -> bool {
        Instant::now() < self.until
    }
}

/// What a client learned and holds: the challenge, tokens per scope set, the ECR password.
#[derive(Default)]
pub(super) struct AuthState {
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<String, Cached>>,
    /// One token request at a time: callers that find no token wait for the one asking,
    /// then find its token (a cold start of many pulls asks once per scope set, not once each).
    fetching: tokio::sync::Mutex<()>,
    /// One `GetAuthorizationToken` at a time.
    ecr: tokio::sync::Mutex<Option<Cached>>,
}

/// `until` a little before `life` ends: a tenth of it, at most 30 s, early.
fn expiry(life: Duration) -> Instant {
    let early = (life / 10).min(Duration::from_secs(30));
    Instant::now() + life.saturating_sub(early)
}

impl AuthState {
    /// Learns the challenge of a 401's `WWW-Authenticate` headers (Bearer preferred).
    pub(super) fn learn(&self, headers: &HeaderMap) {
        let parsed: Vec<Challenge> = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(parse_challenge)
            .collect();
        let best = parsed.iter().find(|c| matches!(c, Challenge::Bearer { .. })).or_else(|| parsed.first()).cloned();
        if let Some(c) = best
            && let Ok(mut slot) = self.challenge.lock()
        {
            *slot = Some(c);
        }
    }

    fn challenge(&self) -> Option<Challenge> {
        self.challenge.lock().ok().and_then(|c| c.clone())
    }

    /// The `Authorization` value for a request needing `scopes`, or `None` when the registry
    /// asked for nothing yet (or asked for Basic and there are no credentials). `fresh`
    /// forgets what is cached for them first (after a 401).
    pub(super) async fn header(&self, up: &Upstream, scopes: &[String], fresh: bool) -> Result<Option<HeaderValue>> {
        let value = match self.challenge() {
            None => return Ok(None),
            Some(Challenge::Basic) => match self.basic(up, fresh).await? {
                None => return Ok(None),
                Some((user, password)) => {
                    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
                }
            },
            Some(Challenge::Bearer { realm, service }) => {
                format!("Bearer {}", self.token(up, &realm, service.as_deref(), scopes, fresh).await?)
            }
        };
        let mut v = HeaderValue::from_str(&value)
            .map_err(|_| UpstreamError::Invalid("the credentials or token are not header text".into()))?;
        v.set_sensitive(true);
        Ok(Some(v))
    }

    /// The user and password to present, from the configuration or ECR.
    async fn basic(&self, up: &Upstream, fresh: bool) -> Result<Option<(String, String)>> {
        match &up.inner.credentials {
            Credentials::Anonymous => Ok(None),
            Credentials::Basic { username, password } => Ok(Some((username.clone(), password.clone()))),
            Credentials::Ecr { .. } => self.ecr_password(up, fresh).await.map(Some),
        }
    }

    /// The cached token for a scope set, if it is still good.
    fn cached(&self, key: &str) -> Option<String> {
        let tokens = self.tokens.lock().ok()?;
        tokens.get(key).filter(|t| t.fresh()).map(|t| t.value.clone())
    }

    /// A token for `scopes` from the realm, cached.
    async fn token(
        &self,
        up: &Upstream,
        realm: &Url,
        service: Option<&str>,
        scopes: &[String],
        fresh: bool,
    ) -> Result<String> {
        let key = scopes.join(" ");
        if !fresh && let Some(t) = self.cached(&key) {
            return Ok(t);
        }
        let _fetching = self.fetching.lock().await;
        if !fresh && let Some(t) = self.cached(&key) {
            return Ok(t);
        }
        let credentials = self.basic(up, fresh).await?;
        if credentials.is_some() && realm.scheme() != "https" && realm.origin() != up.inner.base.origin() {
            return Err(UpstreamError::Invalid(format!(
                "the registry sends credentials to a token service over plain HTTP on another host ({}); \
                 they are not sent",
                realm.host_str().unwrap_or_default()
            )));
        }
        let mut url = realm.clone();
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
        }
        let mut req = up.inner.client.get(url);
        if let Some((user, password)) = &credentials {
            req = req.basic_auth(user, Some(password));
        }
        let resp = up.timed(req.send()).await?;
        let status = resp.status();
        if !status.is_success() {
            let msg = format!("the token service answered {status}");
            return Err(match status.as_u16() {
                401 | 403 => UpstreamError::Denied(msg),
                404 => UpstreamError::Invalid(msg),
                429 | 500..=599 => UpstreamError::Unavailable(msg),
                _ => UpstreamError::Invalid(msg),
            });
        }
        let body = read_bounded(resp, MAX_AUTH_ANSWER_BYTES, up.inner.timeout).await?;
        let (token, life) = parse_token(&body)?;
        if let Ok(mut tokens) = self.tokens.lock() {
            if tokens.len() >= MAX_TOKENS {
                tokens.retain(|_, t| t.fresh());
                if tokens.len() >= MAX_TOKENS {
                    tokens.clear();
                }
            }
            tokens.insert(key, Cached { value: token.clone(), until: expiry(life) });
        }
        Ok(token)
    }

    /// The ECR password (user `AWS`) from `GetAuthorizationToken`, cached.
    async fn ecr_password(&self, up: &Upstream, fresh: bool) -> Result<(String, String)> {
        let Credentials::Ecr { access_key_id, secret_access_key, region, endpoint } = &up.inner.credentials else {
            return Err(UpstreamError::Invalid("not ECR credentials".into()));
        };
        let mut slot = self.ecr.lock().await;
        if !fresh && let Some(c) = slot.as_ref().filter(|c| c.fresh()) {
            return split_ecr_token(&c.value);
        }
        let endpoint = match endpoint {
            Some(e) => e.clone(),
            None => format!("https://api.ecr.{region}.amazonaws.com"),
        };
        let (token, life) = get_authorization_token(up, &endpoint, access_key_id, secret_access_key, region).await?;
        let pair = split_ecr_token(&token)?;
        *slot = Some(Cached { value: token, until: expiry(life) });
        Ok(pair)
    }
}

/// `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
pub(super) fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = auth_params(rest);
    let realm = params.iter().find(|(k, _)| k.eq_ignore_ascii_case("realm"))?;
    let realm = Url::parse(&realm.1).ok().filter(|u| matches!(u.scheme(), "http" | "https"))?;
    let service = params.iter().find(|(k, _)| k.eq_ignore_ascii_case("service")).map(|(_, v)| v.clone());
    Some(Challenge::Bearer { realm, service })
}

/// `k=v, k="quoted \" value"` pairs.
fn auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.push((key.trim().to_owned(), value.trim().to_owned()));
    }
}

/// `token` (or `access_token`) and its life from a token answer.
pub(super) fn parse_token(body: &[u8]) -> Result<(String, Duration)> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| UpstreamError::Invalid(format!("the token service's answer is not JSON: {e}")))?;
    let token = ["token", "access_token"]
        .iter()
        .find_map(|k| v.get(*k).and_then(|t| t.as_str()).filter(|t| !t.is_empty()))
        .ok_or_else(|| UpstreamError::Invalid("the token service's answer has no token".into()))?;
    let life = v
        .get("expires_in")
        .and_then(|e| e.as_u64())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TOKEN_LIFE);
    Ok((token.to_owned(), life))
}

/// `AWS:<password>` (base64) as a user and password.
fn split_ecr_token(token: &str) -> Result<(String, String)> {
    let bad = || UpstreamError::Invalid("ECR's authorizationToken is not base64 of user:password".into());
    let decoded = base64::engine::general_purpose::STANDARD.decode(token.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (user, password) = text.split_once(':').ok_or_else(bad)?;
    Ok((user.to_owned(), password.to_owned()))
}

/// `GetAuthorizationToken` at `endpoint`, signed with SigV4: the token (base64 of
/// `AWS:<password>`) and how long it stays valid.
async fn get_authorization_token(
    up: &Upstream,
    endpoint: &str,
    access_key_id: &str,
    secret: &str,
    region: &str,
) -> Result<(String, Duration)> {
    let url = Url::parse(endpoint)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| UpstreamError::Invalid(format!("ECR endpoint {endpoint:?} is not an http(s) URL")))?;
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => return Err(UpstreamError::Invalid("ECR endpoint without a host".into())),
    };
    let body: &[u8] = b"{}";
    let content_type = "application/x-amz-json-1.1";
    let headers = [("host", host.as_str()), ("content-type", content_type), ("x-amz-target", ECR_TARGET)];
    let request =
        berth_auth::sigv4::Request { method: "POST", path: url.path(), query: url.query(), headers: &headers, body };
    let signed = berth_auth::sigv4::sign(&request, access_key_id, secret, region, "ecr", SystemTime::now());
    let mut authorization = HeaderValue::from_str(&signed.authorization)
        .map_err(|_| UpstreamError::Invalid("the access key id is not header text".into()))?;
    authorization.set_sensitive(true);
    let req = up
        .inner
        .client
        .post(url)
        .header(CONTENT_TYPE, content_type)
        .header("x-amz-target", ECR_TARGET)
        .header("x-amz-date", &signed.amz_date)
        .header(reqwest::header::AUTHORIZATION, authorization)
        .body(body);
    let resp = up.timed(req.send()).await?;
    let status = resp.status();
    let answer = read_bounded(resp, MAX_AUTH_ANSWER_BYTES, up.inner.timeout).await?;
    let v: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
    if status != StatusCode::OK {
        let kind = v.get("__type").and_then(|t| t.as_str()).unwrap_or_default();
        let kind = kind.rsplit('#').next().unwrap_or(kind);
        let message = v.get("message").or_else(|| v.get("Message")).and_then(|m| m.as_str()).unwrap_or_default();
        let msg: String = format!("GetAuthorizationToken: {status} {kind}: {message}").chars().take(400).collect();
        return Err(match (status.as_u16(), kind) {
            (_, "ThrottlingException" | "ServerException") | (429 | 500..=599, _) => UpstreamError::Unavailable(msg),
            (401 | 403, _)
            | (
                _,
                "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "AccessDeniedException"
                | "MissingAuthenticationTokenException"
                | "IncompleteSignatureException",
            ) => UpstreamError::Denied(msg),
            _ => UpstreamError::Invalid(msg),
        });
    }
    let data = v.get("authorizationData").and_then(|d| d.get(0));
    let token = data
        .and_then(|d| d.get("authorizationToken"))
        .and_then(|t| t.as_str())
        .ok_or_else(|| UpstreamError::Invalid("GetAuthorizationToken answered no authorizationToken".into()))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let life = data
        .and_then(|d| d.get("expiresAt"))
        .and_then(|e| e.as_f64())
        .map(|at| Duration::from_secs_f64((at - now).clamp(0.0, MAX_ECR_LIFE.as_secs_f64())))
        .unwrap_or(Duration::from_secs(3600));
    Ok((token.to_owned(), life))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse_with_quotes_and_escapes() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: Url::parse("https://auth.example/token").unwrap(),
                service: Some("registry.example".into())
            })
        );
        let c = parse_challenge(r#"bearer service="a \"b\"", realm=http://127.0.0.1:5000/token"#);
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: Url::parse("http://127.0.0.1:5000/token").unwrap(),
                service: Some("a \"b\"".into())
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None, "no realm");
        assert_eq!(parse_challenge(r#"Bearer realm="file:///etc/passwd""#), None);
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn token_answers_take_token_or_access_token_and_default_to_a_minute() {
        assert_eq!(
            parse_token(br#"{"token":"t1","expires_in":300}"#).unwrap(),
            ("t1".into(), Duration::from_secs(300))
        );
        assert_eq!(parse_token(br#"{"access_token":"t2"}"#).unwrap(), ("t2".into(), DEFAULT_TOKEN_LIFE));
        assert_eq!(parse_token(br#"{"token":"","access_token":"t3"}"#).unwrap().0, "t3");
        assert!(matches!(parse_token(br#"{"expires_in":3}"#), Err(UpstreamError::Invalid(_))));
        assert!(matches!(parse_token(b"<html>"), Err(UpstreamError::Invalid(_))));
    }

    #[test]
    fn ecr_tokens_split_into_user_and_password() {
        let t = base64::engine::general_purpose::STANDARD.encode("AWS:pass:with:colons");
        assert_eq!(split_ecr_token(&t).unwrap(), ("AWS".into(), "pass:with:colons".into()));
        assert!(split_ecr_token("!!").is_err());
    }
}
