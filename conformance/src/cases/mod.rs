//! The case table and the runner.
//!
//! Each case is an `async fn(&Ctx) -> CaseResult` in the module of its
//! group; [`TABLE`] lists them in run order. The runner gives each case its
//! own [`Ctx`] (and so its own repositories), runs it under the case timeout
//! and turns the outcome into a [`CaseReport`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::auth::Auth;
use crate::check::CaseResult;
use crate::config::{Flags, SuiteConfig};
use crate::content::RandomSource;
use crate::ctx::{Ctx, Shared};
use crate::report::{CaseReport, Group, Report, Skipped};

mod auth;
mod discovery;
mod errors;
mod management;
mod manifests;
mod pull;
mod referrers;
mod upload;

/// What a case needs beyond the always-on API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    Referrers,
    NoReferrers,
    TagParam,
    ReferrersAndManifestDelete,
    PlainHttp,
    /// Credentials, and a registry that signs in with tokens.
    TokenAuth,
}

impl Need {
    /// `None` when the case may run, else why it is skipped. `signed_in`:
    /// the run has credentials.
    fn missing(self, flags: Flags, https: bool, signed_in: bool) -> Option<&'static str> {
        match self {
            Self::Nothing => None,
            Self::Referrers if !flags.referrers => Some("referrers disabled (--no-referrers)"),
            Self::NoReferrers if flags.referrers => Some("only with --no-referrers"),
            Self::TagParam if !flags.tag_param => Some("tag parameters not enabled (--tag-param)"),
            Self::ReferrersAndManifestDelete if !flags.referrers => Some("referrers disabled (--no-referrers)"),
            Self::ReferrersAndManifestDelete if !flags.delete_manifests => {
                Some("manifest delete disabled (--no-delete-manifests)")
            }
            Self::PlainHttp if https => Some("the registry URL is https"),
            Self::TokenAuth if !signed_in => Some("no credentials given (--username/--password)"),
            Self::TokenAuth if !flags.token_auth => Some("the registry takes Basic credentials only (--no-token-auth)"),
            Self::Referrers
            | Self::NoReferrers
            | Self::TagParam
            | Self::ReferrersAndManifestDelete
            | Self::PlainHttp
            | Self::TokenAuth => None,
        }
    }
}

type CaseFn = for<'a> fn(&'a Ctx) -> BoxFuture<'a, CaseResult>;

struct Case {
    name: &'static str,
    group: Group,
    need: Need,
    run: CaseFn,
}

/// A case as `--list` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaseInfo {
    /// Case name.
    pub name: &'static str,
    /// Workflow group.
    pub group: Group,
}

/// Every case, in run order.
pub fn list() -> Vec<CaseInfo> {
    TABLE.iter().map(|c| CaseInfo { name: c.name, group: c.group }).collect()
}

macro_rules! case {
    ($group:ident, $module:ident :: $name:ident) => {
        case!($group, $module::$name, Nothing)
    };
    ($group:ident, $module:ident :: $name:ident, $need:ident) => {{
        fn run(ctx: &Ctx) -> BoxFuture<'_, CaseResult> {
            Box::pin($module::$name(ctx))
        }
        Case { name: stringify!($name), group: Group::$group, need: Need::$need, run }
    }};
}

const TABLE: &[Case] = &[
    // pull
    case!(Pull, pull::end_1_api_version_check),
    case!(Pull, pull::end_2_blob_get_is_byte_exact_with_digest),
    case!(Pull, pull::end_2_blob_head_has_length_and_digest),
    case!(Pull, pull::end_2_blob_get_advertises_accept_ranges),
    case!(Pull, pull::end_2_blob_range_closed_is_206),
    case!(Pull, pull::end_2_blob_range_open_ended_is_206),
    case!(Pull, pull::end_2_blob_range_suffix_is_206),
    case!(Pull, pull::end_2_blob_range_unsatisfiable_is_416),
    case!(Pull, pull::end_2_unknown_blob_is_404_blob_unknown),
    case!(Pull, pull::end_3_manifest_get_by_tag),
    case!(Pull, pull::end_3_manifest_get_by_digest),
    case!(Pull, pull::end_3_manifest_head_by_tag_and_digest),
    case!(Pull, pull::end_3_unknown_manifest_is_404_manifest_unknown),
    case!(Pull, pull::end_3_invalid_reference_read_is_404_manifest_unknown),
    // push: blobs
    case!(Push, upload::end_4a_post_then_single_put),
    case!(Push, upload::end_4b_single_post_monolithic_upload),
    case!(Push, upload::end_4c_sha512_upload),
    case!(Push, upload::end_4_zero_byte_blob_push_and_pull),
    case!(Push, upload::end_5_chunked_upload_with_content_range),
    case!(Push, upload::end_5_out_of_order_chunk_is_416),
    case!(Push, upload::end_5_invalid_content_range_is_416),
    case!(Push, upload::end_5_overflowing_content_range_is_416),
    case!(Push, upload::end_5_streamed_patch_without_content_range),
    case!(Push, upload::end_5_transfer_encoding_chunked_patch),
    case!(Push, upload::end_6_put_carries_final_chunk),
    case!(Push, upload::end_6_put_wrong_digest_is_400_digest_invalid),
    case!(Push, upload::end_13_upload_status_is_204_with_range),
    case!(Push, upload::end_14_cancel_upload_is_204_then_404),
    case!(Push, upload::end_11_mount_from_repo_with_blob_is_201),
    case!(Push, upload::end_11_mount_from_repo_without_blob_is_202),
    // push: manifests
    case!(Push, manifests::end_7_put_oci_manifest_by_tag),
    case!(Push, manifests::end_7_put_oci_manifest_by_digest),
    case!(Push, manifests::end_7_put_oci_index),
    case!(Push, manifests::end_7_put_docker_schema2_manifest),
    case!(Push, manifests::end_7_put_docker_manifest_list),
    case!(Push, manifests::end_7_put_artifact_manifest_with_empty_config),
    case!(Push, manifests::end_7_manifest_bytes_are_preserved),
    case!(Push, manifests::end_7_retag_moves_the_tag),
    case!(Push, manifests::end_7_manifest_with_missing_subject_is_accepted),
    case!(Push, manifests::end_7_manifest_over_4mib_is_413),
    case!(Push, manifests::end_7_missing_layer_is_400_manifest_blob_unknown),
    case!(Push, manifests::end_7_docker_schema1_is_rejected),
    case!(Push, manifests::end_7_digest_mismatch_is_400_digest_invalid),
    case!(Push, manifests::end_7_invalid_json_is_400_manifest_invalid),
    case!(Push, manifests::end_7b_tag_params_tag_the_digest, TagParam),
    // content discovery
    case!(ContentDiscovery, discovery::end_8a_tags_list_is_lexically_sorted),
    case!(ContentDiscovery, discovery::end_8b_tags_pagination_follows_link),
    case!(ContentDiscovery, discovery::end_8b_tags_last_starts_after_the_tag),
    case!(ContentDiscovery, discovery::end_8b_tags_n_zero_is_empty),
    case!(ContentDiscovery, discovery::end_8_tags_of_unknown_repo_is_404_name_unknown),
    case!(ContentDiscovery, discovery::catalog_lists_pushed_repos_sorted),
    case!(ContentDiscovery, discovery::catalog_pagination_follows_link),
    // content management
    case!(ContentManagement, management::end_9_delete_manifest_by_tag_untags),
    case!(ContentManagement, management::end_9_delete_manifest_by_digest),
    case!(ContentManagement, management::end_9_delete_unknown_manifest_is_404),
    case!(ContentManagement, management::end_10_delete_blob),
    case!(ContentManagement, management::end_10_delete_unknown_blob_is_404),
    // referrers
    case!(Referrers, referrers::end_7_push_with_subject_returns_oci_subject, Referrers),
    case!(Referrers, referrers::end_12a_referrers_lists_descriptors, Referrers),
    case!(Referrers, referrers::end_12a_referrers_listed_before_subject_exists, Referrers),
    case!(Referrers, referrers::end_12a_referrers_of_unknown_digest_is_empty, Referrers),
    case!(Referrers, referrers::end_12b_referrers_artifact_type_filter, Referrers),
    case!(Referrers, referrers::end_12a_deleted_referrer_disappears, ReferrersAndManifestDelete),
    case!(Referrers, referrers::end_12a_referrers_unsupported_is_404, NoReferrers),
    // errors
    case!(Errors, errors::errors_bodies_are_json_envelopes),
    case!(Errors, errors::errors_invalid_repository_name_is_name_invalid),
    case!(Errors, errors::errors_malformed_digest_is_400_digest_invalid),
    case!(Errors, errors::errors_malformed_digest_in_path_is_rejected),
    case!(Errors, errors::errors_unknown_upload_is_404_blob_upload_unknown),
    case!(Errors, errors::errors_bad_pagination_n_is_400),
    case!(Errors, errors::errors_odd_requests_are_4xx_not_5xx),
    case!(Errors, errors::tls_probe_on_plain_http_is_answered_fast, PlainHttp),
    // auth
    case!(Auth, auth::auth_1_anonymous_request_is_401_with_bearer_challenge, TokenAuth),
    case!(Auth, auth::auth_2_token_grants_pull_push, TokenAuth),
    case!(Auth, auth::auth_3_wrong_password_is_refused_at_token_endpoint, TokenAuth),
    case!(Auth, auth::auth_4_token_for_other_repository_is_insufficient, TokenAuth),
    case!(Auth, auth::auth_5_multiple_scopes_are_merged, TokenAuth),
    // Last, so they see every answer of the run.
    case!(Errors, errors::errors_nothing_answered_5xx),
    case!(Auth, auth::auth_6_tokens_fetched_up_front_are_never_refused, TokenAuth),
];

pub(crate) async fn run(config: &SuiteConfig) -> Report {
    run_with_progress(config, |_| {}).await
}

/// Like [`crate::run`], calling `progress` after each case (the binary
/// prints lines as they come).
pub async fn run_with_progress(config: &SuiteConfig, mut progress: impl FnMut(&CaseReport)) -> Report {
    let mut report = Report {
        base_url: config.base_url.to_string(),
        namespace: config.namespace.clone(),
        auth: String::new(),
        cases: Vec::new(),
        skipped: Vec::new(),
    };
    let shared = connect(config).await;
    report.auth = match &shared {
        Ok((_, how)) => how.clone(),
        Err(err) => err.clone(),
    };
    let shared = shared.map(|(shared, _)| shared);
    let https = config.base_url.scheme() == "https";
    let signed_in = config.credentials.is_some();

    for case in TABLE {
        if let Some(filter) = &config.filter
            && !case.name.contains(filter.as_str())
            && !case.group.as_str().contains(filter.as_str())
        {
            continue;
        }
        if let Some(reason) = case.need.missing(config.flags, https, signed_in) {
            report.skipped.push(Skipped { name: case.name, reason });
            continue;
        }
        let started = Instant::now();
        let (outcome, notes) = match &shared {
            Ok(shared) => {
                let ctx = Ctx::new(shared.clone(), case.name);
                let outcome = tokio::time::timeout(config.case_timeout, (case.run)(&ctx)).await;
                let outcome = match outcome {
                    Ok(result) => result.map_err(|f| f.to_string()),
                    Err(_) => Err(format!("timed out after {} s", config.case_timeout.as_secs_f32())),
                };
                (outcome, ctx.take_notes())
            }
            Err(err) => (Err(err.clone()), Vec::new()),
        };
        let case_report = CaseReport {
            name: case.name,
            group: case.group,
            passed: outcome.is_ok(),
            failure: outcome.err(),
            notes,
            duration: started.elapsed(),
        };
        progress(&case_report);
        report.cases.push(case_report);
    }
    report
}

/// The client every case shares, signed in the way `GET /v2/` asks; with a line
/// saying how. An error says why no case can run.
async fn connect(config: &SuiteConfig) -> Result<(Shared, String), String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(config.case_timeout)
        .user_agent(concat!("berth-conformance/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| format!("cannot build HTTP client: {err}"))?;
    let base = config.base_url.clone();
    let auth =
        Auth::new(http.clone(), std::slice::from_ref(&base), config.credentials.clone()).map_err(|f| f.to_string())?;
    let how = auth.discover(&base, config.case_timeout).await.map_err(|f| format!("signing in: {f}"))?;
    let shared = Shared {
        http,
        auth,
        base,
        namespace: config.namespace.trim_matches('/').to_owned(),
        flags: config.flags,
        rng: Arc::new(Mutex::new(RandomSource::new())),
        server_errors: Arc::new(Mutex::new(Vec::new())),
    };
    Ok((shared, how))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn case_names_are_unique_and_valid_repository_components() {
        let mut seen = HashSet::new();
        for case in TABLE {
            assert!(seen.insert(case.name), "duplicate case {}", case.name);
            assert!(
                case.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{} cannot be a repository path component",
                case.name
            );
            assert!(!case.name.contains("__"), "{}", case.name);
        }
    }

    #[test]
    fn spec_cases_carry_their_endpoint_id() {
        for case in TABLE {
            let ok = case.name.starts_with("end_")
                || case.name.starts_with("errors_")
                || case.name.starts_with("catalog_")
                || case.name.starts_with("tls_")
                || case.name.starts_with("auth_");
            assert!(ok, "{} does not start with a spec id", case.name);
        }
    }

    #[test]
    fn needs_follow_flags() {
        let all = Flags::default();
        assert_eq!(Need::TagParam.missing(all, false, true), Some("tag parameters not enabled (--tag-param)"));
        assert_eq!(Need::Referrers.missing(all, false, true), None);
        assert!(Need::NoReferrers.missing(all, false, true).is_some());
        let off = Flags { referrers: false, delete_manifests: false, ..all };
        assert!(Need::Referrers.missing(off, false, true).is_some());
        assert_eq!(Need::NoReferrers.missing(off, false, true), None);
        assert!(Need::ReferrersAndManifestDelete.missing(off, false, true).is_some());
        assert!(Need::PlainHttp.missing(all, true, true).is_some());
        assert_eq!(Need::PlainHttp.missing(all, false, true), None);
        assert!(Need::TokenAuth.missing(all, false, false).is_some());
        assert_eq!(Need::TokenAuth.missing(all, false, true), None);
        assert!(Need::TokenAuth.missing(Flags { token_auth: false, ..all }, false, true).is_some());
    }
}
