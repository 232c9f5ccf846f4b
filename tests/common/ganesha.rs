//! A private nfs-ganesha (NFSv4 only, no rpcbind) on 127.0.0.1, for the ganesha driver's
//! tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, scratch, try_run};

/// A private nfs-ganesha (NFSv4 only, no rpcbind) on 127.0.0.1:<port>, exporting what
/// shelfd writes into `exports`; stopped on drop.
#[derive(Debug)]
pub struct Ganesha {
    pub port: u16,
    pub exports: PathBuf,
    pub pidfile: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Ganesha {
    /// Start ganesha.nfsd and wait until it answers an NFS client.
    pub fn start() -> Ganesha {
        let dir = scratch("ganesha");
        let d = dir.path();
        for sub in ["recov", "run", "run/ccache"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let port = free_port();
        let exports = d.join("run/shelf-exports.conf");
        std::fs::write(&exports, "# empty until shelfd writes it\n").unwrap();
        let conf = d.join("run/ganesha.conf");
        std::fs::write(
            &conf,
            format!(
                "NFS_CORE_PARAM {{ Bind_addr = 127.0.0.1; NFS_Port = {port}; Protocols = 4;\n\
                 Enable_RQUOTA = false; Enable_NLM = false; Enable_UDP = false; }}\n\
                 NFSv4 {{ RecoveryBackend = fs; RecoveryRoot = \"{}\"; Graceless = true;\n\
                 Lease_Lifetime = 10; Only_Numeric_Owners = true; }}\n\
                 NFS_KRB5 {{ Active_krb5 = false; CCacheDir = \"{}\"; }}\n\
                 LOG {{ Default_Log_Level = EVENT; }}\n\
                 %include \"{}\"\n",
                d.join("recov").display(),
                d.join("run/ccache").display(),
                exports.display()
            ),
        )
        .unwrap();
        let pidfile = d.join("run/ganesha.pid");
        let log = d.join("run/ganesha.log");
        let child = Command::new("ganesha.nfsd")
            .arg("-F")
            .arg("-f")
            .arg(&conf)
            .arg("-p")
            .arg(&pidfile)
            .arg("-L")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ganesha.nfsd (package nfs-ganesha)");
        let g = Ganesha {
            port,
            exports,
            pidfile,
            log,
            child: Some(child),
            _dir: dir,
        };
        let t0 = Instant::now();
        loop {
            if try_run(&["nfs-ls", &g.url("/")]).0 && g.pidfile.exists() {
                return g;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "ganesha did not come up:\n{}",
                std::fs::read_to_string(&g.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An NFSv4 URL for a path on this server.
    pub fn url(&self, path: &str) -> String {
        format!("nfs://127.0.0.1{path}?version=4&nfsport={}", self.port)
    }

    /// Config lines pointing shelfd at this ganesha.
    pub fn config(&self) -> String {
        format!(
            "[nfs]\ndriver = \"ganesha\"\nganesha_exports = {:?}\nganesha_pidfile = {:?}\nhost = \"127.0.0.1\"\n",
            self.exports.display().to_string(),
            self.pidfile.display().to_string()
        )
    }
}

impl Drop for Ganesha {
    fn drop(&mut self) {
        let child = std::sync::Arc::new(std::sync::Mutex::new(self.child.take()));
        super::rig::stop_child(&child, Duration::from_secs(5));
    }
}
