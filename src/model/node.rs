//! The node's identity: a random id kept in `<state_dir>/node-id`, and a display name.
//!
//! The id tells one shelf node from another (Cinder's migration checks it; a send
//! stream's header carries it). It is made once, at the first start, and never changes:
//! not by restart, not by `--rebuild-db`, and not by the config (there is no `node_id`
//! setting). Pure: parsing and formatting the file, no I/O (the file is read and written
//! by `engine::node`).

use serde::Serialize;

use super::Invalid;

/// The name of the file under the state directory that holds the node id.
pub const NODE_ID_FILE: &str = "node-id";

/// A node id: a UUID, lowercase and hyphenated (`8-4-4-4-12` hex digits).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// A new random id (UUID version 4).
    pub fn generate() -> NodeId {
        NodeId(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// An id in its canonical form: a UUID, lowercase and hyphenated, nothing else. A
    /// stream's header and the node-id file are read with this (both are inputs that may
    /// be damaged or forged: nothing but the 36 characters is accepted).
    pub fn parse(text: &str) -> Result<NodeId, Invalid> {
        match super::names::is_canonical_uuid(text) {
            true => Ok(NodeId(text.to_string())),
            false => Err(Invalid::new(format!(
                "{:?} is not a node id (a lowercase hyphenated UUID)",
                super::names::shorten(text)
            ))),
        }
    }

    /// The content of a node-id file: exactly one line holding a valid id (the final
    /// newline may be missing; nothing else may be there, not even blanks).
    pub fn parse_file(text: &str) -> Result<NodeId, Invalid> {
        let line = text.strip_suffix('\n').unwrap_or(text);
        if line.contains('\n') {
            return Err(Invalid::new("it holds more than one line"));
        }
        NodeId::parse(line)
    }

    /// What the node-id file holds for this id: the id and a newline.
    pub fn file_text(&self) -> String {
        format!("{}\n", self.0)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who this node is, as `hello` reports it: `{id, name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The stable id (`<state_dir>/node-id`).
    pub id: NodeId,
    /// The display name: the config's `node_name`, by default the host name. Not unique
    /// and not stable (a rename changes it); compare ids, not names.
    pub name: String,
}

/// The name a node takes when the config gives none: its host name if that is a valid
/// name, else the host name's first label if that is, else `"shelf"`.
pub fn default_node_name(hostname: Option<&str>) -> String {
    let Some(host) = hostname else {
        return "shelf".into();
    };
    let short = host.split('.').next().unwrap_or("");
    [host, short]
        .into_iter()
        .find(|n| super::validate_name("node", n).is_ok())
        .unwrap_or("shelf")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_id_is_canonical_and_reads_back_from_its_file() {
        let id = NodeId::generate();
        assert_eq!(id.as_str().len(), 36);
        assert_eq!(NodeId::parse(id.as_str()).unwrap(), id);
        assert_eq!(NodeId::parse_file(&id.file_text()).unwrap(), id);
        assert_eq!(
            uuid::Uuid::parse_str(id.as_str())
                .unwrap()
                .get_version_num(),
            4
        );
    }

    #[test]
    fn a_file_without_its_final_newline_is_accepted() {
        let s = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(NodeId::parse_file(s).unwrap().as_str(), s);
    }

    #[test]
    fn anything_but_one_canonical_uuid_line_is_refused() {
        let ok = "0f8fad5b-d9cb-469f-a165-70867728950e";
        for bad in [
            String::new(),
            "\n".into(),
            format!("{ok}\n\n"),
            format!("{ok}\n{ok}\n"),
            format!(" {ok}\n"),
            format!("{ok} \n"),
            format!("{ok}\r\n"),
            ok.to_uppercase(),
            ok.replace('-', ""),
            format!("{{{ok}}}"),
            format!("urn:uuid:{ok}"),
            ok[..35].to_string(),
            "not a uuid".into(),
            "\u{0}".repeat(36),
        ] {
            assert!(NodeId::parse_file(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_default_name_is_the_host_name_or_its_first_label() {
        assert_eq!(default_node_name(Some("node1")), "node1");
        assert_eq!(
            default_node_name(Some("node1.example.org")),
            "node1.example.org"
        );
        let long = format!("n1.{}", "a".repeat(70));
        assert_eq!(default_node_name(Some(&long)), "n1");
        assert_eq!(default_node_name(Some("-bad")), "shelf");
        assert_eq!(default_node_name(None), "shelf");
    }

    #[test]
    fn a_node_encodes_as_id_and_name() {
        let n = Node {
            id: NodeId::parse("0f8fad5b-d9cb-469f-a165-70867728950e").unwrap(),
            name: "n1".into(),
        };
        assert_eq!(
            serde_json::to_string(&n).unwrap(),
            r#"{"id":"0f8fad5b-d9cb-469f-a165-70867728950e","name":"n1"}"#
        );
    }
}
