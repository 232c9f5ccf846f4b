//! The CSI node id: what NodeGetInfo returns and ControllerPublishVolume gets back, carrying
//! everything `share.attach`'s connector needs (the host's name, its iSCSI initiator IQN,
//! its NVMe host NQN, its IP), so the controller needs no other channel to the node.
//!
//! Text form (at most [`MAX_NODE_ID`] bytes, the CSI limit): `host=<name>` then, when
//! known and in this order, `;iqn=<IQN>`, `;nqn=<NQN>`, `;ip=<address>`. The form is
//! canonical: decoding and encoding give back the same text. The node id comes from the
//! CO (it stores what the node said), so [`NodeId::decode`] checks every field with shelf's
//! own validators before any of it reaches an appliance.

use shelf::model::{
    validate_connector, validate_iqn, validate_nqn, validate_single_host, Connector,
};

/// Longest node id CSI lets a plugin return (the spec's 256-byte limit).
pub const MAX_NODE_ID: usize = 256;

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeId {
    /// The host's name (the Kubernetes node name): one host name, letters, digits, `.-_`.
    pub host: String,
    /// Its iSCSI initiator IQN, when it has an iSCSI initiator.
    pub initiator: Option<String>,
    /// Its NVMe host NQN, when it has NVMe/TCP.
    pub nqn: Option<String>,
    /// Its IP address, the NFS client it mounts from, when known.
    pub ip: Option<String>,
}

impl NodeId {
    /// The text form, or why this node id cannot be one (a field is invalid, or all of
    /// them are longer than [`MAX_NODE_ID`]).
    pub fn encode(&self) -> Result<String, String> {
        self.validate()?;
        let mut s = format!("host={}", self.host);
        for (key, value) in self.fields() {
            if let Some(v) = value {
                s.push_str(&format!(";{key}={v}"));
            }
        }
        if s.len() > MAX_NODE_ID {
            return Err(format!(
                "the node id would be {} bytes, more than CSI's {MAX_NODE_ID}",
                s.len()
            ));
        }
        Ok(s)
    }

    /// Parse and check a node id the CO sent. The error says what is wrong, quoting at most
    /// a bounded prefix of the text.
    pub fn decode(text: &str) -> Result<NodeId, String> {
        let shown: String = text.chars().take(64).collect();
        let bad = |why: String| format!("node id {shown:?} is not one this plugin made: {why}");
        if text.len() > MAX_NODE_ID {
            return Err(bad(format!("longer than {MAX_NODE_ID} bytes")));
        }
        let mut parts = text.split(';');
        let host = parts
            .next()
            .and_then(|p| p.strip_prefix("host="))
            .ok_or_else(|| bad("does not start with host=".into()))?;
        let mut id = NodeId {
            host: host.to_string(),
            initiator: None,
            nqn: None,
            ip: None,
        };
        let mut next_field = 0;
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not key=value")))?;
            let keys = ["iqn", "nqn", "ip"];
            let at = keys
                .iter()
                .position(|k| *k == key)
                .ok_or_else(|| bad(format!("unknown field {key:?}")))?;
            if at < next_field {
                return Err(bad(format!("field {key:?} repeated or out of order")));
            }
            next_field = at + 1;
            let slot = match at {
                0 => &mut id.initiator,
                1 => &mut id.nqn,
                _ => &mut id.ip,
            };
            *slot = Some(value.to_string());
        }
        id.validate().map_err(bad)?;
        Ok(id)
    }

    /// The connector `share.attach` takes for this node.
    pub fn connector(&self) -> Connector {
        Connector {
            host: self.host.clone(),
            ip: self.ip.clone(),
            initiator: self.initiator.clone(),
            nqn: self.nqn.clone(),
        }
    }

    /// The optional fields with their keys, in text order.
    fn fields(&self) -> [(&'static str, &Option<String>); 3] {
        [
            ("iqn", &self.initiator),
            ("nqn", &self.nqn),
            ("ip", &self.ip),
        ]
    }

    /// Every field by shelf's own rules (`shelf::model`), as shelfd will check them.
    fn validate(&self) -> Result<(), String> {
        validate_single_host(&self.host).map_err(|e| e.to_string())?;
        validate_connector(&self.connector()).map_err(|e| e.to_string())?;
        if let Some(iqn) = &self.initiator {
            validate_iqn(iqn).map_err(|e| e.to_string())?;
        }
        if let Some(nqn) = &self.nqn {
            validate_nqn(nqn).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn full() -> NodeId {
        NodeId {
            host: "worker-1.example.com".into(),
            initiator: Some("iqn.1993-08.org.debian:01:abcdef012345".into()),
            nqn: Some(
                "nqn.2014-08.org.nvmexpress:uuid:0b0e6f1c-9d2e-4c1a-8f00-123456789abc".into(),
            ),
            ip: Some("10.0.0.7".into()),
        }
    }

    #[test]
    fn node_ids_round_trip_and_give_the_connector() {
        let id = full();
        let text = id.encode().unwrap();
        assert!(text.len() <= MAX_NODE_ID);
        assert_eq!(NodeId::decode(&text).unwrap(), id);
        let c = id.connector();
        assert_eq!(c.host, id.host);
        assert_eq!(c.initiator, id.initiator);
        assert_eq!(c.nqn, id.nqn);
        assert_eq!(c.ip, id.ip);
        let bare = NodeId {
            host: "n1".into(),
            initiator: None,
            nqn: None,
            ip: None,
        };
        assert_eq!(bare.encode().unwrap(), "host=n1");
        let v6 = NodeId {
            ip: Some("fd00::7".into()),
            ..bare
        };
        assert_eq!(NodeId::decode(&v6.encode().unwrap()).unwrap(), v6);
    }

    #[test]
    fn hostile_node_ids_are_refused() {
        let long_host = format!("host={}", "h".repeat(260));
        for bad in [
            "",
            "n1",
            "host=",
            "host=*",
            "host=@all",
            "host=10.0.0.0/8",
            "host=-x",
            "host=a b",
            "host=n1;iqn=IQN.BAD",
            "host=n1;iqn=iqn.1993-08.org.debian:01:x\n",
            "host=n1;nqn=nqn.2014-08.org/../../x",
            "host=n1;ip=not-an-ip",
            "host=n1;ip=10.0.0.1;iqn=iqn.1993-08.org.debian:01:x",
            "host=n1;ip=10.0.0.1;ip=10.0.0.2",
            "host=n1;mac=00:11",
            "host=n1;iqn",
            "host=n1;",
            &long_host,
        ] {
            assert!(NodeId::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn too_long_a_node_id_is_not_encoded() {
        let id = NodeId {
            host: "h".repeat(100),
            initiator: Some(format!("iqn.1993-08.org.debian:{}", "x".repeat(150))),
            ..full()
        };
        assert!(id.encode().unwrap_err().contains("256"));
    }

    proptest! {
        #[test]
        fn any_valid_node_id_round_trips(
            host in "[a-z0-9][a-z0-9.-]{0,40}",
            iqn in proptest::option::of("[a-z0-9.:-]{1,40}"),
            nqn in proptest::option::of("[a-zA-Z0-9.:_-]{1,40}"),
            ip in proptest::option::of(any::<std::net::IpAddr>()),
        ) {
            let id = NodeId {
                host,
                initiator: iqn.map(|t| format!("iqn.2001-04.com.example:{t}")),
                nqn: nqn.map(|t| format!("nqn.2014-08.org.example:{t}")),
                ip: ip.map(|a| a.to_string()),
            };
            let text = id.encode().unwrap();
            prop_assert_eq!(NodeId::decode(&text).unwrap(), id);
        }

        #[test]
        fn decode_never_panics_and_what_it_accepts_re_encodes(text in ".{0,300}") {
            if let Ok(id) = NodeId::decode(&text) {
                prop_assert_eq!(id.encode().unwrap(), text);
            }
        }

        #[test]
        fn structured_hostile_input_re_encodes_or_is_refused(
            host in "[ -~]{0,20}", iqn in "[ -~]{0,30}", ip in "[ -~]{0,20}",
        ) {
            let text = format!("host={host};iqn=iqn.2001-04.com.example:{iqn};ip={ip}");
            if let Ok(id) = NodeId::decode(&text) {
                prop_assert_eq!(id.encode().unwrap(), text);
                prop_assert!(!id.host.contains(';') && !id.host.contains('='));
            }
        }
    }
}
