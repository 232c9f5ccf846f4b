"""Cinder's generic volume groups on shelf: consistent group snapshots as shelf group
snapshots (``snapshot.create_group``: every volume of the group snapshotted at one
instant, all or nothing, journaled by shelfd).

Only groups whose group type has ``consistent_group_snapshot_enabled='<is> True'`` are
handled here; for any other group every method raises ``NotImplementedError``, and
Cinder's volume manager then uses its generic implementation (one snapshot per volume, in
turn). A group itself is Cinder's bookkeeping: shelf keeps no volume group, so creating,
updating and deleting one touch no shelf state but the member volumes' (delete).

A Cinder group snapshot is the shelf group named ``group-snapshot-<id>`` in the backend's
pool; each Cinder snapshot in it is one member (its shelf id in ``provider_id``), so
reverting to or cloning from a member snapshot works as for any snapshot. A member is
deleted only with its group (``group_snapshot.delete``): shelf answers ``has_dependents``
to a ``snapshot.delete`` of one member, as Cinder refuses to delete a snapshot that is
part of a group snapshot.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from oslo_log import log as logging

from cinder import exception
from cinder.volume import volume_utils

from shelf_client import NotFound

LOG = logging.getLogger(__name__)

ModelUpdates = Tuple[Optional[Dict[str, Any]], Optional[List[Dict[str, Any]]]]


def _group_name(group_snapshot: Any) -> str:
    """The shelf group of a Cinder group snapshot."""
    return f"group-snapshot-{group_snapshot.id}"


class GroupsMixin:
    """Generic volume groups for the shelf drivers (mixed into ``ShelfBaseDriver``, whose
    ``_call``, ``_pool``, ``_share_ref`` and volume methods it uses)."""

    def _consistent(self, group_or_snapshot: Any) -> bool:
        """Whether the group type asks for consistent snapshots (else: generic)."""
        return volume_utils.is_group_a_cg_snapshot_type(group_or_snapshot)

    def _require_consistent(self, group_or_snapshot: Any) -> None:
        if not self._consistent(group_or_snapshot):
            raise NotImplementedError()

    @staticmethod
    def _group_stats() -> Dict[str, Any]:
        """What the backend reports for group types to match (the scheduler places a
        group whose type asks for consistent snapshots only where this is true)."""
        return {"consistent_group_snapshot_enabled": True}

    def create_group(self, context: Any, group: Any) -> Dict[str, Any]:
        """Nothing to make on shelf: the group is Cinder's list of volumes."""
        self._require_consistent(group)
        return {"status": "available"}

    def update_group(
        self,
        context: Any,
        group: Any,
        add_volumes: Optional[List[Any]] = None,
        remove_volumes: Optional[List[Any]] = None,
    ) -> Tuple[None, None, None]:
        """Membership is Cinder's: nothing changes on shelf."""
        self._require_consistent(group)
        return None, None, None

    def delete_group(self, context: Any, group: Any, volumes: List[Any]) -> ModelUpdates:
        """Delete every volume of the group (a volume already gone is success); one that
        cannot be deleted is reported ``error_deleting`` and so is the group."""
        self._require_consistent(group)
        updates = []
        status = "deleted"
        for volume in volumes:
            try:
                self.delete_volume(volume)  # type: ignore[attr-defined]
                updates.append({"id": volume.id, "status": "deleted"})
            except Exception as e:  # reported per volume, as Cinder's contract asks
                LOG.error("group %s: volume %s was not deleted: %s", group.id, volume.id, e)
                updates.append({"id": volume.id, "status": "error_deleting"})
                status = "error_deleting"
        return {"status": status}, updates

    def create_group_snapshot(
        self, context: Any, group_snapshot: Any, snapshots: List[Any]
    ) -> ModelUpdates:
        """snapshot.create_group of every volume's share, at one instant; each Cinder
        snapshot gets its member's shelf id as ``provider_id``."""
        self._require_consistent(group_snapshot)
        shares = [self._share_ref(s.volume) for s in snapshots]  # type: ignore[attr-defined]
        try:
            group = self._call(  # type: ignore[attr-defined]
                "snapshot_create_group",
                shares,
                _group_name(group_snapshot),
                pool=self._pool,  # type: ignore[attr-defined]
                key=f"cinder:create_group_snapshot:{group_snapshot.id}",
            )["group"]
        except NotFound as e:
            raise exception.VolumeNotFound(volume_id=str(shares)) from e
        by_share = {m["share"]: m for m in group["snapshots"]}
        updates = []
        for snap, ref in zip(snapshots, shares):
            member = by_share.get(ref) or next(
                m for m in group["snapshots"] if m["share_name"] == ref
            )
            updates.append({"id": snap.id, "status": "available", "provider_id": member["id"]})
        return {"status": "available"}, updates

    def delete_group_snapshot(
        self, context: Any, group_snapshot: Any, snapshots: List[Any]
    ) -> ModelUpdates:
        """group_snapshot.delete (its members with it); already gone is success."""
        self._require_consistent(group_snapshot)
        try:
            self._call(  # type: ignore[attr-defined]
                "group_snapshot_delete",
                _group_name(group_snapshot),
                pool=self._pool,  # type: ignore[attr-defined]
            )
        except NotFound:
            LOG.info("shelf group of Cinder group snapshot %s is already gone", group_snapshot.id)
        return {"status": "deleted"}, [{"id": s.id, "status": "deleted"} for s in snapshots]

    def create_group_from_src(
        self,
        context: Any,
        group: Any,
        volumes: List[Any],
        group_snapshot: Any = None,
        snapshots: Optional[List[Any]] = None,
        source_group: Any = None,
        source_vols: Optional[List[Any]] = None,
    ) -> ModelUpdates:
        """Each volume a clone of its snapshot in the group snapshot (share.clone), or of
        its source volume in the source group."""
        self._require_consistent(group)
        updates = []
        if group_snapshot is not None:
            by_id = {s.id: s for s in snapshots or []}
            for volume in volumes:
                snap = by_id[volume.snapshot_id]
                made = self.create_volume_from_snapshot(volume, snap)  # type: ignore[attr-defined]
                updates.append({"id": volume.id, "status": "available", **made})
        else:
            by_id = {v.id: v for v in source_vols or []}
            for volume in volumes:
                src = by_id[volume.source_volid]
                made = self.create_cloned_volume(volume, src)  # type: ignore[attr-defined]
                updates.append({"id": volume.id, "status": "available", **made})
        return None, updates
