"""Driver-assisted volume migration between shelf nodes by send/receive.

Cinder's volume manager asks the source backend's driver first
(``migrate_volume(ctxt, volume, host)``, where ``host`` carries the destination's
capabilities); ``(False, None)`` makes Cinder run its generic copy (a new volume on the
destination, both attached to the cinder-volume host, the bytes copied by dd). A shelf
destination is recognised by its ``location_info``
(``ShelfDriver:<node>:<pool>:<node-id>``, :func:`shelf_cinder.stats.location_info`) and
reached through the local socket that this backend's ``shelf_migration_peers`` maps the
node name to (the peer's own socket on this host, or one forwarded over SSH as in
docs/cinder.md, "Cinder on another host"). The node id settles who is who: the shelfd
behind that socket must answer ``hello`` with the node id of the ``location_info``, and it
must not be this backend's own shelf node; otherwise (a peers map pointing at the wrong
node or back at this one, or an old three-field ``location_info`` without an id) the
migration is declined.

The move, with the volume detached (shelf refuses an attached one; Cinder does not even
ask a driver to move a volume with attachments):

1. ``snapshot.create`` of a temporary ``migration-<attempt>-base`` on the source;
   ``snapshot.send`` of it, its stream piped chunk by chunk (``stream.read`` →
   ``snapshot.receive.chunk``, one chunk in memory) into ``snapshot.receive.*`` of a
   share named like the volume in the destination pool (a full send);
2. a second temporary snapshot ``migration-<attempt>-final`` sent incrementally from the
   first (only what changed in between);
3. the destination share gets ``cinder.volume_id``, its received snapshots are deleted,
   and only then are the source's temporary snapshots and its share deleted; the new
   ``provider_id`` is the destination share's id.

Until step 3 the source is not touched (beside its temporary snapshots); a failure in
steps 1–2 aborts the receive in progress, deletes what the destination committed
(the share from step 1) and the source's temporaries, and raises, so Cinder keeps the
volume where it was (``migration_status: error``, status back to ``available``). A
destination that dies mid-way drops its uncommitted receive itself (a restart drops
receives in progress); a share it committed in step 1 before dying is recognised as a
leftover by the next migration of the volume (a share of that name whose snapshots are
all ``migration-*`` and that has no ``cinder.volume_id``) and replaced. See
docs/cinder.md, "Volume migration".
"""

from __future__ import annotations

import uuid
from typing import Any, Dict, Optional, Tuple

from oslo_config import cfg
from oslo_log import log as logging

from cinder import exception
from cinder.volume import configuration

import shelf_client
from shelf_client import Client, NotFound
from shelf_cinder.stats import node_id_of, parse_location_info

LOG = logging.getLogger(__name__)

migration_opts = [
    cfg.StrOpt(
        "shelf_node_name",
        default=None,
        help="The name of this backend's shelf node in its location_info "
        "(ShelfDriver:<node>:<pool>:<node-id>), which other shelf backends look up in their "
        "shelf_migration_peers. No ':' in it. Default: the backend's Cinder host "
        "(<host>@<backend>).",
    ),
    cfg.DictOpt(
        "shelf_migration_peers",
        default={},
        help="Shelf nodes this backend may migrate volumes to by send/receive: "
        "node name (the destination's shelf_node_name) to the path of a local socket "
        "reaching that node's shelfd (its socket, or one forwarded with ssh -L). A "
        "destination not listed gets Cinder's generic migration.",
    ),
]

CONF = cfg.CONF
CONF.register_opts(migration_opts, group=configuration.SHARED_CONF_GROUP)

#: Bytes asked of ``stream.read`` at a time and sent in one ``snapshot.receive.chunk``:
#: the memory one migration holds, and well under the default ``max_frame_size`` (1 MiB)
#: of both nodes with the frame's other fields.
CHUNK = 512 << 10
#: Empty ``stream.read`` replies in a row (not the end) after which a stream is
#: taken as stuck.
EMPTY_READS = 100
#: Names of the temporary snapshots (``migration-<attempt>-base`` / ``-final``).
PREFIX = "migration-"
#: What each side must offer (``hello`` features) for a send/receive migration:
#: ``snapshot.send`` stands for ``snapshot.send`` and ``snapshot.receive.*``, ``stream``
#: for ``stream.read``/``stream.close``.
SOURCE_FEATURES = ("snapshot.send", "stream")
DESTINATION_FEATURES = ("snapshot.send", "share.set_metadata")


class Declined(Exception):
    """This migration is not shelf's to do: Cinder's generic migration runs instead."""


class MigrationMixin:
    """``migrate_volume`` by send/receive to another shelf node (see the module)."""

    def node_name(self) -> str:
        """This backend's shelf node name, as its ``location_info`` reports it."""
        return self.configuration.safe_get("shelf_node_name") or self.host

    def node_id(self) -> Optional[str]:
        """This backend's shelf node id as ``do_setup`` found it (``None`` before, or
        from a shelfd without node ids)."""
        return getattr(self, "_node_id", None)

    def _check_node_name(self) -> None:
        """``do_setup``: a node name that ``location_info`` can carry."""
        name = self.node_name()
        if ":" in name:
            raise exception.VolumeBackendAPIException(
                data=f"shelf_node_name {name!r} must not contain ':'"
            )

    def migrate_volume(self, ctxt: Any, volume: Any, host: Dict[str, Any]) -> Tuple[bool, Any]:
        """Move ``volume`` to the shelf backend ``host`` by send/receive; ``(False,
        None)`` (Cinder's generic copy) when the destination is not shelf, not a
        configured peer, not reachable or lacks send/receive, or the volume is
        attached. Raises when the copy itself fails (the volume stays here)."""
        try:
            peer, pool, share = self._migration_plan(volume, host)
            return True, self._move(volume, share, peer, pool)
        except Declined as e:
            LOG.info(
                "volume %s: no shelf migration to %s (%s); Cinder's generic migration",
                volume.id,
                host.get("host"),
                e,
            )
            return False, None

    # ------------------------------------------------------------ deciding

    def _migration_plan(self, volume: Any, host: Dict[str, Any]) -> Tuple[str, str, str]:
        """(peer socket, destination pool, source share id), or :class:`Declined`."""
        where = parse_location_info((host.get("capabilities") or {}).get("location_info"))
        if where is None:
            raise Declined("the destination is not a shelf backend")
        node, pool, node_id = where
        if node_id is None:
            raise Declined(
                f"the destination's location_info has no shelf node id (a driver before "
                f"node ids), so node {node!r} cannot be told from this one"
            )
        if node == self.node_name():
            if pool == self._pool:
                raise exception.VolumeBackendAPIException(
                    data=f"refusing to migrate volume {volume.id}: source and destination "
                    f"are the same shelf pool {pool!r} of node {node!r}; check "
                    "shelf_node_name"
                )
            # A received snapshot keeps the sender's id, which this node already has.
            raise Declined(f"pool {pool!r} is on this node (send/receive is between nodes)")
        peer = (self.configuration.safe_get("shelf_migration_peers") or {}).get(node)
        if not peer:
            raise Declined(f"shelf node {node!r} is not in shelf_migration_peers")
        if "in-use" in (volume.status, volume.previous_status) or (
            volume.attach_status == "attached"
        ):
            raise Declined("the volume is attached")
        share = self._source_share(volume)
        self._check_detached(share)
        theirs = self._check_features(peer, DESTINATION_FEATURES, f"node {node!r}")
        ours = self._check_features(self.configuration.shelf_socket, SOURCE_FEATURES, "this node")
        self._check_node_ids(node, node_id, peer, node_id_of(theirs), node_id_of(ours))
        self._check_destination(peer, pool, volume)
        return peer, pool, share

    @staticmethod
    def _check_node_ids(
        node: str, wanted: str, peer: str, theirs: Optional[str], ours: Optional[str]
    ) -> None:
        """The shelfd at ``peer`` is the node the destination's ``location_info`` names
        (``wanted``), and that is not this backend's node."""
        if theirs != wanted:
            raise Declined(
                f"shelfd at {peer} (shelf_migration_peers[{node!r}]) is node {theirs}, not "
                f"node {wanted} of the destination's location_info"
            )
        if ours == wanted:
            raise Declined(f"the destination is this shelf node (node id {ours})")

    def _source_share(self, volume: Any) -> str:
        try:
            return self._call("share_show", self._share_ref(volume), pool=self._share_pool(volume))[
                "id"
            ]
        except NotFound as e:
            raise exception.VolumeNotFound(volume_id=volume.id) from e

    def _check_detached(self, share: str) -> None:
        """Declined while shelf has an attachment of the share (also one not made by
        Cinder)."""
        if self._call("attachment_list", share=share):
            raise Declined("the volume's share is attached")

    def _peer(self, socket: str) -> Client:
        return Client(socket, timeout=self.configuration.shelf_timeout)

    def _check_features(self, socket: str, wanted: Tuple[str, ...], who: str) -> Dict[str, Any]:
        """The ``hello`` of the shelfd at ``socket``, which must list ``wanted``."""
        try:
            with self._peer(socket) as c:
                hello = c.hello()
        except (shelf_client.ClientError, OSError) as e:
            raise Declined(f"shelfd of {who} not reachable at {socket}: {e}") from e
        missing = [f for f in wanted if f not in hello.get("features", [])]
        if missing:
            raise Declined(f"shelfd of {who} lacks {', '.join(missing)}")
        return hello

    def _check_destination(self, peer: str, pool: str, volume: Any) -> None:
        """The pool exists there and no share has the volume's name, but a leftover of
        an earlier failed migration of this volume, which is deleted."""
        try:
            with self._peer(peer) as c:
                c.pool_show(pool)
                for share in c.share_list(pool=pool, name=volume.name):
                    if not self._is_leftover(c, share, volume):
                        raise Declined(f"a share {volume.name} exists in pool {pool!r} there")
                    LOG.warning("deleting leftover %s of an earlier migration", share["id"])
                    c.share_delete(share["id"], recursive=True, force=True)
        except NotFound as e:
            raise Declined(f"no pool {pool!r} on the destination: {e.message}") from e
        except (shelf_client.ClientError, OSError) as e:
            raise Declined(f"destination at {peer}: {e}") from e

    @staticmethod
    def _is_leftover(c: Client, share: Dict[str, Any], volume: Any) -> bool:
        """A share an interrupted migration of ``volume`` committed: never given the
        volume's id, holding only temporary migration snapshots."""
        if share.get("metadata", {}).get("cinder.volume_id") == volume.id:
            return False
        snaps = c.snapshot_list(share=share["id"])
        return bool(snaps) and all(s["name"].startswith(PREFIX) for s in snaps)

    # ------------------------------------------------------------ moving

    def _move(self, volume: Any, share: str, peer: str, pool: str) -> Dict[str, Any]:
        """Steps 1–3 of the module; the model update (the destination's share id).
        :class:`Declined` when a node answers ``unsupported`` before anything was
        committed there (a pool kind send/receive cannot serve)."""
        attempt = uuid.uuid4().hex[:8]
        temps = []
        dest: Optional[str] = None
        try:
            with self._client() as src, self._peer(peer) as dst:
                base = src.snapshot_create(share, f"{PREFIX}{attempt}-base")["snapshot"]["id"]
                temps.append(base)
                got = self._transfer(src, dst, base, None, volume.name, pool)
                dest = got["share"]["id"]
                if src.attachment_list(share=share):
                    raise exception.VolumeIsBusy(volume_name=volume.name)
                final = src.snapshot_create(share, f"{PREFIX}{attempt}-final")["snapshot"]["id"]
                temps.append(final)
                self._transfer(src, dst, final, base, volume.name, pool)
                dst.share_set_metadata(dest, metadata=self._metadata(volume))
                received = [s["id"] for s in dst.snapshot_list(share=dest)]
        except Exception as e:
            self._undo(peer, dest, temps)
            if isinstance(e, shelf_client.Unsupported) and dest is None:
                # A pool that cannot send or receive (no extent maps: a file pool without FIEMAP).
                raise Declined(str(e)) from e
            if isinstance(e, exception.CinderException):
                raise
            raise exception.VolumeBackendAPIException(
                data=f"shelf migration of volume {volume.id} failed ({e}); it stays here"
            ) from e
        self._finish(peer, dest, received, share, volume)
        return {"provider_id": dest}

    @staticmethod
    def _transfer(
        src: Client, dst: Client, snapshot: str, base: Optional[str], name: str, pool: str
    ) -> Dict[str, Any]:
        """One send piped into one receive; the receive's ``finish`` reply."""
        stream = src.snapshot_send(snapshot, from_=base)["stream"]
        receive = None
        try:
            receive = dst.snapshot_receive_begin(name, pool=pool)["receive"]
            pipe(src, dst, stream, receive)
            return dst.snapshot_receive_finish(receive)
        except BaseException:
            for call, what in ((dst.snapshot_receive_abort, receive), (src.stream_close, stream)):
                if what is not None:
                    _quietly(call, what)
            raise

    def _undo(self, peer: str, dest: Optional[str], temps: list) -> None:
        """After a failure: what the destination committed, the source's temporaries."""
        if dest is not None:
            try:
                with self._peer(peer) as c:
                    c.share_delete(dest, recursive=True, force=True)
            except (shelf_client.ClientError, OSError) as e:
                LOG.warning(
                    "destination share %s not deleted (%s): the next migration "
                    "of this volume there replaces it",
                    dest,
                    e,
                )
        for snap in temps:
            try:
                self._call("snapshot_delete", snap)
            except (NotFound, exception.VolumeBackendAPIException) as e:
                LOG.warning("temporary snapshot %s not deleted: %s", snap, e)

    def _finish(self, peer: str, dest: str, received: list, share: str, volume: Any) -> None:
        """The destination has committed: drop the temporaries on both sides, then the
        source share. A failure here is logged (the volume has moved)."""
        try:
            with self._peer(peer) as c:
                for snap in received:
                    c.snapshot_delete(snap)
        except (shelf_client.ClientError, OSError) as e:
            LOG.warning("received snapshots of %s not all deleted: %s", dest, e)
        try:
            self._call("share_delete", share, recursive=True, force=True)
        except (NotFound, exception.VolumeBackendAPIException) as e:
            LOG.warning(
                "source share %s of migrated volume %s not deleted: %s", share, volume.id, e
            )


def pipe(src: Client, dst: Client, stream: str, receive: str, chunk: int = CHUNK) -> int:
    """Copy a send stream into a receive, one chunk in memory at a time; the bytes
    copied. The source's bytes are checked only for their bounds and order here (the
    receiver decodes them and verifies the stream's checksum)."""
    offset, idle = 0, 0
    while True:
        got = src.stream_read(stream, max=chunk)
        data = got.get("data", b"")
        if got.get("offset") != offset or len(data) > chunk:
            raise exception.VolumeBackendAPIException(
                data=f"stream {stream}: {len(data)} bytes at {got.get('offset')}, "
                f"expected at most {chunk} at {offset}"
            )
        if data:
            dst.snapshot_receive_chunk(receive, offset, data)
            offset += len(data)
        if got.get("end"):
            return offset
        # A read may return fewer bytes than asked; nothing at all, again and again,
        # is a stream that does not move.
        idle = 0 if data else idle + 1
        if idle > EMPTY_READS:
            raise exception.VolumeBackendAPIException(
                data=f"stream {stream}: {idle} empty reads without its end at {offset}"
            )


def _quietly(call: Any, *args: Any) -> None:
    """A clean-up call whose failure (a dead connection) must not hide the first one."""
    try:
        call(*args)
    except (shelf_client.ClientError, OSError) as e:
        LOG.debug("clean-up %s%s failed: %s", getattr(call, "__name__", call), args, e)
