//! One module per subcommand group; each reads (or writes) etcd and hands a view to `output`.

pub mod ipam;
pub mod network;
pub mod node;

use store::Store;

use crate::cli::{Command, IpamCommand, NetworkCommand, NodeCommand};
use crate::error::Error;
use crate::output::{emit, Format};

pub async fn run(command: &Command, store: &mut Store, format: Format) -> Result<(), Error> {
    match command {
        Command::Network(NetworkCommand::Create(args)) => {
            emit(format, &network::create(store, args).await?)
        }
        Command::Network(NetworkCommand::Ls) => emit(format, &network::list(store).await?),
        Command::Network(NetworkCommand::Inspect { name }) => {
            emit(format, &network::inspect(store, name).await?)
        }
        Command::Network(NetworkCommand::Rm { name }) => {
            emit(format, &network::remove(store, name).await?)
        }
        Command::Node(NodeCommand::Ls) => emit(format, &node::list(store).await?),
        Command::Node(NodeCommand::Rm { node, force }) => {
            emit(format, &node::remove(store, node, *force).await?)
        }
        Command::Ipam(IpamCommand::Usage { name }) => {
            emit(format, &ipam::usage(store, name.as_deref()).await?)
        }
    }
}
