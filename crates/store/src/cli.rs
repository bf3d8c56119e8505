//! The etcd flags of the command-line tools (overlayd, overlayctl), defined once: their names,
//! help and the [`EtcdConfig`] they make. What differs between the tools (the environment
//! variables' prefix, a default endpoint, the time budget, whether the flags may follow a
//! subcommand) is set by [`EtcdArgs::tune`] on the tool's command.

use clap::{Args, Command, CommandFactory, FromArgMatches};

use crate::config::{EtcdConfig, SettingNames, TlsFiles, DEFAULT_PREFIX, DEFAULT_TIMEOUT_MS};

/// Where etcd is and how to log in.
#[derive(Debug, Clone, Args)]
pub struct EtcdArgs {
    /// etcd endpoints, [http[s]://]host:port, comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    pub etcd: Vec<String>,

    /// Prefix of every key in etcd.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub etcd_prefix: String,

    /// PEM file of the CA that signed the etcd servers' certificates (turns TLS on).
    #[arg(long)]
    pub etcd_ca: Option<String>,

    /// PEM client certificate for etcd (with --etcd-key; turns TLS on).
    #[arg(long, requires = "etcd_key")]
    pub etcd_cert: Option<String>,

    /// PEM key of the client certificate.
    #[arg(long, requires = "etcd_cert")]
    pub etcd_key: Option<String>,

    /// etcd user name (with --etcd-password).
    #[arg(long, requires = "etcd_password")]
    pub etcd_user: Option<String>,

    /// etcd password (better passed in the environment than on the command line).
    #[arg(long, hide_env_values = true, requires = "etcd_user")]
    pub etcd_password: Option<String>,

    /// Time budget of each etcd request in milliseconds, failover to other endpoints included.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_MS)]
    pub timeout_ms: u64,
}

/// The flags above as messages name them (the unit test holds them to the command's flags).
pub const FLAG_NAMES: SettingNames = SettingNames {
    endpoints: "--etcd",
    prefix: "--etcd-prefix",
    timeout_ms: "--timeout-ms",
    username: "--etcd-user",
    password: "--etcd-password",
    // Valid TLS flags always hold --etcd-ca (validation asks for it first).
    tls: "--etcd-ca",
    tls_ca: "--etcd-ca",
    tls_cert: "--etcd-cert",
    tls_key: "--etcd-key",
};

/// How one tool takes the etcd flags.
#[derive(Debug, Clone)]
pub struct Tuning<'a> {
    /// Each flag is also read from `<PREFIX>_<FLAG>` (`OVERLAYD_ETCD`, `OVERLAYCTL_ETCD_CA`, ...).
    pub env_prefix: &'a str,
    /// None: `--etcd` is required.
    pub default_endpoint: Option<&'a str>,
    pub timeout_ms: u64,
    /// The flags may also follow a subcommand.
    pub global: bool,
}

const FLAGS: [&str; 8] = [
    "etcd",
    "etcd_prefix",
    "etcd_ca",
    "etcd_cert",
    "etcd_key",
    "etcd_user",
    "etcd_password",
    "timeout_ms",
];

/// Parses a tool's command line (the process's: `std::env::args_os()`), its flattened
/// [`EtcdArgs`] tuned with `tuning`.
pub fn parse<A, I, T>(args: I, tuning: &Tuning) -> Result<A, clap::Error>
where
    A: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = EtcdArgs::tune(A::command(), tuning).try_get_matches_from(args)?;
    A::from_arg_matches(&matches)
}

impl EtcdArgs {
    /// `command` (which flattens [`EtcdArgs`]) with the etcd flags tuned for one tool.
    pub fn tune(command: Command, tuning: &Tuning) -> Command {
        let timeout = tuning.timeout_ms.to_string();
        let mut command = command.mut_arg("timeout_ms", |a| a.default_value(timeout));
        command = match tuning.default_endpoint {
            Some(endpoint) => command.mut_arg("etcd", |a| a.default_value(endpoint.to_string())),
            None => command.mut_arg("etcd", |a| a.required(true)),
        };
        for id in FLAGS {
            let env = format!("{}_{}", tuning.env_prefix, id.to_ascii_uppercase());
            command = command.mut_arg(id, |a| a.env(env).global(tuning.global));
        }
        command
    }

    /// The store configuration; the store validates it before connecting.
    pub fn config(&self) -> EtcdConfig {
        let tls = (self.etcd_ca.is_some() || self.etcd_cert.is_some()).then(|| TlsFiles {
            ca: self.etcd_ca.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
        });
        EtcdConfig {
            endpoints: self
                .etcd
                .iter()
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect(),
            prefix: self.etcd_prefix.clone(),
            tls,
            username: self.etcd_user.clone(),
            password: self.etcd_password.clone(),
            timeout_ms: self.timeout_ms,
            names: FLAG_NAMES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser, Subcommand};

    #[derive(Debug, Parser)]
    struct Tool {
        #[command(flatten)]
        etcd: EtcdArgs,
        #[command(subcommand)]
        command: Option<Sub>,
    }

    #[derive(Debug, Subcommand)]
    enum Sub {
        Go,
    }

    fn parse(tuning: &Tuning, args: &[&str]) -> Result<Tool, clap::Error> {
        super::parse(std::iter::once("tool").chain(args.iter().copied()), tuning)
    }

    const DAEMON: Tuning = Tuning {
        env_prefix: "STORE_CLI_TEST_D",
        default_endpoint: None,
        timeout_ms: 3000,
        global: false,
    };
    const CLI: Tuning = Tuning {
        env_prefix: "STORE_CLI_TEST_C",
        default_endpoint: Some("127.0.0.1:2379"),
        timeout_ms: 5000,
        global: true,
    };

    #[test]
    fn one_definition_two_tunings() {
        assert!(parse(&DAEMON, &[]).is_err(), "--etcd is required");
        let d = parse(&DAEMON, &["--etcd", "a:1,http://b:2"])
            .unwrap()
            .etcd
            .config();
        assert_eq!(d.endpoints, ["a:1", "http://b:2"]);
        assert_eq!((d.timeout_ms, d.prefix.as_str()), (3000, "/cni-overlay"));
        assert!(
            parse(&DAEMON, &["--etcd", "a:1", "go", "--etcd-prefix", "/x"]).is_err(),
            "not global"
        );

        let c = parse(&CLI, &["go", "--etcd-prefix", "/x", "--timeout-ms", "70"]).unwrap();
        assert!(matches!(c.command, Some(Sub::Go)));
        let c = c.etcd.config();
        assert_eq!(c.endpoints, ["127.0.0.1:2379"]);
        assert_eq!((c.timeout_ms, c.prefix.as_str()), (70, "/x"));
    }

    #[test]
    fn tls_and_credentials_go_together() {
        assert!(parse(&CLI, &["--etcd-cert", "c"]).is_err());
        assert!(parse(&CLI, &["--etcd-user", "u"]).is_err());
        let c = parse(
            &CLI,
            &[
                "--etcd-ca=/ca",
                "--etcd-cert=/c",
                "--etcd-key=/k",
                "--etcd-user=u",
                "--etcd-password=p",
            ],
        )
        .unwrap()
        .etcd
        .config();
        let tls = c.tls.unwrap();
        assert_eq!(
            (tls.ca.as_deref(), tls.cert.as_deref(), tls.key.as_deref()),
            (Some("/ca"), Some("/c"), Some("/k"))
        );
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (Some("u"), Some("p"))
        );
    }

    #[test]
    fn messages_name_the_flags() {
        let command = EtcdArgs::tune(Tool::command(), &CLI);
        let longs: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_long())
            .map(|l| format!("--{l}"))
            .collect();
        let n = FLAG_NAMES;
        for name in [
            n.endpoints,
            n.prefix,
            n.timeout_ms,
            n.username,
            n.password,
            n.tls,
            n.tls_ca,
            n.tls_cert,
            n.tls_key,
        ] {
            assert!(
                longs.iter().any(|l| l == name),
                "{name} is no flag: {longs:?}"
            );
        }

        let config = |args: &[&str]| parse(&CLI, args).unwrap().etcd.config();
        let error = |c: EtcdConfig| c.validate().unwrap_err().to_string();
        let msg = error(config(&["--etcd", "https://a:1"]));
        assert!(msg.contains("--etcd-ca must name the CA"), "{msg}");
        let msg = error(config(&["--etcd-cert", "/c", "--etcd-key", "/k"]));
        assert!(msg.contains("--etcd-ca is required with TLS"), "{msg}");
        let msg = error(config(&["--etcd-ca", "/ca", "--etcd", "http://a:1"]));
        assert!(msg.contains("TLS is configured (--etcd-ca)"), "{msg}");
        let msg = error(config(&["--etcd-prefix", "x/"]));
        assert!(
            msg.contains(": --etcd-prefix \"x/\" must start with /"),
            "{msg}"
        );
        // A plugin's configuration keeps its own names.
        let msg = error(EtcdConfig::new(vec![]));
        assert!(msg.contains("etcd.endpoints is empty"), "{msg}");
    }

    #[test]
    fn environment_variables_carry_the_prefix() {
        // A prefix no other test uses: the environment is the process's.
        std::env::set_var("STORE_CLI_TEST_E_ETCD_PREFIX", "/from-env");
        let tuning = Tuning {
            env_prefix: "STORE_CLI_TEST_E",
            ..CLI
        };
        let c = parse(&tuning, &[]).unwrap().etcd.config();
        assert_eq!(c.prefix, "/from-env");
        std::env::remove_var("STORE_CLI_TEST_E_ETCD_PREFIX");
    }
}
