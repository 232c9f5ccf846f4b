//! The `auto` transport decision of the tgt driver, pure: what one probe of tgtd's socket
//! found, and what that decides (docs/exports.md, "The fallback").

use super::transport::{Chosen, TgtFailure};
use crate::config::TgtTransport;
use crate::error::Error;

/// What one probe of the socket found.
#[derive(Debug)]
pub enum SocketProbe {
    /// tgt 1.0's answer to `system show`.
    Speaks,
    /// A complete, well-framed answer that is not tgt 1.0's.
    Foreign(String),
    /// A complete answer not framed as tgt 1.0 frames it.
    Garbled(String),
    /// No answer: nothing listens, an I/O error, a timeout, a cut connection.
    Failed(TgtFailure),
}

/// What a probe decides.
#[derive(Debug)]
pub enum Decision {
    /// Use this transport from now on.
    Pin(Chosen),
    /// Fall back to tgtadm, for this reason (then pinned once tgtadm answers).
    Fallback(String),
    /// Choose nothing now; the next call or probe tries the socket again.
    Fail(TgtFailure),
}

/// The transport decision for one socket probe under `allowed`, given the previous
/// probe's garbled answer (`last_garbled`, updated) and whether tgtadm is installed.
/// Pure: only a definite answer decides.
pub fn decide(
    allowed: TgtTransport,
    probe: SocketProbe,
    last_garbled: &mut Option<String>,
    tgtadm_installed: bool,
) -> Decision {
    let foreign = |why: String| {
        if allowed == TgtTransport::Auto && tgtadm_installed {
            Decision::Fallback(why)
        } else {
            Decision::Fail(TgtFailure::Other(Error::Unsupported(why)))
        }
    };
    let previous = last_garbled.take();
    match probe {
        SocketProbe::Speaks => Decision::Pin(Chosen::Socket),
        SocketProbe::Foreign(why) => foreign(why),
        SocketProbe::Garbled(why) if previous.as_deref() == Some(why.as_str()) => {
            foreign(format!("{why} (twice in a row)"))
        }
        SocketProbe::Garbled(why) => {
            *last_garbled = Some(why.clone());
            Decision::Fail(TgtFailure::Garbled(format!(
                "{why}; the socket is tried again on the next call"
            )))
        }
        SocketProbe::Failed(f) => Decision::Fail(f),
    }
}
