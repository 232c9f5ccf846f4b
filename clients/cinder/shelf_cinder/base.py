"""The shelf Cinder driver's common part: everything but the export protocol.

Every Cinder volume is one shelf share, named like the Cinder volume (``volume.name``,
``volume-<uuid>``) and found afterwards by its shelf id, which the driver stores in
``provider_id``. Every Cinder snapshot is one shelf snapshot of that share, named
``snapshot.name`` with its shelf id in the snapshot's ``provider_id``. The driver talks
to ``shelfd`` over its Unix socket with :mod:`shelf_client`, one short connection per
operation (the client is not thread-safe; cinder-volume runs operations in green
threads).

Mutations that Cinder performs once per object (create, clone, snapshot, grow, delete)
carry an idempotency key derived from the Cinder object's id and the operation, so an
RPC that Cinder retries after a lost reply gets shelfd's first answer instead of acting
twice. Exports and attachments carry no key: they happen again and again for the same
volume (attach, detach, attach), and shelfd makes each of them idempotent by itself
(``changed: false`` / ``detached: null``).

The concrete drivers, which cinder.conf names, are in :mod:`shelf_cinder.driver`. See
docs/cinder.md for configuration and the full mapping.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

from oslo_config import cfg
from oslo_log import log as logging

from cinder import exception
from cinder.volume import configuration
from cinder.volume import driver

import shelf_client
from shelf_client import Client, HasDependents, NotFound, ShelfError
from shelf_cinder.groups import GroupsMixin
from shelf_cinder.images import ImageCacheMixin
from shelf_cinder.migration import MigrationMixin, migration_opts
from shelf_cinder.stats import GiB, node_id_of, volume_stats

LOG = logging.getLogger(__name__)

shelf_opts = [
    cfg.StrOpt(
        "shelf_socket",
        default=shelf_client.DEFAULT_SOCKET,
        help="Path of shelfd's management socket on this host.",
    ),
    cfg.StrOpt(
        "shelf_pool",
        default=None,
        help="The shelf pool that holds this backend's volumes. Default: the server's "
        "default pool (the pool named 'default', else the only pool).",
    ),
    cfg.FloatOpt(
        "shelf_timeout",
        default=300.0,
        help="Seconds to wait for one reply from shelfd before the operation fails.",
    ),
]

CONF = cfg.CONF
CONF.register_opts(shelf_opts, group=configuration.SHARED_CONF_GROUP)

#: Operations of protocol v1 the driver relies on (``hello`` features).
REQUIRED_FEATURES = ("share.clone", "attach", "idempotency-key", "capacity", "image", "jobs")


def _key(obj_id: str, operation: str) -> str:
    """The idempotency key of one Cinder-level operation on one Cinder object."""
    return f"cinder:{operation}:{obj_id}"


class ShelfBaseDriver(GroupsMixin, MigrationMixin, ImageCacheMixin, driver.VolumeDriver):
    """What the iSCSI, NFS and NVMe/TCP drivers share: everything but the export
    protocol.

    Version history:
        1.0.0 - Initial driver: volumes, snapshots, clones, extend, iSCSI and NFS
                attach, capacity from pool.show, manage/unmanage.
        1.1.0 - Volumes from Glance images through shelf's image cache
                (clone_image, :mod:`shelf_cinder.images`).
        1.2.0 - NVMe/TCP attach (ShelfNVMeTCPDriver, shelf's nvmet driver).
        1.3.0 - Stats for many nodes under one scheduler: ``discard`` (where shelf's
                target unmaps) and ``shelf_allocated_capacity_gb`` (pool.show's
                ``allocated``), :mod:`shelf_cinder.stats`.
        1.4.0 - revert_to_snapshot (share.revert); generic volume groups and group
                snapshots (:mod:`shelf_cinder.groups`); volume migration to another
                shelf node by send/receive (``location_info``, ``migrate_volume``,
                :mod:`shelf_cinder.migration`).
    """

    VERSION = "1.4.0"
    #: Third-party CI name (Cinder's driver-list convention).
    CI_WIKI_NAME = "shelf_CI"
    VENDOR = "shelf"
    #: ``storage_protocol`` as Cinder spells it.
    PROTOCOL = ""
    #: The protocol in shelf's export and attach operations.
    SHELF_PROTOCOL = ""
    #: shelf export drivers that can serve SHELF_PROTOCOL.
    EXPORT_DRIVERS: tuple = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.configuration.append_config_values(shelf_opts)
        self.configuration.append_config_values(migration_opts)
        self._pool: Optional[str] = None
        #: The shelf node's id (``hello``'s ``node.id``), once ``do_setup`` has asked.
        self._node_id: Optional[str] = None

    @staticmethod
    def get_driver_options() -> List[cfg.Opt]:
        """The options this driver adds to its backend section of cinder.conf."""
        return shelf_opts + migration_opts

    # ---------------------------------------------------------------- plumbing

    def _client(self) -> Client:
        """A fresh connection to shelfd (closed by the caller's ``with``)."""
        timeout = self.configuration.shelf_timeout
        return Client(self.configuration.shelf_socket, timeout=timeout)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run one operation; shelf errors other than the ones a caller handles itself
        (NotFound, HasDependents) become VolumeBackendAPIException."""
        try:
            with self._client() as c:
                return getattr(c, method)(*args, **kwargs)
        except (NotFound, HasDependents):
            raise
        except (shelf_client.ClientError, OSError) as e:
            # A ShelfError already names its op; other failures (connection) get it here.
            where = "" if isinstance(e, ShelfError) else f" {method.replace('_', '.', 1)}"
            raise exception.VolumeBackendAPIException(data=f"shelf{where}: {e}") from e

    def _share_ref(self, volume: Any) -> str:
        """How to name a volume's share: its shelf id once known, else its name."""
        return volume.provider_id or volume.name

    def _share_pool(self, volume: Any) -> Optional[str]:
        """The pool to resolve a share *name* in (ids need none)."""
        return None if volume.provider_id else self._pool

    def _metadata(self, volume: Any) -> Dict[str, str]:
        """What the share records about its Cinder volume, so the appliance side can
        tell which Cinder volume a share is without Cinder's database."""
        return {"cinder.volume_id": volume.id}

    # ---------------------------------------------------------------- setup

    def do_setup(self, context: Any) -> None:
        """Connect to shelfd once, check the protocol, and settle the pool name."""
        hello = self._call("hello")
        if 1 not in hello.get("protocols", []):
            raise exception.VolumeBackendAPIException(
                data=f"shelfd at {self.configuration.shelf_socket} does not speak protocol 1"
            )
        wanted = REQUIRED_FEATURES + (f"export.{self.SHELF_PROTOCOL}",)
        missing = [f for f in wanted if f not in hello.get("features", [])]
        if missing:
            raise exception.VolumeBackendAPIException(
                data=f"shelfd lacks features this driver needs: {', '.join(missing)}"
            )
        self._pool = self.configuration.shelf_pool or self._default_pool()
        self._node_id = node_id_of(hello)
        self._check_node_name()

    def _default_pool(self) -> str:
        """The pool share.create picks without one: 'default', else the only pool."""
        names = [p["name"] for p in self._call("pool_list")]
        if "default" in names:
            return "default"
        if len(names) == 1:
            return names[0]
        raise exception.VolumeBackendAPIException(
            data=f"shelfd has pools {names}; set shelf_pool to one of them"
        )

    def check_for_setup_error(self) -> None:
        """The pool exists and an export driver for the protocol can be used now."""
        try:
            pool = self._call("pool_show", self._pool)
        except NotFound as e:
            raise exception.VolumeBackendAPIException(
                data=f"shelf pool {self._pool!r} does not exist: {e.message}"
            ) from e
        drivers = pool.get("drivers", {})
        if not any(drivers.get(d) == "usable" for d in self.EXPORT_DRIVERS):
            raise exception.VolumeBackendAPIException(
                data=f"no usable {self.PROTOCOL} export driver on shelfd: {drivers}"
            )

    # ---------------------------------------------------------------- volumes

    def create_volume(self, volume: Any) -> Dict[str, Any]:
        """share.create of ``volume.size`` GiB, thin, multiattach as the volume type
        says; the share's id becomes ``provider_id``."""
        share = self._call(
            "share_create",
            volume.name,
            volume.size * GiB,
            pool=self._pool,
            multiattach=bool(getattr(volume, "multiattach", False)),
            metadata=self._metadata(volume),
            key=_key(volume.id, "create_volume"),
        )["share"]
        return {"provider_id": share["id"]}

    def delete_volume(self, volume: Any) -> None:
        """share.delete with its leftover exports (Cinder only deletes detached
        volumes) and shelf snapshots (Cinder deletes its own snapshots first, so these
        can only be the driver's interrupted temporaries). A share that is already
        gone is success, as Cinder expects."""
        try:
            self._call(
                "share_delete",
                self._share_ref(volume),
                pool=self._share_pool(volume),
                recursive=True,
                force=True,
                key=_key(volume.id, "delete_volume"),
            )
        except NotFound:
            LOG.info("shelf share of volume %s is already gone", volume.id)
        except HasDependents as e:
            raise exception.VolumeIsBusy(volume_name=volume.name) from e

    def extend_volume(self, volume: Any, new_size: int) -> None:
        """share.resize to ``new_size`` GiB (grow only, as Cinder's extend)."""
        self._grow(volume.id, self._share_ref(volume), self._share_pool(volume), new_size)

    def _grow(self, volume_id: str, ref: str, pool: Optional[str], size_gib: int) -> None:
        try:
            self._call(
                "share_resize",
                ref,
                size_gib * GiB,
                pool=pool,
                key=_key(volume_id, f"grow-{size_gib}"),
            )
        except NotFound as e:
            raise exception.VolumeNotFound(volume_id=volume_id) from e

    # ---------------------------------------------------------------- snapshots

    def create_snapshot(self, snapshot: Any) -> Dict[str, Any]:
        """snapshot.create on the volume's share; the shelf id becomes the snapshot's
        ``provider_id``."""
        volume = snapshot.volume
        try:
            snap = self._call(
                "snapshot_create",
                self._share_ref(volume),
                snapshot.name,
                pool=self._share_pool(volume),
                key=_key(snapshot.id, "create_snapshot"),
            )["snapshot"]
        except NotFound as e:
            raise exception.VolumeNotFound(volume_id=volume.id) from e
        return {"provider_id": snap["id"]}

    def delete_snapshot(self, snapshot: Any) -> None:
        """snapshot.delete; a snapshot already gone is success. Volumes cloned from it
        are unaffected (shelf clones are independent of their origin)."""
        try:
            self._call(
                "snapshot_delete",
                **self._snapshot_ref(snapshot),
                key=_key(snapshot.id, "delete_snapshot"),
            )
        except NotFound:
            LOG.info("shelf snapshot of Cinder snapshot %s is already gone", snapshot.id)

    def _snapshot_ref(self, snapshot: Any) -> Dict[str, Any]:
        """Arguments naming a snapshot: its shelf id, else its name within its share."""
        if snapshot.provider_id:
            return {"snapshot": snapshot.provider_id}
        volume = snapshot.volume
        return {
            "snapshot": snapshot.name,
            "share": self._share_ref(volume),
            "pool": self._share_pool(volume),
        }

    def revert_to_snapshot(self, context: Any, volume: Any, snapshot: Any) -> None:
        """share.revert of the volume's share to the snapshot (a reflink swapped in for
        the volume, journaled by shelfd). The share keeps its size: when the volume was
        extended after the snapshot, Cinder's extend after the revert finds it at its
        size already. Cinder reverts only available (detached) volumes, so no ``force``.
        No idempotency key: reverting twice to one snapshot is a legitimate request (the
        second after new writes), and a retried one while the volume is ``reverting``
        (no writes) does the same thing again."""
        ref = self._snapshot_ref(snapshot)
        try:
            self._call(
                "share_revert",
                self._share_ref(volume),
                ref["snapshot"],
                pool=self._share_pool(volume),
            )
        except NotFound as e:
            raise exception.SnapshotNotFound(snapshot_id=snapshot.id) from e

    def create_volume_from_snapshot(self, volume: Any, snapshot: Any) -> Dict[str, Any]:
        """share.clone of the snapshot, then share.resize when the new volume is
        larger than the snapshot."""
        ref = self._snapshot_ref(snapshot)
        return self._clone(volume, ref, snapshot.volume_size, "create_volume_from_snapshot")

    def _clone(self, volume: Any, ref: Dict[str, Any], from_gib: int, op: str) -> Dict[str, Any]:
        try:
            share = self._call(
                "share_clone",
                ref["snapshot"],
                volume.name,
                share=ref.get("share"),
                pool=ref.get("pool"),
                metadata=self._metadata(volume),
                key=_key(volume.id, op),
            )["share"]
        except NotFound as e:
            raise exception.SnapshotNotFound(snapshot_id=ref["snapshot"]) from e
        if volume.size * GiB > share["size"]:
            self._grow(volume.id, share["id"], None, volume.size)
        elif volume.size < from_gib:
            LOG.warning("volume %s (%s GiB) cloned from %s GiB", volume.id, volume.size, from_gib)
        return {"provider_id": share["id"]}

    def create_cloned_volume(self, volume: Any, src_vref: Any) -> Dict[str, Any]:
        """A temporary snapshot of the source, share.clone of it, then the snapshot is
        deleted. Unlike seed 003's appliance, a shelf clone does not depend on its
        origin snapshot (it is a reflink copy), so keeping the snapshot would only pin
        space and block nothing; it is removed at once, also when the clone fails."""
        try:
            temp = self._call(
                "snapshot_create",
                self._share_ref(src_vref),
                f"clone-{volume.id}",
                pool=self._share_pool(src_vref),
                key=_key(volume.id, "clone-snapshot"),
            )["snapshot"]
        except NotFound as e:
            raise exception.VolumeNotFound(volume_id=src_vref.id) from e
        try:
            return self._clone(volume, {"snapshot": temp["id"]}, src_vref.size, "clone")
        finally:
            try:
                self._call("snapshot_delete", temp["id"], key=_key(volume.id, "clone-cleanup"))
            except NotFound:
                pass
            except exception.VolumeBackendAPIException as e:
                # share.delete of the source (recursive) removes it later.
                LOG.warning("temporary snapshot %s not deleted: %s", temp["id"], e)

    # ---------------------------------------------------------------- exports

    def create_export(self, context: Any, volume: Any, connector: Any) -> None:
        """export.create with the protocol's options (:meth:`_export_options`);
        already exported is fine. Cinder calls it right before initialize_connection."""
        self._call(
            "export_create",
            self._share_ref(volume),
            self.SHELF_PROTOCOL,
            pool=self._share_pool(volume),
            **self._export_options(),
        )

    def _export_options(self) -> Dict[str, Any]:
        """export.create options beyond shelfd's defaults."""
        return {}

    def ensure_export(self, context: Any, volume: Any) -> None:
        """Nothing: shelfd recreates its exports itself at start-up (reconcile), and
        Cinder calls this for every volume whenever cinder-volume starts."""

    def remove_export(self, context: Any, volume: Any) -> None:
        """export.delete, unless another host still has the volume attached (a
        multiattach volume): then the export stays for it."""
        try:
            self._call(
                "export_delete",
                share=self._share_ref(volume),
                pool=self._share_pool(volume),
                protocol=self.SHELF_PROTOCOL,
            )
        except NotFound:
            pass
        except HasDependents:
            LOG.debug("export of volume %s still has attachments; kept", volume.id)

    # ---------------------------------------------------------------- attach

    #: The fields of an os-brick connector (besides ``host``) this protocol's attach
    #: sends shelfd. An os-brick connector carries the host's iSCSI initiator and its
    #: NVMe host NQN alike; each protocol passes only what it grants access to.
    CONNECTOR_FIELDS: tuple = ("ip", "initiator")
    #: Every connector field shelfd records on an attachment (a force detach hands an
    #: attachment back as it was recorded, whatever its protocol).
    ALL_CONNECTOR_FIELDS = ("ip", "initiator", "nqn")

    def _connector(
        self, connector: Dict[str, Any], fields: Optional[tuple] = None
    ) -> Dict[str, Any]:
        """The part of an os-brick connector shelfd knows: host and ``fields`` (default
        :attr:`CONNECTOR_FIELDS`)."""
        out = {"host": connector.get("host") or connector.get("ip") or "unknown"}
        for field in fields or self.CONNECTOR_FIELDS:
            if connector.get(field):
                out[field] = connector[field]
        return out

    def initialize_connection(self, volume: Any, connector: Dict[str, Any]) -> Dict[str, Any]:
        """share.attach: shelfd grants the connector access and answers Cinder's
        connection_info. Only ``data.volume_id`` is rewritten, from the shelf share id
        to the Cinder volume id, as Cinder's own targets report it."""
        self._check_connector(connector or {})
        reply = self._call(
            "share_attach",
            self._share_ref(volume),
            self._connector(connector),
            pool=self._share_pool(volume),
            protocol=self.SHELF_PROTOCOL,
        )
        info = reply["connection_info"]
        info["data"]["volume_id"] = volume.id
        return info

    def _check_connector(self, connector: Dict[str, Any]) -> None:
        """Refuse a connector that lacks what the protocol needs."""

    def terminate_connection(self, volume: Any, connector: Any, **kwargs: Any) -> None:
        """share.detach of this connector; with no connector (a force detach), of
        every attachment the share has."""
        ref, pool = self._share_ref(volume), self._share_pool(volume)
        if connector:
            targets = [(self._connector(connector), self.SHELF_PROTOCOL)]
        else:
            try:
                attachments = self._call("attachment_list", share=ref, pool=pool)
            except NotFound:
                return
            targets = [
                (self._connector(a, self.ALL_CONNECTOR_FIELDS), a["protocol"])
                for a in attachments
            ]
        for target, protocol in targets:
            try:
                self._call("share_detach", ref, target, pool=pool, protocol=protocol)
            except NotFound:
                return

    # ---------------------------------------------------------------- stats

    #: Export drivers (of EXPORT_DRIVERS) whose targets unmap for a sparse volume, so
    #: that shelf attaches its volumes with ``discard: true``, each with the pool kinds
    #: (pool.show ``kind``) where they do (docs/exports.md, Discard).
    DISCARDING_DRIVERS: Dict[str, tuple] = {}

    def _update_volume_stats(self) -> None:
        """Capacity from pool.show (:func:`shelf_cinder.stats.volume_stats`)."""
        self._stats = volume_stats(self, self._call("pool_show", self._pool))
        self._stats.update(self._group_stats())

    # ---------------------------------------------------------------- manage

    def _existing_share(self, existing_ref: Dict[str, Any]) -> Dict[str, Any]:
        """The share ``existing_ref`` names: ``source-id`` (shelf id) or
        ``source-name`` (share name in the backend's pool)."""
        ref = existing_ref.get("source-id") or existing_ref.get("source-name")
        if not ref:
            raise exception.ManageExistingInvalidReference(
                existing_ref=existing_ref, reason="give source-name or source-id"
            )
        pool = None if existing_ref.get("source-id") else self._pool
        try:
            return self._call("share_show", ref, pool=pool)
        except NotFound as e:
            raise exception.ManageExistingInvalidReference(
                existing_ref=existing_ref, reason=f"no such shelf share: {e.message}"
            ) from e

    def manage_existing_get_size(self, volume: Any, existing_ref: Dict[str, Any]) -> int:
        """The share's size in GiB, rounded up."""
        return int(math.ceil(self._existing_share(existing_ref)["size"] / GiB))

    def manage_existing(self, volume: Any, existing_ref: Dict[str, Any]) -> Dict[str, Any]:
        """Adopt a share as it is: shelf cannot rename shares, so the volume keeps the
        share's id in ``provider_id`` and is found by it from then on. A share that is
        not a whole number of GiB is grown to the size Cinder was told (rounded up)."""
        share = self._existing_share(existing_ref)
        if share["size"] < volume.size * GiB:
            self._grow(volume.id, share["id"], None, volume.size)
        return {"provider_id": share["id"]}

    def unmanage(self, volume: Any) -> None:
        """Nothing: the share stays on the appliance, Cinder forgets it."""
