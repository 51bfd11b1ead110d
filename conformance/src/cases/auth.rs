//! Auth: the Docker token protocol as clients rely on it. An anonymous request gets a
//! 401 with a `Bearer` challenge naming the token service; a token fetched there with
//! credentials works for the scopes it was asked for, and only for them; several `scope`
//! parameters are merged into one token (what a cross-repository mount needs).
//!
//! These cases set `Authorization` themselves (or send nothing), so the run's own signing
//! in never touches their requests. They run only with credentials, against a registry
//! with a token service.

use reqwest::header::{self, AUTHORIZATION};
use reqwest::{Method, RequestBuilder, Url};

use crate::auth::{self, Challenge, Credentials};
use crate::check::{CaseResult, Failure};
use crate::content::{self, ACCEPT_ALL_MANIFESTS, OCI_MANIFEST};
use crate::ctx::{Ctx, Image, Resp, with_digest};
use crate::{ensure, ensure_eq, fail};

/// Where tokens come from, as the registry's challenge says.
struct TokenService {
    realm: Url,
    service: Option<String>,
}

/// The `Bearer` challenge of a 401, or a failure saying what came instead.
fn bearer_challenge(resp: &Resp) -> CaseResult<Challenge> {
    resp.expect(401)?;
    let challenges = auth::challenges_of(&resp.headers);
    ensure!(!challenges.is_empty(), "{}: 401 without a `WWW-Authenticate` challenge", resp.what());
    match challenges.iter().find(|c| c.is("bearer")) {
        Some(bearer) => Ok(bearer.clone()),
        None => fail!(
            "{}: no Bearer challenge, only {:?} (a registry with Basic only: --no-token-auth)",
            resp.what(),
            resp.header("www-authenticate").unwrap_or_default()
        ),
    }
}

/// The token service named by an anonymous `GET /v2/`.
async fn token_service(ctx: &Ctx) -> CaseResult<TokenService> {
    let resp = ctx.send_anonymous(ctx.at(Method::GET, "/v2/")?).await?;
    let challenge = bearer_challenge(&resp)?;
    let Some(realm) = challenge.param("realm") else {
        fail!("{}: the Bearer challenge has no realm: {challenge:?}", resp.what());
    };
    let realm = Url::parse(realm).map_err(|e| Failure::new(format!("realm {realm:?} is not an absolute URL: {e}")))?;
    Ok(TokenService { realm, service: challenge.param("service").map(str::to_owned) })
}

fn credentials(ctx: &Ctx) -> CaseResult<Credentials> {
    ctx.credentials().cloned().ok_or_else(|| Failure::new("no credentials given (--username/--password)"))
}

/// `GET <realm>?service=..&scope=..&scope=..` with Basic `credentials`.
async fn request_token(ctx: &Ctx, svc: &TokenService, scopes: &[String], creds: &Credentials) -> CaseResult<Resp> {
    let url = auth::token_url(&svc.realm, svc.service.as_deref(), scopes);
    ctx.send_anonymous(ctx.request(Method::GET, url).basic_auth(&creds.username, Some(&creds.password))).await
}

/// A token for `scopes`, fetched with the run's credentials.
async fn token_for(ctx: &Ctx, svc: &TokenService, scopes: &[String]) -> CaseResult<String> {
    let resp = request_token(ctx, svc, scopes, &credentials(ctx)?).await?;
    resp.expect(200)?;
    let token = auth::parse_token(&resp.body).map_err(|f| f.context(&resp.what()))?;
    Ok(token.token)
}

fn with_token(builder: RequestBuilder, token: &str) -> RequestBuilder {
    builder.header(AUTHORIZATION, format!("Bearer {token}"))
}

/// `GET /v2/<repo>/manifests/<reference>` with `token`.
async fn manifest_with(ctx: &Ctx, token: &str, repo: &str, reference: &str) -> CaseResult<Resp> {
    let builder =
        ctx.at(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))?.header(header::ACCEPT, ACCEPT_ALL_MANIFESTS);
    ctx.send(with_token(builder, token)).await
}

/// Pushes `data` as a blob of `repo` with `token` (POST, then PUT with the body).
async fn push_blob_with(ctx: &Ctx, token: &str, repo: &str, data: &[u8]) -> CaseResult<String> {
    let digest = content::sha256(data);
    let post = ctx
        .send(
            with_token(ctx.at(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))?, token)
                .header(header::CONTENT_LENGTH, "0"),
        )
        .await?;
    post.expect(202)?;
    let put = ctx
        .send(
            with_token(ctx.request(Method::PUT, with_digest(&post.location()?, &digest)), token)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(data.to_vec()),
        )
        .await?;
    put.expect(201)?;
    Ok(digest)
}

fn scope(repo: &str, actions: &str) -> String {
    format!("repository:{repo}:{actions}")
}

/// Whether `challenge` asks for `action` on `repo` in its `scope`.
fn asks_for(challenge: &Challenge, repo: &str, action: &str) -> bool {
    challenge.scopes().iter().any(|s| {
        s.strip_prefix("repository:")
            .and_then(|rest| rest.rsplit_once(':'))
            .is_some_and(|(name, actions)| name == repo && actions.split(',').any(|a| a == action || a == "*"))
    })
}

/// An anonymous `GET /v2/` is answered 401 `UNAUTHORIZED` with a `Bearer` challenge whose
/// realm is an absolute URL and which names the service; an anonymous push to a repository
/// gets a challenge whose `scope` names that repository and `push`.
pub async fn auth_1_anonymous_request_is_401_with_bearer_challenge(ctx: &Ctx) -> CaseResult {
    let resp = ctx.send_anonymous(ctx.at(Method::GET, "/v2/")?).await?;
    let challenge = bearer_challenge(&resp)?;
    resp.expect_error(401, "UNAUTHORIZED")?;
    let Some(realm) = challenge.param("realm") else {
        fail!("{}: the Bearer challenge has no realm: {challenge:?}", resp.what());
    };
    let realm = Url::parse(realm).map_err(|e| Failure::new(format!("realm {realm:?} is not an absolute URL: {e}")))?;
    ensure!(matches!(realm.scheme(), "http" | "https"), "realm {realm} is not http(s)");
    ensure!(
        challenge.param("service").is_some_and(|s| !s.is_empty()),
        "{}: the Bearer challenge names no service: {challenge:?}",
        resp.what()
    );

    let repo = ctx.repo();
    let push = ctx
        .send_anonymous(
            ctx.at(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))?.header(header::CONTENT_LENGTH, "0"),
        )
        .await?;
    let challenge = bearer_challenge(&push)?;
    ensure!(
        asks_for(&challenge, &repo, "push"),
        "{}: the challenge's scope {:?} does not ask for push on {repo}",
        push.what(),
        challenge.param("scope").unwrap_or("(none)")
    );
    Ok(())
}

/// A token fetched with credentials for `repository:<name>:pull,push` pushes a blob and a
/// manifest and pulls them back. The answer carries `token` and/or `access_token` (the same
/// when both) and an `expires_in` of at least 60 s when present.
pub async fn auth_2_token_grants_pull_push(ctx: &Ctx) -> CaseResult {
    let svc = token_service(ctx).await?;
    let repo = ctx.repo();
    let resp = request_token(ctx, &svc, &[scope(&repo, "pull,push")], &credentials(ctx)?).await?;
    resp.expect(200)?;
    let body = resp.json()?;
    let (token, access_token) = (body["token"].as_str(), body["access_token"].as_str());
    if let (Some(a), Some(b)) = (token, access_token) {
        ensure!(a == b, "{}: `token` and `access_token` differ", resp.what());
    }
    let Some(token) = token.or(access_token).filter(|t| !t.is_empty()) else {
        fail!("{}: neither `token` nor `access_token` in {}", resp.what(), resp.body_excerpt());
    };
    if let Some(expires_in) = body.get("expires_in") {
        let secs = expires_in.as_u64().unwrap_or(0);
        ensure!(secs >= 60, "{}: `expires_in` {expires_in} (a token must live at least 60 s)", resp.what());
    }

    let layer = ctx.bytes(700);
    let config = content::image_config(&layer, &ctx.token(16));
    let layer_digest = push_blob_with(ctx, token, &repo, &layer).await.map_err(|f| f.context("pushing a layer"))?;
    push_blob_with(ctx, token, &repo, &config).await.map_err(|f| f.context("pushing the config"))?;
    let manifest = content::to_bytes(&content::oci_manifest(&config, &[&layer]));
    let put = ctx
        .send(with_token(
            ctx.at(Method::PUT, &format!("/v2/{repo}/manifests/v1"))?
                .header(header::CONTENT_TYPE, OCI_MANIFEST)
                .body(manifest.clone()),
            token,
        ))
        .await?;
    put.expect(201).map_err(|f| f.context("pushing the manifest"))?;
    let got = manifest_with(ctx, token, &repo, "v1").await?;
    got.expect(200)?;
    got.expect_body(&manifest)?;
    let blob = ctx.send(with_token(ctx.at(Method::GET, &format!("/v2/{repo}/blobs/{layer_digest}"))?, token)).await?;
    blob.expect(200)?;
    blob.expect_body(&layer)
}

/// A wrong password is refused at the token endpoint with 401, and no token comes back.
/// (One failed sign-in of the run's user per run: well under any lockout threshold.)
pub async fn auth_3_wrong_password_is_refused_at_token_endpoint(ctx: &Ctx) -> CaseResult {
    let svc = token_service(ctx).await?;
    let creds = credentials(ctx)?;
    let wrong = Credentials::new(creds.username.clone(), format!("{}-wrong-{}", creds.password, ctx.token(6)));
    let resp = request_token(ctx, &svc, &[scope(&ctx.repo(), "pull")], &wrong).await?;
    resp.expect(401)?;
    if let Ok(body) = resp.json() {
        ensure!(
            body.get("token").is_none() && body.get("access_token").is_none(),
            "{}: a refused sign-in returned a token",
            resp.what()
        );
    }
    Ok(())
}

/// A token for repository A, used on repository B, gets 401 with a Bearer challenge saying
/// `error="insufficient_scope"` and naming B; the same token works on A.
pub async fn auth_4_token_for_other_repository_is_insufficient(ctx: &Ctx) -> CaseResult {
    let (a, b) = (ctx.repo_with("a"), ctx.repo_with("b"));
    ctx.push_image(&a, Some("v1")).await?;
    ctx.push_image(&b, Some("v1")).await?;
    let svc = token_service(ctx).await?;
    let token = token_for(ctx, &svc, &[scope(&a, "pull")]).await?;
    manifest_with(ctx, &token, &a, "v1").await?.expect(200).map_err(|f| f.context("the token's own repository"))?;
    let resp = manifest_with(ctx, &token, &b, "v1").await?;
    let challenge = bearer_challenge(&resp).map_err(|f| f.context("a token for another repository"))?;
    ensure_eq!(challenge.param("error"), Some("insufficient_scope"), "{}: challenge `error`", resp.what());
    ensure!(
        asks_for(&challenge, &b, "pull"),
        "{}: the challenge's scope {:?} does not ask for pull on {b}",
        resp.what(),
        challenge.param("scope").unwrap_or("(none)")
    );
    Ok(())
}

/// Runs last: no request the run signed in (with a token fetched before sending, for the
/// scopes its path needs) was answered 401. A retry with a fresh token would hide such a
/// refusal from the other cases, but a client streaming a blob cannot retry.
pub async fn auth_6_tokens_fetched_up_front_are_never_refused(ctx: &Ctx) -> CaseResult {
    let (refused, examples) = ctx.auth_refusals();
    ensure!(refused == 0, "{refused} signed requests were answered 401: {}", examples.join("; "));
    Ok(())
}

/// One token request with two `scope` parameters (push on A, pull on B) yields a token
/// for both: it pulls from A and B, and mounts a blob of B into A (a mount needs exactly
/// these two scopes). Token services that keep only the last `scope` fail here.
pub async fn auth_5_multiple_scopes_are_merged(ctx: &Ctx) -> CaseResult {
    let (a, b) = (ctx.repo_with("a"), ctx.repo_with("b"));
    ctx.push_image(&a, Some("v1")).await?;
    let Image { layer, .. } = ctx.push_image(&b, Some("v1")).await?;
    let svc = token_service(ctx).await?;
    let token = token_for(ctx, &svc, &[scope(&a, "pull,push"), scope(&b, "pull")]).await?;
    manifest_with(ctx, &token, &a, "v1").await?.expect(200).map_err(|f| f.context("the first scope"))?;
    manifest_with(ctx, &token, &b, "v1").await?.expect(200).map_err(|f| f.context("the second scope"))?;

    let digest = content::sha256(&layer);
    let mut mount = ctx.url(&format!("/v2/{a}/blobs/uploads/"))?;
    mount.query_pairs_mut().append_pair("mount", &digest).append_pair("from", &b);
    let resp =
        ctx.send(with_token(ctx.request(Method::POST, mount), &token).header(header::CONTENT_LENGTH, "0")).await?;
    let want = if ctx.flags().cross_mount { 201 } else { 202 };
    resp.expect(want).map_err(|f| f.context("mounting B's layer into A with the merged token"))?;
    Ok(())
}
