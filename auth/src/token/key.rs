//! ECDSA P-256 signing keys: generation, loading (PKCS#8 DER, PKCS#8 PEM, SEC1 PEM), their
//! public JWK, and the RFC 7638 thumbprint that names them.
//!
//! A key always keeps its PKCS#8 DER beside the parsed pair, so it can be persisted in the
//! one format `from_pkcs8_der` reads back, whatever format it was loaded from.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::claims::Claims;
use super::{TokenError, b64url_encode};

/// The one JWS algorithm tokens are signed and accepted with.
pub(super) const ALG: &str = "ES256";

/// An ECDSA P-256 key pair that signs tokens. `Debug` shows the kid only.
pub struct SigningKey {
    /// The private key for `jsonwebtoken`, from the PKCS#8 DER below.
    encoding: EncodingKey,
    /// The uncompressed public point (`04 || x || y`), for verifiers.
    public: Vec<u8>,
    /// The PKCS#8 DER the pair came from (or was converted to), for persisting it.
    pkcs8: Vec<u8>,
    jwk: Jwk,
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> Result<SigningKey, TokenError> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| TokenError::Key("could not generate a P-256 key".into()))?;
        Self::with_pkcs8_of(pair)
    }

    /// A key from unencrypted PKCS#8 DER (`PrivateKeyInfo`) holding a P-256 key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey, TokenError> {
        // `from_pkcs8` checks the curve is P-256 and the public key matches the private one.
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| TokenError::Key(format!("not a P-256 PKCS#8 key: {e}")))?;
        Self::assemble(pair, der.to_vec())
    }

    /// A key from PEM text: `PRIVATE KEY` (PKCS#8) or `EC PRIVATE KEY` (SEC1, as written by
    /// `openssl ecparam -genkey`; an `EC PARAMETERS` block before it is skipped). Encrypted
    /// keys are refused: the operator decrypts them before handing them over.
    pub fn from_pem(text: &str) -> Result<SigningKey, TokenError> {
        match pem_private_key(text)? {
            PemKey::Pkcs8(der) => Self::from_pkcs8_der(&der),
            PemKey::Sec1(der) => {
                // aws-lc parses RFC 5915 (SEC1) keys with the curve given; the PKCS#8 form is
                // then re-encoded so `pkcs8_der` has one format to offer.
                let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    .map_err(|e| TokenError::Key(format!("not a P-256 EC private key: {e}")))?;
                Self::with_pkcs8_of(pair)
            }
        }
    }

    /// The key as PKCS#8 DER, to persist it.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The key id: the RFC 7638 JWK thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.jwk.kid
    }

    /// The public key as a JWK, for a JWKS document.
    pub fn public_jwk(&self) -> Jwk {
        self.jwk.clone()
    }

    /// The uncompressed SEC1 point (`04 || x || y`) that verifiers check signatures with.
    pub(super) fn public_key_bytes(&self) -> &[u8] {
        &self.public
    }

    /// The compact JWS of `claims`: `header.payload.signature`, each base64url without
    /// padding, the header `{"typ":"JWT","alg":"ES256","kid":…}`, the signature the 64-byte
    /// `r || s` that JWS ES256 specifies.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.jwk.kid.clone());
        // aws-lc draws the ECDSA nonce itself.
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| TokenError::Key(format!("signing: {e}")))
    }

    fn with_pkcs8_of(pair: EcdsaKeyPair) -> Result<SigningKey, TokenError> {
        let pkcs8 = pair.to_pkcs8v1().map_err(|_| TokenError::Key("could not encode the key as PKCS#8".into()))?;
        let pkcs8 = pkcs8.as_ref().to_vec();
        Self::assemble(pair, pkcs8)
    }

    fn assemble(pair: EcdsaKeyPair, pkcs8: Vec<u8>) -> Result<SigningKey, TokenError> {
        let public = pair.public_key().as_ref().to_vec();
        let jwk = Jwk::for_p256_point(&public)?;
        // jsonwebtoken's aws-lc signer reads PKCS#8, which `pkcs8` always is.
        Ok(SigningKey { encoding: EncodingKey::from_ec_der(&pkcs8), public, pkcs8, jwk })
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.jwk.kid).finish_non_exhaustive()
    }
}

/// A public key as a JSON Web Key (RFC 7517), with the members a JWKS consumer needs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Jwk {
    /// Always `EC`.
    pub kty: String,
    /// Always `P-256`.
    pub crv: String,
    /// The point's x coordinate, 32 bytes big-endian, base64url.
    pub x: String,
    /// The point's y coordinate, 32 bytes big-endian, base64url.
    pub y: String,
    /// The RFC 7638 thumbprint, which tokens name in their header.
    pub kid: String,
    /// Always `sig`: these keys sign tokens and nothing else.
    #[serde(rename = "use")]
    pub use_: String,
    /// Always `ES256`.
    pub alg: String,
}

impl Jwk {
    fn for_p256_point(point: &[u8]) -> Result<Jwk, TokenError> {
        // An uncompressed P-256 point: 0x04, then x and y of 32 bytes each.
        let (x, y) = match point {
            [0x04, xy @ ..] if xy.len() == 64 => xy.split_at(32),
            _ => return Err(TokenError::Key("public key is not an uncompressed P-256 point".into())),
        };
        let (x, y) = (b64url_encode(x), b64url_encode(y));
        let kid = jwk_thumbprint(&[("crv", "P-256"), ("kty", "EC"), ("x", &x), ("y", &y)])?;
        Ok(Jwk { kty: "EC".into(), crv: "P-256".into(), x, y, kid, use_: "sig".into(), alg: ALG.into() })
    }
}

/// A JWKS document (RFC 7517 §5), as served for other verifiers to trust our keys.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// RFC 7638 JWK thumbprint of a key given its required members: base64url (no padding) of
/// the SHA-256 of the JSON object of those members, names sorted, no whitespace. Generic
/// over the key type so it can be checked against the RFC's own (RSA) example.
pub(super) fn jwk_thumbprint(required: &[(&str, &str)]) -> Result<String, TokenError> {
    // A BTreeMap sorts the names, and serde_json writes it compactly with JSON escaping.
    let members: BTreeMap<&str, &str> = required.iter().copied().collect();
    let canonical = serde_json::to_vec(&members).map_err(|e| TokenError::Key(format!("thumbprint: {e}")))?;
    Ok(b64url_encode(digest(&SHA256, &canonical).as_ref()))
}

enum PemKey {
    Pkcs8(Vec<u8>),
    Sec1(Vec<u8>),
}

/// The first private key block of a PEM text. Only labels are reported in errors, never
/// the base64 inside.
fn pem_private_key(text: &str) -> Result<PemKey, TokenError> {
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        loop {
            let Some(line) = lines.next() else {
                return Err(TokenError::Key(format!("PEM block {label} has no END line")));
            };
            if line == end {
                break;
            }
            // RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`, `DEK-Info: ...`) mean an encrypted key.
            if line.contains(':') {
                return Err(TokenError::Key(format!("encrypted PEM block {label} is not supported")));
            }
            body.push_str(line);
        }
        let der = || STANDARD.decode(&body).map_err(|_| TokenError::Key(format!("PEM block {label} is not base64")));
        match label {
            "PRIVATE KEY" => return Ok(PemKey::Pkcs8(der()?)),
            "EC PRIVATE KEY" => return Ok(PemKey::Sec1(der()?)),
            // `openssl ecparam -genkey` without `-noout` writes the curve first.
            "EC PARAMETERS" => continue,
            "ENCRYPTED PRIVATE KEY" => {
                return Err(TokenError::Key("encrypted PKCS#8 keys are not supported".into()));
            }
            other => {
                return Err(TokenError::Key(format!(
                    "PEM block {other} is not a key; expected PRIVATE KEY or EC PRIVATE KEY"
                )));
            }
        }
    }
    Err(TokenError::Key("no PEM private key block found".into()))
}
