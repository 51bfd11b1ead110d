//! Registry tests over real sockets: what needs a running server (restarts, streaming,
//! TLS probes, background maintenance). The protocol itself is covered by the conformance
//! suite, run in-process from `conformance/tests`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod auth;
mod bounds;
mod chunked_uploads;
mod cli;
mod concurrency;
mod config_switches;
mod early_answers;
mod ecr_auth;
mod ecr_common;
mod ecr_images;
mod ecr_layers;
mod ecr_repositories;
mod ecr_sdk;
mod encryption;
mod events;
mod gc;
mod gc_race;
mod images;
mod immutability;
mod integrity;
mod lifecycle;
mod limits;
mod pull_through;
mod quotas;
mod readme;
mod replicas;
mod replication;
mod restart;
mod secrets;
mod startup;
mod streaming;
mod templates;
mod throttle;
mod tls;
mod tls_probe;
mod uploads_maintenance;
mod upstream;
mod zerocopy;
