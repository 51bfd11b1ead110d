//! Checking a token, in an order that matters: size and shape, then the header (algorithm,
//! key), then the signature, and only then the claims. Nothing from the payload is parsed
//! before the signature over it has been verified.

use std::collections::HashMap;
use std::time::Duration;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use super::claims::{Claims, ResourceActions, TokenUse};
use super::key::{ALG, SigningKey};
use super::{TokenError, b64url_decode};

/// Longest token accepted. Ours are well under 2 KiB unless `access` is long; the cap keeps
/// a hostile `Authorization` header from costing more than a bounded decode.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Longest encoded header accepted: ours is about 130 characters.
const MAX_HEADER_LEN: usize = 4 * 1024;
/// ES256 signatures are `r || s`, 32 bytes each (RFC 7518 §3.4), never DER.
const SIGNATURE_LEN: usize = 64;
/// Longest kid echoed back in an error, so a client-chosen string stays short in logs.
const MAX_KID_ECHO: usize = 64;

/// Checks tokens against the trusted issuer and public keys. Holds no secrets.
#[derive(Clone, Debug)]
pub struct Verifier {
    issuer: String,
    /// Uncompressed P-256 points by kid (RFC 7638 thumbprint).
    keys: HashMap<String, Vec<u8>>,
    /// Clock skew allowed between the token service and this replica, in seconds.
    leeway: i64,
}

/// The JWS header members we look at. Values are kept as JSON so that a wrong type
/// (`"alg": 1`) is reported as what it is rather than as a parse error; serde's derive
/// refuses duplicate members, so a header cannot say `alg` twice.
#[derive(Deserialize)]
struct Header {
    alg: Option<Value>,
    kid: Option<Value>,
    typ: Option<Value>,
    crit: Option<IgnoredAny>,
}

/// The claims as written by any issuer: `aud` may be a string or an array (RFC 7519 §4.1.3).
#[derive(Deserialize)]
struct RawClaims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: i64,
    nbf: i64,
    iat: i64,
    jti: String,
    #[serde(default)]
    access: Vec<ResourceActions>,
    berth_use: TokenUse,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Verifier {
    /// A verifier trusting tokens from `issuer` signed by any of `keys` (several during a
    /// key rotation), with `leeway` of clock skew on every time check.
    pub fn new(issuer: impl Into<String>, keys: &[SigningKey], leeway: Duration) -> Verifier {
        let keys = keys.iter().map(|k| (k.kid().to_owned(), k.public_key_bytes().to_vec())).collect();
        let leeway = i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX);
        Verifier { issuer: issuer.into(), keys, leeway }
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
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("a token has three dot-separated parts"));
        };
        if header_b64.len() > MAX_HEADER_LEN {
            return Err(malformed("header is too long"));
        }
        let not_b64 = |_| malformed("parts must be base64url without padding");
        let header = b64url_decode(header_b64).map_err(not_b64)?;
        let signature = b64url_decode(signature_b64).map_err(not_b64)?;
        // Decoded now so that a payload that is not even base64url is refused as malformed,
        // but it is not parsed until the signature has been checked.
        let payload = b64url_decode(payload_b64).map_err(not_b64)?;

        // serde's derive would also read a struct from a JSON array; a header is an object.
        if header.trim_ascii_start().first() != Some(&b'{') {
            return Err(malformed("header is not a JSON object"));
        }
        let header: Header = serde_json::from_slice(&header).map_err(|_| malformed("header is not a JSON object"))?;
        match &header.alg {
            Some(Value::String(alg)) if alg == ALG => {}
            Some(Value::String(alg)) => return Err(TokenError::Algorithm(truncate(alg).to_owned())),
            Some(_) => return Err(TokenError::Algorithm("alg is not a string".into())),
            None => return Err(TokenError::Algorithm("alg is missing".into())),
        }
        if header.crit.is_some() {
            // RFC 7515 §4.1.11: a recipient must refuse critical extensions it does not know,
            // and we know none.
            return Err(malformed("crit header parameters are not supported"));
        }
        match &header.typ {
            None => {}
            Some(Value::String(typ)) if typ == "JWT" => {}
            Some(_) => return Err(malformed("typ must be JWT")),
        }
        let kid = match &header.kid {
            Some(Value::String(kid)) => kid,
            Some(_) => return Err(TokenError::UnknownKey("kid is not a string".into())),
            None => return Err(TokenError::UnknownKey("kid is missing".into())),
        };
        let key = self.keys.get(kid).ok_or_else(|| TokenError::UnknownKey(truncate(kid).to_owned()))?;

        if signature.len() != SIGNATURE_LEN {
            return Err(TokenError::Signature);
        }
        // The signing input is the text as sent, `header.payload`, not a re-encoding.
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
            .verify(signing_input.as_bytes(), &signature)
            .map_err(|_| TokenError::Signature)?;

        // Signed by a trusted key: from here on the payload is the issuer's word.
        let claims: RawClaims =
            serde_json::from_slice(&payload).map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer(truncate(&claims.iss).to_owned()));
        }
        let audience_ok = match &claims.aud {
            Audience::One(aud) => aud == audience,
            Audience::Many(auds) => auds.iter().any(|a| a == audience),
        };
        if !audience_ok {
            return Err(TokenError::Audience(audience.to_owned()));
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
        })
    }
}

/// At most `MAX_KID_ECHO` characters of a client-chosen string, cut on a char boundary.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(MAX_KID_ECHO) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
