//! Checking a token, in an order that matters: size and shape, then the header (algorithm,
//! key), then the signature, and only then the claims. Nothing from the payload is parsed
//! before the signature over it has been verified.
//!
//! The JWS itself (base64url, the header's JSON, the ES256 signature, the claims' JSON, the
//! audience) is read by `jsonwebtoken`, whose [`Validation`] allows ES256 alone. What is
//! checked here, around it: a size cap before anything is decoded, the header's `crit` and
//! `typ`, the `kid` looked up among the trusted keys (never a key the token carries), the
//! issuer (so the refusal can name it), the times against the caller's clock, and the use.

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::errors::{Error as JwtError, ErrorKind};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::claims::{Claims, ResourceActions, TokenUse};
use super::key::SigningKey;
use super::{TokenError, b64url_decode};

/// Longest token accepted. Ours are well under 2 KiB unless `access` is long; the cap keeps
/// a hostile `Authorization` header from costing more than a bounded decode.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Longest encoded header accepted: ours is about 130 characters.
const MAX_HEADER_LEN: usize = 4 * 1024;
/// Longest kid echoed back in an error, so a client-chosen string stays short in logs.
const MAX_KID_ECHO: usize = 64;
/// The registered claims a token must carry, checked present by `jsonwebtoken` (`iat` and
/// `jti` are required by [`RawClaims`] itself).
const REQUIRED_CLAIMS: [&str; 5] = ["iss", "sub", "aud", "exp", "nbf"];

/// Checks tokens against the trusted issuer and public keys. Holds no secrets.
#[derive(Clone, Debug)]
pub struct Verifier {
    issuer: String,
    /// Public keys by kid (RFC 7638 thumbprint).
    keys: HashMap<String, DecodingKey>,
    /// Clock skew allowed between the token service and this replica, in seconds.
    leeway: i64,
    /// What `jsonwebtoken` checks of every token; the audience is added per call.
    validation: Validation,
}

/// The claims as written by any issuer. `aud` (a string or an array, RFC 7519 §4.1.3) is
/// read and checked by `jsonwebtoken`, which refuses any other form. serde's derive refuses
/// duplicate members, so a payload cannot say `sub` twice.
#[derive(Deserialize)]
struct RawClaims {
    iss: String,
    sub: String,
    exp: i64,
    nbf: i64,
    iat: i64,
    jti: String,
    #[serde(default)]
    access: Vec<ResourceActions>,
    berth_use: TokenUse,
    #[serde(default)]
    berth_uid: Option<String>,
    #[serde(default)]
    berth_gen: Option<i64>,
}

impl Verifier {
    /// A verifier trusting tokens from `issuer` signed by any of `keys` (several during a
    /// key rotation), with `leeway` of clock skew on every time check.
    pub fn new(issuer: impl Into<String>, keys: &[SigningKey], leeway: Duration) -> Verifier {
        // The uncompressed point `04 || x || y`: what the aws-lc provider verifies ES256
        // with, and the same bytes `DecodingKey::from_ec_components` builds from a JWK.
        let keys = keys.iter().map(|k| (k.kid().to_owned(), DecodingKey::from_ec_der(k.public_key_bytes()))).collect();
        let leeway_secs = leeway.as_secs();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_required_spec_claims(&REQUIRED_CLAIMS);
        validation.leeway = leeway_secs;
        // `exp` and `nbf` are checked below instead: jsonwebtoken reads the system clock,
        // while a verifier is handed `now` (one clock for a request and the token cache,
        // and testable), and it still accepts a token at its `exp` second, which RFC 7519
        // §4.1.4 says must be refused. The issuer is compared below so the refusal can
        // name it.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = true;
        Verifier { issuer: issuer.into(), keys, leeway: i64::try_from(leeway_secs).unwrap_or(i64::MAX), validation }
    }

    /// The claims of `token` if it is an ES256 token signed by a trusted key, from our
    /// issuer, for `audience`, within its validity window at `now` (Unix seconds), and for
    /// the `expected` use.
    pub fn verify(&self, token: &str, audience: &str, expected: TokenUse, now: i64) -> Result<Claims, TokenError> {
        let malformed = |why: &str| TokenError::Malformed(why.to_owned());
        if token.len() > MAX_TOKEN_LEN {
            return Err(malformed("token is too long"));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("a token has three dot-separated parts"));
        };
        if header_b64.len() > MAX_HEADER_LEN {
            return Err(malformed("header is too long"));
        }

        // The header only: its `kid` says which key to verify with.
        let header = jsonwebtoken::decode_header(token).map_err(|e| header_refused(header_b64, &e))?;
        if header.alg != Algorithm::ES256 {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        if header.crit.is_some() {
            // RFC 7515 §4.1.11: a recipient must refuse critical extensions it does not know,
            // and we know none (jsonwebtoken would let `"crit": ["b64"]` through).
            return Err(malformed("crit header parameters are not supported"));
        }
        if header.typ.as_deref().is_some_and(|typ| typ != "JWT") {
            return Err(malformed("typ must be JWT"));
        }
        // Keys come from the trusted list alone: `jwk`, `jku`, `x5u` and `x5c` in a header
        // are never looked at.
        let kid = header.kid.as_deref().ok_or_else(|| TokenError::UnknownKey("kid is missing".into()))?;
        let key = self.keys.get(kid).ok_or_else(|| TokenError::UnknownKey(truncate(kid).to_owned()))?;

        // Algorithm pinned again, signature over the text as sent, and only then the claims.
        let mut validation = self.validation.clone();
        validation.set_audience(&[audience]);
        let claims =
            jsonwebtoken::decode::<RawClaims>(token, key, &validation).map_err(|e| refused(&e, audience))?.claims;

        // Signed by a trusted key: from here on the payload is the issuer's word.
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer(truncate(&claims.iss).to_owned()));
        }
        if claims.exp <= now.saturating_sub(self.leeway) {
            return Err(TokenError::Expired);
        }
        let latest = now.saturating_add(self.leeway);
        // A token issued in the future is as suspect as one not valid yet: both mean the
        // issuer's clock (or the token) is wrong by more than the leeway.
        if claims.nbf > latest || claims.iat > latest {
            return Err(TokenError::NotYetValid);
        }
        if claims.berth_use != expected {
            return Err(TokenError::WrongUse { expected, found: claims.berth_use });
        }
        Ok(Claims {
            iss: claims.iss,
            sub: claims.sub,
            // The audience checked, which is the one the caller cares about.
            aud: audience.to_owned(),
            exp: claims.exp,
            nbf: claims.nbf,
            iat: claims.iat,
            jti: claims.jti,
            access: claims.access,
            use_: claims.berth_use,
            user_id: claims.berth_uid,
            generation: claims.berth_gen,
        })
    }
}

/// Why `jsonwebtoken` could not read a header, in the terms of [`TokenError`]. The library
/// reports an unknown `alg` (`none`, `es256`) as a JSON error; the header (never the
/// payload) is looked at again, as plain JSON, to name what was wrong.
fn header_refused(header_b64: &str, e: &JwtError) -> TokenError {
    let malformed = |why: &str| TokenError::Malformed(why.to_owned());
    match e.kind() {
        ErrorKind::Base64(_) => return malformed("parts must be base64url without padding"),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => {}
        _ => return malformed("header is not a valid JWS header"),
    }
    let Ok(bytes) = b64url_decode(header_b64) else { return malformed("parts must be base64url without padding") };
    let Ok(header) = serde_json::from_slice::<serde_json::Map<String, Value>>(&bytes) else {
        return malformed("header is not a JSON object");
    };
    match header.get("alg") {
        None | Some(Value::Null) => TokenError::Algorithm("alg is missing".into()),
        Some(Value::String(alg)) if alg != "ES256" => TokenError::Algorithm(truncate(alg).to_owned()),
        Some(Value::String(_)) => match header.get("kid") {
            Some(kid) if !kid.is_string() => TokenError::UnknownKey("kid is not a string".into()),
            // A duplicate member, or one of the wrong type.
            _ => malformed("header is not a valid JWS header"),
        },
        Some(_) => TokenError::Algorithm("alg is not a string".into()),
    }
}

/// Why `jsonwebtoken` refused a token whose header was fine.
fn refused(e: &JwtError, audience: &str) -> TokenError {
    match e.kind() {
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::InvalidAudience => TokenError::Audience(audience.to_owned()),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::InvalidAlgorithmName => {
            TokenError::Algorithm("only ES256 is accepted".into())
        }
        ErrorKind::Base64(_) => TokenError::Malformed("parts must be base64url without padding".into()),
        ErrorKind::Json(json) => TokenError::Malformed(format!("claims: {json}")),
        ErrorKind::MissingRequiredClaim(claim) => TokenError::Malformed(format!("claims: {claim} is missing")),
        ErrorKind::InvalidClaimFormat(claim) => TokenError::Malformed(format!("claims: {claim} has the wrong type")),
        // Not asked of the library (the issuer is compared above), so not expected.
        ErrorKind::InvalidIssuer => TokenError::Issuer(String::new()),
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidKeyFormat | ErrorKind::InvalidEcdsaKey | ErrorKind::Provider(_) => {
            TokenError::Key("the trusted key could not be used".into())
        }
        // `InvalidToken` (e.g. `"b64": false`), and kinds only signing or other algorithms
        // produce.
        _ => TokenError::Malformed("not a compact JWS".into()),
    }
}

/// At most `MAX_KID_ECHO` characters of a client-chosen string, cut on a char boundary.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(MAX_KID_ECHO) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
