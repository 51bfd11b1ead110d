//! The `Berth-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `"<t>." + body` with the subscription's secret. The timestamp inside the signed text lets a
//! receiver refuse replays of an old request; several `v1=` values may appear (a receiver
//! accepts any), which leaves room to rotate secrets.

use aws_lc_rs::hmac;

pub const HEADER: &str = "berth-signature";

/// The header value for `body` sent at `t` (unix seconds).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", hex(hmac::sign(&key(secret), &signed_text(t, body)).as_ref()))
}

/// Checks a header value against `body`: a `v1` signature made with `secret` and a
/// timestamp within `tolerance_s` of `now` (unix seconds). What a receiver does.
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64, tolerance_s: i64) -> Result<(), &'static str> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.push(v.to_owned()),
            _ => {}
        }
    }
    let t = t.ok_or("no timestamp")?;
    if (now - t).abs() > tolerance_s {
        return Err("timestamp outside the tolerance");
    }
    let text = signed_text(t, body);
    let key = key(secret);
    let ok = sigs.iter().filter_map(|s| unhex(s)).any(|sig| hmac::verify(&key, &text, &sig).is_ok());
    if ok { Ok(()) } else { Err("no matching signature") }
}

fn key(secret: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())
}

fn signed_text(t: i64, body: &[u8]) -> Vec<u8> {
    let mut text = format!("{t}.").into_bytes();
    text.extend_from_slice(body);
    text
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        // HMAC-SHA256(key "secret-secret-secret", "1700000000.{}"), computed independently
        // with `printf '1700000000.{}' | openssl dgst -sha256 -hmac secret-secret-secret`.
        assert_eq!(
            sign("secret-secret-secret", 1_700_000_000, b"{}"),
            "t=1700000000,v1=9abb7ec2de5533bf35e03b3947b220889dd81b1238d43182a426463aafcc6e8c"
        );
    }

    #[test]
    fn verifies_and_refuses() {
        let body = br#"{"id":"x"}"#;
        let h = sign("k-0123456789abcdef", 1000, body);
        assert_eq!(verify("k-0123456789abcdef", &h, body, 1100, 300), Ok(()));
        assert_eq!(verify("k-0123456789abcdef", &h, b"{\"id\":\"y\"}", 1100, 300), Err("no matching signature"));
        assert_eq!(verify("another-secret-xx", &h, body, 1100, 300), Err("no matching signature"));
        assert_eq!(verify("k-0123456789abcdef", &h, body, 2000, 300), Err("timestamp outside the tolerance"));
        // A rotated secret: either signature passes.
        let other = sign("new-secret-0123456", 1000, body);
        let both = format!("{h},v1={}", other.split_once(",v1=").map(|(_, v)| v).unwrap_or_default());
        assert_eq!(verify("new-secret-0123456", &both, body, 1000, 300), Ok(()));
        // The timestamp is signed: moving it breaks the signature.
        let moved = h.replacen("t=1000", "t=1001", 1);
        assert_eq!(verify("k-0123456789abcdef", &moved, body, 1001, 300), Err("no matching signature"));
    }
}
