use std::process::ExitCode;

fn main() -> ExitCode {
    // `overlayd install-cni ...` (the Kubernetes DaemonSet's init step) is a command of its own
    // with its own flags; everything else is the agent.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == overlayd::install::SUBCOMMAND)
    {
        return overlayd::install::main(std::env::args_os().skip(1));
    }
    let args = match overlayd::cli::Args::try_parse_args(std::env::args_os()) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    // One thread is plenty: the work is waiting on etcd and netlink, never computing.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            log::error!("starting the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(overlayd::daemon::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
