//! IAM-style policy documents (being written).
