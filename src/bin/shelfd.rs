//! shelfd: the storage-node daemon. Argument parsing and start-up only; the work is in
//! the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_signal::{Signal, Signals};
use clap::Parser;
use futures_lite::StreamExt;

use shelf::config::Config;
use shelf::engine::Engine;
use shelf::server::{self, Roles, Server, Settings};
use shelf::store::Store;
use shelf::sys::process::lock_state_dir;
use shelf::sys::systemd;

/// The shelf storage-node daemon.
#[derive(Debug, Parser)]
#[command(name = "shelfd", version)]
struct Args {
    /// Config file (default /etc/shelf/shelf.toml; the embedded default when that is absent).
    #[arg(long)]
    config: Option<PathBuf>,
    /// State directory (overrides the config's state_dir).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Socket path (overrides the config's socket).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Validate the config, print what would run, and exit.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run start-up recovery (finish or undo interrupted operations) and exit; with
    /// --rebuild-db, rebuild a lost or corrupt database from the pools. The daemon must
    /// be stopped.
    Recover {
        /// Rebuild the database from the identity every volume and snapshot carries.
        #[arg(long)]
        rebuild_db: bool,
        /// Rebuild even if the current database opens and holds shares (it is kept aside).
        #[arg(long)]
        force: bool,
        /// Also adopt volumes and snapshots that carry only the user.shelf.* stamp of a
        /// shelf before the trusted.shelf.* one. Any NFS client of a share can write those
        /// attributes: pass this only for a pool never exported to tenants
        /// (docs/recovery.md).
        #[arg(long, requires = "rebuild_db")]
        trust_user_xattrs: bool,
    },
}

fn init_log() {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        // journald stamps time and unit itself.
        b.format_timestamp(None).format_target(false);
    }
    b.init();
}

fn load_config(args: &Args) -> Result<Config, String> {
    let (cfg, origin) = Config::load(args.config.as_deref()).map_err(|e| e.to_string())?;
    log::debug!("config from {origin}");
    cfg.with_overrides(args.state_dir.clone(), args.socket.clone())
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    shelf::sys::process::tune_allocator();
    init_log();
    let args = Args::parse();
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shelfd: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("config ok");
        println!("state_dir = {}", config.state_dir.display());
        println!("socket = {}", config.socket.display());
        for (name, (kind, path)) in config.resolved_pools() {
            println!("pool {name}: {} at {}", kind.as_str(), path.display());
        }
        println!("metrics: {}", config.metrics.describe());
        return ExitCode::SUCCESS;
    }
    // Every program resolved once, the missing ones named with what needs them (STYLE.md
    // rule 13); a missing one does not stop the daemon, its driver or pool says unusable.
    shelf::sys::cmd::Programs::at_start();
    if let Some(Command::Recover {
        rebuild_db,
        force,
        trust_user_xattrs,
    }) = args.command
    {
        return recover(&config, rebuild_db, force, trust_user_xattrs);
    }
    match smol::block_on(run(args, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("shelfd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `shelfd recover [--rebuild-db [--force] [--trust-user-xattrs]]`.
fn recover(config: &Config, rebuild_db: bool, force: bool, trust_user_xattrs: bool) -> ExitCode {
    let result = (|| -> Result<(), String> {
        std::fs::create_dir_all(&config.state_dir).map_err(|e| {
            format!(
                "cannot create state directory {}: {e}",
                config.state_dir.display()
            )
        })?;
        let _lock = lock_state_dir(&config.state_dir)?;
        if rebuild_db {
            let r = shelf::engine::rebuild_db(config, force, trust_user_xattrs)?;
            if let Some(p) = &r.moved_aside {
                println!("previous database moved to {}", p.display());
            }
            println!(
                "rebuilt: {} share(s), {} snapshot(s), {} export(s), {} attachment(s), {} \
                 group snapshot(s)",
                r.shares, r.snapshots, r.exports, r.attachments, r.groups
            );
            for s in &r.skipped {
                println!("skipped: {s}");
            }
            return Ok(());
        }
        let node = shelf::engine::load_node(config)?;
        smol::block_on(async {
            let store = Store::open(&config.state_dir.join("shelf.db"))
                .await
                .map_err(|e| format!("cannot open the database: {e}"))?;
            let engine = Engine::new(config, store.clone(), node)
                .await
                .map_err(|e| format!("cannot open pools: {e}"))?;
            let r = engine.recover().await.map_err(|e| e.to_string())?;
            for a in &r.actions {
                println!("{a}");
            }
            println!("recovery: {} action(s)", r.actions.len());
            drop(engine);
            store.close().await;
            Ok(())
        })
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shelfd recover: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, config: Config) -> Result<(), String> {
    let mut signals = Signals::new([Signal::Term, Signal::Int, Signal::Hup])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let state_dir = config.state_dir.clone();
    std::fs::create_dir_all(&state_dir)
        .map_err(|e| format!("cannot create state directory {}: {e}", state_dir.display()))?;
    let _lock = lock_state_dir(&state_dir)?;
    // Take an inherited socket before anything else can see the variables.
    let inherited = systemd::listener_from_systemd()?;
    // Before the database: a damaged node-id file stops start-up with nothing else done.
    let node = shelf::engine::load_node(&config)?;
    log::info!("node {} ({})", node.id, node.name);
    systemd::notify("STATUS=opening the database and pools");
    let store = Store::open(&state_dir.join("shelf.db"))
        .await
        .map_err(|e| format!("cannot open the database: {e}"))?;
    let engine = Arc::new(
        Engine::new(&config, store.clone(), node)
            .await
            .map_err(|e| format!("cannot open pools: {e}"))?,
    );
    systemd::notify("STATUS=recovering interrupted operations");
    let recovery = engine
        .recover()
        .await
        .map_err(|e| format!("recovery failed, refusing to serve: {e}"))?;
    if !recovery.actions.is_empty() {
        log::warn!(
            "recovery finished {} interrupted operation(s)",
            recovery.actions.len()
        );
    }
    systemd::notify("STATUS=mounting filesystem shares");
    for problem in engine
        .mount_filesystems()
        .await
        .map_err(|e| format!("cannot list filesystem shares: {e}"))?
    {
        log::error!("{problem}");
    }
    engine
        .load_exports()
        .await
        .map_err(|e| format!("cannot read exports from the database: {e}"))?;
    systemd::notify("STATUS=bringing exports and targets back");
    match engine.reconcile().await {
        Ok(r) => log::info!(
            "exports reconciled: {} difference(s) repaired or reported",
            r.findings.len()
        ),
        Err(e) => log::warn!("start-up reconcile failed (the socket opens anyway): {e}"),
    }
    // Recovery and the reconcile walk every export and parse tgtd's whole `show`: give
    // what they freed back, or it stays resident (see sys::process::release_free_memory).
    smol::unblock(shelf::sys::process::release_free_memory).await;
    // Metrics before the socket: a listener that cannot be bound stops start-up first.
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    let metrics = shelf::metrics::start(&config.metrics, engine.clone(), stop_rx.clone())?;
    let roles = resolve_roles(&config).await;
    let activated = inherited.is_some();
    let listener = match inherited {
        Some(l) => {
            log::info!("using the socket systemd passed (socket activation)");
            l
        }
        None => server::bind(&config.socket, roles.socket_gid)?,
    };
    check_descriptors(&config);
    let probe_timeout = Duration::from_secs(config.command_timeout.min(10));
    engine.refresh_driver_status(probe_timeout).await;
    let settings = Arc::new(Settings::from_config(&config, roles));
    let srv = Server::new(engine.clone(), settings.clone());
    let serving = smol::spawn(srv.run(listener, stop_rx.clone()));
    let periodic = smol::spawn(reconcile_every(
        engine.clone(),
        Duration::from_secs(config.reconcile_interval),
        stop_rx.clone(),
    ));
    let sweeping = {
        let (engine, stop) = (engine.clone(), stop_rx.clone());
        smol::spawn(async move { engine.sweep_receives_every(stop).await })
    };
    let probing = smol::spawn(probe_drivers_every(
        engine.clone(),
        Duration::from_secs(config.limits.driver_probe_interval),
        probe_timeout,
        stop_rx,
    ));
    let watchdog =
        systemd::watchdog_interval().map(|every| smol::spawn(watchdog(engine.clone(), every)));
    log::info!(
        "shelfd {} serving on {} (state {})",
        shelf::VERSION,
        config.socket.display(),
        state_dir.display()
    );
    systemd::notify(&format!(
        "READY=1\nSTATUS=serving on {}\nMAINPID={}",
        config.socket.display(),
        std::process::id()
    ));
    while let Some(sig) = signals.next().await {
        match sig {
            Ok(Signal::Hup) => {
                systemd::notify("RELOADING=1\nSTATUS=reloading the configuration");
                reload(&args, &config, &settings, &engine).await;
                systemd::notify(&format!(
                    "READY=1\nSTATUS=serving on {}",
                    config.socket.display()
                ));
            }
            Ok(s) => {
                log::info!("received {s:?}; shutting down");
                break;
            }
            Err(e) => log::warn!("signal stream: {e}"),
        }
    }
    systemd::notify("STOPPING=1\nSTATUS=finishing requests in flight");
    stop_tx.close();
    if let Some(w) = watchdog {
        w.cancel().await;
    }
    serving.await;
    engine.shutdown_streams().await;
    metrics.finish().await;
    periodic.await;
    sweeping.await;
    probing.await;
    if !activated {
        // A socket systemd made stays: it is systemd's, and it queues clients until the
        // next start.
        let _ = std::fs::remove_file(&config.socket);
    }
    drop(engine);
    store.close().await;
    log::info!("shelfd stopped");
    Ok(())
}

/// Raise the descriptor limit and say whether it leaves room for the connection cap.
fn check_descriptors(config: &Config) {
    match shelf::sys::process::raise_descriptor_limit() {
        Ok(n) if n < config.limits.max_connections as u64 + 128 => log::warn!(
            "only {n} descriptors allowed (RLIMIT_NOFILE) for limits.max_connections = {}; \
             when they run out, idle non-admin connections are shed for admins",
            config.limits.max_connections
        ),
        Ok(n) => log::debug!("{n} descriptors allowed"),
        Err(e) => log::warn!("cannot read the descriptor limit: {e}"),
    }
}

/// Refresh the drivers' status that hello and pool.show report, every `every`.
async fn probe_drivers_every(
    engine: Arc<Engine>,
    every: Duration,
    timeout: Duration,
    stop: smol::channel::Receiver<()>,
) {
    loop {
        if !server::tick_or_stop(every, &stop).await {
            return;
        }
        engine.refresh_driver_status(timeout).await;
    }
}

/// Reconcile exports every `every` until `stop` closes (never when `every` is zero).
async fn reconcile_every(engine: Arc<Engine>, every: Duration, stop: smol::channel::Receiver<()>) {
    if every.is_zero() {
        let _ = stop.recv().await;
        return;
    }
    loop {
        if !server::tick_or_stop(every, &stop).await {
            return;
        }
        match engine.reconcile().await {
            Ok(r) if !r.findings.is_empty() => {
                log::warn!("periodic reconcile: {} difference(s)", r.findings.len())
            }
            Ok(_) => log::debug!("periodic reconcile: all exports in place"),
            Err(e) => log::warn!("periodic reconcile failed: {e}"),
        }
        smol::unblock(shelf::sys::process::release_free_memory).await;
    }
}

/// Tell systemd we are alive every `every`, as long as the event loop turns and the
/// database thread answers; a wedged daemon misses its watchdog and is restarted.
async fn watchdog(engine: Arc<Engine>, every: Duration) {
    loop {
        smol::Timer::after(every).await;
        match engine.store().call(|_| Ok(())).await {
            Ok(()) => {
                systemd::notify("WATCHDOG=1");
            }
            Err(e) => log::error!("watchdog: the database thread does not answer: {e}"),
        }
    }
}

/// Resolve the config's users and groups (off the event loop: this reads NSS).
async fn resolve_roles(config: &Config) -> Roles {
    let access = config.access.clone();
    let (roles, notes) = smol::unblock(move || Roles::resolve(&access)).await;
    for n in notes {
        log::warn!("{n}");
    }
    roles
}

async fn reload(args: &Args, running: &Config, settings: &Settings, engine: &Engine) {
    match load_config(args) {
        Ok(new) => {
            if new.state_dir != running.state_dir
                || new.socket != running.socket
                || new.metrics != running.metrics
                || new.node_name != running.node_name
            {
                log::warn!(
                    "reload: state_dir, socket, node_name and [metrics] changes need a restart; \
                     kept the running ones"
                );
            }
            settings.update(&new, resolve_roles(&new).await);
            engine.reload_streams(&new);
            for note in engine.reload_pools(&new).await {
                log::info!("reload: {note}");
            }
            log::info!("config reloaded");
        }
        Err(e) => log::error!("reload refused, keeping the running config: {e}"),
    }
}
