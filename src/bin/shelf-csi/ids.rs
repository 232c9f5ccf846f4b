//! Volume and snapshot ids as the CO stores them: `<appliance>:<shelf id>`. The appliance
//! part (a topology segment, never containing `:`; config.rs) says which shelfd to ask;
//! the shelf part is the share's or snapshot's id on it, never its name, so a rename or a
//! new object of the same name can never be mistaken for the old one.

use tonic::Status;

use crate::config::check_segment;

/// Longest id CSI lets a plugin return (the spec's 128-byte limit).
pub const MAX_ID: usize = 128;

/// A parsed id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id {
    /// The appliance's name.
    pub appliance: String,
    /// The share's or snapshot's shelf id.
    pub object: String,
}

impl Id {
    /// The id of `object` on `appliance`.
    pub fn new(appliance: &str, object: &str) -> Id {
        Id {
            appliance: appliance.to_string(),
            object: object.to_string(),
        }
    }

    /// Parse an id the CO sent. `what` names it in the error ("volume_id", "snapshot_id").
    /// A malformed id is NOT_FOUND, not INVALID_ARGUMENT: the spec says an id this plugin
    /// never returned names no volume (csi-sanity sends made-up ids and expects that).
    pub fn parse(what: &str, s: &str) -> Result<Id, Status> {
        if s.is_empty() {
            return Err(Status::invalid_argument(format!("{what} is required")));
        }
        let bad = || {
            Status::not_found(format!(
                "{what} {s:?}: no such object (not an id this plugin made)"
            ))
        };
        if s.len() > MAX_ID {
            return Err(bad());
        }
        let (appliance, object) = s.split_once(':').ok_or_else(bad)?;
        if check_segment(appliance).is_err()
            || object.is_empty()
            || !object
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(bad());
        }
        Ok(Id::new(appliance, object))
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.appliance, self.object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn ids_round_trip() {
        let id = Id::new("a1", "0b0e6f1c-9d2e-4c1a-8f00-123456789abc");
        assert_eq!(Id::parse("volume_id", &id.to_string()).unwrap(), id);
    }

    #[test]
    fn made_up_ids_are_not_found_and_empty_is_invalid() {
        assert_eq!(
            Id::parse("volume_id", "").unwrap_err().code(),
            Code::InvalidArgument
        );
        for s in [
            "x",
            ":abc",
            "a1:",
            "a1:../etc",
            "a 1:abc",
            "a1:abc:def",
            &"a".repeat(200),
        ] {
            assert_eq!(
                Id::parse("volume_id", s).unwrap_err().code(),
                Code::NotFound,
                "{s}"
            );
        }
    }
}
