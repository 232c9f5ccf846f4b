//! shelf-bench: measures shelfd against the floor (the same steps done bare) on a private
//! scratch XFS, private tgtd instances and a private exports file, then runs the scale
//! cases (thousands of objects, targets and exports; restarts; memory). Prints a markdown
//! report. Run as root; `scripts/bench` builds in release mode and runs it. See
//! docs/performance.md.
#![forbid(unsafe_code)]

mod calls;
mod env;
mod floor;
mod floor_server;
mod micro;
mod restart;
/// The tests' rig (scratch XFS, private tgtd, exports file, shelfd), shared with them.
#[allow(dead_code)]
#[path = "../../../tests/common/rig/mod.rs"]
mod rig;
mod run;
mod scale;
mod send;
mod snapsize;
mod stats;

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

use env::{Res, Shelfd};

/// Benchmark shelfd against the floor of its external steps.
#[derive(Debug, Parser)]
#[command(name = "shelf-bench", version)]
struct Args {
    /// The shelfd binary (default: `shelfd` next to this program).
    #[arg(long)]
    shelfd: Option<PathBuf>,
    /// Tiny counts, to check that the bench runs (figures mean nothing).
    #[arg(long)]
    quick: bool,
    /// Samples per operation at each concurrency (heavy operations take 3/5 of it).
    #[arg(long)]
    samples: Option<usize>,
    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,
    /// Shares (and as many snapshots) in the scale run.
    #[arg(long)]
    objects: Option<usize>,
    /// iSCSI targets in the scale run.
    #[arg(long)]
    targets: Option<usize>,
    /// NFS exports in the scale run.
    #[arg(long)]
    nfs_exports: Option<usize>,
    /// Extra environment for shelfd, KEY=VALUE (repeatable; for experiments, e.g. with
    /// the allocator's tunables).
    #[arg(long = "shelfd-env", value_parser = parse_env)]
    shelfd_env: Vec<(String, String)>,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// shelfd's `iscsi.tgt_transport` (`auto`, `socket`, `tgtadm`): `tgtadm` measures the
    /// driver as it was before it spoke tgtd's socket.
    #[arg(long, default_value = "auto")]
    tgt_transport: String,
    /// Run only this section after the setup, to measure one thing without the whole
    /// bench: `send` (the send-stream runs), `micro` (the per-operation runs), `objects`
    /// (the scale run of shares and snapshots, with resident memory).
    #[arg(long, value_parser = ["send", "micro", "objects"])]
    only: Option<String>,
    /// The per-operation runs to make (comma-separated: create, create-iscsi,
    /// create-iscsi-ipc, create-nfs, snapshot, clone, attach, attach-ipc, resize, show,
    /// list, delete); every one when not given.
    #[arg(long, value_delimiter = ',')]
    ops: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn main() {
    let args = Args::parse();
    if let Err(e) = env::handle_signals() {
        eprintln!("shelf-bench: {e}");
        std::process::exit(1);
    }
    let guard = env::CleanupGuard;
    let result = run(&args);
    let t0 = Instant::now();
    drop(guard);
    eprintln!("shelf-bench: cleaned up in {} s", stats::secs(t0.elapsed()));
    if let Err(e) = result {
        eprintln!("shelf-bench: {e}");
        std::process::exit(1);
    }
}

/// A control port for a private tgtd that no running tgtd uses.
fn control_port(offset: u32) -> u32 {
    let mut p = 20_000 + (std::process::id() % 5_000) * 2 + offset;
    while std::path::Path::new(&format!("/var/run/tgtd/socket.{p}")).exists() {
        p += 2;
    }
    p
}

fn machine() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = env::sh(&["uname", "-r"]).unwrap_or_default();
    format!(
        "{cpus} CPUs, kernel {}, load average {}",
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// The report: each section is printed (and appended to `--out`) as soon as it is done,
/// so an interrupted run still leaves its figures.
struct Report {
    out: Option<PathBuf>,
}

impl Report {
    fn section(&mut self, text: &str) -> Res<()> {
        use std::io::Write;
        println!("{text}");
        let _ = std::io::stdout().flush();
        if let Some(p) = &self.out {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("{}: {e}", p.display()))?;
            writeln!(f, "{text}").map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn run(a: &Args) -> Res<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err("run as root (mount, tgtd, exportfs)".into());
    }
    let q = a.quick;
    let ops = micro::Op::chosen(&a.ops)?;
    let samples = a.samples.unwrap_or(if q { 4 } else { 100 });
    let conc = a
        .concurrency
        .clone()
        .unwrap_or(if q { vec![1, 2] } else { vec![1, 16] });
    let counts = scale::Counts {
        objects: a.objects.unwrap_or(if q { 20 } else { 10_000 }),
        targets: a.targets.unwrap_or(if q { 6 } else { 2_000 }),
        nfs: a.nfs_exports.unwrap_or(if q { 6 } else { 3_000 }),
        samples: if q { 4 } else { 200 },
    };
    let (source_size, list_size) = if q { (8 << 20, 10) } else { (1 << 30, 100) };
    let shelfd = match &a.shelfd {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("shelfd"),
    };
    let started = Instant::now();
    let before = machine();
    eprintln!("shelf-bench: setting up (scratch XFS, two tgtd, exports files, shelfd)");
    let scratch = env::scratch_xfs(if q { 4 << 30 } else { 48 << 30 })?;
    let tgtd = env::tgtd(control_port(0))?;
    let floor_tgtd = env::tgtd(control_port(1))?;
    let exports = env::exports_file("shelfd")?;
    let floor_exports = env::exports_file("floor")?;
    let pool_dir = scratch.mount.join("shelf");
    let config = format!(
        "state_dir = {:?}\nsocket = {:?}\nreconcile_interval = 0\ncommand_timeout = 300\n\
         [iscsi]\nportal = \"127.0.0.1:{}\"\ntgt_control_port = {}\niqn_prefix = {:?}\ntgt_transport = {:?}\n\
         [nfs]\nexports_file = {:?}\nhost = \"127.0.0.1\"\nganesha_exports = {:?}\nganesha_pidfile = {:?}\n\
         [pools.default]\npath = {:?}\nmax_over_subscription_ratio = 1000.0\n\
         [pools.list100]\npath = {:?}\n",
        scratch.base().join("state").display().to_string(),
        scratch.base().join("run/shelf.sock").display().to_string(),
        tgtd.port,
        tgtd.control,
        scale::SHELF_IQN,
        a.tgt_transport,
        exports.path.display().to_string(),
        scratch.base().join("unused-ganesha.conf").display().to_string(),
        scratch.base().join("unused-ganesha.pid").display().to_string(),
        pool_dir.display().to_string(),
        scratch.mount.join("list100").display().to_string(),
    );
    let d = Shelfd::start(&shelfd, scratch.base(), &config, a.shelfd_env.clone())?;
    let (idle, _) = env::memory(d.pid().ok_or("no shelfd")?)?;
    let floor = floor::Floor::new(
        &scratch.mount.join("floor"),
        scratch.base().join("floor.sock"),
        floor_tgtd,
        floor_exports.path.clone(),
    )?;
    if let Some(p) = &a.out {
        let _ = std::fs::remove_file(p);
    }
    let mut report = Report { out: a.out.clone() };
    report.section(&format!(
        "## shelf-bench results\n\n\
         - date: {}\n- command: `{}`\n- machine at the start: {before}\n\
         - shelfd resident memory when idle (just started, empty): {} MiB\n",
        env::sh(&["date", "-u", "+%Y-%m-%d %H:%M UTC"])
            .unwrap_or_default()
            .trim(),
        std::env::args().collect::<Vec<_>>().join(" "),
        stats::mib(idle),
    ))?;
    if a.only.as_deref() == Some("send") {
        send_section(&mut report, &d, &pool_dir, q)?;
        return report.section(&format!("- machine at the end: {}\n", machine()));
    }
    if a.only.as_deref() == Some("objects") {
        scale::probe_objects(&d, list_size)?;
        let objects = scale::objects(&d, counts)?;
        report.section(&format!(
            "## Scale: {} shares with {} snapshots\n\n{objects}",
            counts.objects, counts.objects
        ))?;
        return report.section(&format!("- machine at the end: {}\n", machine()));
    }
    eprintln!("shelf-bench: preparing objects");
    let max_threads = *conc.iter().max().unwrap_or(&1);
    let m = micro::Micro::prepare(
        &d,
        &floor,
        pool_dir.clone(),
        source_size,
        list_size,
        max_threads,
    )?;
    eprintln!("shelf-bench: per-operation runs");
    let per_op = micro::run_all(&m, &ops, &conc, samples)?;
    report.section(&format!(
        "## Per-operation latency, shelfd against the floor\n{per_op}"
    ))?;
    if a.only.as_deref() == Some("micro") {
        return report.section(&format!("- machine at the end: {}\n", machine()));
    }
    micro::settle();
    eprintln!("shelf-bench: snapshot time against size and extents");
    let snaps = snapsize::snapshot_sizes(&d, &pool_dir, source_size, samples / 4)?;
    report.section(&format!(
        "## Snapshot time against volume size and extents (shelfd, concurrency 1)\n\n{snaps}"
    ))?;
    micro::settle();
    send_section(&mut report, &d, &pool_dir, q)?;
    micro::settle();
    eprintln!("shelf-bench: scale runs");
    let objects = scale::objects(&d, counts)?;
    report.section(&format!(
        "## Scale: {} shares with {} snapshots\n\n{objects}",
        counts.objects, counts.objects
    ))?;
    micro::settle();
    let targets = scale::targets(&d, &floor, counts)?;
    report.section(&format!(
        "## Scale: {} iSCSI targets\n\n{targets}",
        counts.targets
    ))?;
    micro::settle();
    let nfs = scale::nfs(&d, counts)?;
    report.section(&format!("## Scale: {} NFS exports\n\n{nfs}", counts.nfs))?;
    micro::settle();
    let restarts = restart::restarts(&d, &tgtd, &floor)?;
    report.section(&format!("## Restarts\n\n{restarts}"))?;
    report.section(&format!(
        "- machine at the end: {}\n- run time: {} s\n- requests retried because exportfs \
         tripped over another program's vanishing exports file: {}\n",
        machine(),
        stats::secs(started.elapsed()),
        calls::EXPORTFS_RETRIES.load(std::sync::atomic::Ordering::SeqCst)
    ))
}

/// The send-stream section: a 1 GiB share, 3 runs (quick: 16 MiB, 1 run).
fn send_section(report: &mut Report, d: &Shelfd, pool_dir: &std::path::Path, q: bool) -> Res<()> {
    let (size, runs) = if q { (16 << 20, 1) } else { (1 << 30, 3) };
    eprintln!("shelf-bench: send streams");
    let table = send::send_streams(d, pool_dir, size, runs)?;
    report.section(&format!(
        "## Send streams: full and 1 % incremental, against pread + SHA-256 \
         ({} share, {runs} run(s), concurrency 1)\n\n{table}",
        snapsize::human(size)
    ))
}
