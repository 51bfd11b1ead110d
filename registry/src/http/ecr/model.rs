//! The operations of ECR's API (botocore's `ecr/2015-09-21/service-2.json`, botocore
//! 1.44.8: 62 operations). A target naming one of these that no module serves answers
//! `UnsupportedOperationException` with [`unsupported_reason`]; any other target is
//! `UnknownOperationException`.

/// Every operation of ECR's model, sorted.
pub const OPERATIONS: &[&str] = &[
    "BatchCheckLayerAvailability",
    "BatchDeleteImage",
    "BatchGetImage",
    "BatchGetRepositoryScanningConfiguration",
    "CompleteLayerUpload",
    "CreatePullThroughCacheRule",
    "CreateRepository",
    "CreateRepositoryCreationTemplate",
    "DeleteLifecyclePolicy",
    "DeletePullThroughCacheRule",
    "DeleteRegistryPolicy",
    "DeleteRepository",
    "DeleteRepositoryCreationTemplate",
    "DeleteRepositoryPolicy",
    "DeleteSigningConfiguration",
    "DeregisterPullTimeUpdateExclusion",
    "DescribeImageReplicationStatus",
    "DescribeImageScanFindings",
    "DescribeImageSigningStatus",
    "DescribeImages",
    "DescribePullThroughCacheRules",
    "DescribeRegistry",
    "DescribeReplicationBackfillResults",
    "DescribeRepositories",
    "DescribeRepositoryCreationTemplates",
    "GetAccountSetting",
    "GetAuthorizationToken",
    "GetDownloadUrlForLayer",
    "GetLifecyclePolicy",
    "GetLifecyclePolicyPreview",
    "GetRegistryPolicy",
    "GetRegistryScanningConfiguration",
    "GetRepositoryPolicy",
    "GetSigningConfiguration",
    "InitiateLayerUpload",
    "ListImageReferrers",
    "ListImages",
    "ListPullTimeUpdateExclusions",
    "ListReplicationBackfills",
    "ListTagsForResource",
    "PutAccountSetting",
    "PutImage",
    "PutImageScanningConfiguration",
    "PutImageTagMutability",
    "PutLifecyclePolicy",
    "PutRegistryPolicy",
    "PutRegistryScanningConfiguration",
    "PutReplicationConfiguration",
    "PutSigningConfiguration",
    "RegisterPullTimeUpdateExclusion",
    "SetRepositoryPolicy",
    "StartImageScan",
    "StartLifecyclePolicyPreview",
    "StartReplicationBackfill",
    "StopReplicationBackfill",
    "TagResource",
    "UntagResource",
    "UpdateImageStorageClass",
    "UpdatePullThroughCacheRule",
    "UpdateRepositoryCreationTemplate",
    "UploadLayerPart",
    "ValidatePullThroughCacheRule",
];

/// Why Berth does not serve an operation of the model, for its error message.
pub fn unsupported_reason(operation: &str) -> &'static str {
    match operation {
        op if op.contains("ReplicationBackfill") => {
            "Berth replicates each push as it happens; there is no backfill of earlier images"
        }
        op if op.contains("Signing") => "image signing configuration is not available in Berth",
        "UpdateImageStorageClass" => "Berth has one storage class; images are never archived",
        "PutAccountSetting" | "GetAccountSetting" => "Berth has no account settings",
        op if op.contains("PullTimeUpdateExclusion") => "Berth records every image's last pull time",
        _ => "not available in this version",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sorted_and_unique() {
        assert!(super::OPERATIONS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(super::OPERATIONS.len(), 62);
    }

    #[test]
    fn every_operation_is_an_action_policies_may_name() {
        for op in super::OPERATIONS {
            let action = format!("ecr:{op}");
            assert!(berth_auth::policy::actions::ECR.contains(&action.as_str()), "{action} is not in actions::ECR");
        }
    }
}
