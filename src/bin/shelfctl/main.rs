//! shelfctl: the command-line client of shelfd. The commands are in `cli`, their typed
//! requests in `request`, the tables they print in `output`.

use std::path::PathBuf;
use std::process::ExitCode;

use ciborium::Value;
use clap::Parser;

use shelf::client::{to_json, Client, ClientError};

mod cli;
mod export;
mod extstorage;
mod group;
mod jobs;
mod output;
mod replicate;
mod request;

use cli::{Cli, Command};
use request::Call;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Extstorage { args } = &cli.command {
        return extstorage::main(args, cli.socket);
    }
    let socket = cli
        .socket
        .or_else(|| std::env::var_os("SHELF_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/run/shelf/shelf.sock"));
    let key = cli.key.as_deref();
    let command = match cli.command {
        Command::Image(c) => return jobs::image(&socket, key, c),
        Command::Snapshot(cli::SnapshotCmd::Export(a)) => return export::run(&socket, key, a),
        Command::Job(c) => return jobs::job(&socket, c),
        Command::Events { since, epoch } => return jobs::events(&socket, since, epoch),
        Command::Send {
            snapshot,
            from,
            pool,
        } => return replicate::send(&socket, key, &snapshot, from, pool),
        Command::Receive { name, pool, chunk } => {
            return replicate::receive(&socket, key, &name, pool, chunk)
        }
        other => other,
    };
    let (call, kind) = match request::request(command) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shelfctl: {e}");
            return ExitCode::from(2);
        }
    };
    let result = Client::connect(&socket).and_then(|mut c| match &call {
        Call::Typed(r) => c.request_keyed(r, key),
        Call::Raw(op, a) => c.call_keyed(op, a.clone(), key),
    });
    match result {
        Ok(v) => {
            let unclean = matches!(kind, output::Kind::Verify)
                && !matches!(shelf::client::get(&v, "clean"), Some(Value::Bool(true)));
            if cli.json || matches!(kind, output::Kind::Raw) {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&to_json(&v)).unwrap_or_default()
                );
            } else {
                print!("{}", output::render(&kind, &v));
            }
            if unclean {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(ClientError::Remote(e)) => {
            eprintln!("shelfctl: {}: {}: {}", call.op(), e.code, e.message);
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("shelfctl: {e}");
            ExitCode::from(3)
        }
    }
}
