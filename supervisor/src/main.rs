//! `studio-worker`: the supervisor binary. Everything it does lives in
//! the library; this file parses the command line, starts error reports
//! (only with `SENTRY_DSN`), the log and the runtime, and turns an error
//! into one line on stderr and exit code 1.

use clap::Parser;
use studio_worker::cli::Cli;
use studio_worker::commands::dispatch;
use studio_worker::{logging, report};

fn main() {
    let cli = Cli::parse();
    let reports = report::init();
    logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("studio-worker: error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(dispatch(cli));
    // An update switched `current`: become the new version (same pid).
    if let (Ok(()), Some(program)) = (&result, studio_worker::update::exec_requested()) {
        drop(runtime);
        drop(reports);
        let err = studio_worker::update::exec(&program);
        eprintln!("studio-worker: error: {err:#}");
        std::process::exit(1);
    }
    if let Err(e) = result {
        let msg = format!("{e:#}").replace('\n', " ");
        eprintln!("studio-worker: error: {msg}");
        report::fatal_error(&msg);
        std::process::exit(1);
    }
}
