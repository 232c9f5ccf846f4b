"""One typed method per operation of docs/protocol.md section 8.

Method names are the wire names with ``.`` turned into ``_`` (``share.create`` is
:meth:`Operations.share_create`); keyword arguments are named exactly as the
arguments in the spec. An argument left at ``None`` is not sent, which the spec
defines as "the default" for every optional argument (and which is required for
``metadata``, ``recursive`` and ``force``: those must not be sent as null).

Operations that change state accept ``key``, an idempotency key (section 7.7): a retry
with the same key, op and arguments gets the first answer again instead of doing the
work twice. Read-only operations ignore keys, so they do not offer one.

The same methods serve :class:`~shelf_client.Client` (they return the ``ok`` result, or
raise) and :class:`~shelf_client.client.Pipeline` (they return a handle to a queued
request).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence


def _args(**kw: Any) -> Dict[str, Any]:
    """The argument map: every keyword whose value is not ``None``."""
    return {k: v for k, v in kw.items() if v is not None}


class Operations:
    """The operations of protocol v1. Subclasses provide :meth:`_submit`."""

    def call(self, op: str, /, *, key: Optional[str] = None, **args: Any) -> Any:
        """Any operation by name, arguments as keywords (``None`` values are left out):
        ``client.call("share.show", share="vol1")``; a pipeline queues it."""
        return self._submit(op, _args(**args), key)

    def _after_job(self, reply: Any, field: str, wait: bool) -> Any:
        """A reply that names a job: as it is (a pipeline cannot wait)."""
        return reply

    def _submit(self, op: str, args: Dict[str, Any], key: Optional[str]) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------ server and pools

    def hello(self) -> Any:
        """8.1 ``hello``: ``{server, version, protocols, features, node, drivers}`` (and
        ``drivers_age_ms``, ``driver_transports``, e.g. ``{"tgt": "socket"}``). Check that
        ``1 in protocols`` and test ``features`` rather than ``version``. ``node`` is
        ``{id, name}``: ``id`` tells this shelf node from every other one (stable across
        restarts and ``--rebuild-db``), ``name`` is only for people; a shelfd before node
        ids has no ``node``."""
        return self._submit("hello", {}, None)

    def pool_list(self) -> Any:
        """8.2 ``pool.list``: every pool, ordered by name, with live figures
        (``provisioned`` and ``allocated`` among them; section 8.15)."""
        return self._submit("pool.list", {}, None)

    def pool_show(self, name: str) -> Any:
        """8.3 ``pool.show``: one pool (with ``drivers``). :class:`NotFound` if none."""
        return self._submit("pool.show", _args(name=name), None)

    # ------------------------------------------------------------ shares

    def share_create(
        self,
        name: str,
        size: int,
        *,
        pool: Optional[str] = None,
        sparse: Optional[bool] = None,
        multiattach: Optional[bool] = None,
        metadata: Optional[Mapping[str, str]] = None,
        layout: Optional[str] = None,
        filesystem: Optional[str] = None,
        from_image: Optional[str] = None,
        key: Optional[str] = None,
    ) -> Any:
        """8.4 ``share.create``: ``{share, changed}``. ``size`` in bytes, a multiple of
        512. Repeating it with the same parameters answers the existing share with
        ``changed: False``. ``filesystem`` (``xfs``/``ext4``) makes a formatted share;
        ``from_image`` a reflink of a cached image (8.26)."""
        args = _args(
            name=name,
            size=size,
            pool=pool,
            sparse=sparse,
            multiattach=multiattach,
            metadata=dict(metadata) if metadata is not None else None,
            layout=layout,
            filesystem=filesystem,
            from_image=from_image,
        )
        return self._submit("share.create", args, key)

    def share_list(
        self, *, pool: Optional[str] = None, name: Optional[str] = None, id: Optional[str] = None
    ) -> Any:
        """8.5 ``share.list``: shares matching every filter given (all optional)."""
        return self._submit("share.list", _args(pool=pool, name=name, id=id), None)

    def share_show(self, share: str, *, pool: Optional[str] = None) -> Any:
        """8.6 ``share.show``: one share, by id or name (``pool`` when ambiguous),
        with ``device`` and ``allocated`` (bytes really allocated to its volume)."""
        return self._submit("share.show", _args(share=share, pool=pool), None)

    def share_resize(
        self, share: str, size: int, *, pool: Optional[str] = None, key: Optional[str] = None
    ) -> Any:
        """8.7 ``share.resize``: grow only; ``{share, changed, [warnings]}``."""
        return self._submit("share.resize", _args(share=share, pool=pool, size=size), key)

    def share_delete(
        self,
        share: str,
        *,
        pool: Optional[str] = None,
        recursive: Optional[bool] = None,
        force: Optional[bool] = None,
        key: Optional[str] = None,
    ) -> Any:
        """8.8 ``share.delete``: ``{deleted, snapshots_deleted, changed}``.
        ``recursive`` also deletes its snapshots; ``force`` its exports."""
        args = _args(share=share, pool=pool, recursive=recursive, force=force)
        return self._submit("share.delete", args, key)

    def share_revert(
        self,
        share: str,
        snapshot: str,
        *,
        force: Optional[bool] = None,
        pool: Optional[str] = None,
        key: Optional[str] = None,
    ) -> Any:
        """8.30 ``share.revert``: the share's content becomes ``snapshot``'s (one of its
        own: id or name); it keeps its size; ``{share, changed, [warnings]}``. ``busy``
        while attached unless ``force``."""
        args = _args(share=share, snapshot=snapshot, force=force, pool=pool)
        return self._submit("share.revert", args, key)

    def share_clone(
        self,
        snapshot: str,
        name: str,
        *,
        share: Optional[str] = None,
        pool: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        key: Optional[str] = None,
        wait: bool = True,
    ) -> Any:
        """8.9 ``share.clone``: a new share ``name`` from ``snapshot`` (its id, or its name
        together with ``share``); ``{share, changed}``. On a pool that copies, the server
        answers with a ``job`` (8.27); with ``wait`` (the default) this waits for it."""
        args = _args(
            snapshot=snapshot,
            share=share,
            pool=pool,
            name=name,
            metadata=dict(metadata) if metadata is not None else None,
        )
        return self._after_job(self._submit("share.clone", args, key), "share", wait)

    # ------------------------------------------------------------ snapshots

    def snapshot_create(
        self,
        share: str,
        name: str,
        *,
        pool: Optional[str] = None,
        key: Optional[str] = None,
        wait: bool = True,
    ) -> Any:
        """8.10 ``snapshot.create``: ``{snapshot, changed}``. On a pool that copies, the
        server answers with a ``job`` (8.27); with ``wait`` (the default) this waits."""
        args = _args(share=share, pool=pool, name=name)
        return self._after_job(self._submit("snapshot.create", args, key), "snapshot", wait)

    def snapshot_list(self, *, share: Optional[str] = None, pool: Optional[str] = None) -> Any:
        """8.11 ``snapshot.list``: snapshots, oldest first."""
        return self._submit("snapshot.list", _args(share=share, pool=pool), None)

    def snapshot_show(
        self, snapshot: str, *, share: Optional[str] = None, pool: Optional[str] = None
    ) -> Any:
        """8.12 ``snapshot.show``: by id, or by name together with ``share``."""
        return self._submit("snapshot.show", _args(snapshot=snapshot, share=share, pool=pool), None)

    def snapshot_delete(
        self,
        snapshot: str,
        *,
        share: Optional[str] = None,
        pool: Optional[str] = None,
        key: Optional[str] = None,
    ) -> Any:
        """8.13 ``snapshot.delete``: ``{deleted, changed}``."""
        args = _args(snapshot=snapshot, share=share, pool=pool)
        return self._submit("snapshot.delete", args, key)

    def snapshot_create_group(
        self,
        shares: Sequence[str],
        name: str,
        *,
        pool: Optional[str] = None,
        key: Optional[str] = None,
    ) -> Any:
        """8.31 ``snapshot.create_group``: one snapshot ``name`` of each share (ids or
        names, each once, at most 64, one pool) at one instant, all or nothing;
        ``{group, changed}``, the group with its ``snapshots``."""
        args = _args(shares=list(shares), name=name, pool=pool)
        return self._submit("snapshot.create_group", args, key)

    def group_snapshot_list(self, *, pool: Optional[str] = None) -> Any:
        """8.31 ``group_snapshot.list``: every group snapshot, oldest first."""
        return self._submit("group_snapshot.list", _args(pool=pool), None)

    def group_snapshot_show(self, group: str, *, pool: Optional[str] = None) -> Any:
        """8.31 ``group_snapshot.show``: one group snapshot (id or name)."""
        return self._submit("group_snapshot.show", _args(group=group, pool=pool), None)

    def group_snapshot_delete(
        self, group: str, *, pool: Optional[str] = None, key: Optional[str] = None
    ) -> Any:
        """8.31 ``group_snapshot.delete``: the group and its member snapshots;
        ``{deleted, changed}``."""
        return self._submit("group_snapshot.delete", _args(group=group, pool=pool), key)

    def tree(self, *, pool: Optional[str] = None) -> Any:
        """8.14 ``tree``: the share → snapshot → clone forest."""
        return self._submit("tree", _args(pool=pool), None)

    # ------------------------------------------------------------ exports

    def export_create(
        self,
        share: str,
        protocol: str,
        *,
        pool: Optional[str] = None,
        driver: Optional[str] = None,
        clients: Optional[Sequence[str]] = None,
        access: Optional[str] = None,
        sync: Optional[bool] = None,
        root_squash: Optional[bool] = None,
        chap: Optional[bool] = None,
        key: Optional[str] = None,
    ) -> Any:
        """8.17 ``export.create``: publish a share over ``"nfs"`` or ``"iscsi"``;
        ``{export, changed}``."""
        args = _args(
            share=share,
            pool=pool,
            protocol=protocol,
            driver=driver,
            clients=list(clients) if clients is not None else None,
            access=access,
            sync=sync,
            root_squash=root_squash,
            chap=chap,
        )
        return self._submit("export.create", args, key)

    def export_list(self, *, share: Optional[str] = None, pool: Optional[str] = None) -> Any:
        """8.18 ``export.list``: exports, optionally of one share."""
        return self._submit("export.list", _args(share=share, pool=pool), None)

    def export_show(
        self,
        *,
        export: Optional[str] = None,
        share: Optional[str] = None,
        pool: Optional[str] = None,
        protocol: Optional[str] = None,
    ) -> Any:
        """8.18 ``export.show``: by ``export`` id, or by ``share`` (and ``protocol``)."""
        args = _args(export=export, share=share, pool=pool, protocol=protocol)
        return self._submit("export.show", args, None)

    def export_delete(
        self,
        *,
        export: Optional[str] = None,
        share: Optional[str] = None,
        pool: Optional[str] = None,
        protocol: Optional[str] = None,
        force: Optional[bool] = None,
        key: Optional[str] = None,
    ) -> Any:
        """8.19 ``export.delete``: ``{deleted, changed}``; ``force`` drops attachments."""
        args = _args(export=export, share=share, pool=pool, protocol=protocol, force=force)
        return self._submit("export.delete", args, key)

    # ------------------------------------------------------------ attachments

    def share_attach(
        self,
        share: str,
        connector: Mapping[str, Any],
        *,
        pool: Optional[str] = None,
        protocol: Optional[str] = None,
        mode: Optional[str] = None,
        key: Optional[str] = None,
    ) -> Any:
        """8.20 ``share.attach``: ``connector`` is ``{host, [ip], [initiator]}``; returns
        ``{connection_info, [attachment], changed}``."""
        args = _args(
            share=share, pool=pool, connector=dict(connector), protocol=protocol, mode=mode
        )
        return self._submit("share.attach", args, key)

    def share_detach(
        self,
        share: str,
        connector: Mapping[str, Any],
        *,
        pool: Optional[str] = None,
        protocol: Optional[str] = None,
        mode: Optional[str] = None,
        key: Optional[str] = None,
    ) -> Any:
        """8.21 ``share.detach``: ``{detached, changed}`` (``detached`` null when the
        connector was not attached)."""
        args = _args(
            share=share, pool=pool, connector=dict(connector), protocol=protocol, mode=mode
        )
        return self._submit("share.detach", args, key)

    def attachment_list(self, *, share: Optional[str] = None, pool: Optional[str] = None) -> Any:
        """8.22 ``attachment.list``."""
        return self._submit("attachment.list", _args(share=share, pool=pool), None)

    # ------------------------------------------------------------ integrity

    def reconcile(self, *, key: Optional[str] = None) -> Any:
        """8.23 ``reconcile``: repair exports; ``{findings, checked}``."""
        return self._submit("reconcile", {}, key)

    def verify(self) -> Any:
        """8.24 ``verify`` (admin): ``{clean, checked, differences}``; repairs nothing."""
        return self._submit("verify", {}, None)

    def audit_list(
        self,
        *,
        since: Optional[int] = None,
        limit: Optional[int] = None,
        op: Optional[str] = None,
        uid: Optional[int] = None,
    ) -> Any:
        """8.25 ``audit.list`` (admin): audit entries, newest first (oldest first after
        ``since``)."""
        return self._submit("audit.list", _args(since=since, limit=limit, op=op, uid=uid), None)

    # ------------------------------------------------------------ metadata, images, jobs, events

    def share_set_metadata(
        self,
        share: str,
        *,
        metadata: Optional[Mapping[str, str]] = None,
        remove: Optional[Sequence[str]] = None,
        pool: Optional[str] = None,
        key: Optional[str] = None,
    ) -> Any:
        """8.29 ``share.set_metadata``: add or overwrite entries, drop ``remove`` keys."""
        args = _args(
            share=share,
            pool=pool,
            metadata=dict(metadata) if metadata is not None else None,
            remove=list(remove) if remove is not None else None,
        )
        return self._submit("share.set_metadata", args, key)

    def image_import(
        self,
        name: str,
        source: str,
        *,
        format: Optional[str] = None,
        checksum: Optional[str] = None,
        pool: Optional[str] = None,
        key: Optional[str] = None,
    ) -> Any:
        """8.26 ``image.import``: ``{job, image}``; the import runs as a job."""
        args = _args(name=name, source=source, format=format, checksum=checksum, pool=pool)
        return self._submit("image.import", args, key)

    def image_upload_begin(
        self,
        name: str,
        size: int,
        *,
        format: Optional[str] = None,
        checksum: Optional[str] = None,
        pool: Optional[str] = None,
    ) -> Any:
        """8.26 ``image.upload.begin``: ``{upload}``."""
        args = _args(name=name, size=size, format=format, checksum=checksum, pool=pool)
        return self._submit("image.upload.begin", args, None)

    def image_upload_chunk(self, upload: str, offset: int, data: bytes) -> Any:
        """8.26 ``image.upload.chunk``: ``{received}``."""
        return self._submit(
            "image.upload.chunk", _args(upload=upload, offset=offset, data=bytes(data)), None
        )

    def image_upload_finish(self, upload: str, *, key: Optional[str] = None) -> Any:
        """8.26 ``image.upload.finish``: ``{job, image}``."""
        return self._submit("image.upload.finish", _args(upload=upload), key)

    def image_upload_abort(self, upload: str) -> Any:
        """8.26 ``image.upload.abort``."""
        return self._submit("image.upload.abort", _args(upload=upload), None)

    # ------------------------------------------------------------ byte streams

    def stream_read(self, stream: str, *, max: Optional[int] = None) -> Any:
        """8.30 ``stream.read``: ``{data, end, offset}``, the next bytes (``data`` is
        :class:`bytes`, starting at byte ``offset`` of the stream) of a stream opened by
        ``snapshot.export`` or ``snapshot.send``; at most ``max`` bytes, and never more
        than fits in one frame. Read until ``end`` is true."""
        return self._submit("stream.read", _args(stream=stream, max=max), None)

    def stream_close(self, stream: str) -> Any:
        """8.30 ``stream.close``: ``{deleted, changed}``; ends a stream before its end
        (its job is cancelled); ``changed: False`` when it had already ended."""
        return self._submit("stream.close", _args(stream=stream), None)

    def image_list(self, *, pool: Optional[str] = None) -> Any:
        """8.26 ``image.list``."""
        return self._submit("image.list", _args(pool=pool), None)

    def image_show(self, image: str, *, pool: Optional[str] = None) -> Any:
        """8.26 ``image.show``."""
        return self._submit("image.show", _args(image=image, pool=pool), None)

    def image_delete(
        self, image: str, *, pool: Optional[str] = None, key: Optional[str] = None
    ) -> Any:
        """8.26 ``image.delete``; shares made from the image are not touched."""
        return self._submit("image.delete", _args(image=image, pool=pool), key)

    def job_list(self) -> Any:
        """8.27 ``job.list``: newest first."""
        return self._submit("job.list", {}, None)

    def job_show(self, job: str) -> Any:
        """8.27 ``job.show``."""
        return self._submit("job.show", _args(job=job), None)

    def job_cancel(self, job: str) -> Any:
        """8.27 ``job.cancel``: ``{job, changed}``."""
        return self._submit("job.cancel", _args(job=job), None)

    def events_subscribe(self, *, since: Optional[int] = None, epoch: Optional[str] = None) -> Any:
        """8.28 ``events.subscribe``: ``{epoch, gap, backlog}``; then read events with
        :meth:`Client.next_event`."""
        return self._submit("events.subscribe", _args(since=since, epoch=epoch), None)

    def snapshot_send(
        self,
        snapshot: str,
        *,
        from_: Optional[str] = None,
        share: Optional[str] = None,
        pool: Optional[str] = None,
        key: Optional[str] = None,
    ) -> Any:
        """8.31 ``snapshot.send``: ``{stream, job, size, base}``; read the stream with
        ``stream.read`` (docs/replication.md for its format)."""
        args = _args(snapshot=snapshot, share=share, pool=pool)
        if from_ is not None:
            args["from"] = from_
        return self._submit("snapshot.send", args, key)

    def snapshot_receive_begin(self, name: str, *, pool: Optional[str] = None) -> Any:
        """8.31 ``snapshot.receive.begin``: ``{receive}``."""
        return self._submit("snapshot.receive.begin", _args(name=name, pool=pool), None)

    def snapshot_receive_chunk(self, receive: str, offset: int, data: bytes) -> Any:
        """8.31 ``snapshot.receive.chunk``: ``{received}``; chunks are sequential."""
        return self._submit(
            "snapshot.receive.chunk",
            _args(receive=receive, offset=offset, data=bytes(data)),
            None,
        )

    def snapshot_receive_finish(self, receive: str, *, key: Optional[str] = None) -> Any:
        """8.31 ``snapshot.receive.finish``: ``{share, snapshot, changed, origin_node}``
        (``origin_node``: the sender's node id from the stream, ``None`` for a stream from
        a shelf before node ids)."""
        return self._submit("snapshot.receive.finish", _args(receive=receive), key)

    def snapshot_receive_abort(self, receive: str) -> Any:
        """8.31 ``snapshot.receive.abort``: ``{deleted, changed}``."""
        return self._submit("snapshot.receive.abort", _args(receive=receive), None)
