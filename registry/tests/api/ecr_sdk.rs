//! ECR's API through the Rust AWS SDK (`aws-sdk-ecr`), a client Berth's code shares nothing
//! with: it signs with its own Signature Version 4, serializes inputs and parses outputs and
//! errors from ECR's Smithy model. Berth runs with authentication on; the SDK gets
//! `endpoint_url` and the static credentials of access keys made through the admin API, as a
//! user gets them from `berth admin key create`. Assertions are on the typed outputs and the
//! typed error variants, so a member Berth names or types wrongly shows up as a missing value
//! or an unhandled error here.

use aws_sdk_ecr::Client;
use aws_sdk_ecr::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ecr::error::ProvideErrorMetadata;
use aws_sdk_ecr::primitives::Blob;
use aws_sdk_ecr::types::{
    ImageFailureCode, ImageIdentifier, ImageScanningConfiguration, ImageTagMutability, LayerAvailability, Tag,
    TagStatus,
};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::*;

const ADMIN_PW: &str = "admin-password-for-ecr-sdk";
const REGION: &str = "local";

struct Ecr {
    t: TestServer,
    /// The admin's access key: may do everything.
    admin: Client,
    /// A user whose policy allows reading and denies ecr:CreateRepository.
    reader: Client,
}

async fn start() -> Ecr {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.auth.enabled = true;
    config.auth.admin_password = Some(ADMIN_PW.to_owned().into());
    config.auth.region = REGION.to_owned();
    let t = TestServer::start_with(dir, config).await;
    let (id, secret) = access_key(&t, "admin").await;
    let admin = sdk(&t, &id, &secret);
    let r =
        admin_api(&t, reqwest::Method::POST, "users", json!({"name": "reader", "password": "reader-password-1"})).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["ecr:Describe*", "ecr:List*", "ecr:BatchGetImage"], "Resource": "*"},
        {"Effect": "Deny", "Action": "ecr:CreateRepository", "Resource": "*"}]});
    let r = admin_api(&t, reqwest::Method::PUT, "users/reader/policies/main", policy).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let (id, secret) = access_key(&t, "reader").await;
    let reader = sdk(&t, &id, &secret);
    Ecr { t, admin, reader }
}

async fn admin_api(t: &TestServer, method: reqwest::Method, path: &str, body: Value) -> reqwest::Response {
    t.client
        .request(method, t.url(&format!("/api/v1/{path}")))
        .basic_auth("admin", Some(ADMIN_PW))
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// A new access key of `user` through the admin API: (id, secret).
async fn access_key(t: &TestServer, user: &str) -> (String, String) {
    let r = admin_api(t, reqwest::Method::POST, &format!("users/{user}/access-keys"), json!({})).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let key: Value = r.json().await.unwrap();
    (key["id"].as_str().unwrap().to_owned(), key["secret"].as_str().unwrap().to_owned())
}

/// The SDK's client for Berth: its endpoint, its region, static credentials, and smithy's own
/// hyper client without TLS (the tests speak plain HTTP to 127.0.0.1). No retries: a refusal
/// is the answer under test.
fn sdk(t: &TestServer, id: &str, secret: &str) -> Client {
    let config = aws_sdk_ecr::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(t.server.url())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(id, secret, None, None, "berth-admin-key"))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .retry_config(aws_sdk_ecr::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

fn oci_manifest(config: &[u8], layers: &[&[u8]]) -> String {
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": config.len()},
        "layers": layers.iter().map(|l| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(l), "size": l.len()
        })).collect::<Vec<_>>(),
    })
    .to_string()
}

/// Uploads `blob` through InitiateLayerUpload, UploadLayerPart (parts of `part` bytes) and
/// CompleteLayerUpload; returns its digest.
async fn upload_layer(ecr: &Client, repo: &str, blob: &[u8], part: usize) -> String {
    let up = ecr.initiate_layer_upload().repository_name(repo).send().await.unwrap();
    let upload_id = up.upload_id().unwrap().to_owned();
    assert!(up.part_size().unwrap() > 0, "{up:?}");
    for (i, chunk) in blob.chunks(part).enumerate() {
        let first = (i * part) as i64;
        let r = ecr
            .upload_layer_part()
            .repository_name(repo)
            .upload_id(&upload_id)
            .part_first_byte(first)
            .part_last_byte(first + chunk.len() as i64 - 1)
            .layer_part_blob(Blob::new(chunk.to_vec()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.last_byte_received(), Some(first + chunk.len() as i64 - 1));
        assert_eq!(r.upload_id(), Some(upload_id.as_str()));
    }
    let digest = sha256(blob);
    let r = ecr
        .complete_layer_upload()
        .repository_name(repo)
        .upload_id(&upload_id)
        .layer_digests(&digest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.layer_digest(), Some(digest.as_str()));
    digest
}

#[tokio::test]
async fn sdk_repositories_lifecycle_policies_and_their_errors() {
    let Ecr { t, admin, .. } = start().await;
    let r = admin
        .create_repository()
        .repository_name("sdk/app")
        .tags(Tag::builder().key("team").value("sdk").build().unwrap())
        .image_tag_mutability(ImageTagMutability::Immutable)
        .image_scanning_configuration(ImageScanningConfiguration::builder().scan_on_push(true).build())
        .send()
        .await
        .unwrap();
    let repo = r.repository().unwrap();
    assert_eq!(repo.repository_name(), Some("sdk/app"));
    assert_eq!(repo.image_tag_mutability(), Some(&ImageTagMutability::Immutable));
    assert_eq!(repo.image_scanning_configuration().map(|c| c.scan_on_push()), Some(true));
    let account = repo.registry_id().unwrap().to_owned();
    assert_eq!(repo.repository_arn(), Some(format!("arn:aws:ecr:{REGION}:{account}:repository/sdk/app").as_str()));
    let uri = format!("{}/sdk/app", t.server.url().trim_start_matches("http://"));
    assert_eq!(repo.repository_uri(), Some(uri.as_str()));
    assert!(repo.created_at().is_some());

    let e = admin.create_repository().repository_name("sdk/app").send().await.unwrap_err().into_service_error();
    assert!(e.is_repository_already_exists_exception(), "{e:?}");

    let r = admin.describe_repositories().repository_names("sdk/app").send().await.unwrap();
    assert_eq!(r.repositories().len(), 1);
    assert_eq!(r.repositories()[0].repository_name(), Some("sdk/app"));
    let e = admin.describe_repositories().repository_names("sdk/none").send().await.unwrap_err().into_service_error();
    assert!(e.is_repository_not_found_exception(), "{e:?}");
    assert!(e.message().unwrap_or_default().contains("sdk/none"), "{e:?}");

    let tags = admin.list_tags_for_resource().resource_arn(repo.repository_arn().unwrap()).send().await.unwrap();
    assert_eq!(tags.tags().iter().map(|t| (t.key(), t.value())).collect::<Vec<_>>(), [("team", "sdk")]);

    let policy = json!({"rules": [{"rulePriority": 1, "description": "one untagged",
        "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1},
        "action": {"type": "expire"}}]})
    .to_string();
    let r =
        admin.put_lifecycle_policy().repository_name("sdk/app").lifecycle_policy_text(&policy).send().await.unwrap();
    assert_eq!(r.repository_name(), Some("sdk/app"));
    let r = admin.get_lifecycle_policy().repository_name("sdk/app").send().await.unwrap();
    let stored: Value = serde_json::from_str(r.lifecycle_policy_text().unwrap()).unwrap();
    assert_eq!(stored, serde_json::from_str::<Value>(&policy).unwrap());
    let e = admin
        .put_lifecycle_policy()
        .repository_name("sdk/app")
        .lifecycle_policy_text(r#"{"rules": []}"#)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_invalid_parameter_exception(), "{e:?}");
    admin.delete_lifecycle_policy().repository_name("sdk/app").send().await.unwrap();
    let e = admin.get_lifecycle_policy().repository_name("sdk/app").send().await.unwrap_err().into_service_error();
    assert!(e.is_lifecycle_policy_not_found_exception(), "{e:?}");

    let r = admin.delete_repository().repository_name("sdk/app").send().await.unwrap();
    assert_eq!(r.repository().and_then(|r| r.repository_name()), Some("sdk/app"));
    let e = admin.delete_repository().repository_name("sdk/app").send().await.unwrap_err().into_service_error();
    assert!(e.is_repository_not_found_exception(), "{e:?}");
    t.server.stop().await;
}

#[tokio::test]
async fn sdk_push_through_layer_operations_then_list_describe_and_delete_images() {
    let Ecr { t, admin, .. } = start().await;
    admin.create_repository().repository_name("sdk/images").send().await.unwrap();
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    // Two parts of 5 MiB and a last, smaller one: ECR's parts are at least 5 MiB but the last.
    let layer = data(10 * 1024 * 1024 + 333, 19);
    let digests = [sha256(&config), sha256(&layer)];
    let r = admin
        .batch_check_layer_availability()
        .repository_name("sdk/images")
        .set_layer_digests(Some(digests.to_vec()))
        .send()
        .await
        .unwrap();
    let unavailable =
        r.layers().iter().filter(|l| l.layer_availability() == Some(&LayerAvailability::Unavailable)).count();
    assert_eq!(unavailable + r.failures().len(), 2, "{r:?}");

    upload_layer(&admin, "sdk/images", &config, 5 * 1024 * 1024).await;
    upload_layer(&admin, "sdk/images", &layer, 5 * 1024 * 1024).await;
    let r = admin
        .batch_check_layer_availability()
        .repository_name("sdk/images")
        .set_layer_digests(Some(digests.to_vec()))
        .send()
        .await
        .unwrap();
    assert!(r.failures().is_empty(), "{r:?}");
    let mut seen: Vec<_> = r
        .layers()
        .iter()
        .map(|l| (l.layer_digest().unwrap().to_owned(), l.layer_availability().cloned(), l.layer_size()))
        .collect();
    seen.sort();
    let mut want = vec![
        (sha256(&config), Some(LayerAvailability::Available), Some(config.len() as i64)),
        (sha256(&layer), Some(LayerAvailability::Available), Some(layer.len() as i64)),
    ];
    want.sort();
    assert_eq!(seen, want);

    let manifest = oci_manifest(&config, &[&layer]);
    let r = admin
        .put_image()
        .repository_name("sdk/images")
        .image_manifest(&manifest)
        .image_manifest_media_type("application/vnd.oci.image.manifest.v1+json")
        .image_tag("v1")
        .send()
        .await
        .unwrap();
    let image = r.image().unwrap();
    let digest = sha256(manifest.as_bytes());
    assert_eq!(image.image_id().and_then(|i| i.image_digest()), Some(digest.as_str()));
    assert_eq!(image.image_id().and_then(|i| i.image_tag()), Some("v1"));
    // An untagged image beside it.
    let untagged = oci_manifest(&config, &[]);
    admin.put_image().repository_name("sdk/images").image_manifest(&untagged).send().await.unwrap();

    let r = admin.list_images().repository_name("sdk/images").send().await.unwrap();
    let mut ids: Vec<_> = r
        .image_ids()
        .iter()
        .map(|i| (i.image_digest().unwrap().to_owned(), i.image_tag().map(str::to_owned)))
        .collect();
    ids.sort();
    let mut want = vec![(digest.clone(), Some("v1".to_owned())), (sha256(untagged.as_bytes()), None)];
    want.sort();
    assert_eq!(ids, want);
    let tagged = admin
        .list_images()
        .repository_name("sdk/images")
        .filter(aws_sdk_ecr::types::ListImagesFilter::builder().tag_status(TagStatus::Tagged).build())
        .send()
        .await
        .unwrap();
    assert_eq!(tagged.image_ids().len(), 1);

    let r = admin
        .describe_images()
        .repository_name("sdk/images")
        .image_ids(ImageIdentifier::builder().image_tag("v1").build())
        .send()
        .await
        .unwrap();
    let [d] = r.image_details() else { panic!("one image: {r:?}") };
    assert_eq!(d.image_digest(), Some(digest.as_str()));
    assert_eq!(d.image_tags(), ["v1"]);
    assert_eq!(d.image_manifest_media_type(), Some("application/vnd.oci.image.manifest.v1+json"));
    assert_eq!(d.artifact_media_type(), Some("application/vnd.oci.image.config.v1+json"));
    assert!(d.image_size_in_bytes().unwrap() >= layer.len() as i64, "{d:?}");
    let pushed = d.image_pushed_at().unwrap().secs();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - pushed).abs() < 600, "imagePushedAt {pushed}, now {now}");
    let e = admin
        .describe_images()
        .repository_name("sdk/images")
        .image_ids(ImageIdentifier::builder().image_tag("none").build())
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_image_not_found_exception(), "{e:?}");

    let r = admin
        .batch_get_image()
        .repository_name("sdk/images")
        .image_ids(ImageIdentifier::builder().image_tag("v1").build())
        .accepted_media_types("application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.images().len(), 1);
    assert_eq!(r.images()[0].image_manifest(), Some(manifest.as_str()), "byte for byte");

    let e = admin.delete_repository().repository_name("sdk/images").send().await.unwrap_err().into_service_error();
    assert!(e.is_repository_not_empty_exception(), "{e:?}");
    let missing = format!("sha256:{}", "3".repeat(64));
    let r = admin
        .batch_delete_image()
        .repository_name("sdk/images")
        .image_ids(ImageIdentifier::builder().image_digest(sha256(untagged.as_bytes())).build())
        .image_ids(ImageIdentifier::builder().image_digest(&missing).build())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.image_ids().iter().map(|i| i.image_digest().unwrap()).collect::<Vec<_>>(),
        [sha256(untagged.as_bytes())]
    );
    let [f] = r.failures() else { panic!("one failure: {r:?}") };
    assert_eq!(f.image_id().and_then(|i| i.image_digest()), Some(missing.as_str()));
    assert_eq!(f.failure_code(), Some(&ImageFailureCode::ImageNotFound));

    let r = admin.delete_repository().repository_name("sdk/images").force(true).send().await.unwrap();
    assert_eq!(r.repository().and_then(|r| r.repository_name()), Some("sdk/images"));
    let e = admin.list_images().repository_name("sdk/images").send().await.unwrap_err().into_service_error();
    assert!(e.is_repository_not_found_exception(), "{e:?}");
    t.server.stop().await;
}

#[tokio::test]
async fn sdk_authorization_token_signs_in_and_a_denying_policy_is_access_denied() {
    let Ecr { t, admin, reader } = start().await;
    let r = admin.get_authorization_token().send().await.unwrap();
    let [data] = r.authorization_data() else { panic!("one authorization: {r:?}") };
    assert_eq!(data.proxy_endpoint(), Some(t.server.url().as_str()));
    let decoded = base64::engine::general_purpose::STANDARD.decode(data.authorization_token().unwrap()).unwrap();
    let (user, password) = std::str::from_utf8(&decoded).unwrap().split_once(':').unwrap();
    assert_eq!(user, "AWS");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(data.expires_at().unwrap().secs() > now);
    // The token is a password for the registry API, as `docker login -u AWS` uses it.
    let r = t.client.get(t.url("/v2/")).basic_auth(user, Some(password)).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // The reader signs correctly (it may describe) and is denied what its policy denies.
    admin.create_repository().repository_name("sdk/shared").send().await.unwrap();
    let r = reader.describe_repositories().send().await.unwrap();
    assert!(r.repositories().iter().any(|r| r.repository_name() == Some("sdk/shared")), "{r:?}");
    let e = reader.create_repository().repository_name("sdk/denied").send().await.unwrap_err();
    let raw_status = e.raw_response().map(|r| r.status().as_u16());
    let e = e.into_service_error();
    assert_eq!(e.code(), Some("AccessDeniedException"), "{e:?}");
    assert_eq!(raw_status, Some(403));
    let e = admin.describe_repositories().repository_names("sdk/denied").send().await.unwrap_err().into_service_error();
    assert!(e.is_repository_not_found_exception(), "nothing was created: {e:?}");

    // A wrong secret is refused, whatever the key may do.
    let (id, _) = access_key(&t, "admin").await;
    let wrong = sdk(&t, &id, "not-the-secret-of-this-key");
    let e = wrong.describe_repositories().send().await.unwrap_err().into_service_error();
    assert!(
        matches!(e.code(), Some("InvalidSignatureException" | "SignatureDoesNotMatch" | "UnrecognizedClientException")),
        "{e:?}"
    );
    t.server.stop().await;
}
