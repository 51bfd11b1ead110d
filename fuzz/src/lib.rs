//! Fixtures and input formats shared by the fuzz targets (`fuzz_targets/`) and the seed
//! corpus generator (`examples/seeds.rs`), so that a seed written by one is read the same way
//! by the other.
//!
//! Every target has one rule: whatever the bytes, the code under test returns (a value or an
//! error) without panicking, overflowing or hanging. Properties the callers rely on (a range
//! inside the blob, a value that prints back to itself) are asserted as well: a broken one
//! is a bug too.
//!
//! The keys here are fixtures: trusted by nothing but these targets.

use std::time::Duration;

use berth_auth::token::{SigningKey, Verifier};
use berth_oci::Digest;
use berth_storage::crypt::Kek;

/// The token signing key of the `token` target (P-256, PKCS#8). A fixture: it signs the
/// seed tokens and nothing else.
pub const TOKEN_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+wUc0y+SizQNTNNm
bi07JVFwcr7YU61bXAdsZ0kntLGhRANCAAQ3hA23iM8/lzkGxSoYpAdzv5+7Hy7e
kh0HCcICa0pPbO4acSrjmpOeVdZCO5li2VXUZM+kz1hNXT9CqsMrvZ/0
-----END PRIVATE KEY-----
";
pub const TOKEN_ISSUER: &str = "berth-fuzz";
pub const TOKEN_AUDIENCE: &str = "registry.fuzz";
/// The clock of the `token` target: seed tokens are valid at this instant.
pub const TOKEN_NOW: i64 = 1_800_000_000;

/// The fixture signing key.
pub fn token_key() -> SigningKey {
    match SigningKey::from_pem(TOKEN_KEY_PEM) {
        Ok(key) => key,
        Err(e) => panic!("the fixture token key does not load: {e}"),
    }
}

/// A verifier trusting only the fixture key, with a minute of leeway.
pub fn token_verifier() -> Verifier {
    Verifier::new(TOKEN_ISSUER, &[token_key()], Duration::from_secs(60))
}

/// The key-encryption key of the `sealed` target.
pub const KEK_ID: &str = "fuzz.1";
pub const KEK_RAW: [u8; 32] = *b"berth fuzz key-encryption key 32";
/// The key name blob data keys are wrapped for (part of the wrap context).
pub const KEY_NAME: &str = "fuzz";

pub fn kek() -> Kek {
    match Kek::from_raw(KEK_ID, KEK_RAW) {
        Ok(kek) => kek,
        Err(e) => panic!("the fixture KEK does not load: {e}"),
    }
}

/// The wrapped data key is AES-256-GCM: a 12-byte nonce, the 32-byte key, a 16-byte tag.
pub const WRAPPED_LEN: usize = 12 + 32 + 16;

/// The `sealed` target's input: a sealed object as the metadata store and the object
/// store would hand it to `open_stream`, plus how the read is asked for and chunked.
///
/// ```text
/// digest   32 bytes    sha256 of the plaintext (also the final segment's AAD)
/// wrapped  60 bytes    the data key, wrapped by the fixture KEK for (digest, KEY_NAME)
/// len       8 bytes BE the plaintext length the record claims
/// start     8 bytes BE the range asked for: start = start % (len + 1),
/// end       8 bytes BE   end = start + end % (len - start + 1) (the caller's precondition)
/// chunking  1 byte     the object store's piece sizes (see `SealedInput::pieces`)
/// runs      1 byte n, then n * 15 bytes (`Run::encode`)
/// object    the rest: the sealed object bytes from the range's first segment on
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedInput<'a> {
    pub digest: Digest,
    pub wrapped: &'a [u8],
    pub len: u64,
    pub start: u64,
    pub end: u64,
    pub chunking: u8,
    pub runs: &'a [u8],
    pub object: &'a [u8],
}

/// Plaintext lengths above this are not fuzzed: a record's length is the byte count of an
/// upload that was stored, far below it, and `sealed_len` of a length near `u64::MAX` is
/// not representable by construction.
pub const MAX_SEALED_LEN: u64 = 1 << 60;

impl<'a> SealedInput<'a> {
    pub fn decode(data: &'a [u8]) -> Option<SealedInput<'a>> {
        let (digest, rest) = data.split_at_checked(32)?;
        let (wrapped, rest) = rest.split_at_checked(WRAPPED_LEN)?;
        let (len, rest) = take_u64(rest)?;
        let (start, rest) = take_u64(rest)?;
        let (end, rest) = take_u64(rest)?;
        let (&chunking, rest) = rest.split_first()?;
        let (&n, rest) = rest.split_first()?;
        let (runs, object) = rest.split_at_checked(usize::from(n) * 15)?;
        let digest: Digest = format!("sha256:{}", hex::encode(digest)).parse().ok()?;
        let len = len % MAX_SEALED_LEN;
        let start = start % (len + 1);
        let end = start + end % (len - start + 1);
        Some(SealedInput { digest, wrapped, len, start, end, chunking, runs, object })
    }

    /// Writes an input that `decode` reads back (with `start`/`end` in range already).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&hex::decode(self.digest.hex()).unwrap_or_default());
        out.extend_from_slice(self.wrapped);
        out.extend_from_slice(&self.len.to_be_bytes());
        out.extend_from_slice(&self.start.to_be_bytes());
        out.extend_from_slice(&self.end.to_be_bytes());
        out.push(self.chunking);
        out.push(u8::try_from(self.runs.len() / 15).unwrap_or(u8::MAX));
        out.extend_from_slice(self.runs);
        out.extend_from_slice(self.object);
        out
    }

    /// The object cut into the pieces a store might deliver: one piece for `chunking` 0,
    /// else sizes cycling through a sequence that `chunking` seeds (1 byte to ~70 KB, so
    /// pieces end inside tags, inside segments and exactly on segment edges).
    pub fn pieces(&self) -> Vec<&'a [u8]> {
        if self.chunking == 0 {
            return vec![self.object];
        }
        const SIZES: [usize; 8] = [1, 15, 16, 17, 4096, 65_535, 65_552, 70_001];
        let mut out = Vec::new();
        let mut rest = self.object;
        let mut i = usize::from(self.chunking);
        while !rest.is_empty() {
            let size = SIZES[i % SIZES.len()].min(rest.len());
            let (piece, tail) = rest.split_at(size);
            out.push(piece);
            rest = tail;
            i = i.wrapping_mul(5).wrapping_add(3);
        }
        out
    }
}

fn take_u64(data: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = data.split_at_checked(8)?;
    let mut b = [0u8; 8];
    b.copy_from_slice(head);
    Some((u64::from_be_bytes(b), rest))
}

/// The `policy` target's input: a policy document, then after a line `---` the request.
///
/// ```text
/// {"Version":"2012-10-17","Statement":[...]}
/// ---
/// ecr:BatchGetImage          the action
/// app/web                    the repository ("<registry>": the registry itself)
/// alice                      the user ("" : anonymous)
/// aws:SourceIp=10.0.0.1      condition keys, one a line; repeating a key adds a value
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInput<'a> {
    pub document: &'a str,
    pub action: &'a str,
    pub repository: &'a str,
    pub user: &'a str,
    pub context: Vec<(&'a str, &'a str)>,
}

impl<'a> PolicyInput<'a> {
    pub fn decode(text: &'a str) -> PolicyInput<'a> {
        let (document, request) = text.split_once("\n---\n").unwrap_or((text, ""));
        let mut lines = request.lines();
        let action = lines.next().unwrap_or("");
        let repository = lines.next().unwrap_or("");
        let user = lines.next().unwrap_or("");
        let context = lines.filter_map(|l| l.split_once('=')).collect();
        PolicyInput { document, action, repository, user, context }
    }
}

/// The `ranges` target's input: the blob size (8 bytes, big-endian), then the header value.
pub fn ranges_decode(data: &[u8]) -> Option<(u64, &str)> {
    let (size, rest) = take_u64(data)?;
    Some((size, std::str::from_utf8(rest).ok()?))
}
