//! The node's identity at start-up: its id read from `<state_dir>/node-id`, or made and
//! written there at the first start, and its name from the config or the host name.
//!
//! Input trust: the file is the admin's (under the state directory, mode 0644); it is
//! still checked to be exactly one id line, since everything that tells nodes apart
//! depends on it. A damaged file stops start-up and is left as it is: a new id would make
//! this node a stranger to everyone that knew it.

use std::path::Path;

use crate::config::Config;
use crate::model::{default_node_name, Node, NodeId, NODE_ID_FILE};

/// This node's identity: the id in `<state_dir>/node-id` (made there with an atomic write
/// when the file does not exist) and the config's `node_name` or the host name. An error
/// names the file and says why it is refused; the file is not touched then.
pub fn load_node(config: &Config) -> Result<Node, String> {
    let id = load_or_create_id(&config.state_dir)?;
    let name = match &config.node_name {
        Some(n) => n.clone(),
        None => {
            let host = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok());
            default_node_name(host.as_deref())
        }
    };
    Ok(Node { id, name })
}

/// A node id file is one UUID line; more than this is damaged, and is not read further.
const MAX_ID_FILE: u64 = 4096;

/// The node id file's bytes, at most [`MAX_ID_FILE`] + 1 of them.
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_ID_FILE + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn load_or_create_id(state_dir: &Path) -> Result<NodeId, String> {
    let path = state_dir.join(NODE_ID_FILE);
    match read_bounded(&path) {
        Ok(bytes) => {
            let why = match String::from_utf8(bytes) {
                Ok(text) if text.len() as u64 > MAX_ID_FILE => {
                    format!("it is longer than {MAX_ID_FILE} bytes")
                }
                Ok(text) => match NodeId::parse_file(&text) {
                    Ok(id) => return Ok(id),
                    Err(e) => e.to_string(),
                },
                Err(_) => "it is not UTF-8 text".into(),
            };
            Err(format!(
                "node id file {} is damaged: {why}. It must hold exactly one line with this \
                 node's id (a lowercase UUID). shelfd left it as it is: restore it from a \
                 backup of this node; remove it only if no other system knows this node \
                 (a new id makes it another node for Cinder and for receivers)",
                path.display()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = NodeId::generate();
            crate::sys::fs::write_atomic(state_dir, NODE_ID_FILE, id.file_text().as_bytes(), 0o644)
                .map_err(|e| format!("cannot write node id file {}: {e}", path.display()))?;
            log::info!("node id {id} made and kept in {}", path.display());
            Ok(id)
        }
        Err(e) => Err(format!("cannot read node id file {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_made_once_and_a_damaged_file_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let made = load_or_create_id(dir.path()).unwrap();
        let path = dir.path().join(NODE_ID_FILE);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), made.file_text());
        assert_eq!(load_or_create_id(dir.path()).unwrap(), made);
        assert!(!dir.path().join(".node-id.tmp").exists());
        std::fs::write(&path, b"garbage\n").unwrap();
        let e = load_or_create_id(dir.path()).unwrap_err();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("damaged"),
            "{e}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"garbage\n");
        // A huge file is read no further than the bound, refused, and left as it is.
        let huge = format!("{}\n", made.as_str()).repeat(100_000);
        std::fs::write(&path, &huge).unwrap();
        let e = load_or_create_id(dir.path()).unwrap_err();
        assert!(e.contains("damaged") && e.contains("longer than"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap().len(), huge.len());
    }
}
