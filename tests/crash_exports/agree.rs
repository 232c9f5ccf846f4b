//! What the export crash walk adds to the harness's rig and agreement checker
//! (`common::Rig`, `common::agree`): protocol names and text lists.

use ciborium::Value;
use shelf::model::Protocol;

pub use crate::common::agree::*;
pub use crate::common::world::IQN_PREFIX as PREFIX;
use crate::common::*;

pub fn proto_name(p: Protocol) -> &'static str {
    p.as_str()
}

pub fn texts(list: &[&str]) -> Value {
    Value::Array(list.iter().map(|c| t(c)).collect())
}
