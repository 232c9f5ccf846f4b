//! Keys whose operation is running: a second call for the same key while the first runs is
//! ABORTED (CSI: "operation pending for volume"). Two sets use it: CSI names whose
//! CreateVolume runs (so two calls can never place one name on two appliances), and
//! volume ids that DeleteVolume, ControllerPublish/Unpublish, ControllerExpandVolume or
//! CreateSnapshot work on (so a DeleteVolume cannot remove a volume a publish is attaching,
//! nor a publish attach one a delete is removing).

use std::collections::HashSet;
use std::sync::Mutex;

use tonic::Status;

/// The keys whose operation is running, and what they are (for the ABORTED message).
#[derive(Debug)]
pub struct Pending {
    /// What a key names, e.g. `CreateVolume for name` or `operation on volume`.
    what: &'static str,
    /// The keys held.
    held: Mutex<HashSet<String>>,
}

/// Holds a key in [`Pending`] until dropped.
#[derive(Debug)]
pub struct Claim<'a>(&'a Pending, String);

impl Pending {
    /// An empty set whose ABORTED message says `what` is in progress for the key.
    pub fn new(what: &'static str) -> Pending {
        Pending {
            what,
            held: Mutex::new(HashSet::new()),
        }
    }

    /// Claim `key`, or ABORTED when a call for it is running.
    pub fn claim(&self, key: &str) -> Result<Claim<'_>, Status> {
        let mut set = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(key.to_string()) {
            return Err(Status::aborted(format!(
                "{} {key:?} is already in progress",
                self.what
            )));
        }
        Ok(Claim(self, key.to_string()))
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut set = self.0.held.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_key_is_aborted_until_its_claim_drops() {
        let p = Pending::new("an operation on volume");
        let first = p.claim("a1:v").unwrap();
        let again = p.claim("a1:v").unwrap_err();
        assert_eq!(again.code(), tonic::Code::Aborted);
        assert!(again.message().contains("a1:v"), "{}", again.message());
        let _other = p.claim("a1:w").unwrap();
        drop(first);
        p.claim("a1:v").unwrap();
    }
}
