//! Writes the seed corpus, `fuzz/corpus/<target>/`: a few valid inputs per target, made by
//! Berth's own code where there is one (tokens by the signer, sealed blobs by the sealer),
//! so that the fuzzer starts from inputs that reach deep and mutates from there.
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz build -s none && fuzz/target/x86_64-unknown-linux-gnu/release/seeds`
//! (from the repository root).
//! Tokens and sealed blobs use random nonces, so each run writes different bytes: run it
//! when an input format changes, not routinely.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use berth_auth::token::{Claims, ResourceActions, TokenUse};
use berth_fuzz::{KEY_NAME, SealedInput, TOKEN_AUDIENCE, TOKEN_ISSUER, TOKEN_NOW, kek, token_key, token_verifier};
use berth_oci::{Algorithm, Digest, DigestHasher};
use berth_storage::crypt::format::cipher_span;
use berth_storage::crypt::record::blob_wrap_context;
use berth_storage::crypt::{Dek, Run, Sealer, open_stream};
use bytes::Bytes;
use futures::executor::block_on;
use futures::{StreamExt, TryStreamExt, stream};
// Linked for the coverage hooks the fuzz build instruments every crate with; its `main`
// is not used, this file has its own.
use libfuzzer_sys as _;

type Seeds = Vec<(&'static str, Vec<u8>)>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, seeds) in [
        ("manifest", manifest()),
        ("names", names()),
        ("ranges", ranges()),
        ("policy", policy()),
        ("token", token()?),
        ("sealed", sealed()?),
        ("config", config()),
    ] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes)?;
        }
    }
    Ok(())
}

const CONFIG_DIGEST: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
const LAYER_DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const CHILD_DIGEST: &str = "sha256:0f2ca5b5a8f35c5d4e4bd0bdbd46b3a1a5d9f0e6c3ab1f8f5e5b6a0d7c9f3e21";

/// `pick` is the first byte, which selects the request's Content-Type (see the target).
fn with_pick(pick: u8, body: &str) -> Vec<u8> {
    let mut out = vec![pick];
    out.extend_from_slice(body.as_bytes());
    out
}

fn manifest() -> Seeds {
    let oci_manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{CONFIG_DIGEST}","size":2}},
"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{LAYER_DIGEST}","size":0}},
{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"{CHILD_DIGEST}","size":10,"urls":["https://example.invalid/l"]}}],
"annotations":{{"org.opencontainers.image.created":"2026-01-01T00:00:00Z"}}}}"#
    );
    let artifact = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.sbom",
"config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{CONFIG_DIGEST}","size":2}},
"layers":[{{"mediaType":"application/json","digest":"{LAYER_DIGEST}","size":0}}],
"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{CHILD_DIGEST}","size":512}}}}"#
    );
    let oci_index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{CHILD_DIGEST}","size":512,"platform":{{"architecture":"amd64","os":"linux"}}}},
{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{LAYER_DIGEST}","size":7,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#
    );
    let docker = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
"config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{CONFIG_DIGEST}","size":2}},
"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{LAYER_DIGEST}","size":0}}]}}"#
    );
    let docker_list = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[
{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{CHILD_DIGEST}","size":428,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
    );
    let schema1 = r#"{"schemaVersion":1,"name":"library/app","tag":"1","fsLayers":[]}"#;
    vec![
        ("oci-manifest", with_pick(1, &oci_manifest)),
        ("oci-manifest-no-header", with_pick(0, &oci_manifest)),
        ("oci-artifact", with_pick(8, &artifact)),
        ("oci-index", with_pick(2, &oci_index)),
        ("docker-manifest", with_pick(3, &docker)),
        ("docker-list", with_pick(4, &docker_list)),
        ("docker-schema1", with_pick(5, schema1)),
    ]
}

fn names() -> Seeds {
    let mut hasher = DigestHasher::new(Algorithm::Sha256);
    hasher.update(b"the first chunk of an upload");
    let sha512 = Digest::of(Algorithm::Sha512, b"berth").to_string();
    vec![
        ("digest-sha256", LAYER_DIGEST.into()),
        ("digest-sha512", sha512.into_bytes()),
        ("repo", b"library/ubuntu".to_vec()),
        ("repo-deep", b"team-a/app.web/v2__x/sub-1".to_vec()),
        ("tag", b"v1.2.3-rc.1_build".to_vec()),
        ("upload-id", b"3f1e6a8c-1b2d-4c5e-8f90-a1b2c3d4e5f6".to_vec()),
        ("path-manifest", b"/v2/library/ubuntu/manifests/latest".to_vec()),
        ("path-blob", format!("/v2/team/app/blobs/{LAYER_DIGEST}").into_bytes()),
        ("path-upload", b"/v2/team/app/blobs/uploads/3f1e6a8c-1b2d-4c5e-8f90-a1b2c3d4e5f6".to_vec()),
        ("path-referrers", format!("/v2/a/b/referrers/{LAYER_DIGEST}").into_bytes()),
        ("path-tags", b"/v2/a/b/tags/list".to_vec()),
        ("hash-state", hasher.save_state()),
    ]
}

fn ranges() -> Seeds {
    let seed = |size: u64, header: &str| {
        let mut out = size.to_be_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out
    };
    vec![
        ("range-first", seed(1000, "bytes=0-99")),
        ("range-open", seed(1000, "bytes=500-")),
        ("range-suffix", seed(1000, "bytes=-200")),
        ("range-past-end", seed(1000, "bytes=990-5000")),
        ("range-many", seed(1000, "bytes=0-1,5-9")),
        ("content-range", seed(0, "0-1023")),
        ("content-range-bytes", seed(0, "bytes 1024-2047/*")),
        ("content-range-max", seed(u64::MAX, "0-18446744073709551615")),
    ]
}

fn policy() -> Seeds {
    let seed = |doc: &str, request: &str| format!("{doc}\n---\n{request}").into_bytes();
    vec![
        (
            "identity-read-only",
            seed(
                r#"{"Version":"2012-10-17","Statement":[{"Sid":"ReadOnly","Effect":"Allow","Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer","ecr:DescribeRepositories","ecr:ListImages"],"Resource":"arn:aws:ecr:us-west-2:123456789012:repository/*"}]}"#,
                "ecr:BatchGetImage\napp/web\nalice\n",
            ),
        ),
        (
            "identity-own-repos",
            seed(
                r#"{"Version":"2012-10-17","Statement":{"Sid":"Own","Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:us-west-2:123456789012:repository/${aws:username}/*"}}"#,
                "ecr:PutImage\nalice/app\nalice\n",
            ),
        ),
        (
            "repository-public-pull",
            seed(
                r#"{"Version":"2012-10-17","Statement":[{"Sid":"Public","Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage"},{"Sid":"AccountPull","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"]}]}"#,
                "ecr:BatchGetImage\napp\n\n",
            ),
        ),
        (
            "registry-ip-restriction",
            seed(
                r#"{"Version":"2012-10-17","Statement":[{"Sid":"IPRestriction","Effect":"Deny","Principal":"*","Action":"ecr:*","Condition":{"NotIpAddress":{"aws:SourceIp":["54.240.143.0/24","2001:db8::/32"]}}},{"Sid":"All","Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"ecr:*","Resource":"*"}]}"#,
                "ecr:PutImage\n<registry>\nbob\naws:SourceIp=54.240.143.7\n",
            ),
        ),
        (
            "conditions",
            seed(
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","NotAction":"ecr:DeleteRepository","Resource":"arn:aws:ecr:*:123456789012:repository/prod-?/*","Condition":{"StringLike":{"aws:username":"a*"},"DateGreaterThan":{"aws:CurrentTime":"2020-01-01T00:00:00Z"},"NumericLessThanEquals":{"ecr:ResourceTag/tier":"3"},"Bool":{"aws:SecureTransport":"true"},"ForAnyValue:StringEquals":{"aws:TagKeys":["team","cost"]},"Null":{"aws:userid":"true"},"IpAddress":{"aws:SourceIp":"10.0.0.0/8"},"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::123456789012:user/*"}}}}"#,
                "ecr:BatchGetImage\nprod-1/web\nalice\naws:CurrentTime=2026-12-04T00:00:00Z\necr:ResourceTag/tier=2\naws:SecureTransport=true\naws:TagKeys=team\naws:TagKeys=x\naws:SourceIp=10.1.2.3\n",
            ),
        ),
    ]
}

fn token() -> Result<Seeds, Box<dyn std::error::Error>> {
    let key = token_key();
    let access = vec![ResourceActions {
        resource_type: "repository".into(),
        name: "team/app".into(),
        actions: vec!["pull".into(), "push".into()],
    }];
    let claims = |use_| {
        Claims::new(
            use_,
            TOKEN_ISSUER,
            "alice",
            TOKEN_AUDIENCE,
            TOKEN_NOW - 10,
            Duration::from_secs(300),
            access.clone(),
        )
    };
    let header = format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{}"}}"#, key.kid());
    let payload = r#"{"iss":"berth-fuzz","sub":"","aud":["other","registry.fuzz"],"exp":1800000300,"nbf":1799999990,"iat":1799999990,"jti":"00","access":[],"berth_use":"login"}"#;
    let signed_mode = |h: &str, p: &str| {
        let mut out = vec![1u8];
        out.extend_from_slice(h.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(p.as_bytes());
        out
    };
    let unsigned = format!("{}.{}.", URL_SAFE_NO_PAD.encode(&header), URL_SAFE_NO_PAD.encode(payload));
    let mut seeds = Vec::new();
    for (name, use_) in [("access", TokenUse::Access), ("refresh", TokenUse::Refresh), ("login", TokenUse::Login)] {
        let token = key.sign(&claims(use_))?;
        // A seed that does not verify would only reach the refusals.
        token_verifier().verify(&token, TOKEN_AUDIENCE, use_, TOKEN_NOW)?;
        seeds.push((name, token.into_bytes()));
    }
    seeds.extend([
        ("unsigned", unsigned.into_bytes()),
        ("signed-audience-list", signed_mode(&header, payload)),
        ("signed-alg-none", signed_mode(&header.replace("ES256", "none"), payload)),
    ]);
    Ok(seeds)
}

/// Deterministic plaintext (xorshift64*).
fn plaintext(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A blob sealed as an upload in one request seals it, with its wrapped data key and runs.
fn seal(plain: &[u8]) -> Result<(Digest, Vec<u8>, Vec<u8>, Vec<u8>), Box<dyn std::error::Error>> {
    let digest = Digest::sha256_of(plain);
    let dek = Dek::generate()?;
    let wrapped = kek().wrap(&dek, &blob_wrap_context(&digest, KEY_NAME))?;
    let mut sealer = Sealer::new(dek.clone(), 0, &[])?;
    let mut object = sealer.push(plain)?.to_vec();
    let mut runs: Vec<Run> = sealer.run().into_iter().collect();
    let (last, run) = Sealer::new(dek, sealer.next_segment(), sealer.tail())?.finish(&digest)?;
    object.extend_from_slice(&last);
    runs.push(run);
    Ok((digest, wrapped, Run::encode(&runs), object))
}

fn sealed() -> Result<Seeds, Box<dyn std::error::Error>> {
    let mut seeds = Vec::new();
    let read = |digest: &Digest,
                wrapped: &[u8],
                runs: &[u8],
                object: &[u8],
                len: u64,
                range: std::ops::Range<u64>,
                chunking| {
        let (_, bytes) = cipher_span(&range, len);
        let object = &object[bytes.start as usize..bytes.end as usize];
        let seed = SealedInput {
            digest: digest.clone(),
            wrapped,
            len,
            start: range.start,
            end: range.end,
            chunking,
            runs,
            object,
        }
        .encode();
        // A seed that does not open would only reach the refusals.
        let input = SealedInput::decode(&seed).ok_or("a sealed seed does not decode")?;
        let dek = kek().unwrap(input.wrapped, &blob_wrap_context(&input.digest, KEY_NAME))?;
        let pieces: Vec<std::io::Result<Bytes>> =
            input.pieces().into_iter().map(|p| Ok(Bytes::copy_from_slice(p))).collect();
        let plain: Vec<Bytes> = block_on(
            open_stream(stream::iter(pieces).boxed(), dek, Run::decode(input.runs)?, input.digest, len, range.clone())
                .try_collect(),
        )?;
        let plain = plain.concat();
        if plain.len() as u64 != range.end - range.start {
            return Err("a sealed seed opens to the wrong length".into());
        }
        Ok::<_, Box<dyn std::error::Error>>(seed)
    };
    // Two segments and a bit: 64 KiB + 3,000 bytes.
    let len = 65_536 + 3_000;
    let (digest, wrapped, runs, object) = seal(&plaintext(len, 1))?;
    let len = len as u64;
    seeds.push(("two-segments-whole", read(&digest, &wrapped, &runs, &object, len, 0..len, 0)?));
    seeds.push(("two-segments-tail-range", read(&digest, &wrapped, &runs, &object, len, 66_000..67_000, 3)?));
    let (digest, wrapped, runs, object) = seal(&plaintext(1_000, 2))?;
    seeds.push(("one-segment-chunked", read(&digest, &wrapped, &runs, &object, 1_000, 0..1_000, 1)?));
    seeds.push(("one-segment-middle", read(&digest, &wrapped, &runs, &object, 1_000, 10..20, 0)?));
    let (digest, wrapped, runs, object) = seal(&[])?;
    seeds.push(("empty", read(&digest, &wrapped, &runs, &object, 0, 0..0, 0)?));
    Ok(seeds)
}

fn config() -> Seeds {
    vec![
        ("empty", b"".to_vec()),
        (
            "readme",
            b"listen = \"0.0.0.0:5000\"\ndata_dir = \"/var/lib/berth\"\n\n[uploads]\nmax_age = \"6h\"\n\n[delete]\nblobs = false\n\n[log]\nformat = \"json\"\n".to_vec(),
        ),
        (
            "tls",
            b"listen = \"0.0.0.0:5000\"\n\n[tls]\ncert_file = \"/etc/berth/tls/cert.pem\"\nkey_file = \"/etc/berth/tls/key.pem\"\nreload_interval = \"1h 30m\"\n".to_vec(),
        ),
        (
            "postgres",
            b"[metadata]\nbackend = \"postgres\"\nurl = \"postgres://berth:PASSWORD@db.internal:5432/berth\"\n".to_vec(),
        ),
        (
            "webhooks",
            b"[[events.webhooks]]\nname = \"deployer\"\nurl = \"https://deploy.internal/hooks/berth\"\nsecret = \"a-long-random-string\"\nevents = [\"manifest.push\"]\nrepositories = [\"prod/*\"]\ntags = [\"v*\", \"latest\"]\nformat = \"cloudevents\"\nheaders = { Authorization = \"Bearer x\" }\ntimeout = \"5s\"\nmax_attempts = 10\n".to_vec(),
        ),
        ("unknown-key", b"listen = \"127.0.0.1:5000\"\nnot_a_key = 1\n".to_vec()),
    ]
}
