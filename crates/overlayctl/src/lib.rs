//! overlayctl: the operator's view of the suite's state in etcd (networks, nodes, address usage).
//! It talks to etcd only, never to a host: everything it shows is what the plugins and overlayd
//! recorded there.

pub mod cli;
pub mod commands;
pub mod error;
pub mod output;

pub use error::Error;

/// Runs one command to completion.
pub fn run(args: cli::Args) -> Result<(), Error> {
    let mut store = store::Store::new(args.etcd.config())?;
    // One thread: the work is waiting for etcd.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(commands::run(&args.command, &mut store, args.output))
}
