//! Bearer tokens: `Verifier::verify` with a real key, on arbitrary strings, and on tokens
//! whose header and payload are arbitrary but whose signature is genuine (so the claim
//! checks after the signature are reached too). Only the public `Verifier` API is used.
//!
//! Input: `0x01`, a header, `\n`, a payload: signed with the fixture key. Anything else:
//! the token text itself.
#![no_main]

use std::sync::LazyLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use berth_auth::token::{TokenUse, Verifier};
use berth_fuzz::{TOKEN_AUDIENCE, TOKEN_ISSUER, TOKEN_NOW, token_key, token_verifier};
use libfuzzer_sys::fuzz_target;

static VERIFIER: LazyLock<Verifier> = LazyLock::new(token_verifier);
static SIGNER: LazyLock<EcdsaKeyPair> =
    LazyLock::new(|| match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, token_key().pkcs8_der()) {
        Ok(pair) => pair,
        Err(e) => panic!("fixture key: {e}"),
    });

/// Signs `header.payload` as an ES256 JWS, as any holder of the key could.
fn sign(header: &[u8], payload: &[u8]) -> Option<String> {
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let sig = SIGNER.sign(&SystemRandom::new(), input.as_bytes()).ok()?;
    Some(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
}

fuzz_target!(|data: &[u8]| {
    let token = match data.split_first() {
        Some((1, rest)) => {
            let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let (header, payload) = rest.split_at(split);
            match sign(header, payload.get(1..).unwrap_or_default()) {
                Some(t) => t,
                None => return,
            }
        }
        _ => match std::str::from_utf8(data) {
            Ok(s) => s.to_owned(),
            Err(_) => return,
        },
    };
    for expected in [TokenUse::Access, TokenUse::Refresh, TokenUse::Login] {
        for now in [TOKEN_NOW, i64::MIN, i64::MAX, 0] {
            if let Ok(claims) = VERIFIER.verify(&token, TOKEN_AUDIENCE, expected, now) {
                // What the registry relies on once a token verified.
                assert_eq!(claims.iss, TOKEN_ISSUER);
                assert_eq!(claims.use_, expected);
            }
            if let Err(e) = VERIFIER.verify(&token, "another.service", expected, now) {
                // Errors are shown to clients: they never echo a whole token.
                let shown = e.to_string();
                assert!(token.len() < 80 || !shown.contains(&token), "error echoes the token: {shown}");
            }
        }
    }
});
