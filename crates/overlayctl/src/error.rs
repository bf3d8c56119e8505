//! The crate's one error type; main prints it as one line after `overlayctl: `.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value given on the command line that cannot work. Nothing has been written.
    #[error("{0}")]
    Invalid(String),

    /// etcd through the store (its message names the endpoints when they are unreachable), and
    /// the store's refusals of `network create` and `network rm`.
    #[error(transparent)]
    Store(#[from] store::StoreError),

    #[error(
        "node {0} is alive (its overlayd holds a lease) and its containers use what it holds: \
             refusing to release it; --force releases it anyway"
    )]
    NodeAlive(String),

    #[error("node {node} registered again during the release: stopped after releasing {released}")]
    NodeBack { node: String, released: String },

    #[error("writing the output: {0}")]
    Output(#[source] io::Error),

    #[error("starting the async runtime: {0}")]
    Runtime(#[source] io::Error),
}

/// The model's rules broken by a command line's values are [`Error::Invalid`]; a record that
/// does not decode is the store's corrupt record (`corrupt record at KEY: ...`).
impl From<model::Error> for Error {
    fn from(e: model::Error) -> Self {
        match e {
            model::Error::Invalid(reason) => Error::Invalid(reason),
            corrupt => Error::Store(corrupt.into()),
        }
    }
}
