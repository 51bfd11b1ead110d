#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Storage tests. One blob-store suite run against every backend and one metadata suite run
//! against every metadata store (SQLite; PostgreSQL when `BERTH_TEST_POSTGRES_URL` is set).

mod blob_store;
mod crypt;
mod local_append;
mod metadata;
mod metadata_ecr_repos;
mod metadata_gc;
mod metadata_images;
mod metadata_lifecycle;
mod metadata_mutability;
mod metadata_pull_through;
mod metadata_templates;
mod postgres_tls;
mod usage;
