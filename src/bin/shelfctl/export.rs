//! `shelfctl snapshot export`: read a snapshot's export stream over the socket into a
//! file (sparse: all-zero blocks are seeked over, so holes stay holes) or stdout, with a
//! progress bar on a terminal; or have shelfd write it under its export directories.

use std::fs::File;
use std::io::{IsTerminal, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::ExitCode;

use ciborium::Value;
use clap::Args;

use shelf::client::{get, get_text, get_u64, Client, ClientError, RemoteError};
use shelf::proto::{Request, SnapshotExportArgs, StreamReadArgs, StreamRef};

use crate::jobs::{fail, wait};

/// Blocks this size that are all zeros are seeked over in a file destination.
const BLOCK: usize = 4096;

/// `shelfctl snapshot export SNAP FILE|- [--format qcow2] [--server-path PATH]`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The snapshot: id, or name with --share.
    pub snapshot: String,
    /// Where to write the image: a new file, or `-` for stdout. Not with --server-path.
    pub file: Option<String>,
    /// `raw` (default) or `qcow2`.
    #[arg(long)]
    pub format: Option<String>,
    /// Have shelfd write the image itself to this absolute path beneath one of its
    /// `[images] export_dirs` (a job; shelfctl waits for it).
    #[arg(long)]
    pub server_path: Option<String>,
    /// The snapshot's share, when the snapshot is given by name.
    #[arg(long)]
    pub share: Option<String>,
    /// Pool, when the share's name is in several.
    #[arg(long)]
    pub pool: Option<String>,
}

impl ExportArgs {
    /// The request it makes.
    pub fn request(&self) -> SnapshotExportArgs {
        SnapshotExportArgs {
            snapshot: self.snapshot.clone(),
            share: self.share.clone(),
            pool: self.pool.clone(),
            format: self.format.clone(),
            path: self.server_path.clone(),
        }
    }
}

/// Where the bytes go.
enum Sink {
    Stdout(std::io::Stdout),
    /// A new file, written sparse.
    File(File),
}

impl Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout(o) => o.write_all(data),
            Sink::File(f) => {
                for block in data.chunks(BLOCK) {
                    if block.iter().all(|b| *b == 0) {
                        f.seek(SeekFrom::Current(block.len() as i64))?;
                    } else {
                        f.write_all(block)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn finish(&mut self, len: u64) -> std::io::Result<()> {
        match self {
            Sink::Stdout(o) => o.flush(),
            Sink::File(f) => {
                f.set_len(len)?;
                f.sync_all()
            }
        }
    }
}

/// Run the command.
pub fn run(socket: &Path, key: Option<&str>, a: ExportArgs) -> ExitCode {
    let to_file = match (&a.file, &a.server_path) {
        (Some(f), None) => f.clone(),
        (None, Some(_)) => String::new(),
        _ => {
            eprintln!("shelfctl: snapshot export: give FILE (or - for stdout), or --server-path, not both");
            return ExitCode::from(2);
        }
    };
    // The destination first: an export is not started for a file that cannot be made.
    let mut sink = if a.server_path.is_some() || to_file == "-" {
        Sink::Stdout(std::io::stdout())
    } else {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&to_file)
        {
            Ok(f) => Sink::File(f),
            Err(e) => {
                eprintln!("shelfctl: {to_file}: {e}");
                return ExitCode::from(1);
            }
        }
    };
    let drop_file = |sink: &Sink| {
        if matches!(sink, Sink::File(_)) {
            let _ = std::fs::remove_file(&to_file);
        }
    };
    let mut c = match Client::connect(socket) {
        Ok(c) => c,
        Err(e) => {
            drop_file(&sink);
            return fail("connect", e);
        }
    };
    let reply = match c.request_keyed(&Request::SnapshotExport(a.request()), key) {
        Ok(v) => v,
        Err(e) => {
            drop_file(&sink);
            return fail("snapshot.export", e);
        }
    };
    if a.server_path.is_some() {
        return match get_text(&reply, "job") {
            Some(job) => wait(&mut c, job),
            None => {
                eprintln!("shelfctl: snapshot.export: the reply names no job");
                ExitCode::from(3)
            }
        };
    }
    let (Some(stream), size) = (get_text(&reply, "stream"), get_u64(&reply, "size")) else {
        eprintln!("shelfctl: snapshot.export: the reply names no stream");
        drop_file(&sink);
        return ExitCode::from(3);
    };
    let stream = stream.to_string();
    let got = pull(&mut c, &stream, &mut sink, size.unwrap_or(0));
    match got {
        Ok(n) => {
            if std::io::stderr().is_terminal() {
                eprintln!();
            }
            eprintln!("exported {n} bytes");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = c.request(&Request::StreamClose(StreamRef { stream }));
            drop_file(&sink);
            fail("snapshot export", e)
        }
    }
}

/// Read the stream to its end into `sink`; returns the bytes read.
fn pull(c: &mut Client, stream: &str, sink: &mut Sink, size: u64) -> Result<u64, ClientError> {
    let tty = std::io::stderr().is_terminal();
    let local = |m: String| {
        ClientError::Remote(RemoteError {
            code: "internal".into(),
            message: m,
        })
    };
    let mut at = 0u64;
    let mut shown = u64::MAX;
    loop {
        let v = c.request(&Request::StreamRead(StreamReadArgs {
            stream: stream.to_string(),
            max: None,
        }))?;
        let offset = get_u64(&v, "offset").unwrap_or(u64::MAX);
        if offset != at {
            return Err(local(format!(
                "the stream skipped: at {at}, the server sent bytes from {offset}"
            )));
        }
        let data = match get(&v, "data") {
            Some(Value::Bytes(b)) => b,
            _ => return Err(local("a stream.read reply without data".into())),
        };
        sink.write(data)
            .map_err(|e| local(format!("writing the export: {e}")))?;
        at += data.len() as u64;
        if tty && size > 0 && at * 100 / size != shown {
            shown = at * 100 / size;
            let filled = (shown / 5) as usize;
            eprint!(
                "\rsnapshot.export [{}{}] {shown:3}% {at}/{size}",
                "#".repeat(filled.min(20)),
                " ".repeat(20 - filled.min(20))
            );
            let _ = std::io::stderr().flush();
        }
        if matches!(get(&v, "end"), Some(Value::Bool(true))) {
            sink.finish(at)
                .map_err(|e| local(format!("finishing the export: {e}")))?;
            return Ok(at);
        }
    }
}
