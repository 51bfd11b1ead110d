//! The only place object paths are formed. The tree, under the store's root:
//!
//! ```text
//! <root>/
//! ├── blobs/
//! │   ├── sha256/<hex[0..2]>/<hex>      committed plaintext blob content, written once
//! │   └── sha512/<hex[0..2]>/<hex>      after its digest was verified; shared by every
//! │                                     repository that stores plaintext
//! ├── sealed/
//! │   └── sha256/<hex[0..2]>/<hex>/
//! │       └── <object-id>               an encrypted copy of the blob (segments, see
//! │                                     `crypt::format`), one per key name; its data key
//! │                                     and runs are in the metadata store. Unique ids:
//! │                                     racing writers never share an object
//! └── uploads/
//!     └── <upload-id>/
//!         ├── data                      on the local disk, the upload's one data file:
//!         │                             each chunk appended in place, under a lock, then
//!         │                             renamed at commit (`local_append`)
//!         ├── <part>                    elsewhere, one staged chunk of an upload (a PATCH,
//!         │                             or the body of the final PUT), named
//!         │                             `<index>-<random>` so that racing writers never
//!         │                             share a path; also a one-request push's body
//!         └── assembled                 parts concatenated at commit, before the rename
//!                                       (sessions with several parts)
//! ```
//!
//! Which repositories may read a blob, and which parts make up an upload, is recorded in
//! the metadata store, not in this tree.

use berth_oci::{Digest, UploadId};
use object_store::path::Path;

/// Where a committed blob lives.
pub fn blob(digest: &Digest) -> Path {
    let hex = digest.hex();
    Path::from(format!("blobs/{}/{}/{}", digest.algorithm(), &hex[..2], hex))
}

/// Where an encrypted copy of a blob lives; `object` is the copy's id ([`object_id`]).
pub fn sealed_blob(digest: &Digest, object: &str) -> Path {
    let hex = digest.hex();
    Path::from(format!("sealed/{}/{}/{}/{}", digest.algorithm(), &hex[..2], hex, object))
}

/// What a path under `blobs/` or `sealed/` names: the blob, and for a sealed copy its
/// object id. `None` for anything else (the collector leaves such objects alone).
pub fn parse_object(path: &Path) -> Option<(Digest, Option<String>)> {
    let parts: Vec<&str> = path.as_ref().split('/').collect();
    let digest = |alg: &str, xx: &str, hex: &str| -> Option<Digest> {
        let d: Digest = format!("{alg}:{hex}").parse().ok()?;
        (hex.get(..2) == Some(xx)).then_some(d)
    };
    match parts.as_slice() {
        ["blobs", alg, xx, hex] => Some((digest(alg, xx, hex)?, None)),
        ["sealed", alg, xx, hex, object] => Some((digest(alg, xx, hex)?, Some((*object).to_owned()))),
        _ => None,
    }
}

/// A fresh id for an encrypted copy.
pub fn object_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The folder holding everything an upload staged.
pub fn upload_dir(id: &UploadId) -> Path {
    Path::from(format!("uploads/{id}"))
}

/// One staged part of an upload; `part` is a name made by [`part_name`].
pub fn upload_part(id: &UploadId, part: &str) -> Path {
    Path::from(format!("uploads/{id}/{part}"))
}

/// The name, in a session's part list, of its data file on the local disk.
pub const UPLOAD_DATA: &str = "data";

/// An upload's data file on the local disk, where its chunks are appended in place.
pub fn upload_data(id: &UploadId) -> Path {
    upload_part(id, UPLOAD_DATA)
}

/// A fresh name for the part at `index`: ordered by index, unique across racing writers.
pub fn part_name(index: usize) -> String {
    format!("{index:06}-{}", uuid::Uuid::new_v4().simple())
}

/// The concatenation of an upload's parts, made at commit when there is more than one.
pub fn upload_assembled(id: &UploadId) -> Path {
    Path::from(format!("uploads/{id}/assembled"))
}

/// A path that never exists, probed to check that the store answers.
pub fn probe() -> Path {
    Path::from("readiness-probe")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let d = Digest::sha256_of(b"");
        assert_eq!(
            blob(&d).as_ref(),
            "blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let id: UploadId = "abc-1".parse().unwrap();
        let name = part_name(3);
        assert!(name.starts_with("000003-") && name != part_name(3));
        assert_eq!(upload_part(&id, "p").as_ref(), "uploads/abc-1/p");
        assert_eq!(
            sealed_blob(&d, "o1").as_ref(),
            "sealed/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/o1"
        );
        assert_ne!(object_id(), object_id());
        assert_eq!(parse_object(&blob(&d)), Some((d.clone(), None)));
        assert_eq!(parse_object(&sealed_blob(&d, "o1")), Some((d.clone(), Some("o1".into()))));
        assert_eq!(
            parse_object(&Path::from(
                "blobs/sha256/00/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            )),
            None
        );
        assert_eq!(parse_object(&Path::from("blobs/sha256/e3/nothex")), None);
        assert_eq!(parse_object(&upload_part(&id, "p")), None);
        assert_eq!(upload_assembled(&id).as_ref(), "uploads/abc-1/assembled");
        assert_eq!(upload_data(&id).as_ref(), "uploads/abc-1/data");
        assert!(!part_name(0).starts_with(UPLOAD_DATA));
        assert!(upload_part(&id, &name).prefix_matches(&upload_dir(&id)));
    }
}
