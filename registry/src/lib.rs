//! The Berth registry server.
//!
//! Layout:
//! - [`config`]: configuration from defaults, a TOML file, `BERTH_*` variables and flags.
//! - [`data_dir`]: the data folder and database file kept private (0700, 0600).
//! - [`app`]: opens the stores and assembles a running registry ([`app::App`],
//!   [`app::RunningServer`]).
//! - [`server`]: the accept loop (HTTP/1.1, graceful shutdown, TLS probes answered fast).
//! - [`tls`]: HTTPS on the same listener: certificate files, reloaded on change or SIGHUP.
//! - [`zerocopy`]: plaintext blobs on the local disk sent to plain-HTTP sockets with
//!   `sendfile(2)`: the connection wrapper and the placeholder bodies it recognizes.
//! - [`http`]: the HTTP edge: routes, middleware, request parsing, the error table.
//! - [`service`]: registry verbs over the stores (uploads, blobs, manifests, listings).
//! - [`events`]: webhooks: subscriptions, payload formats, signatures, the dispatcher.
//! - [`error`]: [`error::ApiError`], every failure in protocol terms.
//! - [`upstream`]: the OCI client for other registries (pull-through and replication).
//!
//! Invariants:
//! - No HTTP or axum type appears outside `http` (and the accept loop in `server`).
//! - Every request's route is parsed, and the access it needs derived, before its body is read.
//! - One table (`http::error::code_and_status`) maps each error to its OCI code and status.

pub mod app;
pub mod auth;
pub mod config;
pub mod data_dir;
pub mod error;
pub mod events;
pub mod http;
pub mod rules;
pub mod server;
pub mod service;
pub mod tls;
pub mod upstream;
pub mod zerocopy;
