"""Volume migration between two real shelf nodes through the driver objects
(shelf_cinder.migration): what ``migrate_volume`` does with Cinder's ``host`` argument
built from the destination driver's own ``get_volume_stats``, checked on both nodes.
Cinder's services driving it are in functional/test_migration.py.

Cinder's generic migration (what ``(False, None)`` hands the volume to) attaches both
volumes to the cinder-volume host over iSCSI; this machine has no iSCSI initiator, so it
is not run: these tests check that the driver declines to Cinder there and leaves both
nodes as they were.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any, Dict, Iterator, List
from unittest import mock

import pytest

from cinder import exception
from oslo_config import cfg
from shelf_client import Client

from appliance import Appliance, GiB
from conftest import make_driver
from shelf_cinder.migration import CHUNK, EMPTY_READS, PREFIX, pipe
from shelf_cinder.stats import location_info, parse_location_info

MiB = 1 << 20
#: A node id no shelfd of these tests has.
NODE_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.fixture(scope="session")
def peer() -> Iterator[Appliance]:
    """The destination node: a second appliance of its own."""
    a = Appliance(size_gib=4)
    try:
        a.start()
        yield a
    finally:
        print(f"--- peer shelfd log ---\n{a.log_text()[-6000:]}")
        a.stop()


@pytest.fixture
def drivers(appliance: Appliance, peer: Appliance, ctx: Any) -> Dict[str, Any]:
    """The source backend (node-a, which has node-b as a peer) and the destination's."""
    src = make_driver(
        appliance,
        "shelf-mig-a",
        shelf_node_name="node-a",
        shelf_migration_peers={"node-b": peer.socket},
    )
    dst = make_driver(peer, "shelf-mig-b", shelf_node_name="node-b")
    for d in (src, dst):
        d.do_setup(ctx)
    return {"src": src, "dst": dst}


def dest_host(dst: Any) -> Dict[str, Any]:
    """Cinder's ``host`` argument for the destination: its capabilities are its stats."""
    pool = dst.configuration.volume_backend_name
    return {"host": f"{dst.host}#{pool}", "capabilities": dst.get_volume_stats(True)}


@pytest.fixture
def cleanup(appliance: Appliance, peer: Appliance) -> Iterator[None]:
    yield
    for node in (appliance, peer):
        with node.client() as c:
            for share in c.share_list():
                if share["name"].startswith("volume-"):
                    c.share_delete(share["id"], recursive=True, force=True)


def source_volume(src: Any, new_volume: Any, appliance: Appliance, size_mib: int) -> Any:
    """A detached 1 GiB volume on the source with ``size_mib`` MiB of known data at 1 MiB
    (so the copy is many chunks), and a hole after it."""
    vol = new_volume(size=1)
    vol.status, vol.attach_status, vol.previous_status = "available", "detached", None
    vol.update(src.create_volume(vol))
    data = hashlib.shake_256(vol.id.encode()).digest(size_mib * MiB)
    fd = os.open(appliance.volume_file(vol.provider_id), os.O_WRONLY)
    try:
        os.pwrite(fd, data, MiB)
        os.fsync(fd)
    finally:
        os.close(fd)
    return vol


def write_before_final(
    appliance: Appliance, vol: Any, offset: int, size: int, seen: Dict[str, str]
) -> Any:
    """A patch of ``snapshot.create`` that writes ``size`` new bytes at ``offset`` into the
    source volume right before the final snapshot is taken (what changed between the
    full stream and the incremental), and puts the volume's digest then in
    ``seen["final"]``."""
    real = Client.snapshot_create

    def create(self: Client, share: str, name: str, **kw: Any) -> Any:
        if name.endswith("-final"):
            path = appliance.volume_file(vol.provider_id)
            fd = os.open(path, os.O_WRONLY)
            try:
                os.pwrite(fd, hashlib.shake_256(name.encode()).digest(size), offset)
                os.fsync(fd)
            finally:
                os.close(fd)
            seen["final"] = digest(path)
        return real(self, share, name, **kw)

    return mock.patch.object(Client, "snapshot_create", create)


def digest(path: Any) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MiB), b""):
            h.update(block)
    return h.hexdigest()


def names(node: Appliance) -> List[str]:
    with node.client() as c:
        return sorted(s["name"] for s in c.share_list())


def snapshots(node: Appliance) -> List[str]:
    with node.client() as c:
        return [s["name"] for s in c.snapshot_list()]


def declined(src: Any, vol: Any, host: Dict[str, Any], caplog: Any, reason: str) -> None:
    """``migrate_volume`` hands the volume to Cinder's generic copy, for ``reason``."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shelf_cinder.migration"):
        assert src.migrate_volume(None, vol, host) == (False, None)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert reason in said, said


# ------------------------------------------------------------ location_info


def node_id(node: Appliance) -> str:
    """The shelf node id of ``node`` (its ``hello``)."""
    with node.client() as c:
        return c.hello()["node"]["id"]


def test_location_info_round_trips_and_other_drivers_are_not_shelf():
    got = parse_location_info(location_info("node-a", "default", NODE_ID))
    assert got == ("node-a", "default", NODE_ID)
    assert location_info("node-a", "default", NODE_ID) == f"ShelfDriver:node-a:default:{NODE_ID}"
    # The old form (a driver before node ids) still parses: it is shelf, with no id.
    assert parse_location_info("ShelfDriver:node-a:default") == ("node-a", "default", None)
    assert location_info("node-a", "default", None) == "ShelfDriver:node-a:default"
    for other in (
        "LVMVolumeDriver:host:cinder-volumes:thin:0",
        "ShelfDriver:node-a",
        "ShelfDriver::default",
        "ShelfDriver:a:b:c",
        f"ShelfDriver:a:b:{NODE_ID.upper()}",
        f"ShelfDriver::b:{NODE_ID}",
        f"ShelfDriver:a:b:{NODE_ID}:x",
        "ShelfDriver:a:b:",
        None,
        17,
    ):
        assert parse_location_info(other) is None, other


def test_stats_report_the_node_name_pool_and_node_id(drivers, peer):
    stats = drivers["dst"].get_volume_stats(True)
    assert stats["location_info"] == f"ShelfDriver:node-b:default:{node_id(peer)}"


def test_a_node_name_with_a_colon_is_a_setup_error(appliance, ctx):
    drv = make_driver(appliance, "shelf-mig-colon", shelf_node_name="a:b")
    with pytest.raises(exception.VolumeBackendAPIException, match="':'"):
        drv.do_setup(ctx)


# ------------------------------------------------------------ declined: Cinder's generic copy


def test_non_shelf_destinations_get_cinders_generic_migration(
    appliance, peer, drivers, new_volume, cleanup, caplog
):
    src = drivers["src"]
    vol = source_volume(src, new_volume, appliance, 1)
    before = digest(appliance.volume_file(vol.provider_id))
    lvm = "LVMVolumeDriver:cinder-1:cinder-volumes:thin:0"
    for caps in ({"location_info": lvm}, {}, {"location_info": "ShelfDriver:node-b"}):
        host = {"host": "x@y#y", "capabilities": caps}
        declined(src, vol, host, caplog, "not a shelf backend")
    assert names(appliance) == [vol.name] and names(peer) == []
    assert snapshots(appliance) == []
    assert digest(appliance.volume_file(vol.provider_id)) == before


def test_a_shelf_node_that_is_no_peer_or_unreachable_is_declined(
    appliance, peer, drivers, new_volume, cleanup, tmp_path, caplog
):
    src, dst = drivers["src"], drivers["dst"]
    vol = source_volume(src, new_volume, appliance, 1)
    stranger = dest_host(dst)
    stranger["capabilities"]["location_info"] = location_info("node-c", "default", NODE_ID)
    declined(src, vol, stranger, caplog, "'node-c' is not in shelf_migration_peers")
    # A peer whose socket answers nobody (its shelfd is down, its tunnel is not up).
    cfg.CONF.set_override(
        "shelf_migration_peers", {"node-b": str(tmp_path / "absent.sock")}, group="shelf-mig-a"
    )
    declined(src, vol, dest_host(dst), caplog, "not reachable")
    assert names(appliance) == [vol.name] and names(peer) == []
    assert snapshots(appliance) == []


def test_an_attached_volume_is_declined(appliance, peer, drivers, new_volume, cleanup, caplog):
    src, dst = drivers["src"], drivers["dst"]
    vol = source_volume(src, new_volume, appliance, 1)
    vol.status, vol.attach_status = "in-use", "attached"
    declined(src, vol, dest_host(dst), caplog, "the volume is attached")
    # Attached on the node without Cinder knowing: shelf's attachment list decides.
    vol.status, vol.attach_status = "available", "detached"
    connector = {"host": "h", "initiator": "iqn.1994-05.com.redhat:h"}
    with appliance.client() as c:
        c.export_create(vol.provider_id, "iscsi")
        c.share_attach(vol.provider_id, connector, protocol="iscsi")
    declined(src, vol, dest_host(dst), caplog, "the volume's share is attached")
    assert names(peer) == [] and snapshots(appliance) == []


def test_the_same_node_is_refused_or_declined(appliance, drivers, new_volume, cleanup, caplog):
    src = drivers["src"]
    vol = source_volume(src, new_volume, appliance, 1)
    ours = node_id(appliance)
    itself = {
        "host": "x@y#y",
        "capabilities": {"location_info": f"ShelfDriver:node-a:default:{ours}"},
    }
    with pytest.raises(exception.VolumeBackendAPIException, match="same shelf pool"):
        src.migrate_volume(None, vol, itself)
    other_pool = {
        "host": "x@z#z",
        "capabilities": {"location_info": f"ShelfDriver:node-a:fast:{ours}"},
    }
    declined(src, vol, other_pool, caplog, "is on this node")


def test_an_old_location_info_without_a_node_id_gets_cinders_generic_migration(
    appliance, peer, drivers, new_volume, cleanup, caplog
):
    """``ShelfDriver:<node>:<pool>`` (a destination driver before node ids): shelf, but
    nothing proves which node it is, so the generic copy runs."""
    src, dst = drivers["src"], drivers["dst"]
    vol = source_volume(src, new_volume, appliance, 1)
    host = dest_host(dst)
    host["capabilities"]["location_info"] = "ShelfDriver:node-b:default"
    declined(src, vol, host, caplog, "has no shelf node id")
    assert names(appliance) == [vol.name] and names(peer) == []
    assert snapshots(appliance) == []


def test_a_peer_that_is_another_node_than_the_destination_is_declined(
    appliance, peer, drivers, new_volume, cleanup, caplog
):
    """The destination says it is node ``NODE_ID``, but the shelfd that
    ``shelf_migration_peers`` reaches for its name answers with another id (the map
    points at the wrong node): declined, nothing sent."""
    src, dst = drivers["src"], drivers["dst"]
    vol = source_volume(src, new_volume, appliance, 1)
    host = dest_host(dst)
    host["capabilities"]["location_info"] = f"ShelfDriver:node-b:default:{NODE_ID}"
    declined(src, vol, host, caplog, f"is node {node_id(peer)}, not node {NODE_ID}")
    assert names(appliance) == [vol.name] and names(peer) == []
    assert snapshots(appliance) == []


def test_a_peer_that_is_this_node_is_declined(
    appliance, peer, drivers, new_volume, cleanup, caplog
):
    """``shelf_migration_peers`` maps the destination's name to this backend's own
    shelfd, and the destination's location_info carries that node's id (two backends of
    one shelf node under different node names): the peer check passes, and the own-id
    check declines before anything is sent to itself."""
    src, dst = drivers["src"], drivers["dst"]
    vol = source_volume(src, new_volume, appliance, 1)
    cfg.CONF.set_override(
        "shelf_migration_peers", {"node-b": appliance.socket}, group="shelf-mig-a"
    )
    host = dest_host(dst)
    host["capabilities"]["location_info"] = f"ShelfDriver:node-b:default:{node_id(appliance)}"
    declined(src, vol, host, caplog, "the destination is this shelf node")
    assert names(appliance) == [vol.name] and names(peer) == []
    assert snapshots(appliance) == []


def test_a_share_of_that_name_on_the_destination_is_not_overwritten(
    appliance, peer, drivers, new_volume, cleanup, caplog
):
    src, dst = drivers["src"], drivers["dst"]
    vol = source_volume(src, new_volume, appliance, 1)
    with peer.client() as c:
        theirs = c.share_create(vol.name, GiB, metadata={"owner": "someone"})["share"]
        c.snapshot_create(theirs["id"], "theirs")
    declined(src, vol, dest_host(dst), caplog, f"a share {vol.name} exists")
    with peer.client() as c:
        assert c.share_show(theirs["id"])["metadata"] == {"owner": "someone"}
    assert names(appliance) == [vol.name]


# ------------------------------------------------------------ moved by send/receive


def test_migrate_moves_the_data_and_leaves_nothing_behind(
    appliance, peer, drivers, new_volume, cleanup
):
    src, dst = drivers["src"], drivers["dst"]
    vol = source_volume(src, new_volume, appliance, 3)
    old = vol.provider_id
    seen: Dict[str, str] = {}
    sizes: List[List[int]] = []  # chunk sizes, per stream
    real_send, real_chunk = Client.snapshot_send, Client.snapshot_receive_chunk

    def send(self: Client, snapshot: str, **kw: Any) -> Any:
        sizes.append([])
        return real_send(self, snapshot, **kw)

    def counting(self: Client, receive: str, offset: int, data: bytes) -> Any:
        sizes[-1].append(len(data))
        return real_chunk(self, receive, offset, data)

    with (
        mock.patch.object(Client, "snapshot_send", send),
        mock.patch.object(Client, "snapshot_receive_chunk", counting),
        write_before_final(appliance, vol, 512 * MiB, MiB, seen),
    ):
        moved, update = src.migrate_volume(None, vol, dest_host(dst))
    assert moved is True and set(update) == {"provider_id"}
    # A full stream, then an incremental; piped in bounded memory: chunks of at most
    # CHUNK. Only written extents travel: the 3 MiB of the 1 GiB volume, then the 1 MiB
    # written after the first snapshot (plus headers, extent tables and checksums).
    full, final = (sum(s) for s in sizes)
    print(f"1 GiB volume, 3 MiB written: full stream {full} B; 1 MiB more: incremental {final} B")
    assert len(sizes) == 2 and max(max(s) for s in sizes) <= CHUNK, sizes
    assert 3 * MiB <= full < 3 * MiB + 64 * 1024, full
    assert MiB <= final < MiB + 64 * 1024, final
    with peer.client() as c:
        share = c.share_show(update["provider_id"])
        assert c.snapshot_list(share=share["id"]) == []
    assert (share["name"], share["size"]) == (vol.name, GiB)
    assert share["metadata"]["cinder.volume_id"] == vol.id
    assert digest(peer.volume_file(share["id"])) == seen["final"]
    assert names(appliance) == [] and snapshots(appliance) == []
    with appliance.client() as c:
        assert c.share_list(id=old) == []

    # The destination's driver serves the moved volume (its provider_id is the share).
    vol.update(update)
    dst.extend_volume(vol, 2)
    with peer.client() as c:
        assert c.share_show(vol.provider_id)["size"] == 2 * GiB


def test_a_corrupted_stream_leaves_the_source_whole_and_the_destination_empty(
    appliance, peer, drivers, new_volume, cleanup
):
    """A byte flipped in the data of the second (incremental) stream, in transit: the
    destination refuses the stream (its checksum), after the first stream was
    committed there; the driver deletes that share and the source's temporaries, and
    raises (Cinder keeps the volume where it was)."""
    src, dst = drivers["src"], drivers["dst"]
    vol = source_volume(src, new_volume, appliance, 2)
    real_send, real_chunk = Client.snapshot_send, Client.snapshot_receive_chunk
    sends: List[str] = []
    flipped: List[int] = []
    seen: Dict[str, str] = {}

    def send(self: Client, snapshot: str, **kw: Any) -> Any:
        sends.append(snapshot)
        return real_send(self, snapshot, **kw)

    def chunk(self: Client, receive: str, offset: int, data: bytes) -> Any:
        if len(sends) == 2 and not flipped and len(data) > 128 * 1024:
            at = len(data) // 2  # inside the 256 KiB written: extent data
            data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
            flipped.append(offset + at)
        return real_chunk(self, receive, offset, data)

    with (
        mock.patch.object(Client, "snapshot_send", send),
        mock.patch.object(Client, "snapshot_receive_chunk", chunk),
        write_before_final(appliance, vol, 256 * MiB, 256 * 1024, seen),
        pytest.raises(exception.VolumeBackendAPIException, match="stays here") as failed,
    ):
        src.migrate_volume(None, vol, dest_host(dst))
    print(f"refused: {failed.value}")
    assert len(sends) == 2 and len(flipped) == 1
    assert names(peer) == [] and snapshots(peer) == []
    assert names(appliance) == [vol.name] and snapshots(appliance) == []
    assert digest(appliance.volume_file(vol.provider_id)) == seen["final"]


def test_a_leftover_of_an_interrupted_migration_is_replaced(
    appliance, peer, drivers, new_volume, cleanup
):
    """What a destination that died after its first commit keeps (a share of the
    volume's name holding a ``migration-*`` snapshot, no ``cinder.volume_id``): the next
    migration of that volume deletes it and moves the volume."""
    src, dst = drivers["src"], drivers["dst"]
    vol = source_volume(src, new_volume, appliance, 1)
    before = digest(appliance.volume_file(vol.provider_id))
    with appliance.client() as a, peer.client() as b:
        snap = a.snapshot_create(vol.provider_id, f"{PREFIX}dead-base")["snapshot"]
        stream = a.snapshot_send(snap["id"])["stream"]
        receive = b.snapshot_receive_begin(vol.name, pool="default")["receive"]
        pipe(a, b, stream, receive)
        left = b.snapshot_receive_finish(receive)["share"]["id"]
    moved, update = src.migrate_volume(None, vol, dest_host(dst))
    assert moved and update["provider_id"] != left
    assert names(peer) == [vol.name] and snapshots(peer) == []
    assert digest(peer.volume_file(update["provider_id"])) == before
    # The source's own leftover temporary went with its share.
    assert names(appliance) == []


class ScriptedSource:
    """Stands in for the source node's ``stream.read`` only (a real shelfd never
    answers these): the replies of ``script``, one per read."""

    def __init__(self, script: List[Dict[str, Any]]) -> None:
        self.script = iter(script)

    def stream_read(self, stream: str, max: int) -> Dict[str, Any]:
        return next(self.script)


@pytest.mark.parametrize(
    "script, error",
    [
        ([{"data": b"x" * 10, "end": False, "offset": 5}], "at 5, expected at most"),
        ([{"data": b"x" * (CHUNK + 1), "end": False, "offset": 0}], "expected at most"),
        ([{"data": b"", "end": False, "offset": 0}] * (EMPTY_READS + 1), "empty reads"),
    ],
    ids=["skipped-bytes", "oversized-read", "stuck-stream"],
)
def test_a_scripted_source_that_misbehaves_is_refused_and_the_receive_dropped(peer, script, error):
    """A source whose replies skip bytes, exceed the chunk asked for, or never end:
    ``pipe`` stops before passing such bytes on, and the aborted receive leaves nothing
    on the (real) destination."""
    with peer.client() as dst:
        receive = dst.snapshot_receive_begin("volume-scripted", pool="default")["receive"]
        with pytest.raises(exception.VolumeBackendAPIException, match=error):
            pipe(ScriptedSource(script), dst, "s", receive)
        dst.snapshot_receive_abort(receive)
    assert names(peer) == [] and snapshots(peer) == []


def test_an_attach_between_the_two_copies_stops_the_migration(
    appliance, peer, drivers, new_volume, cleanup
):
    """A host attached on the source node (not through Cinder) while the full copy ran:
    the final snapshot is not taken, the step-2 share on the destination is deleted,
    and the volume stays, attached, where it was."""
    src, dst = drivers["src"], drivers["dst"]
    vol = source_volume(src, new_volume, appliance, 1)
    before = digest(appliance.volume_file(vol.provider_id))
    real_finish = Client.snapshot_receive_finish
    connector = {"host": "h", "initiator": "iqn.1994-05.com.redhat:between"}

    def finish(self: Client, receive: str, **kw: Any) -> Any:
        done = real_finish(self, receive, **kw)
        with appliance.client() as c:
            c.export_create(vol.provider_id, "iscsi")
            c.share_attach(vol.provider_id, connector, protocol="iscsi")
        return done

    with (
        mock.patch.object(Client, "snapshot_receive_finish", finish),
        pytest.raises(exception.VolumeIsBusy),
    ):
        src.migrate_volume(None, vol, dest_host(dst))
    assert names(peer) == [] and snapshots(peer) == []
    assert names(appliance) == [vol.name] and snapshots(appliance) == []
    with appliance.client() as c:
        assert len(c.attachment_list(share=vol.provider_id)) == 1
    assert digest(appliance.volume_file(vol.provider_id)) == before
