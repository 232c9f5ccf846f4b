//! ListVolumes (the shares this plugin made on every appliance, paged) and GetCapacity
//! (what a new volume may take, per segment and per `pool` parameter).

use bpfman_csi::v1::list_volumes_response::Entry;
use bpfman_csi::v1::{
    GetCapacityRequest, GetCapacityResponse, ListVolumesRequest, ListVolumesResponse,
};
use shelf::model::{MAX_SIZE, SECTOR};
use tonic::Status;

use super::create::volume_of;
use super::params::{self, Params, Protocol};
use super::placement;
use super::ControllerService;
use crate::config::{Config, TOPOLOGY_KEY};
use crate::objects;

/// A ListVolumes position: the appliance's place in the config, and a share id on it.
type Key = (usize, String);

/// The token that resumes after `key`: `<appliance>/<share id>`.
fn token(cfg: &Config, key: &Key) -> String {
    format!("{}/{}", cfg.appliances[key.0].name, key.1)
}

/// The key a token names; `None` for a token this plugin did not make (or whose
/// appliance is no longer configured).
fn parse_token(cfg: &Config, t: &str) -> Option<Key> {
    let (appliance, id) = t.split_once('/')?;
    let index = cfg.appliances.iter().position(|a| a.name == appliance)?;
    let ok = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    ok.then(|| (index, id.to_string()))
}

/// `ListVolumes`: appliances in config order, each one's volumes by share id; a page of
/// `max_entries` (all when 0) resumes after the last entry's key, so volumes made or
/// deleted between pages do not shift the others. A token this plugin did not make is
/// ABORTED (CSI spec). Every appliance must answer (UNAVAILABLE otherwise: a list that
/// silently left one out would look like lost volumes).
pub async fn list_volumes(
    svc: &ControllerService,
    req: ListVolumesRequest,
) -> Result<ListVolumesResponse, Status> {
    let max = usize::try_from(req.max_entries)
        .map_err(|_| Status::invalid_argument("max_entries must not be negative"))?;
    let after = match req.starting_token.as_str() {
        "" => None,
        t => Some(parse_token(&svc.cfg, t).ok_or_else(|| {
            Status::aborted(format!("starting_token {t:?} is not one this plugin made"))
        })?),
    };
    let mut entries = Vec::new();
    let mut next_token = String::new();
    let mut last_key: Key = (0, String::new());
    for (index, a) in objects::appliances(&svc.cfg).into_iter().enumerate() {
        if after.as_ref().is_some_and(|k| k.0 > index) {
            continue;
        }
        for (id, share) in objects::csi_shares(&a).await? {
            let key = (index, id);
            if after.as_ref().is_some_and(|k| key <= *k) {
                continue;
            }
            if max > 0 && entries.len() == max {
                next_token = token(&svc.cfg, &last_key);
                return Ok(ListVolumesResponse {
                    entries,
                    next_token,
                });
            }
            entries.push(Entry {
                volume: Some(volume_of(&a, &share)),
                status: None,
            });
            last_key = key;
        }
    }
    Ok(ListVolumesResponse {
        entries,
        next_token,
    })
}

/// `GetCapacity`: the space a new volume with these parameters may take, on the segment
/// of `accessible_topology` (one appliance) or on all of them together; the largest one
/// volume may be; and the smallest (an NFS volume's formatted filesystem). An appliance
/// without the pool offers 0; a segment naming no appliance 0.
pub async fn get_capacity(
    svc: &ControllerService,
    req: GetCapacityRequest,
) -> Result<GetCapacityResponse, Status> {
    let p = Params::parse(&req.parameters)?;
    let mut min = SECTOR;
    if !req.volume_capabilities.is_empty() {
        let needs = params::check_capabilities(
            &req.volume_capabilities,
            p.protocol(),
            p.fs_type.as_deref(),
        )
        .map_err(Status::invalid_argument)?;
        if p.protocol() == Protocol::Nfs {
            let fs = needs.fs_type.as_deref().and_then(params::shelf_fs);
            min = fs.unwrap_or(shelf::model::FsKind::Xfs).min_size();
        }
    } else if p.protocol() == Protocol::Nfs {
        let fs = p.fs_type.as_deref().and_then(params::shelf_fs);
        min = fs.unwrap_or(shelf::model::FsKind::Xfs).min_size();
    }
    let segment = req
        .accessible_topology
        .as_ref()
        .map(|t| t.segments.get(TOPOLOGY_KEY).cloned().unwrap_or_default());
    let (mut total, mut largest) = (0u64, 0u64);
    for a in objects::appliances(&svc.cfg) {
        if segment.as_ref().is_some_and(|s| *s != a.name) {
            continue;
        }
        if let Some(f) = placement::figures(&a, p.pool.as_deref()).await? {
            let available = f.available();
            total = total.saturating_add(available);
            largest = largest.max(available);
        }
    }
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    Ok(GetCapacityResponse {
        available_capacity: clamp(total),
        maximum_volume_size: Some(clamp(largest.min(MAX_SIZE))),
        minimum_volume_size: Some(clamp(min)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;

    #[test]
    fn tokens_round_trip_and_others_are_refused() {
        let cfg = Config::parse(
            "[[appliance]]\nname=\"a1\"\nsocket=\"/s1\"\n[[appliance]]\nname=\"a2\"\nsocket=\"/s2\"",
            Mode::Controller,
        )
        .unwrap();
        let key = (1, "0b0e6f1c-9d2e".to_string());
        assert_eq!(parse_token(&cfg, &token(&cfg, &key)), Some(key));
        for bad in ["", "a1", "a3/x", "a1/", "a1/../x", "x/a1"] {
            assert_eq!(parse_token(&cfg, bad), None, "{bad}");
        }
    }
}
