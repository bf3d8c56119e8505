use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match overlayctl::cli::Args::try_parse_args(std::env::args_os()) {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            eprintln!("overlayctl: {}", overlayctl::cli::one_line(&e));
            return ExitCode::FAILURE;
        }
    };
    // Warnings (skipped corrupt records) and, with RUST_LOG=debug, the store's failover attempts;
    // in the same `overlayctl: ...` form as errors, since this is a terminal tool, not a daemon.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format(|buf, record| {
            writeln!(
                buf,
                "overlayctl: {}: {}",
                record.level().as_str().to_ascii_lowercase(),
                record.args()
            )
        })
        .target(env_logger::Target::Stderr)
        .init();
    match overlayctl::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("overlayctl: {e}");
            ExitCode::FAILURE
        }
    }
}
