//! Bearer tokens of the Docker token spec: JWTs signed with ES256 (ECDSA P-256, SHA-256).
//!
//! The token service signs [`Claims`] with a [`SigningKey`]; every registry replica checks
//! them with a [`Verifier`] holding the trusted public keys, without calling anyone back.
//! Keys are named by their RFC 7638 JWK thumbprint ([`SigningKey::kid`]), which is what
//! Distribution v3 expects in `kid` and what a JWKS document ([`Jwks`]) publishes.
//!
//! Layout: `key` (key pairs, PEM loading, JWK and thumbprint), `claims` (what a token says),
//! `verify` (the checks, in order), `tests` (round trips and every refusal). The JWS
//! encoding, parsing and ES256 signatures are `jsonwebtoken`'s (on aws-lc-rs); what is
//! Berth's is which keys, which claims, and the checks around them.
//!
//! Invariants:
//! - One algorithm. Tokens are written with `alg` `ES256`, and accepted only with `alg`
//!   exactly `ES256`: the header's `alg` is refused unless it is ES256 before any key is
//!   chosen, the library's `Validation` lists ES256 alone, and the key is looked up by `kid`
//!   among the trusted P-256 public keys only (never taken from the token's `jwk`, `jku`,
//!   `x5u` or `x5c`). So `none`, HMAC-with-the-public-key and other confusions cannot
//!   happen: no other algorithm is enabled and no other kind of key is ever held.
//! - The signature is verified before a single claim is read: the payload of an unverified
//!   token is never parsed (`jsonwebtoken::decode` checks the signature over the text as
//!   sent, then deserializes the claims).
//! - A token is refused by its length before any of it is decoded.
//! - Every token says what it is for ([`TokenUse`]), and a token for one use is refused for
//!   any other (a refresh token is not a bearer token for the registry).
//! - Errors are safe to show to a client: they never carry key material or echo a token.

mod claims;
mod key;
mod verify;

#[cfg(test)]
mod tests;

pub use claims::{Claims, ResourceActions, TokenUse};
pub use key::{Jwk, Jwks, SigningKey};
pub use verify::Verifier;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Why a token could not be made or was refused. `Display` is written for a client to read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS of three unpadded base64url parts with JSON inside, or too large.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header names an algorithm other than ES256, or none.
    #[error("token algorithm not accepted: {0} (only ES256 is)")]
    Algorithm(String),
    /// The header's `kid` is missing or names no trusted key.
    #[error("token signed by unknown key: {0}")]
    UnknownKey(String),
    #[error("token signature is invalid")]
    Signature,
    #[error("token issuer not trusted: {0}")]
    Issuer(String),
    #[error("token audience does not include {0}")]
    Audience(String),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    /// A valid token presented for something it was not issued for.
    #[error("token is a {found} token, not a {expected} token")]
    WrongUse { expected: TokenUse, found: TokenUse },
    /// A signing key could not be generated, loaded or used.
    #[error("signing key: {0}")]
    Key(String),
}

/// JWS base64url: URL-safe alphabet, no padding. The engine refuses padding, the standard
/// alphabet's `+` and `/`, and non-canonical trailing bits, so each token has one spelling.
fn b64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64url_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text)
}
