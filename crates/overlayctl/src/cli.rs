//! Command-line options and the etcd configuration built from them.
//!
//! Values that overlayctl checks itself (names, addresses, VNI, MTU) are taken as strings, so that
//! a bad one gets the same one-line error and exit status 1 whatever is wrong with it.

use clap::{Args as ClapArgs, Parser, Subcommand};
use model::types::{FIRST_AUTO_VNI, MAX_MTU, MAX_VNI, MIN_MTU};
use store::cli::{EtcdArgs, Tuning};

use crate::output::Format;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "overlayctl",
    version,
    about = "Manage cni-overlay networks: the networks, VNIs, nodes and addresses kept in etcd"
)]
pub struct Args {
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// Output format: aligned columns for people, JSON for scripts.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table, global = true)]
    pub output: Format,

    #[command(subcommand)]
    pub command: Command,
}

/// overlayctl's etcd flags: a local etcd by default, also read from `OVERLAYCTL_*`, and global,
/// so they may follow the subcommand too.
const ETCD_FLAGS: Tuning = Tuning {
    env_prefix: "OVERLAYCTL",
    default_endpoint: Some("127.0.0.1:2379"),
    timeout_ms: store::config::DEFAULT_TIMEOUT_MS,
    global: true,
};

impl Args {
    /// Parses a command line (the process's: `std::env::args_os()`).
    pub fn try_parse_args<I, T>(args: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        store::cli::parse(args, &ETCD_FLAGS)
    }
}

/// A usage error as one line, like every other error of overlayctl: clap's message without its
/// usage block, e.g. `the following required arguments were not provided: --subnet <CIDR>; try --help`.
pub fn one_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let mut out = String::new();
    for raw in rendered
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
    {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if !out.is_empty() {
            // Items listed under a `...:` line stay a list; anything else is a new sentence.
            let list_item = raw.starts_with(' ') && !line.starts_with("tip:");
            out.push_str(if out.ends_with(':') {
                " "
            } else if list_item {
                ", "
            } else {
                "; "
            });
        }
        out.push_str(line);
    }
    let message = out.strip_prefix("error: ").unwrap_or(&out);
    format!("{message}; try --help")
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Create, list, inspect and remove overlay networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// The hosts of the overlay.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Address usage of the networks.
    #[command(subcommand)]
    Ipam(IpamCommand),
}

#[derive(Debug, Clone, Subcommand)]
pub enum NetworkCommand {
    /// Create a network: its name and VNI are reserved cluster-wide in one transaction.
    Create(CreateArgs),
    /// List the networks with their endpoint counts.
    #[command(visible_alias = "list")]
    Ls,
    /// Show a network and every container attached to it, on every host.
    Inspect { name: String },
    /// Remove a network that no container uses any more.
    #[command(visible_alias = "remove")]
    Rm { name: String },
}

#[derive(Debug, Clone, ClapArgs)]
pub struct CreateArgs {
    /// Network name: [a-zA-Z0-9][a-zA-Z0-9_.-]*
    pub name: String,

    /// Subnet in CIDR form; at most one IPv4 and one IPv6 (repeat for dual stack).
    #[arg(long, value_name = "CIDR", required = true)]
    pub subnet: Vec<String>,

    /// Gateway of a subnet (default: the subnet's first address); one per subnet.
    #[arg(long, value_name = "IP")]
    pub gateway: Vec<String>,

    /// Hand out addresses only from this part of its subnet.
    #[arg(long, value_name = "CIDR")]
    pub ip_range: Option<String>,

    // VXLAN network identifier (help text from the model's limits).
    #[arg(long, value_name = "N", help = format!(
        "VXLAN network identifier, 1-{MAX_VNI} (default: the lowest free one from {FIRST_AUTO_VNI} up)"
    ))]
    pub vni: Option<String>,

    // MTU of the containers' interfaces (help text from the model's limits).
    #[arg(long, value_name = "N", help = format!(
        "MTU of the containers' interfaces, {MIN_MTU}-{MAX_MTU} (default: the plugin's, from the VTEP)"
    ))]
    pub mtu: Option<String>,

    /// No route out of the overlay: containers reach each other only.
    #[arg(long)]
    pub internal: bool,

    /// Let each host reach the containers of the network through the gateway address.
    #[arg(long)]
    pub host_access: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum NodeCommand {
    /// List the hosts: those with a live overlayd, and those only named by endpoint records.
    #[command(visible_alias = "list")]
    Ls,
}

#[derive(Debug, Clone, Subcommand)]
pub enum IpamCommand {
    /// Used, free and total addresses of each range of each network (or of the one named).
    Usage { name: Option<String> },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        EtcdArgs::tune(Args::command(), &ETCD_FLAGS).debug_assert();
    }

    #[test]
    fn global_options_go_anywhere_and_build_the_store_configuration() {
        let args = Args::try_parse_args([
            "overlayctl",
            "network",
            "ls",
            "--etcd",
            "a:1, b:2",
            "-o",
            "json",
            "--timeout-ms",
            "700",
            "--etcd-ca",
            "/ca.pem",
        ])
        .unwrap();
        let config = args.etcd.config();
        assert_eq!(config.endpoints, vec!["a:1", "b:2"]);
        assert_eq!(config.timeout_ms, 700);
        assert_eq!(config.prefix, "/cni-overlay");
        assert!(config.tls.is_some());
        assert_eq!(args.output, Format::Json);
    }

    #[test]
    fn usage_errors_are_one_line() {
        let e = Args::try_parse_args(["overlayctl", "network", "create", "n"]).unwrap_err();
        assert_eq!(
            one_line(&e),
            "the following required arguments were not provided: --subnet <CIDR>; try --help"
        );
        let e = Args::try_parse_args(["overlayctl", "network", "create"]).unwrap_err();
        assert_eq!(
            one_line(&e),
            "the following required arguments were not provided: --subnet <CIDR>, <NAME>; try --help"
        );
        let e =
            Args::try_parse_args(["overlayctl", "network", "create", "n", "--bogus"]).unwrap_err();
        assert_eq!(
            one_line(&e),
            "unexpected argument '--bogus' found; tip: to pass '--bogus' as a value, use '-- --bogus'; try --help"
        );
    }
}
