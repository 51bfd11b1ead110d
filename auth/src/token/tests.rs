//! Round trips, the key formats, and one test per way a token is refused.

use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};

use super::key::jwk_thumbprint;
use super::*;

const ISSUER: &str = "berth-token-service";
const AUDIENCE: &str = "registry.example";
const NOW: i64 = 1_750_000_000;
const TTL: Duration = Duration::from_secs(300);

/// A P-256 key made with `openssl ecparam -name prime256v1 -genkey -noout` (SEC1).
const SEC1_PEM: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIKOiZxiduP1ual/DP7IsLQQVN7dKD2kyi1DOgXJhPEBhoAoGCCqGSM49
AwEHoUQDQgAEr0ez+20Bt24vBmawOKbNX0bbdaMaHAaR/5kTM4wI0NLzh/zQnHFs
7I/i7nYLFHK+9mjo3HbcDWHo1E9Z7T8UwA==
-----END EC PRIVATE KEY-----
";
/// The same key through `openssl pkcs8 -topk8 -nocrypt`.
const PKCS8_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgo6JnGJ24/W5qX8M/
siwtBBU3t0oPaTKLUM6BcmE8QGGhRANCAASvR7P7bQG3bi8GZrA4ps1fRtt1oxoc
BpH/mRMzjAjQ0vOH/NCccWzsj+LudgsUcr72aOjcdtwNYejUT1ntPxTA
-----END PRIVATE KEY-----
";
/// That key's public point and RFC 7638 thumbprint, computed outside Rust (Python's hashlib
/// over the canonical JSON built from `openssl ec -text`'s `pub:` bytes).
const FIXED_X: &str = "r0ez-20Bt24vBmawOKbNX0bbdaMaHAaR_5kTM4wI0NI";
const FIXED_Y: &str = "84f80JxxbOyP4u52CxRyvvZo6Nx23A1h6NRPWe0_FMA";
const FIXED_KID: &str = "e8-Gl5BYptVPpK0_IWDATe9swv--sGoYefF1nQIEd-w";

fn key() -> SigningKey {
    SigningKey::generate().unwrap()
}

fn verifier(key: &SigningKey) -> Verifier {
    Verifier::new(ISSUER, std::slice::from_ref(key), Duration::ZERO)
}

fn claims(use_: TokenUse) -> Claims {
    let access = vec![ResourceActions {
        resource_type: "repository".into(),
        name: "samalba/my-app".into(),
        actions: vec!["pull".into(), "push".into()],
    }];
    Claims::new(use_, ISSUER, "alice", AUDIENCE, NOW, TTL, access)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with the given header and payload JSON, signed by `sign` over `header.payload`.
fn forge(header: &str, payload: &str, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

/// An honest ES256 signature by `key`'s pair, whatever the header claims.
fn es256(key: &SigningKey) -> impl FnOnce(&[u8]) -> Vec<u8> + '_ {
    move |input| {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key.pkcs8_der()).unwrap();
        pair.sign(&SystemRandom::new(), input).unwrap().as_ref().to_vec()
    }
}
fn payload(claims: &Claims) -> String {
    serde_json::to_string(claims).unwrap()
}

fn header_with_alg(alg: &str, kid: &str) -> String {
    format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"{kid}"}}"#)
}

fn parts(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

#[test]
fn signed_token_round_trips() {
    let key = key();
    let claims = claims(TokenUse::Access);
    let token = key.sign(&claims).unwrap();
    assert_eq!(token.split('.').count(), 3);
    assert_eq!(verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW + 1).unwrap(), claims);
}

#[test]
fn header_is_es256_jwt_with_the_kid_and_signature_is_64_bytes() {
    let key = key();
    let token = key.sign(&claims(TokenUse::Access)).unwrap();
    let p = parts(&token);
    let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&p[0]).unwrap()).unwrap();
    assert_eq!(header, serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": key.kid()}));
    assert_eq!(URL_SAFE_NO_PAD.decode(&p[2]).unwrap().len(), 64);
    let payload: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&p[1]).unwrap()).unwrap();
    assert_eq!(payload["berth_use"], "access");
    assert_eq!(payload["access"][0]["type"], "repository");
}

#[test]
fn user_id_and_generation_round_trip_and_are_absent_unless_bound() {
    let key = key();
    let access = claims(TokenUse::Access);
    let json = serde_json::to_value(&access).unwrap();
    assert!(json.get("berth_uid").is_none() && json.get("berth_gen").is_none(), "{json}");
    let refresh = claims(TokenUse::Refresh).bound_to("AIDAAAAAAAAAAAAAAAAA", 3);
    let json = serde_json::to_value(&refresh).unwrap();
    assert_eq!((json["berth_uid"].as_str(), json["berth_gen"].as_i64()), (Some("AIDAAAAAAAAAAAAAAAAA"), Some(3)));
    let token = key.sign(&refresh).unwrap();
    let verified = verifier(&key).verify(&token, AUDIENCE, TokenUse::Refresh, NOW).unwrap();
    assert_eq!(verified, refresh);
    assert_eq!((verified.user_id.as_deref(), verified.generation), (Some("AIDAAAAAAAAAAAAAAAAA"), Some(3)));
}

#[test]
fn claims_new_sets_times_and_a_random_jti() {
    let a = claims(TokenUse::Access);
    assert_eq!((a.iat, a.nbf, a.exp), (NOW, NOW, NOW + 300));
    assert_eq!(a.jti.len(), 32);
    assert!(a.jti.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(a.jti, claims(TokenUse::Access).jti);
}

#[test]
fn kid_is_the_rfc_7638_thumbprint_computed_independently() {
    let key = key();
    let jwk = key.public_jwk();
    // Canonical form written out by hand: required members only, sorted, no whitespace.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#, jwk.x, jwk.y);
    assert_eq!(key.kid(), b64(digest(&SHA256, canonical.as_bytes()).as_ref()));
    assert_eq!(jwk.kid, key.kid());
}

#[test]
fn thumbprint_helper_matches_rfc_7638_example_and_sorts_members() {
    // RFC 7638 §3.1, an RSA key: members given out of order on purpose.
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    let thumbprint = jwk_thumbprint(&[("n", n), ("kty", "RSA"), ("e", "AQAB")]).unwrap();
    assert_eq!(thumbprint, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    // The EC form, whatever order the members are given in.
    let sorted = jwk_thumbprint(&[("crv", "P-256"), ("kty", "EC"), ("x", FIXED_X), ("y", FIXED_Y)]).unwrap();
    let shuffled = jwk_thumbprint(&[("y", FIXED_Y), ("x", FIXED_X), ("kty", "EC"), ("crv", "P-256")]).unwrap();
    assert_eq!(sorted, FIXED_KID);
    assert_eq!(shuffled, FIXED_KID);
}

#[test]
fn sec1_and_pkcs8_pem_load_to_the_same_key() {
    let sec1 = SigningKey::from_pem(SEC1_PEM).unwrap();
    let pkcs8 = SigningKey::from_pem(PKCS8_PEM).unwrap();
    assert_eq!(sec1.kid(), FIXED_KID);
    assert_eq!(pkcs8.kid(), FIXED_KID);
    let jwk = pkcs8.public_jwk();
    assert_eq!((jwk.x.as_str(), jwk.y.as_str()), (FIXED_X, FIXED_Y));
    // Both persist as PKCS#8 DER that loads back to the same key.
    assert_eq!(SigningKey::from_pkcs8_der(sec1.pkcs8_der()).unwrap().kid(), FIXED_KID);
    assert_eq!(SigningKey::from_pkcs8_der(pkcs8.pkcs8_der()).unwrap().kid(), FIXED_KID);
    // A token from one verifies under the other.
    let token = sec1.sign(&claims(TokenUse::Access)).unwrap();
    assert!(verifier(&pkcs8).verify(&token, AUDIENCE, TokenUse::Access, NOW).is_ok());
}

#[test]
fn pem_with_ec_parameters_block_first_loads() {
    // What `openssl ecparam -genkey` writes without `-noout`.
    let text = format!("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{SEC1_PEM}");
    assert_eq!(SigningKey::from_pem(&text).unwrap().kid(), FIXED_KID);
}

#[test]
fn unusable_pem_is_refused_without_echoing_it() {
    let encrypted = "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END EC PRIVATE KEY-----\n";
    let cases = [
        "",
        "not a key",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        encrypted,
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMG\n",
        "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
    ];
    for text in cases {
        let err = SigningKey::from_pem(text).unwrap_err();
        assert!(matches!(err, TokenError::Key(_)), "{text}: {err:?}");
    }
    let truncated = SEC1_PEM.replace("7I/i7nYLFHK+9mjo3HbcDWHo1E9Z7T8UwA==\n", "");
    let err = SigningKey::from_pem(&truncated).unwrap_err().to_string();
    assert!(!err.contains("MHcCAQEEIKOiZxid"), "{err}");
}

#[test]
fn p384_key_is_refused() {
    let p384 = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap().to_pkcs8v1().unwrap();
    assert!(matches!(SigningKey::from_pkcs8_der(p384.as_ref()), Err(TokenError::Key(_))));
}

#[test]
fn debug_shows_the_kid_and_no_key_material() {
    let key = SigningKey::from_pem(PKCS8_PEM).unwrap();
    let shown = format!("{key:?}");
    assert!(shown.contains(FIXED_KID), "{shown}");
    assert!(!shown.contains("MIGHAgEA") && !shown.contains("a3a267"), "{shown}");
}

#[test]
fn jwks_serializes_the_public_key_for_es256_signing() {
    let key = key();
    let jwks = Jwks { keys: vec![key.public_jwk()] };
    let json: serde_json::Value = serde_json::to_value(&jwks).unwrap();
    let k = &json["keys"][0];
    assert_eq!(k["kty"], "EC");
    assert_eq!(k["crv"], "P-256");
    assert_eq!(k["use"], "sig");
    assert_eq!(k["alg"], "ES256");
    assert_eq!(k["kid"], key.kid());
    for coordinate in ["x", "y"] {
        assert_eq!(URL_SAFE_NO_PAD.decode(k[coordinate].as_str().unwrap()).unwrap().len(), 32);
    }
    assert_eq!(k.as_object().unwrap().len(), 7, "only public members: {k}");
    let back: Jwks = serde_json::from_value(json).unwrap();
    assert_eq!(back.keys, jwks.keys);
}

#[test]
fn alg_none_is_refused_with_or_without_a_signature() {
    let key = key();
    let payload = payload(&claims(TokenUse::Access));
    let header = header_with_alg("none", key.kid());
    let unsigned = format!("{}.{}.", b64(header.as_bytes()), b64(payload.as_bytes()));
    let signed = forge(&header, &payload, es256(&key));
    for token in [unsigned, signed] {
        let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
        assert_eq!(err, TokenError::Algorithm("none".into()));
    }
}

#[test]
fn hs256_keyed_with_the_public_key_is_refused() {
    // The classic confusion: an HMAC "signed" with the verifier's public key.
    let key = key();
    let payload = payload(&claims(TokenUse::Access));
    let jwk_json = serde_json::to_string(&key.public_jwk()).unwrap();
    for secret in [key.public_key_bytes().to_vec(), jwk_json.into_bytes()] {
        let mac = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let token =
            forge(&header_with_alg("HS256", key.kid()), &payload, |input| hmac::sign(&mac, input).as_ref().to_vec());
        let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
        assert_eq!(err, TokenError::Algorithm("HS256".into()));
    }
}

#[test]
fn other_algorithms_and_case_variants_are_refused() {
    let key = key();
    let payload = payload(&claims(TokenUse::Access));
    for alg in ["ES384", "ES512", "RS256", "PS256", "EdDSA", "es256", "Es256", "ES256 ", ""] {
        let token = forge(&header_with_alg(alg, key.kid()), &payload, es256(&key));
        let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
        assert!(matches!(err, TokenError::Algorithm(_)), "{alg}: {err:?}");
    }
    let kid = key.kid();
    for header in [format!(r#"{{"typ":"JWT","kid":"{kid}"}}"#), format!(r#"{{"alg":null,"kid":"{kid}"}}"#)] {
        let token = forge(&header, &payload, es256(&key));
        let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
        assert!(matches!(err, TokenError::Algorithm(_)), "{header}: {err:?}");
    }
}

#[test]
fn missing_kid_is_refused() {
    let key = key();
    let token = forge(r#"{"alg":"ES256","typ":"JWT"}"#, &payload(&claims(TokenUse::Access)), es256(&key));
    let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
    assert!(matches!(err, TokenError::UnknownKey(_)), "{err:?}");
}

#[test]
fn unknown_kid_is_refused() {
    let (trusted, other) = (key(), key());
    let token = other.sign(&claims(TokenUse::Access)).unwrap();
    let err = verifier(&trusted).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
    assert_eq!(err, TokenError::UnknownKey(other.kid().to_owned()));
}

#[test]
fn any_of_several_trusted_keys_verifies() {
    // During a rotation the old and the new key are both trusted.
    let keys = [key(), key()];
    let verifier = Verifier::new(ISSUER, &keys, Duration::ZERO);
    for key in &keys {
        let token = key.sign(&claims(TokenUse::Access)).unwrap();
        assert!(verifier.verify(&token, AUDIENCE, TokenUse::Access, NOW).is_ok(), "{}", key.kid());
    }
    let retired = key().sign(&claims(TokenUse::Access)).unwrap();
    assert!(matches!(verifier.verify(&retired, AUDIENCE, TokenUse::Access, NOW), Err(TokenError::UnknownKey(_))));
}

#[test]
fn tampered_payload_is_refused() {
    let key = key();
    let token = key.sign(&claims(TokenUse::Access)).unwrap();
    let p = parts(&token);
    let mut forged = claims(TokenUse::Access);
    forged.sub = "admin".into();
    let token = format!("{}.{}.{}", p[0], b64(payload(&forged).as_bytes()), p[2]);
    let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
    assert_eq!(err, TokenError::Signature);
}

#[test]
fn tampered_header_is_refused() {
    let key = key();
    let token = key.sign(&claims(TokenUse::Access)).unwrap();
    let p = parts(&token);
    let header = format!(r#"{{"alg":"ES256","kid":"{}"}}"#, key.kid());
    let token = format!("{}.{}.{}", b64(header.as_bytes()), p[1], p[2]);
    let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
    assert_eq!(err, TokenError::Signature);
}

#[test]
fn signature_by_another_key_claiming_a_trusted_kid_is_refused() {
    let (trusted, attacker) = (key(), key());
    let token = forge(&header_with_alg("ES256", trusted.kid()), &payload(&claims(TokenUse::Access)), es256(&attacker));
    let err = verifier(&trusted).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
    assert_eq!(err, TokenError::Signature);
}

#[test]
fn signatures_of_the_wrong_length_are_refused() {
    let key = key();
    let token = key.sign(&claims(TokenUse::Access)).unwrap();
    let p = parts(&token);
    let mut signature = URL_SAFE_NO_PAD.decode(&p[2]).unwrap();
    signature.push(0);
    for sig in [b64(&signature), b64(&signature[..63]), String::new()] {
        let token = format!("{}.{}.{sig}", p[0], p[1]);
        let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
        assert_eq!(err, TokenError::Signature);
    }
}

#[test]
fn expired_token_is_refused() {
    let key = key();
    let token = key.sign(&claims(TokenUse::Access)).unwrap();
    let exp = NOW + 300;
    for now in [exp, exp + 1, exp + 86_400] {
        let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, now).unwrap_err();
        assert_eq!(err, TokenError::Expired, "at {now}");
    }
    assert!(verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, exp - 1).is_ok());
}

#[test]
fn expired_within_leeway_is_accepted() {
    let key = key();
    let token = key.sign(&claims(TokenUse::Access)).unwrap();
    let lenient = Verifier::new(ISSUER, std::slice::from_ref(&key), Duration::from_secs(30));
    let exp = NOW + 300;
    assert!(lenient.verify(&token, AUDIENCE, TokenUse::Access, exp + 10).is_ok());
    assert!(lenient.verify(&token, AUDIENCE, TokenUse::Access, exp + 29).is_ok());
    assert_eq!(lenient.verify(&token, AUDIENCE, TokenUse::Access, exp + 30).unwrap_err(), TokenError::Expired);
}

#[test]
fn not_yet_valid_token_is_refused() {
    let key = key();
    let token = key.sign(&claims(TokenUse::Access)).unwrap();
    let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW - 1).unwrap_err();
    assert_eq!(err, TokenError::NotYetValid);
    let lenient = Verifier::new(ISSUER, std::slice::from_ref(&key), Duration::from_secs(30));
    assert!(lenient.verify(&token, AUDIENCE, TokenUse::Access, NOW - 30).is_ok());
    assert_eq!(lenient.verify(&token, AUDIENCE, TokenUse::Access, NOW - 31).unwrap_err(), TokenError::NotYetValid);
}

#[test]
fn nbf_in_the_future_is_refused_even_if_iat_is_now() {
    let key = key();
    let mut later = claims(TokenUse::Access);
    later.nbf = NOW + 60;
    let token = key.sign(&later).unwrap();
    let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
    assert_eq!(err, TokenError::NotYetValid);
    assert!(verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW + 60).is_ok());
}

#[test]
fn iat_in_the_future_is_refused() {
    let key = key();
    let mut future = claims(TokenUse::Access);
    future.iat = NOW + 60;
    let token = key.sign(&future).unwrap();
    let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
    assert_eq!(err, TokenError::NotYetValid);
}

#[test]
fn wrong_audience_is_refused_as_string_or_array() {
    let key = key();
    let token = key.sign(&claims(TokenUse::Access)).unwrap();
    let err = verifier(&key).verify(&token, "other.example", TokenUse::Access, NOW).unwrap_err();
    assert_eq!(err, TokenError::Audience("other.example".into()));

    let mut json: serde_json::Value = serde_json::to_value(claims(TokenUse::Access)).unwrap();
    json["aud"] = serde_json::json!(["a.example", AUDIENCE]);
    let token = forge(&header_with_alg("ES256", key.kid()), &json.to_string(), es256(&key));
    let accepted = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap();
    assert_eq!(accepted.aud, AUDIENCE);
    let err = verifier(&key).verify(&token, "other.example", TokenUse::Access, NOW).unwrap_err();
    assert_eq!(err, TokenError::Audience("other.example".into()));

    json["aud"] = serde_json::json!([]);
    let token = forge(&header_with_alg("ES256", key.kid()), &json.to_string(), es256(&key));
    assert!(matches!(verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW), Err(TokenError::Audience(_))));
}

#[test]
fn wrong_issuer_is_refused() {
    let key = key();
    let mut foreign = claims(TokenUse::Access);
    foreign.iss = "someone-else".into();
    let token = key.sign(&foreign).unwrap();
    let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
    assert_eq!(err, TokenError::Issuer("someone-else".into()));
}

#[test]
fn refresh_token_is_refused_as_access_token() {
    let key = key();
    let token = key.sign(&claims(TokenUse::Refresh)).unwrap();
    let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
    assert_eq!(err, TokenError::WrongUse { expected: TokenUse::Access, found: TokenUse::Refresh });
    assert!(verifier(&key).verify(&token, AUDIENCE, TokenUse::Refresh, NOW).is_ok());
    let login = key.sign(&claims(TokenUse::Login)).unwrap();
    assert!(matches!(verifier(&key).verify(&login, AUDIENCE, TokenUse::Access, NOW), Err(TokenError::WrongUse { .. })));
}

#[test]
fn download_tokens_and_the_others_are_never_taken_for_each_other() {
    let key = key();
    let download = key.sign(&claims(TokenUse::Download)).unwrap();
    assert!(verifier(&key).verify(&download, AUDIENCE, TokenUse::Download, NOW).is_ok());
    for other in [TokenUse::Access, TokenUse::Refresh, TokenUse::Login] {
        let err = verifier(&key).verify(&download, AUDIENCE, other, NOW).unwrap_err();
        assert_eq!(err, TokenError::WrongUse { expected: other, found: TokenUse::Download });
        let token = key.sign(&claims(other)).unwrap();
        let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Download, NOW).unwrap_err();
        assert_eq!(err, TokenError::WrongUse { expected: TokenUse::Download, found: other });
    }
}

#[test]
fn signed_claims_without_berth_use_are_refused() {
    // A token from a signer that does not say what it is for is for nothing.
    let key = key();
    let mut json: serde_json::Value = serde_json::to_value(claims(TokenUse::Access)).unwrap();
    json.as_object_mut().unwrap().remove("berth_use");
    let token = forge(&header_with_alg("ES256", key.kid()), &json.to_string(), es256(&key));
    assert!(matches!(verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW), Err(TokenError::Malformed(_))));
}

#[test]
fn padded_or_standard_alphabet_base64_is_refused() {
    let key = key();
    let token = key.sign(&claims(TokenUse::Access)).unwrap();
    let p = parts(&token);
    // A 64-byte signature is 86 characters and would take `==` padded.
    let padded_signature = URL_SAFE.encode(URL_SAFE_NO_PAD.decode(&p[2]).unwrap());
    assert!(padded_signature.ends_with("=="));
    let standard_alphabet = format!("+{}", &p[2][1..]);
    for sig in [padded_signature, standard_alphabet] {
        let token = format!("{}.{}.{sig}", p[0], p[1]);
        let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
        assert!(matches!(err, TokenError::Malformed(_)), "{sig}: {err:?}");
    }
}

#[test]
fn wrong_number_of_parts_is_refused() {
    let key = key();
    let token = key.sign(&claims(TokenUse::Access)).unwrap();
    let p = parts(&token);
    for bad in
        [String::new(), p[0].clone(), format!("{}.{}", p[0], p[1]), format!("{token}."), format!("{token}.{}", p[2])]
    {
        let err = verifier(&key).verify(&bad, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
        assert!(matches!(err, TokenError::Malformed(_)), "{bad}: {err:?}");
    }
}

#[test]
fn oversized_tokens_and_headers_are_refused() {
    let key = key();
    let mut big = claims(TokenUse::Access);
    big.sub = "x".repeat(17 * 1024);
    let token = key.sign(&big).unwrap();
    let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
    assert_eq!(err, TokenError::Malformed("token is too long".into()));

    let header = format!(r#"{{"alg":"ES256","kid":"{}","pad":"{}"}}"#, key.kid(), "x".repeat(4096));
    let token = forge(&header, &payload(&claims(TokenUse::Access)), es256(&key));
    let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
    assert_eq!(err, TokenError::Malformed("header is too long".into()));
}

#[test]
fn crit_wrong_typ_and_non_object_headers_are_refused() {
    let key = key();
    let kid = key.kid();
    let payload = payload(&claims(TokenUse::Access));
    for header in [
        format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{kid}","crit":["exp"]}}"#),
        format!(r#"{{"alg":"ES256","typ":"JOSE","kid":"{kid}"}}"#),
        format!(r#"["ES256","{kid}","JWT",null]"#),
        format!(r#"{{"alg":"ES256","alg":"ES256","kid":"{kid}"}}"#),
        "not json".to_owned(),
    ] {
        let token = forge(&header, &payload, es256(&key));
        let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
        assert!(matches!(err, TokenError::Malformed(_)), "{header}: {err:?}");
    }
    // typ may be left out.
    let token = forge(&format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#), &payload, es256(&key));
    assert!(verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).is_ok());
}

#[test]
fn keys_and_extensions_a_header_carries_are_not_used() {
    // A token that brings its own key (`jwk`), or points at one (`jku`, `x5u`), is checked
    // against the trusted keys only; `crit` is refused even for the one extension
    // (`b64`) that jsonwebtoken itself understands.
    let (trusted, attacker) = (key(), key());
    let payload = payload(&claims(TokenUse::Access));
    let attacker_jwk = serde_json::to_string(&attacker.public_jwk()).unwrap();
    let (tk, ak) = (trusted.kid(), attacker.kid());
    let cases = [
        (format!(r#"{{"alg":"ES256","kid":"{ak}","jwk":{attacker_jwk}}}"#), "own kid"),
        (format!(r#"{{"alg":"ES256","kid":"{tk}","jwk":{attacker_jwk}}}"#), "trusted kid"),
        (format!(r#"{{"alg":"ES256","kid":"{tk}","jku":"https://evil.example/jwks.json"}}"#), "jku"),
        (format!(r#"{{"alg":"ES256","kid":"{tk}","x5u":"https://evil.example/cert.pem"}}"#), "x5u"),
    ];
    for (header, case) in cases {
        let token = forge(&header, &payload, es256(&attacker));
        let err = verifier(&trusted).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
        let expected = if case == "own kid" { TokenError::UnknownKey(ak.to_owned()) } else { TokenError::Signature };
        assert_eq!(err, expected, "{case}");
    }
    for header in [
        format!(r#"{{"alg":"ES256","kid":"{tk}","b64":true,"crit":["b64"]}}"#),
        format!(r#"{{"alg":"ES256","kid":"{tk}","b64":false}}"#),
    ] {
        let token = forge(&header, &payload, es256(&trusted));
        let err = verifier(&trusted).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
        assert!(matches!(err, TokenError::Malformed(_)), "{header}: {err:?}");
    }
}

#[test]
fn kid_of_the_wrong_type_and_claims_of_the_wrong_shape_are_refused() {
    let key = key();
    let payload_text = payload(&claims(TokenUse::Access));
    let token = forge(r#"{"alg":"ES256","kid":7}"#, &payload_text, es256(&key));
    let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
    assert_eq!(err, TokenError::UnknownKey("kid is not a string".into()));

    let header = header_with_alg("ES256", key.kid());
    let mut shapes = Vec::new();
    for (member, value) in [
        ("aud", serde_json::json!(1234)),
        ("aud", serde_json::json!([1, 2])),
        ("exp", serde_json::json!("tomorrow")),
        ("iss", serde_json::json!(null)),
        ("sub", serde_json::json!(["alice"])),
    ] {
        let mut json: serde_json::Value = serde_json::to_value(claims(TokenUse::Access)).unwrap();
        json[member] = value;
        shapes.push(json.to_string());
    }
    // A payload that is a JSON array, and one that names a member twice.
    shapes.push("[1,2,3]".into());
    shapes.push(payload_text.replacen(r#""sub":"alice""#, r#""sub":"alice","sub":"admin""#, 1));
    for claims_json in shapes {
        let token = forge(&header, &claims_json, es256(&key));
        let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
        assert!(matches!(err, TokenError::Malformed(_) | TokenError::Audience(_)), "{claims_json}: {err:?}");
    }
}

#[test]
fn a_payload_that_is_not_base64url_is_refused_before_it_is_read() {
    let key = key();
    let token = key.sign(&claims(TokenUse::Access)).unwrap();
    let p = parts(&token);
    // Signed over the text as sent, so the signature is good; the payload is then not
    // base64url at all, or base64url of something that is not JSON.
    for payload_b64 in ["!!!!".to_owned(), b64(b"not json")] {
        let token = forge_b64(&p[0], &payload_b64, es256(&key));
        let err = verifier(&key).verify(&token, AUDIENCE, TokenUse::Access, NOW).unwrap_err();
        assert!(matches!(err, TokenError::Malformed(_)), "{payload_b64}: {err:?}");
    }
}

/// Like [`forge`], with the header and payload given already encoded.
fn forge_b64(header_b64: &str, payload_b64: &str, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{header_b64}.{payload_b64}");
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

#[test]
fn resource_actions_come_from_scopes() {
    let scope: crate::Scope = "repository:localhost:5000/a/b:pull,push".parse().unwrap();
    let ra = ResourceActions::from(scope);
    assert_eq!(ra.resource_type, "repository");
    assert_eq!(ra.name, "localhost:5000/a/b");
    assert_eq!(ra.actions, ["pull", "push"]);
}
