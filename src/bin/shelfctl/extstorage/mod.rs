//! `shelfctl extstorage <action>`: shelf as a Ganeti ExtStorage provider
//! (`ganeti-extstorage-interface(7)`; operator's guide in docs/ganeti.md).
//!
//! Input is the environment only, as Ganeti passes it. Success exits 0 (attach prints the
//! block device, then optionally a `kvm:` userspace URI); failure exits 1 with one line on
//! stderr naming the action and the volume.

mod change;
mod env;
mod install;
mod iscsi;
mod lifecycle;
mod loopdev;
mod resolve;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::collections::BTreeMap;

use shelf::client::{Client, ClientError};

use env::{share_name, Action, GanetiEnv};

/// What a Ganeti volume name stands for in shelf.
#[derive(Debug)]
enum Target {
    /// A share: its id and the volume file.
    Share { id: String, file: PathBuf },
    /// A snapshot (Ganeti attaches and removes the snapshots it takes for backups).
    Snapshot { id: String, file: PathBuf },
}

impl Target {
    fn file(&self) -> &Path {
        match self {
            Target::Share { file, .. } | Target::Snapshot { file, .. } => file,
        }
    }
}

/// One run of one action.
struct Run {
    action: Action,
    env: GanetiEnv,
    socket: PathBuf,
}

const USAGE: &str = "usage: shelfctl extstorage {create|attach|detach|remove|grow|setinfo|verify|snapshot|open|close}\n       shelfctl extstorage install DIR [--shelfctl PATH] [--socket PATH]\nInput comes from the environment (VOL_NAME, VOL_SIZE, ..., EXTP_*); see docs/ganeti.md.";

fn remote(e: ClientError) -> String {
    e.to_string()
}

/// `shelfctl extstorage ARGS...`; `socket` is the global `--socket`, if given.
pub fn main(argv: &[String], socket: Option<PathBuf>) -> ExitCode {
    let Some(first) = argv.first() else {
        eprintln!(
            "shelf extstorage: no action given; {}",
            USAGE.lines().next().unwrap_or("")
        );
        return ExitCode::from(1);
    };
    if first == "-h" || first == "--help" {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if first == "install" {
        return run_install(&argv[1..], socket);
    }
    let Some(action) = Action::parse(first) else {
        eprintln!("shelf extstorage: unknown action {first:?}; expected one of create, attach, detach, remove, grow, setinfo, verify, snapshot, open, close, install");
        return ExitCode::from(1);
    };
    match argv.get(1).map(String::as_str) {
        None => {}
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!(
                "shelf extstorage {}: unexpected argument {other:?}; the input is the environment",
                action.name()
            );
            return ExitCode::from(1);
        }
    }
    let env = match GanetiEnv::parse(std::env::vars()) {
        Ok(e) => e,
        Err(m) => return fail(action, None, &m),
    };
    let socket = env
        .param("socket")
        .map(PathBuf::from)
        .or(socket)
        .or_else(|| std::env::var_os("SHELF_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/run/shelf/shelf.sock"));
    let run = Run {
        action,
        env,
        socket,
    };
    match run.execute() {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            for line in out {
                let _ = writeln!(stdout, "{line}");
            }
            ExitCode::SUCCESS
        }
        Err(m) => fail(action, run.env.vol_name.as_deref(), &m),
    }
}

fn fail(action: Action, vol: Option<&str>, message: &str) -> ExitCode {
    let message = message.replace('\n', " ");
    match vol {
        Some(v) => eprintln!("shelf extstorage {} {v}: {message}", action.name()),
        None => eprintln!("shelf extstorage {}: {message}", action.name()),
    }
    ExitCode::from(1)
}

fn run_install(argv: &[String], socket: Option<PathBuf>) -> ExitCode {
    let done = install::parse(argv, socket).and_then(|i| install::install(&i).map(|f| (i, f)));
    match done {
        Ok((i, files)) => {
            println!(
                "installed {} files in {} (running {})",
                files.len(),
                i.dir.display(),
                i.shelfctl.display()
            );
            ExitCode::SUCCESS
        }
        Err(m) => {
            eprintln!("shelf extstorage install: {m}");
            ExitCode::from(1)
        }
    }
}

impl Run {
    fn execute(&self) -> Result<Vec<String>, String> {
        if self.action != Action::Verify {
            self.env.vol_name()?;
        }
        self.env.userspace()?;
        let mut c = Client::connect(&self.socket).map_err(remote)?;
        match self.action {
            Action::Create => self.create(&mut c),
            Action::Attach => self.attach(&mut c),
            Action::Detach => self.detach(&mut c),
            Action::Remove => self.remove(&mut c),
            Action::Grow => self.grow(&mut c),
            Action::Setinfo => self.setinfo(&mut c),
            Action::Verify => self.verify(&mut c),
            Action::Snapshot => self.snapshot(&mut c),
            Action::Open | Action::Close => self.open_close(&mut c),
        }
    }

    /// The `pool` argument, when `EXTP_POOL` is set.
    fn pool_arg(&self) -> Option<String> {
        self.env.param("pool").map(str::to_string)
    }

    /// The share name for this volume.
    fn name(&self) -> Result<String, String> {
        Ok(share_name(self.env.vol_name()?))
    }

    /// The metadata that ties the share to Ganeti's configuration.
    fn ganeti_metadata(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        if let Some(v) = &self.env.vol_name {
            m.insert("ganeti.name".into(), v.clone());
        }
        if let Some(v) = &self.env.cname {
            m.insert("ganeti.cname".into(), v.clone());
        }
        if let Some(v) = &self.env.uuid {
            m.insert("ganeti.uuid".into(), v.clone());
        }
        m
    }
}
