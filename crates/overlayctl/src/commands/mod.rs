//! One module per subcommand group; each reads (or writes) etcd and hands a view to `output`.

pub mod ipam;
pub mod network;
pub mod node;

use model::records::{self, Endpoint};
use store::etcd_client::{GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse};
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

/// etcd refuses transactions of more than 128 operations by default (`--max-txn-ops`).
const MAX_TXN_OPS: usize = 100;

/// Counts the keys of each `(start, end)` key range, with count-only reads batched into
/// transactions: one round trip per hundred ranges, and no value is transferred.
async fn count_ranges(store: &mut Store, ranges: &[(String, Vec<u8>)]) -> Result<Vec<u64>, Error> {
    let mut counts = Vec::with_capacity(ranges.len());
    for chunk in ranges.chunks(MAX_TXN_OPS) {
        let reads: Vec<TxnOp> = chunk
            .iter()
            .map(|(start, end)| {
                TxnOp::get(
                    start.clone(),
                    Some(GetOptions::new().with_range(end.clone()).with_count_only()),
                )
            })
            .collect();
        let resp = store.txn(Txn::new().and_then(reads)).await?;
        counts.extend(resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(g) => g.count().max(0) as u64,
            _ => 0,
        }));
    }
    Ok(counts)
}

/// The range end that covers every key starting with `prefix`.
fn prefix_range(prefix: &str) -> (String, Vec<u8>) {
    (
        prefix.to_string(),
        store::client::prefix_end(prefix.as_bytes()),
    )
}

/// Decodes records, leaving out (with a warning) those that do not parse: one bad record must
/// not hide all the others from the operator who is trying to find out what is wrong.
fn decode_all<T: for<'de> serde::Deserialize<'de>>(kvs: &[KeyValue]) -> Vec<T> {
    kvs.iter()
        .filter_map(|kv| match records::decode::<T>(kv.key(), kv.value()) {
            Ok(record) => Some(record),
            Err(e) => {
                log::warn!("{e}; left out");
                None
            }
        })
        .collect()
}

/// What an endpoint is called in messages: its container name, else its short container id.
fn endpoint_label(e: &Endpoint) -> String {
    e.name.clone().unwrap_or_else(|| short_id(&e.container_id))
}

/// The first 12 characters, as docker shows container ids.
fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}
