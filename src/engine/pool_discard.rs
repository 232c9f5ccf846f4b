//! `pool.show`'s `discard`: what an attach of a thin volume of a pool would say in
//! `connection_info.data.discard`, per block protocol. The engine asks the protocol's
//! configured default driver (the one an attach uses) through the same
//! [`crate::export::Exporter::discards`] an attach consults, for a spec like the one it
//! would build, so the two never disagree.

use std::sync::Arc;

use super::Engine;
use crate::export::{Backing, ExportSpec};
use crate::model::{Export, PoolDiscard, Protocol, ShareState};
use crate::pool::Pool;

impl Engine {
    /// `pool`'s `discard` answer.
    pub(super) fn pool_discard(&self, pool: &Arc<dyn Pool>) -> PoolDiscard {
        PoolDiscard {
            iscsi: self.thin_volume_discards(pool, Protocol::Iscsi),
            nvme: self.thin_volume_discards(pool, Protocol::Nvme),
        }
    }

    /// Whether `protocol`'s default driver discards for a thin volume of `pool`.
    fn thin_volume_discards(&self, pool: &Arc<dyn Pool>, protocol: Protocol) -> bool {
        let driver = self.protocol(protocol).default_driver();
        let spec = ExportSpec {
            export: Export {
                id: String::new(),
                share: String::new(),
                share_name: String::new(),
                protocol,
                driver,
                state: ShareState::Available,
                options: Default::default(),
                target: String::new(),
                tid: None,
                fsid: None,
                chap_user: None,
                attached: vec![],
                created_at: 0,
            },
            path: pool.volume_path("thin-volume"),
            chap_secret: None,
            thin: true,
            backing: Backing::of(pool.kind()),
        };
        self.exporter(driver).discards(&spec)
    }
}
