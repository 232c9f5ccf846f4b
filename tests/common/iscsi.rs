//! The one iSCSI login helper: what an initiator needs from `connection_info`, and real
//! initiators using it (libiscsi's `iscsi-inq`/`iscsi-readcapacity16`/`iscsi-test-cu`,
//! qemu's iscsi driver) with the CHAP account shelfd handed out. The CHAP secret never
//! goes into a tool's argv (any user reads /proc/PID/cmdline): libiscsi's tools get it in
//! `LIBISCSI_CHAP_PASSWORD` (libiscsi's `iscsi_parse_url` keeps that password when the
//! URL names a user without one), qemu a `secret` object read from a 0600 file.

use std::path::Path;

use ciborium::Value;

use super::{field, free_port, sh, sub, try_run, try_run_env};

/// What an initiator needs to log in, from connection_info.
#[derive(Debug, Clone)]
pub struct Login {
    /// `host:port` of the target.
    pub portal: String,
    /// The target's IQN.
    pub iqn: String,
    /// CHAP user.
    pub user: String,
    /// CHAP secret.
    pub password: String,
    /// The initiator IQN to log in as.
    pub initiator: String,
}

impl Login {
    /// From a `connection_info` map.
    pub fn from(info: &Value, initiator: &str) -> Login {
        let data = sub(info, "data");
        Login {
            portal: field(data, "target_portal"),
            iqn: field(data, "target_iqn"),
            user: field(data, "auth_username"),
            password: field(data, "auth_password"),
            initiator: initiator.to_string(),
        }
    }

    /// From a `share.attach` reply (its `connection_info`).
    pub fn from_reply(reply: &Value, initiator: &str) -> Login {
        Login::from(sub(reply, "connection_info"), initiator)
    }

    /// libiscsi's URL of LUN 1, naming the CHAP user (the secret is in [`Login::env`]).
    pub fn url(&self) -> String {
        format!("iscsi://{}@{}/{}/1", self.user, self.portal, self.iqn)
    }

    /// The environment a libiscsi tool reads the CHAP secret from.
    pub fn env(&self) -> [(&str, &str); 1] {
        [("LIBISCSI_CHAP_PASSWORD", self.password.as_str())]
    }

    /// Run libiscsi tool `argv` with the CHAP secret in its environment.
    pub fn run(&self, argv: &[&str]) -> (bool, String, String) {
        try_run_env(argv, &self.env())
    }

    /// qemu's `--object` for the CHAP secret (`sec0`), read from a 0600 file that lives as
    /// long as the returned handle.
    fn secret_object(&self) -> (tempfile::NamedTempFile, String) {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(self.password.as_bytes()).unwrap();
        f.flush().unwrap();
        let object = format!("secret,id=sec0,file={}", f.path().display());
        (f, object)
    }

    /// Run `qemu-io -c cmd` on LUN 1 through the target.
    fn qemu_io(&self, cmd: &str) -> (bool, String, String) {
        let (_file, secret) = self.secret_object();
        try_run(&[
            "qemu-io",
            "--object",
            &secret,
            "--image-opts",
            &self.image_opts(),
            "-c",
            cmd,
        ])
    }

    /// Discover the portal's targets and their LUNs with sizes (`iscsi-ls -s`), as this
    /// initiator with the CHAP account; the tool's output.
    pub fn list(&self) -> Result<String, String> {
        let portal = format!("iscsi://{}@{}", self.user, self.portal);
        match self.run(&["iscsi-ls", "-i", &self.initiator, "-s", &portal]) {
            (true, out, _) => Ok(out),
            (false, out, err) => Err(format!("{out}{err}")),
        }
    }

    /// Log in and run INQUIRY on LUN 1.
    pub fn inquiry(&self) -> Result<(), String> {
        match self.run(&["iscsi-inq", "-i", &self.initiator, &self.url()]) {
            (true, _, _) => Ok(()),
            (false, out, err) => Err(format!("{out}{err}")),
        }
    }

    /// The LUN's size in bytes (READ CAPACITY 16).
    pub fn capacity(&self) -> Result<u64, String> {
        let (ok, out, err) =
            self.run(&["iscsi-readcapacity16", "-i", &self.initiator, &self.url()]);
        if !ok {
            return Err(format!("{out}{err}"));
        }
        out.lines()
            .find_map(|l| l.strip_prefix("Total size:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("no size in {out}"))
    }

    /// qemu's `--image-opts` for LUN 1 (the secret is object `sec0`).
    fn image_opts(&self) -> String {
        let (host, port) = self.portal.split_once(':').unwrap();
        format!(
            "driver=iscsi,transport=tcp,portal={host}:{port},target={},lun=1,user={},password-secret=sec0,initiator-name={}",
            self.iqn, self.user, self.initiator
        )
    }

    /// Write `len` bytes of `byte` at `offset` through the target.
    pub fn write(&self, offset: u64, len: u64, byte: u8) -> Result<(), String> {
        let (ok, out, err) = self.qemu_io(&format!("write -P {byte} {offset} {len}"));
        if ok && out.contains("wrote") {
            Ok(())
        } else {
            Err(format!("{out}{err}"))
        }
    }

    /// Discard `len` bytes at `offset` through the target (qemu's iscsi driver sends
    /// UNMAP only to a LUN advertising logical block provisioning, and then says
    /// `discard` even when it sent nothing).
    pub fn discard(&self, offset: u64, len: u64) -> Result<(), String> {
        let (ok, out, err) = self.qemu_io(&format!("discard {offset} {len}"));
        if ok && out.contains("discard") {
            Ok(())
        } else {
            Err(format!("{out}{err}"))
        }
    }

    /// Read the whole LUN through the target into a file in `scratch` and return its
    /// bytes.
    pub fn read_all(&self, scratch: &Path) -> Vec<u8> {
        let out = scratch.join(format!("read-{}.raw", free_port()));
        let (_file, secret) = self.secret_object();
        sh(&[
            "qemu-img",
            "convert",
            "--object",
            &secret,
            "--image-opts",
            &self.image_opts(),
            "-O",
            "raw",
            out.to_str().unwrap(),
        ]);
        let data = std::fs::read(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        data
    }
}

/// Log in to `url` (libiscsi's form, `iscsi://user%secret@portal/iqn/lun` when it carries
/// CHAP credentials) as `initiator` and run INQUIRY; the error is the tool's output. The
/// secret is taken out of the URL and handed over in `LIBISCSI_CHAP_PASSWORD`, so it never
/// reaches `iscsi-inq`'s argv.
pub fn inquiry(initiator: &str, url: &str) -> Result<(), String> {
    let (url, secret) = split_secret(url);
    let env: Vec<(&str, &str)> = secret
        .as_deref()
        .map(|s| ("LIBISCSI_CHAP_PASSWORD", s))
        .into_iter()
        .collect();
    match try_run_env(&["iscsi-inq", "-i", initiator, &url], &env) {
        (true, _, _) => Ok(()),
        (false, out, err) => Err(format!("{out}{err}")),
    }
}

/// `url` without the CHAP secret its user part carries (`user%secret@`), and that secret.
/// The portal and path never hold an `@`, so the user part ends at the last one.
pub fn split_secret(url: &str) -> (String, Option<String>) {
    let Some(rest) = url.strip_prefix("iscsi://") else {
        return (url.to_string(), None);
    };
    let Some(at) = rest.rfind('@') else {
        return (url.to_string(), None);
    };
    let (userinfo, target) = (&rest[..at], &rest[at..]);
    match userinfo.split_once('%') {
        Some((user, secret)) => (format!("iscsi://{user}{target}"), Some(secret.to_string())),
        None => (url.to_string(), None),
    }
}
