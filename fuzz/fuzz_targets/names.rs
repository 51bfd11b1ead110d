//! Digest and reference parsing (`Digest`, `Algorithm`, `RepoName`, `Tag`, `Reference`,
//! `UploadId` from strings), the request path router that applies them, and the saved hash
//! state of an upload (`DigestHasher::restore_state`).
//!
//! Each accepted value must print back to a string that parses to the same value: the
//! registry prints these into paths, headers and database keys and reads them back.
#![no_main]

use std::fmt::Display;
use std::str::FromStr;

use berth_oci::{Algorithm, Digest, DigestHasher, Reference, RepoName, Tag, UploadId};
use berth_registry::http::route::Route;
use libfuzzer_sys::fuzz_target;

fn round_trip<T: FromStr + Display + PartialEq + std::fmt::Debug>(s: &str) {
    if let Ok(v) = s.parse::<T>() {
        let printed = v.to_string();
        match printed.parse::<T>() {
            Ok(again) => assert_eq!(again, v, "{s:?} printed as {printed:?} parses to another value"),
            Err(_) => panic!("{s:?} parsed, but its printed form {printed:?} does not"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        round_trip::<Digest>(s);
        round_trip::<Algorithm>(s);
        round_trip::<RepoName>(s);
        round_trip::<Tag>(s);
        round_trip::<Reference>(s);
        round_trip::<UploadId>(s);
        if let Ok(d) = s.parse::<Digest>() {
            assert_eq!(d.to_string(), format!("{}:{}", d.algorithm(), d.hex()));
        }
        // Reads and writes answer references that cannot exist differently (404 / 400).
        for method in [http::Method::GET, http::Method::PUT] {
            let _ = Route::parse(&method, s);
        }
    }
    if let Ok(hasher) = DigestHasher::restore_state(data) {
        let mut hasher = hasher;
        hasher.update(b"more");
        let _ = hasher.finish();
    }
});
