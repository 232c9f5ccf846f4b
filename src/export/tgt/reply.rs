//! tgtd's answers on its management socket (tgt 1.0.x `usr/mgmt.c`): a `struct
//! tgtadm_rsp` (error code, total length) and, on success, the NUL-terminated text
//! tgtadm would print. Pure; tested with the requests in `ipc_tests.rs`.

use std::fmt;

/// Size of `struct tgtadm_rsp`.
pub const RESPONSE_HEADER: usize = 8;

/// `enum tgtadm_errno`: why tgtd refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TgtCode(pub u32);

impl TgtCode {
    /// `TGTADM_NO_TARGET`.
    pub const NO_TARGET: TgtCode = TgtCode(4);
    /// `TGTADM_NO_BINDING`.
    pub const NO_BINDING: TgtCode = TgtCode(8);
    /// `TGTADM_TARGET_EXIST`.
    pub const TARGET_EXIST: TgtCode = TgtCode(9);
    /// `TGTADM_ACL_EXIST`.
    pub const ACL_EXIST: TgtCode = TgtCode(12);
    /// `TGTADM_ACL_NOEXIST`.
    pub const ACL_NOEXIST: TgtCode = TgtCode(13);
    /// `TGTADM_USER_EXIST`.
    pub const USER_EXIST: TgtCode = TgtCode(14);
    /// `TGTADM_NO_USER`.
    pub const NO_USER: TgtCode = TgtCode(15);

    /// tgtadm's text for each code, in code order (`tgtadm_strerror`).
    const MESSAGES: [&'static str; 25] = [
        "success",
        "unknown error",
        "out of memory",
        "can't find the driver",
        "can't find the target",
        "can't find the logical unit",
        "can't find the session",
        "can't find the connection",
        "can't find the binding",
        "this target already exists",
        "this logical unit number already exists",
        "this binding already exists",
        "this access control rule already exists",
        "this access control rule does not exist",
        "this account already exists",
        "can't find the account",
        "too many accounts",
        "invalid request",
        "this target already has an outgoing account",
        "this target is still active",
        "this logical unit is still active",
        "this driver is busy",
        "this operation isn't supported",
        "unknown parameter",
        "this device has Prevent Removal set",
    ];

    /// What tgtadm prints for this code.
    pub fn message(self) -> &'static str {
        Self::MESSAGES
            .get(self.0 as usize)
            .copied()
            .unwrap_or("(unknown tgtadm_errno)")
    }

    /// The code behind tgtadm's error output (`tgtadm: <message>`), if it is one of
    /// tgtd's refusals rather than tgtadm's own complaint.
    pub fn from_tgtadm_stderr(stderr: &str) -> Option<TgtCode> {
        let line = stderr.lines().find_map(|l| l.strip_prefix("tgtadm: "))?;
        Self::MESSAGES
            .iter()
            .position(|m| *m == line.trim_end())
            .filter(|&i| i != 0)
            .map(|i| TgtCode(i as u32))
    }
}

impl fmt::Display for TgtCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (tgtadm_errno {})", self.message(), self.0)
    }
}

/// The total length a `tgtadm_rsp` header announces (header included): the framing of
/// tgtd's answers, for [`crate::sys::exchange::ReplyFrame`].
pub fn announced_len(head: &[u8]) -> Result<usize, String> {
    let len = head
        .get(4..RESPONSE_HEADER)
        .ok_or_else(|| format!("a header of {} bytes", head.len()))?;
    Ok(u32::from_ne_bytes(len.try_into().expect("4 bytes")) as usize)
}

/// What tgtd answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TgtReply {
    /// Done; the text tgtadm would print (empty for most changes).
    Done(String),
    /// Refused, with tgtd's reason.
    Refused(TgtCode),
}

/// Decode everything tgtd sent on one connection (it closes after the reply). An answer
/// that is not one `tgtadm_rsp` with exactly its announced text is an error naming what
/// is wrong: a tgtd speaking another version of the protocol is not guessed at.
pub fn decode_reply(bytes: &[u8]) -> Result<TgtReply, String> {
    let Some((head, text)) = bytes.split_first_chunk::<RESPONSE_HEADER>() else {
        return Err(format!(
            "a reply of {} bytes, shorter than tgtadm_rsp ({RESPONSE_HEADER})",
            bytes.len()
        ));
    };
    let err = u32::from_ne_bytes(head[..4].try_into().expect("4 bytes"));
    let len = u32::from_ne_bytes(head[4..].try_into().expect("4 bytes")) as usize;
    if len != bytes.len() {
        return Err(format!(
            "the reply announces {len} bytes but {} came",
            bytes.len()
        ));
    }
    if err != 0 {
        if !text.is_empty() {
            return Err(format!(
                "error {err} came with {} bytes of text",
                text.len()
            ));
        }
        return Ok(TgtReply::Refused(TgtCode(err)));
    }
    let text = match text.split_last() {
        None => &[][..],
        Some((0, t)) => t,
        Some(_) => return Err("the reply's text is not NUL-terminated".into()),
    };
    // tgtadm prints up to the first NUL (fputs); so do we.
    let text = text.split(|b| *b == 0).next().unwrap_or_default();
    Ok(TgtReply::Done(String::from_utf8_lossy(text).into_owned()))
}

/// Whether the answer to [`TgtRequest::show_system`] is tgt 1.0's: its text starts with
/// the `System:` section and lists the LLDs.
pub fn is_system_show(text: &str) -> bool {
    text.starts_with("System:\n") && text.contains("\nLLDs:\n")
}
