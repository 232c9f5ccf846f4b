//! `share.create`, and the undoing of a create that failed part way (shared with
//! `share.clone`).

use crate::engine::{blocking, failpoint, Engine};
use crate::error::{Error, Result};
use crate::model::{self, Demand, Outcome, Share, ShareState};
use crate::proto::ShareCreateArgs;
use crate::store::{self, now, AuditSlot};

/// Reserve a new share's name with its `creating` row, within the pool's room, in the
/// caller's transaction; or return the share that already has the name (a retry, a race,
/// or a conflict: the caller decides). Shared by `share.create` and `share.clone`.
pub(super) fn reserve_share(
    c: &rusqlite::Connection,
    room: &crate::engine::capacity::Room,
    row: &Share,
) -> Result<Option<Share>> {
    if let Some(e) = store::get_share_by_name(c, &row.pool, &row.name)? {
        return Ok(Some(e));
    }
    room.check(
        c,
        &format!("share {}", row.name),
        Demand::Share {
            size: row.size,
            preallocated: !row.sparse,
        },
    )?;
    store::insert_share(c, row)?;
    Ok(None)
}

/// Is `existing` what this create asks for? Then a retry is answered with it.
fn same_share(
    existing: &Share,
    a: &ShareCreateArgs,
    sparse: bool,
    layout: (model::Layout, Option<model::FsKind>),
) -> bool {
    existing.size == a.size
        && existing.sparse == sparse
        && (existing.layout, existing.filesystem) == layout
        && existing.multiattach == a.multiattach
        && existing.origin_snapshot.is_none()
        && existing.metadata == a.metadata
}

impl Engine {
    /// `share.create`: a new share, or the same one again for a retry with the same
    /// parameters (`AlreadyThere`); other parameters under the name are `already_exists`.
    pub(in crate::engine) async fn create_share(
        &self,
        a: ShareCreateArgs,
        slot: &AuditSlot,
    ) -> Result<Outcome<Share>> {
        model::validate_name("share", &a.name)?;
        model::validate_size(a.size)?;
        model::validate_metadata(&a.metadata)?;
        let from_image = match &a.from_image {
            Some(r) => Some(self.image_for_share(r, a.pool.as_deref()).await?),
            None => None,
        };
        let pool = match &from_image {
            Some((image, _)) => self.pool(&image.pool)?,
            None => self.pick_pool(a.pool.as_deref())?,
        };
        let sparse = a.sparse.unwrap_or(true);
        let (layout, filesystem) = crate::engine::formatted::resolve_layout(
            a.layout,
            a.filesystem,
            self.default_fs,
            a.size,
        )?;
        if let Some((image, _)) = &from_image {
            if a.size < image.size {
                return Err(Error::Invalid(format!(
                    "image {} is {} bytes; a share made from it cannot be smaller ({} asked)",
                    image.name, image.size, a.size
                )));
            }
            if layout == model::Layout::Filesystem {
                return Err(Error::Invalid(
                    "a share made from an image is a block share (the image is a disk)".into(),
                ));
            }
        }
        let share = Share {
            id: uuid::Uuid::new_v4().to_string(),
            name: a.name.clone(),
            pool: pool.name().to_string(),
            size: a.size,
            sparse,
            multiattach: a.multiattach,
            state: ShareState::Creating,
            created_at: now(),
            origin_snapshot: None,
            origin_share: None,
            metadata: a.metadata.clone(),
            layout,
            filesystem,
        };
        // Reserve the name with a `creating` row, or answer a retry with what exists.
        let row = share.clone();
        let room = self.room(&pool).await?;
        let existing = self
            .store
            .write(move |c| reserve_share(c, &room, &row))
            .await?;
        if let Some(e) = existing {
            return match e.state {
                ShareState::Available if same_share(&e, &a, sparse, (layout, filesystem)) => {
                    Ok(Outcome::AlreadyThere(e))
                }
                ShareState::Creating => Err(Error::Busy(format!(
                    "share {} is being created by another request",
                    e.name
                ))),
                _ => Err(Error::AlreadyExists(format!(
                    "share {} already exists in pool {} with other parameters (size {}, id {})",
                    e.name, e.pool, e.size, e.id
                ))),
            };
        }
        failpoint::hit("share.create.before_volume");
        let (p, s) = (pool.clone(), share.clone());
        let image_path = from_image.as_ref().map(|(_, path)| path.clone());
        let made = blocking(move || match image_path {
            Some(path) => p.create_from_image(&path, &s),
            None => p.create_volume(&s),
        })
        .await;
        if let Err(cause) = made {
            return Err(self.forget_share(&share, cause).await);
        }
        if share.layout == model::Layout::Filesystem {
            if let Err(cause) = self.make_filesystem(&pool, &share).await {
                return Err(self.discard_share(&pool, &share, cause).await);
            }
        }
        failpoint::hit("share.create.after_volume");
        let id = share.id.clone();
        let image_id = from_image.as_ref().map(|(i, _)| i.id.clone());
        self.store
            .write_recorded(slot, move |c| {
                if let Some(image) = &image_id {
                    store::set_share_origin_image(c, &id, image)?;
                }
                store::set_share_state(c, &id, ShareState::Available)
            })
            .await?;
        let mut share = share;
        share.state = ShareState::Available;
        log::info!(
            "share created: {} ({}) in pool {}, {} bytes{}",
            share.name,
            share.id,
            share.pool,
            share.size,
            if share.sparse {
                ", sparse"
            } else {
                ", preallocated"
            }
        );
        Ok(Outcome::Created(share))
    }

    /// Remove the volume of a share whose filesystem could not be made, then its row.
    pub(super) async fn discard_share(
        &self,
        pool: &std::sync::Arc<dyn crate::pool::Pool>,
        share: &Share,
        cause: Error,
    ) -> Error {
        let (p, id) = (pool.clone(), share.id.clone());
        let undone = match self.unmount_share(share).await {
            Ok(()) => blocking(move || p.remove_volume(&id)).await,
            Err(e) => Err(e),
        };
        match undone {
            Ok(()) => self.forget_share(share, cause).await,
            Err(e) => Error::rollback(cause, e),
        }
    }

    /// Drop the `creating` row of a share whose volume could not be made.
    pub(super) async fn forget_share(&self, share: &Share, cause: Error) -> Error {
        let id = share.id.clone();
        match self
            .store
            .write(move |c| store::delete_share_row(c, &id))
            .await
        {
            Ok(()) => cause,
            Err(e) => Error::rollback(cause, e),
        }
    }
}
