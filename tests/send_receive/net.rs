//! Two network namespaces joined by a veth pair, and a private sshd in the second: the
//! path a stream takes between two nodes (`shelfctl send | ssh node2 shelfctl receive`).
//! Everything has names unique to the run and goes in `Drop`, even when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Run a command, panicking with its stderr when it fails.
pub fn run(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces `a` and `b` with 10.<x>.<y>.1 and .2 on a veth pair.
#[derive(Debug)]
pub struct NetPair {
    pub a: String,
    pub b: String,
    pub addr_a: String,
    pub addr_b: String,
}

impl NetPair {
    pub fn new() -> NetPair {
        let pid = std::process::id();
        let tag = format!("{:x}", pid % 0xfffff);
        let (x, y) = (200 + (pid % 50) as u8, ((pid / 50) % 250) as u8);
        let n = NetPair {
            a: format!("shsnd{tag}a"),
            b: format!("shsnd{tag}b"),
            addr_a: format!("10.{x}.{y}.1"),
            addr_b: format!("10.{x}.{y}.2"),
        };
        let (va, vb) = (format!("vs{tag}a"), format!("vs{tag}b"));
        run(&["ip", "netns", "add", &n.a]);
        run(&["ip", "netns", "add", &n.b]);
        run(&[
            "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
        ]);
        run(&["ip", "link", "set", &va, "netns", &n.a]);
        run(&["ip", "link", "set", &vb, "netns", &n.b]);
        for (ns, dev, addr) in [(&n.a, &va, &n.addr_a), (&n.b, &vb, &n.addr_b)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/30"),
                "dev",
                dev,
            ]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        n
    }

    /// `argv` run inside namespace `ns`.
    pub fn exec(ns: &str, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(argv);
        c
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and so the pair.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A private sshd listening in namespace `ns` on `addr:port`, with its own host key, and
/// a client key it accepts for root.
#[derive(Debug)]
pub struct Sshd {
    pub dir: PathBuf,
    pub addr: String,
    pub port: u16,
    child: Child,
    made_privsep: bool,
}

const PRIVSEP: &str = "/run/sshd";

fn keygen(path: &Path) {
    run(&[
        "ssh-keygen",
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-f",
        path.to_str().unwrap(),
    ]);
}

impl Sshd {
    pub fn start(ns: &str, addr: &str, dir: &Path) -> Sshd {
        let made_privsep = !Path::new(PRIVSEP).exists();
        if made_privsep {
            std::fs::create_dir_all(PRIVSEP).unwrap();
        }
        keygen(&dir.join("host_key"));
        keygen(&dir.join("client_key"));
        let pub_key = std::fs::read_to_string(dir.join("client_key.pub")).unwrap();
        std::fs::write(dir.join("authorized_keys"), format!("restrict {pub_key}")).unwrap();
        let port = 20000 + (std::process::id() % 20000) as u16;
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "ListenAddress {addr}:{port}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 AllowUsers root\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nX11Forwarding no\nPermitTTY no\n\
                 StrictModes no\nLogLevel INFO\n",
                dir.join("host_key").display(),
                dir.join("sshd.pid").display(),
                dir.join("authorized_keys").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let child = NetPair::exec(
            ns,
            &[
                "/usr/sbin/sshd",
                "-D",
                "-e",
                "-f",
                dir.join("sshd_config").to_str().unwrap(),
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("sshd");
        let host = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let mut f = host.split_whitespace();
        std::fs::write(
            dir.join("known_hosts"),
            format!(
                "[{addr}]:{port} {} {}\n",
                f.next().unwrap(),
                f.next().unwrap()
            ),
        )
        .unwrap();
        let s = Sshd {
            dir: dir.to_path_buf(),
            addr: addr.to_string(),
            port,
            child,
            made_privsep,
        };
        let t0 = Instant::now();
        while !std::fs::read_to_string(dir.join("sshd.log"))
            .unwrap_or_default()
            .contains("listening")
        {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "sshd did not start: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// `ssh root@addr REMOTE...` run from namespace `ns` (a non-interactive command).
    pub fn ssh(&self, ns: &str, remote: &str) -> Command {
        let port = self.port.to_string();
        let key = self.dir.join("client_key");
        let kh = format!(
            "UserKnownHostsFile={}",
            self.dir.join("known_hosts").display()
        );
        let to = format!("root@{}", self.addr);
        NetPair::exec(
            ns,
            &[
                "/usr/bin/ssh",
                "-F",
                "/dev/null",
                "-p",
                &port,
                "-i",
                key.to_str().unwrap(),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                &kh,
                "-o",
                "StrictHostKeyChecking=yes",
                &to,
                remote,
            ],
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.made_privsep {
            let _ = std::fs::remove_dir(PRIVSEP);
        }
    }
}
