//! `almd`: run an alm overlay node, or query a running one.
//!
//! Exit codes: 0 success (also after SIGINT/SIGTERM), 2 a user-caused
//! failure (bad configuration, port in use, no root for the TAP, no
//! /dev/net/tun, unreachable bootstrap, control socket problems), 1 anything
//! else. Errors are one line on stderr, never a panic.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use alm_mio::config::{Cli, Command, QueryArgs};
use alm_mio::control::{self, Request};
use alm_mio::event_loop;

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn fail(msg: &str, code: u8) -> ExitCode {
    eprintln!("almd: error: {msg}");
    ExitCode::from(code)
}

fn query(q: &QueryArgs, req: Request) -> ExitCode {
    let path = q.control_path();
    match control::query(&path, req, Duration::from_secs(5)) {
        Ok(v) => {
            if q.json {
                println!("{v}");
            } else if req == Request::Groups {
                print!("{}", alm_mio::status::groups_table(&v));
            } else {
                print!("{}", control::render_human(&v));
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string(), 2),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            init_logging();
            let cfg = match args.resolve() {
                Ok(c) => c,
                Err(e) => return fail(&e.to_string(), 2),
            };
            match event_loop::run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e.to_string(), e.exit_code()),
            }
        }
        Command::Status(q) => query(&q, Request::Status),
        Command::Groups(q) => query(&q, Request::Groups),
    }
}
