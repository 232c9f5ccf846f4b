"""Volume migration between two shelf nodes through Cinder's own API, scheduler and
volume managers (``os-migrate_volume``): the source backend's driver moves the volume by
send/receive to the node its ``shelf_migration_peers`` names (shelf_cinder.migration).

Each backend is the other's peer (``shelf_node_name`` = the backend name, the peer's
socket its real socket on this host). A volume is created wherever the scheduler puts it
(that node is "A", the other "B"), data is written straight into its volume file on A,
and it is migrated to B's host; the data is checked on B by checksum. A destination
shelfd killed in the middle of the transfer leaves the volume on A, intact and
``available``, and nothing on B once B is back; the same volume then migrates.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, List, Tuple
from unittest import mock

from oslo_config import cfg

from shelf_client import Client
from shelf_cinder.migration import migration_opts

from appliance import Appliance
from stack import Backend, ShelfStack

MiB = 1 << 20
#: Written at 1 MiB into the volume: 16 chunks of the copy (shelf_cinder.migration.CHUNK).
DATA_MIB = 8


def digest(path: Any) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MiB), b""):
            h.update(block)
    return h.hexdigest()


class MigrationTest(ShelfStack):
    BACKENDS = (("mig-a", 4, 10.0, 0), ("mig-b", 4, 10.0, 0))

    def _backend_options(self, b: Backend) -> None:
        super()._backend_options(b)
        cfg.CONF.register_opts(migration_opts, group=b.name)
        peers = {o.name: o.node.socket for o in self.backends if o is not b}
        self.override_config("shelf_node_name", b.name, b.name)
        self.override_config("shelf_migration_peers", peers, b.name)

    # ------------------------------------------------------------ helpers

    def placed(self) -> Tuple[Dict[str, Any], Backend, Backend, str]:
        """A 1 GiB volume with DATA_MIB MiB written into its file on its node: (volume,
        its backend A, the other B, the volume file's sha256)."""
        vol = self.create_volume(size=1)
        a = self.node_of(vol)
        b = next(o for o in self.backends if o is not a)
        path = a.node.volume_file(self.share_of(vol)["id"])
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, hashlib.shake_256(vol["id"].encode()).digest(DATA_MIB * MiB), MiB)
            os.fsync(fd)
        finally:
            os.close(fd)
        return vol, a, b, digest(path)

    def migrate(self, vol: Dict[str, Any], to: Backend) -> Dict[str, Any]:
        """POST os-migrate_volume to ``to``'s host; the volume once it has ended."""
        self.api.api_post(
            f"/volumes/{vol['id']}/action",
            {"os-migrate_volume": {"host": to.host, "force_host_copy": False}},
        )

        def ended() -> Any:
            got = self.volume(vol["id"])
            return got if got["os-vol-mig-status-attr:migstat"] in ("success", "error") else None

        return self.until(ended, "end of the migration")

    def on(self, node: Appliance) -> List[str]:
        with node.client() as c:
            return [s["name"] for s in c.share_list()] + [s["name"] for s in c.snapshot_list()]

    # ------------------------------------------------------------ tests

    def test_a_volume_migrates_to_the_other_node_by_send_receive(self) -> None:
        vol, a, b, before = self.placed()
        old = self.share_of(vol)
        moved = self.migrate(vol, b)
        self.assertEqual("success", moved["os-vol-mig-status-attr:migstat"], moved)
        self.assertEqual(b.host, moved["os-vol-host-attr:host"])
        self.assertEqual("available", moved["status"])
        share = self.share_of(moved)  # on B now
        self.assertEqual(vol["id"], share["metadata"]["cinder.volume_id"])
        self.assertEqual(before, digest(b.node.volume_file(share["id"])))
        self.assertEqual([f"volume-{vol['id']}"], self.on(b.node))
        self.assertEqual([], self.on(a.node))
        with a.node.client() as c:
            self.assertEqual([], c.share_list(id=old["id"]))
        # B's volume service serves it: extend and delete go to B's node.
        self.api.api_post(f"/volumes/{vol['id']}/action", {"os-extend": {"new_size": 2}})
        grown = self.settled(lambda: self.volume(vol["id"]), ("extending",))
        self.assertEqual(("available", 2), (grown["status"], grown["size"]))
        self.assertEqual(2 << 30, self.share_of(grown)["size"])
        self.delete_volume(vol["id"])
        self.assertEqual([], self.on(b.node))

    def test_a_destination_killed_mid_transfer_leaves_the_volume_on_its_node(self) -> None:
        vol, a, b, before = self.placed()
        self.addCleanup(self._revive, b.node)
        chunks: List[int] = []
        real_chunk = Client.snapshot_receive_chunk

        def chunk(client: Client, receive: str, offset: int, data: bytes) -> Any:
            chunks.append(len(data))
            if len(chunks) == 4:
                b.node.kill_shelfd()
            return real_chunk(client, receive, offset, data)

        with mock.patch.object(Client, "snapshot_receive_chunk", chunk):
            failed = self.migrate(vol, b)
        self.assertEqual(4, len(chunks), "the copy went on past the dead destination")
        self.assertEqual("error", failed["os-vol-mig-status-attr:migstat"], failed)
        self.assertEqual(("available", a.host), (failed["status"], failed["os-vol-host-attr:host"]))
        share = self.share_of(failed)
        self.assertEqual(before, digest(a.node.volume_file(share["id"])))
        self.assertEqual([f"volume-{vol['id']}"], self.on(a.node))  # no temporary snapshot

        b.node.start_shelfd()
        self.assertEqual([], self.on(b.node))
        self.assertEqual([], self._files(b.node))

        # Nothing is stuck: the same volume migrates now.
        moved = self.migrate(vol, b)
        self.assertEqual("success", moved["os-vol-mig-status-attr:migstat"], moved)
        self.assertEqual(before, digest(b.node.volume_file(self.share_of(moved)["id"])))
        self.assertEqual([], self.on(a.node))
        self.delete_volume(vol["id"])

    @staticmethod
    def _revive(node: Appliance) -> None:
        if node.shelfd is None or node.shelfd.poll() is not None:
            node.start_shelfd()

    @staticmethod
    def _files(node: Appliance) -> List[str]:
        """Regular files anywhere under the node's pool directory (a share's volume, a
        snapshot, a receive's staging file)."""
        return [os.path.join(d, f) for d, _, files in os.walk(node.pool) for f in files]
