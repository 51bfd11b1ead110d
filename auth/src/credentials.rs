//! Passwords and access keys (being written).
