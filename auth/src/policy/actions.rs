//! The action names policies speak of, and how Docker token scopes map onto them.
//!
//! ECR's API names each operation `ecr:<Operation>`; Berth authorizes with the same names so
//! that policies written for ECR work unchanged. A registry request is never authorized by a
//! scope word (`pull`, `push`) directly: the word is first expanded into its ECR actions
//! ([`for_scope_action`]) and the scope is granted only when *every* one of them is allowed.
//! That one table serves both the token service (what to put in a token) and requests
//! authorized directly by policy, so the two can never disagree.

// Data plane: what `docker pull` and `docker push` do.
pub const BATCH_CHECK_LAYER_AVAILABILITY: &str = "ecr:BatchCheckLayerAvailability";
pub const INITIATE_LAYER_UPLOAD: &str = "ecr:InitiateLayerUpload";
pub const UPLOAD_LAYER_PART: &str = "ecr:UploadLayerPart";
pub const COMPLETE_LAYER_UPLOAD: &str = "ecr:CompleteLayerUpload";
pub const PUT_IMAGE: &str = "ecr:PutImage";
pub const BATCH_GET_IMAGE: &str = "ecr:BatchGetImage";
pub const GET_DOWNLOAD_URL_FOR_LAYER: &str = "ecr:GetDownloadUrlForLayer";
pub const GET_AUTHORIZATION_TOKEN: &str = "ecr:GetAuthorizationToken";

// Repositories and images.
pub const CREATE_REPOSITORY: &str = "ecr:CreateRepository";
pub const DELETE_REPOSITORY: &str = "ecr:DeleteRepository";
pub const DESCRIBE_REPOSITORIES: &str = "ecr:DescribeRepositories";
pub const DESCRIBE_IMAGES: &str = "ecr:DescribeImages";
pub const LIST_IMAGES: &str = "ecr:ListImages";
pub const BATCH_DELETE_IMAGE: &str = "ecr:BatchDeleteImage";

// Policies.
pub const SET_REPOSITORY_POLICY: &str = "ecr:SetRepositoryPolicy";
pub const GET_REPOSITORY_POLICY: &str = "ecr:GetRepositoryPolicy";
pub const DELETE_REPOSITORY_POLICY: &str = "ecr:DeleteRepositoryPolicy";
pub const PUT_REGISTRY_POLICY: &str = "ecr:PutRegistryPolicy";
pub const GET_REGISTRY_POLICY: &str = "ecr:GetRegistryPolicy";
pub const DELETE_REGISTRY_POLICY: &str = "ecr:DeleteRegistryPolicy";

// Tags.
pub const TAG_RESOURCE: &str = "ecr:TagResource";
pub const UNTAG_RESOURCE: &str = "ecr:UntagResource";
pub const LIST_TAGS_FOR_RESOURCE: &str = "ecr:ListTagsForResource";

// IAM-only permissions (no API call of that name): replication and pull-through cache.
pub const REPLICATE_IMAGE: &str = "ecr:ReplicateImage";
pub const BATCH_IMPORT_UPSTREAM_IMAGE: &str = "ecr:BatchImportUpstreamImage";

// The IAM actions of Berth's admin API.
pub const IAM_CREATE_USER: &str = "iam:CreateUser";
pub const IAM_GET_USER: &str = "iam:GetUser";
pub const IAM_LIST_USERS: &str = "iam:ListUsers";
pub const IAM_UPDATE_USER: &str = "iam:UpdateUser";
pub const IAM_DELETE_USER: &str = "iam:DeleteUser";
pub const IAM_CREATE_ACCESS_KEY: &str = "iam:CreateAccessKey";
pub const IAM_LIST_ACCESS_KEYS: &str = "iam:ListAccessKeys";
pub const IAM_UPDATE_ACCESS_KEY: &str = "iam:UpdateAccessKey";
pub const IAM_DELETE_ACCESS_KEY: &str = "iam:DeleteAccessKey";
pub const IAM_PUT_USER_POLICY: &str = "iam:PutUserPolicy";
pub const IAM_GET_USER_POLICY: &str = "iam:GetUserPolicy";
pub const IAM_LIST_USER_POLICIES: &str = "iam:ListUserPolicies";
pub const IAM_DELETE_USER_POLICY: &str = "iam:DeleteUserPolicy";

/// Every ECR action: the 62 API operations of botocore 1.44.8's model plus the two IAM-only
/// permissions. Policies may
/// name any of them (a policy copied from ECR should parse), even those Berth never checks.
pub const ECR: &[&str] = &[
    BATCH_CHECK_LAYER_AVAILABILITY,
    INITIATE_LAYER_UPLOAD,
    UPLOAD_LAYER_PART,
    COMPLETE_LAYER_UPLOAD,
    PUT_IMAGE,
    BATCH_GET_IMAGE,
    GET_DOWNLOAD_URL_FOR_LAYER,
    GET_AUTHORIZATION_TOKEN,
    CREATE_REPOSITORY,
    DELETE_REPOSITORY,
    DESCRIBE_REPOSITORIES,
    "ecr:CreateRepositoryCreationTemplate",
    "ecr:DeleteRepositoryCreationTemplate",
    "ecr:DescribeRepositoryCreationTemplates",
    "ecr:UpdateRepositoryCreationTemplate",
    DESCRIBE_IMAGES,
    LIST_IMAGES,
    BATCH_DELETE_IMAGE,
    "ecr:ListImageReferrers",
    "ecr:UpdateImageStorageClass",
    "ecr:PutImageTagMutability",
    SET_REPOSITORY_POLICY,
    GET_REPOSITORY_POLICY,
    DELETE_REPOSITORY_POLICY,
    PUT_REGISTRY_POLICY,
    GET_REGISTRY_POLICY,
    DELETE_REGISTRY_POLICY,
    "ecr:PutLifecyclePolicy",
    "ecr:GetLifecyclePolicy",
    "ecr:DeleteLifecyclePolicy",
    "ecr:StartLifecyclePolicyPreview",
    "ecr:GetLifecyclePolicyPreview",
    "ecr:PutImageScanningConfiguration",
    "ecr:BatchGetRepositoryScanningConfiguration",
    "ecr:PutRegistryScanningConfiguration",
    "ecr:GetRegistryScanningConfiguration",
    "ecr:StartImageScan",
    "ecr:DescribeImageScanFindings",
    "ecr:PutReplicationConfiguration",
    "ecr:DescribeImageReplicationStatus",
    "ecr:DescribeReplicationBackfillResults",
    "ecr:ListReplicationBackfills",
    "ecr:StartReplicationBackfill",
    "ecr:StopReplicationBackfill",
    "ecr:DescribeRegistry",
    "ecr:CreatePullThroughCacheRule",
    "ecr:DeletePullThroughCacheRule",
    "ecr:DescribePullThroughCacheRules",
    "ecr:UpdatePullThroughCacheRule",
    "ecr:ValidatePullThroughCacheRule",
    "ecr:PutSigningConfiguration",
    "ecr:GetSigningConfiguration",
    "ecr:DeleteSigningConfiguration",
    "ecr:DescribeImageSigningStatus",
    "ecr:PutAccountSetting",
    "ecr:GetAccountSetting",
    "ecr:RegisterPullTimeUpdateExclusion",
    "ecr:DeregisterPullTimeUpdateExclusion",
    "ecr:ListPullTimeUpdateExclusions",
    TAG_RESOURCE,
    UNTAG_RESOURCE,
    LIST_TAGS_FOR_RESOURCE,
    REPLICATE_IMAGE,
    BATCH_IMPORT_UPSTREAM_IMAGE,
];

/// The IAM actions Berth implements; other `iam:` names are rejected so that a typo cannot
/// silently grant nothing.
pub const IAM: &[&str] = &[
    IAM_CREATE_USER,
    IAM_GET_USER,
    IAM_LIST_USERS,
    IAM_UPDATE_USER,
    IAM_DELETE_USER,
    IAM_CREATE_ACCESS_KEY,
    IAM_LIST_ACCESS_KEYS,
    IAM_UPDATE_ACCESS_KEY,
    IAM_DELETE_ACCESS_KEY,
    IAM_PUT_USER_POLICY,
    IAM_GET_USER_POLICY,
    IAM_LIST_USER_POLICIES,
    IAM_DELETE_USER_POLICY,
];

/// `repository:pull`.
pub const PULL: &[&str] = &[BATCH_GET_IMAGE, GET_DOWNLOAD_URL_FOR_LAYER];
/// `repository:push`.
pub const PUSH: &[&str] =
    &[BATCH_CHECK_LAYER_AVAILABILITY, INITIATE_LAYER_UPLOAD, UPLOAD_LAYER_PART, COMPLETE_LAYER_UPLOAD, PUT_IMAGE];
/// `repository:delete`.
pub const DELETE: &[&str] = &[BATCH_DELETE_IMAGE];
/// `repository:*`: pull ∪ push ∪ delete.
pub const REPOSITORY_ALL: &[&str] = &[
    BATCH_GET_IMAGE,
    GET_DOWNLOAD_URL_FOR_LAYER,
    BATCH_CHECK_LAYER_AVAILABILITY,
    INITIATE_LAYER_UPLOAD,
    UPLOAD_LAYER_PART,
    COMPLETE_LAYER_UPLOAD,
    PUT_IMAGE,
    BATCH_DELETE_IMAGE,
];
/// `registry:catalog:*`.
pub const CATALOG: &[&str] = &[DESCRIBE_REPOSITORIES];

/// One row of the scope table: a Docker token scope action and the ECR actions it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeMapping {
    pub resource_type: &'static str,
    pub action: &'static str,
    pub ecr_actions: &'static [&'static str],
}

const SCOPES: &[ScopeMapping] = &[
    ScopeMapping { resource_type: "repository", action: "pull", ecr_actions: PULL },
    ScopeMapping { resource_type: "repository", action: "push", ecr_actions: PUSH },
    ScopeMapping { resource_type: "repository", action: "delete", ecr_actions: DELETE },
    ScopeMapping { resource_type: "repository", action: "*", ecr_actions: REPOSITORY_ALL },
    ScopeMapping { resource_type: "registry", action: "*", ecr_actions: CATALOG },
];

/// The ECR actions that together grant a scope action, or `None` for a scope Berth does not
/// know (which is then granted to nobody). A scope action is granted when every action of
/// its set is allowed on the resource.
pub fn for_scope_action(resource_type: &str, action: &str) -> Option<&'static [&'static str]> {
    SCOPES.iter().find(|m| m.resource_type == resource_type && m.action == action).map(|m| m.ecr_actions)
}

/// The whole scope table, to render in documentation.
pub fn scope_actions() -> &'static [ScopeMapping] {
    SCOPES
}

/// Whether `action` names an ECR or IAM action Berth knows (case-insensitively, as IAM
/// compares action names; no wildcards).
pub fn is_known(action: &str) -> bool {
    ECR.iter().chain(IAM).any(|known| known.eq_ignore_ascii_case(action))
}

/// The known action closest to a mistyped one, for "did you mean". Only near misses are
/// offered: a suggestion several edits away is more confusing than none.
pub(crate) fn suggest(action: &str, known: &[&'static str]) -> Option<&'static str> {
    let typed = action.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&typed, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= (k.len() / 8).clamp(1, 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes (action and operator names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_ecr_action_once() {
        assert_eq!(ECR.len(), 64, "62 API operations and 2 IAM-only permissions");
        for (i, a) in ECR.iter().enumerate() {
            assert!(!ECR[i + 1..].contains(a), "{a} listed twice");
        }
        assert!(is_known("ecr:batchgetimage") && is_known("iam:PutUserPolicy"));
        assert!(!is_known("ecr:BatchGetImages") && !is_known("ecr:*"));
    }

    #[test]
    fn maps_scope_actions_to_ecr_actions() {
        let cases: &[(&str, &str, Option<&[&str]>)] = &[
            ("repository", "pull", Some(&[BATCH_GET_IMAGE, GET_DOWNLOAD_URL_FOR_LAYER])),
            ("repository", "push", Some(PUSH)),
            ("repository", "delete", Some(&[BATCH_DELETE_IMAGE])),
            ("registry", "*", Some(&[DESCRIBE_REPOSITORIES])),
            ("repository", "PULL", None),
            ("registry", "pull", None),
        ];
        for (kind, action, want) in cases {
            assert_eq!(for_scope_action(kind, action), *want, "{kind}:{action}");
        }
        let all = for_scope_action("repository", "*").unwrap_or_default();
        for a in PULL.iter().chain(PUSH).chain(DELETE) {
            assert!(all.contains(a), "repository:* lacks {a}");
        }
        assert_eq!(all.len(), 8);
        assert_eq!(scope_actions().len(), 5);
    }

    #[test]
    fn suggests_near_misses_only() {
        assert_eq!(suggest("ecr:BatchGetImages", ECR), Some(BATCH_GET_IMAGE));
        assert_eq!(suggest("ecr:GetDownloadUrlForLayers", ECR), Some(GET_DOWNLOAD_URL_FOR_LAYER));
        assert_eq!(suggest("ecr:Frobnicate", ECR), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
