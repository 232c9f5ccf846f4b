//! `shelfctl image ...`, `shelfctl job ...` and `shelfctl events`: the commands around
//! long-running jobs, with `--wait` progress (a bar on a terminal, plain lines otherwise).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use ciborium::Value;
use clap::Subcommand;

use shelf::client::{get, get_text, get_u64, to_json, Client, ClientError};
use shelf::proto::{EventsSubscribeArgs, ImageImportArgs, ImageRef, JobRef, PoolFilter, Request};

/// Cached images (Nova's `_base`).
#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Import an image from a path on the appliance (a job; converted to raw).
    Import {
        /// Name.
        name: String,
        /// Absolute path of the image file on the appliance.
        source: String,
        /// Format (raw, qcow2, vmdk, vdi, vhdx, vpc, qed); detected when absent.
        #[arg(long)]
        format: Option<String>,
        /// Checksum to verify: md5:HEX, sha256:HEX, or a bare md5 as Glance gives it.
        #[arg(long)]
        checksum: Option<String>,
        /// Pool.
        #[arg(long)]
        pool: Option<String>,
        /// Wait for the job and show its progress.
        #[arg(long)]
        wait: bool,
    },
    /// List images.
    List {
        /// Only this pool.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Show an image.
    Show {
        /// Id or name.
        image: String,
    },
    /// Delete an image (shares made from it are not touched).
    Delete {
        /// Id or name.
        image: String,
    },
}

/// Jobs.
#[derive(Debug, Subcommand)]
pub enum JobCmd {
    /// List jobs (newest first).
    List,
    /// Show a job.
    Show {
        /// Job id.
        job: String,
    },
    /// Wait for a job, showing its progress.
    Wait {
        /// Job id.
        job: String,
    },
    /// Ask a running job to stop.
    Cancel {
        /// Job id.
        job: String,
    },
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(&to_json(v)).unwrap_or_default()
    );
}

pub fn fail(op: &str, e: ClientError) -> ExitCode {
    match e {
        ClientError::Remote(e) => {
            eprintln!("shelfctl: {op}: {}: {}", e.code, e.message);
            ExitCode::from(1)
        }
        e => {
            eprintln!("shelfctl: {e}");
            ExitCode::from(3)
        }
    }
}

/// Poll a job until it ends; progress on stderr. Exit 0 when done, 1 when it failed.
pub fn wait(c: &mut Client, job: &str) -> ExitCode {
    let tty = std::io::stderr().is_terminal();
    let mut last_line = String::new();
    loop {
        let v = match c.request(&Request::JobShow(JobRef { job: job.into() })) {
            Ok(v) => v,
            Err(e) => return fail("job.show", e),
        };
        let state = get_text(&v, "state").unwrap_or("?").to_string();
        let (done, total) = (
            get_u64(&v, "done").unwrap_or(0),
            get_u64(&v, "total").unwrap_or(0),
        );
        let pct = if total > 0 {
            done as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        if tty {
            let filled = (pct / 5.0) as usize;
            eprint!(
                "\r{} [{}{}] {pct:5.1}% {}",
                get_text(&v, "op").unwrap_or(""),
                "#".repeat(filled),
                " ".repeat(20 - filled.min(20)),
                state
            );
            let _ = std::io::stderr().flush();
        } else {
            let line = format!("{state} {done}/{total} ({pct:.0}%)");
            if line != last_line {
                eprintln!("{line}");
                last_line = line;
            }
        }
        if state != "running" {
            if tty {
                eprintln!();
            }
            print_json(&v);
            return if state == "done" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            };
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Run an image command.
pub fn image(socket: &Path, key: Option<&str>, cmd: ImageCmd) -> ExitCode {
    let mut c = match Client::connect(socket) {
        Ok(c) => c,
        Err(e) => return fail("connect", e),
    };
    let image_ref = |image| ImageRef { image, pool: None };
    let (r, wait_for) = match cmd {
        ImageCmd::Import {
            name,
            source,
            format,
            checksum,
            pool,
            wait,
        } => {
            let a = ImageImportArgs {
                name,
                source,
                format,
                checksum,
                pool,
            };
            (Request::ImageImport(a), wait)
        }
        ImageCmd::List { pool } => (Request::ImageList(PoolFilter { pool }), false),
        ImageCmd::Show { image } => (Request::ImageShow(image_ref(image)), false),
        ImageCmd::Delete { image } => (Request::ImageDelete(image_ref(image)), false),
    };
    let v = match c.request_keyed(&r, key) {
        Ok(v) => v,
        Err(e) => return fail(r.op(), e),
    };
    match (wait_for, get(&v, "job").and_then(Value::as_text)) {
        (true, Some(job)) => {
            let job = job.to_string();
            wait(&mut c, &job)
        }
        _ => {
            print_json(&v);
            ExitCode::SUCCESS
        }
    }
}

/// Run a job command.
pub fn job(socket: &Path, cmd: JobCmd) -> ExitCode {
    let mut c = match Client::connect(socket) {
        Ok(c) => c,
        Err(e) => return fail("connect", e),
    };
    let r = match cmd {
        JobCmd::Wait { job } => return wait(&mut c, &job),
        JobCmd::List => Request::JobList,
        JobCmd::Show { job } => Request::JobShow(JobRef { job }),
        JobCmd::Cancel { job } => Request::JobCancel(JobRef { job }),
    };
    match c.request(&r) {
        Ok(v) => {
            print_json(&v);
            ExitCode::SUCCESS
        }
        Err(e) => fail(r.op(), e),
    }
}

/// Follow the event stream, one JSON line per event.
pub fn events(socket: &Path, since: Option<u64>, epoch: Option<String>) -> ExitCode {
    let mut c = match Client::connect(socket) {
        Ok(c) => c,
        Err(e) => return fail("connect", e),
    };
    match c.request(&Request::EventsSubscribe(EventsSubscribeArgs {
        since,
        epoch,
    })) {
        Ok(v) => eprintln!(
            "{}",
            serde_json::to_string(&to_json(&v)).unwrap_or_default()
        ),
        Err(e) => return fail("events.subscribe", e),
    }
    loop {
        match c.recv_event() {
            Ok(Some(ev)) => println!(
                "{}",
                serde_json::to_string(&to_json(&ev)).unwrap_or_default()
            ),
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => return fail("events", e),
        }
    }
}
