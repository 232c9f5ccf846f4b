//! shelf: a storage-node appliance daemon.
//!
//! The crate is one straight walk from socket to disk: [`proto`] turns frames into typed
//! requests, [`server`] checks the peer and dispatches, [`engine`] runs each operation
//! (validating with [`model`], recording in [`store`], acting through [`pool`]), and
//! [`sys`] is the only code that talks to the operating system. [`client`] is the library
//! that `shelfctl`, integrations and tests use.
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod client;
pub mod config;
pub mod engine;
pub mod error;
pub mod export;
pub mod metrics;
pub mod model;
pub mod pool;
pub mod proto;
pub mod replication;
pub mod server;
pub mod store;
#[allow(unsafe_code)]
pub mod sys;

/// The server name reported by `hello`.
pub const SERVER_NAME: &str = "shelfd";
/// The crate version, reported by `hello`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
