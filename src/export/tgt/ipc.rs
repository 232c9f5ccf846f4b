//! tgtd's management protocol, as tgt 1.0.x speaks it on `/var/run/tgtd/socket.<port>`
//! (`usr/tgtadm.h`, `usr/tgtadm.c`, `usr/mgmt.c`): pure encoding and decoding.
//!
//! One request per connection: a 120-byte `struct tgtadm_req` in native byte order
//! (mode, op, lld name, total length, tid, sid, lun, cid, host_no, device_type, ac_dir,
//! pack, force), then the parameters as `key=value` text joined by commas with a trailing
//! NUL, exactly as tgtadm builds them. tgtd answers with a `struct tgtadm_rsp` (error
//! code, total length) and, on success, the text tgtadm would print, NUL-terminated; then
//! it closes the connection.
//!
//! Every [`TgtRequest`] is also a tgtadm command line ([`TgtRequest::tgtadm_cmd`]): the
//! fallback transport runs that, and errors name the request in that form. Both encoders
//! are tested against exchanges recorded from the tgtd installed here
//! (`tests/fixtures/tgt-ipc/`, see its README). The reply comes from tgtd, the daemon
//! the driver talks to: trusted, but still bounded and checked before use.

use std::fmt;

use crate::sys::cmd::Cmd;

pub use super::reply::{announced_len, decode_reply, is_system_show, TgtCode, TgtReply};

/// Size of `struct tgtadm_req` on Linux (no padding: every field is naturally aligned).
pub const REQUEST_HEADER: usize = 120;
/// tgtd refuses parameter text longer than this (`MAX_MGT_BUFSIZE`) by closing the socket.
pub const MAX_PARAMS: usize = 8 * 1024;
/// The low-level driver every request names.
const LLD: &str = "iscsi";

/// `enum tgtadm_mode` (the modes the driver uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--mode system`.
    System = 0,
    /// `--mode target`.
    Target = 1,
    /// `--mode logicalunit`.
    LogicalUnit = 2,
    /// `--mode account`.
    Account = 7,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::System => "system",
            Mode::Target => "target",
            Mode::LogicalUnit => "logicalunit",
            Mode::Account => "account",
        }
    }
}

/// `enum tgtadm_op` (the operations the driver uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `--op new`.
    New = 0,
    /// `--op delete`.
    Delete = 1,
    /// `--op show`.
    Show = 2,
    /// `--op bind`.
    Bind = 3,
    /// `--op unbind`.
    Unbind = 4,
    /// `--op update`.
    Update = 5,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::New => "new",
            Op::Delete => "delete",
            Op::Show => "show",
            Op::Bind => "bind",
            Op::Unbind => "unbind",
            Op::Update => "update",
        }
    }
}

/// A CHAP secret in a request: never shown by `Debug`, redacted in the tgtadm form.
#[derive(Clone, PartialEq, Eq)]
struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One management request: `(mode, op, tid, lun, parameters)`, a tgtadm invocation.
///
/// The parameters are kept in the order tgtadm writes them (`path`, `targetname`,
/// `initiator-address`, `initiator-name`, `user`, `password`, then `--params` as
/// `targetOps ...,`), so the bytes are the ones tgtadm would send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TgtRequest {
    mode: Mode,
    op: Op,
    tid: Option<u32>,
    lun: Option<u64>,
    force: bool,
    path: Option<String>,
    targetname: Option<String>,
    initiator_address: Option<String>,
    initiator_name: Option<String>,
    user: Option<String>,
    password: Option<Password>,
    params: Option<String>,
}

impl TgtRequest {
    fn new(mode: Mode, op: Op) -> Self {
        TgtRequest {
            mode,
            op,
            tid: None,
            lun: None,
            force: false,
            path: None,
            targetname: None,
            initiator_address: None,
            initiator_name: None,
            user: None,
            password: None,
            params: None,
        }
    }

    fn tid(mut self, tid: u32) -> Self {
        self.tid = Some(tid);
        self
    }

    fn lun(mut self, tid: u32, lun: u64) -> Self {
        self.tid = Some(tid);
        self.lun = Some(lun);
        self
    }

    fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_string());
        self
    }

    /// `--mode system --op show` (the probe).
    pub fn show_system() -> Self {
        Self::new(Mode::System, Op::Show)
    }

    /// `--mode target --op show`: every target.
    pub fn show_targets() -> Self {
        Self::new(Mode::Target, Op::Show)
    }

    /// `--mode account --op show`: every account.
    pub fn show_accounts() -> Self {
        Self::new(Mode::Account, Op::Show)
    }

    /// `--mode target --op new --tid T --targetname IQN`.
    pub fn new_target(tid: u32, iqn: &str) -> Self {
        let mut r = Self::new(Mode::Target, Op::New).tid(tid);
        r.targetname = Some(iqn.to_string());
        r
    }

    /// `--mode target --op delete --force --tid T`.
    pub fn delete_target(tid: u32) -> Self {
        let mut r = Self::new(Mode::Target, Op::Delete).tid(tid);
        r.force = true;
        r
    }

    /// `--mode target --op bind|unbind --tid T --initiator-name|--initiator-address WHO`:
    /// iSCSI names (`iqn.`, `eui.`, `naa.`) by name, anything else by address.
    pub fn acl(bind: bool, tid: u32, who: &str) -> Self {
        let op = if bind { Op::Bind } else { Op::Unbind };
        let mut r = Self::new(Mode::Target, op).tid(tid);
        if ["iqn.", "eui.", "naa."].iter().any(|p| who.starts_with(p)) {
            r.initiator_name = Some(who.to_string());
        } else {
            r.initiator_address = Some(who.to_string());
        }
        r
    }

    /// `--mode logicalunit --op new --tid T --lun L --backing-store PATH`.
    pub fn new_lun(tid: u32, lun: u64, path: &str) -> Self {
        let mut r = Self::new(Mode::LogicalUnit, Op::New).lun(tid, lun);
        r.path = Some(path.to_string());
        r
    }

    /// `--mode logicalunit --op delete --tid T --lun L`.
    pub fn delete_lun(tid: u32, lun: u64) -> Self {
        Self::new(Mode::LogicalUnit, Op::Delete).lun(tid, lun)
    }

    /// `--mode logicalunit --op update --tid T --lun L --params P` (e.g.
    /// `thin_provisioning=1`).
    pub fn update_lun(tid: u32, lun: u64, params: &str) -> Self {
        let mut r = Self::new(Mode::LogicalUnit, Op::Update).lun(tid, lun);
        r.params = Some(params.to_string());
        r
    }

    /// `--mode logicalunit --op update --tid T --lun L --params thin_provisioning=0|1`:
    /// whether the LUN advertises logical block provisioning (UNMAP punches holes).
    pub fn thin_provisioning(tid: u32, lun: u64, on: bool) -> Self {
        let value = if on { "1" } else { "0" };
        Self::update_lun(tid, lun, &format!("thin_provisioning={value}"))
    }

    /// `--mode account --op new --user U --password P`.
    pub fn new_account(user: &str, password: &str) -> Self {
        let mut r = Self::new(Mode::Account, Op::New).user(user);
        r.password = Some(Password(password.to_string()));
        r
    }

    /// `--mode account --op delete --user U`.
    pub fn delete_account(user: &str) -> Self {
        Self::new(Mode::Account, Op::Delete).user(user)
    }

    /// `--mode account --op bind|unbind --tid T --user U` (incoming).
    pub fn account_binding(bind: bool, tid: u32, user: &str) -> Self {
        let op = if bind { Op::Bind } else { Op::Unbind };
        Self::new(Mode::Account, op).tid(tid).user(user)
    }

    /// Whether tgtd answers with text whose size grows with its state (a `show`).
    pub fn is_show(&self) -> bool {
        self.op == Op::Show
    }

    /// The parameters as tgtadm joins them (without the trailing NUL).
    fn params_text(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let pairs = [
            ("path", self.path.as_deref()),
            ("targetname", self.targetname.as_deref()),
            ("initiator-address", self.initiator_address.as_deref()),
            ("initiator-name", self.initiator_name.as_deref()),
            ("user", self.user.as_deref()),
            ("password", self.password.as_ref().map(|p| p.0.as_str())),
        ];
        for (k, v) in pairs {
            if let Some(v) = v {
                parts.push(format!("{k}={v}"));
            }
        }
        let mut text = parts.join(",");
        if let Some(p) = &self.params {
            if !text.is_empty() {
                text.push(',');
            }
            text.push_str(&format!("targetOps {p},"));
        }
        text
    }

    /// Refuse what tgtd would misread: a NUL anywhere (it ends the text); in every value
    /// but the last free-text one (the secret, or `--params`, which tgtd takes to the
    /// end), a comma (tgtd splits on commas), an `=` (tgtd finds each field with
    /// `strstr("key=")`, so `name=` inside a value would be read as that field) or a line
    /// break (tgtd's `show` text, which reconcile parses line by line, would carry it);
    /// and parameter text longer than tgtd accepts.
    pub fn check(&self) -> Result<(), String> {
        let split = [
            &self.path,
            &self.targetname,
            &self.initiator_address,
            &self.initiator_name,
            &self.user,
        ];
        for v in split.into_iter().flatten() {
            if v.contains([',', '\0', '=', '\n', '\r']) {
                return Err(format!(
                    "{v:?} cannot be passed to tgtd (comma, `=`, line break or NUL)"
                ));
            }
        }
        let tail = [&self.params, &self.password.as_ref().map(|p| p.0.clone())];
        if tail.into_iter().flatten().any(|v| v.contains('\0')) {
            return Err("a tgtd parameter contains a NUL byte".into());
        }
        if self.params_text().len() + 1 > MAX_PARAMS {
            return Err(format!(
                "tgtd parameters longer than {MAX_PARAMS} bytes: {}",
                self.display(0)
            ));
        }
        Ok(())
    }

    /// The bytes of the request on the socket: header, parameters, NUL. Call
    /// [`TgtRequest::check`] first.
    pub fn encode(&self) -> Vec<u8> {
        let text = self.params_text();
        let body_len = if text.is_empty() { 0 } else { text.len() + 1 };
        let mut b = Vec::with_capacity(REQUEST_HEADER + body_len);
        let u32s = |b: &mut Vec<u8>, v: u32| b.extend_from_slice(&v.to_ne_bytes());
        u32s(&mut b, self.mode as u32);
        u32s(&mut b, self.op as u32);
        let mut lld = [0u8; 64];
        lld[..LLD.len()].copy_from_slice(LLD.as_bytes());
        b.extend_from_slice(&lld);
        u32s(&mut b, (REQUEST_HEADER + body_len) as u32);
        // tid: -1 (and GLOBAL_TID, ~0, for account bindings) when not given.
        u32s(&mut b, self.tid.unwrap_or(u32::MAX));
        b.extend_from_slice(&0u64.to_ne_bytes()); // sid
        b.extend_from_slice(&self.lun.unwrap_or(u64::MAX).to_ne_bytes());
        for v in [0, 0, 0, 0, 0] {
            u32s(&mut b, v); // cid, host_no, device_type (disk), ac_dir (incoming), pack
        }
        u32s(&mut b, self.force as u32);
        debug_assert_eq!(b.len(), REQUEST_HEADER);
        if body_len > 0 {
            b.extend_from_slice(text.as_bytes());
            b.push(0);
        }
        b
    }

    /// The same request as a tgtadm command for tgtd on `control_port` (the secret marked
    /// secret).
    pub fn tgtadm_cmd(&self, control_port: u32) -> Cmd {
        let mut c = Cmd::new("tgtadm").args(["--lld", LLD, "-C", &control_port.to_string()]);
        c = c.args(["--mode", self.mode.as_str(), "--op", self.op.as_str()]);
        if self.force {
            c = c.arg("--force");
        }
        if let Some(t) = self.tid {
            c = c.args(["--tid".to_string(), t.to_string()]);
        }
        if let Some(l) = self.lun {
            c = c.args(["--lun".to_string(), l.to_string()]);
        }
        let flags = [
            ("--targetname", &self.targetname),
            ("--backing-store", &self.path),
            ("--initiator-address", &self.initiator_address),
            ("--initiator-name", &self.initiator_name),
            ("--user", &self.user),
            ("--params", &self.params),
        ];
        for (flag, v) in flags {
            if let Some(v) = v {
                c = c.args([flag, v.as_str()]);
            }
        }
        if let Some(p) = &self.password {
            c = c.arg("--password").secret_arg(p.0.clone());
        }
        c
    }

    /// The request in tgtadm's form, secret redacted (for messages).
    pub fn display(&self, control_port: u32) -> String {
        self.tgtadm_cmd(control_port).display()
    }
}

#[cfg(test)]
#[path = "ipc_tests.rs"]
mod tests;
