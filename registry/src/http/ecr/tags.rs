//! ECR operations of this group (filled in by issue 19's work). See `ecr/mod.rs`.

use super::{Ecr, EcrResult};

/// Serves `op` if it belongs to this group.
pub(super) async fn call(ecr: &Ecr<'_>, op: &str, body: &[u8]) -> Option<EcrResult> {
    let _ = (ecr, body);
    match op {
        _ => None,
    }
}
