//! The CSI names whose CreateVolume is running: a second call for the same name while
//! the first runs is ABORTED (CSI: "operation pending for volume"), so two calls can never
//! place one name on two appliances.

use std::collections::HashSet;
use std::sync::Mutex;

use tonic::Status;

/// The CSI names whose CreateVolume is running.
#[derive(Debug, Default)]
pub struct Pending(Mutex<HashSet<String>>);

/// Holds a name in [`Pending`] until dropped.
#[derive(Debug)]
pub struct Claim<'a>(&'a Pending, String);

impl Pending {
    /// Claim `name`, or ABORTED when a call for it is running.
    pub fn claim(&self, name: &str) -> Result<Claim<'_>, Status> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(name.to_string()) {
            return Err(Status::aborted(format!(
                "a CreateVolume for {name:?} is already in progress"
            )));
        }
        Ok(Claim(self, name.to_string()))
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut set = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.1);
    }
}
