"""One shelf node under Cinder's own API, scheduler and volume manager: a volume's life
through the REST API, as a user and Nova drive it, checked on the node itself."""

from __future__ import annotations

from typing import Any, Dict
from unittest import mock

from appliance import GiB, initiator, login, read_capacity
from stack import ShelfStack

#: The Nova instance the attachment is for (Nova's attach always names one).
_INSTANCE = "7f3c1a52-1c3e-4b8e-9d6f-0a4c2e9b5d11"
SERVICE_REQUEST = "cinder.volume.api.API.is_service_request"
#: Bytes written into the first volume's file, found again in its snapshot's volume and
#: in its clone.
DATA = b"shelf-functional " * 64


class OneBackendTest(ShelfStack):
    BACKENDS = (("shelf", 8, 10.0, 5),)

    def node(self) -> Any:
        return self.backends[0].node

    def test_volume_life_through_the_api(self) -> None:
        """create, snapshot, volume from snapshot grown, clone, extend, delete."""
        vol = self.create_volume(size=1, name="first")
        self.assertEqual(self.backends[0].host, vol["os-vol-host-attr:host"])
        share = self.share_of(vol)
        self.assertEqual(1 * GiB, share["size"])
        self.assertEqual(vol["id"], share["metadata"]["cinder.volume_id"])
        with open(self.node().volume_file(share["id"]), "r+b") as f:
            f.seek(4096)
            f.write(DATA)

        snap_id = self.api.post_snapshot({"snapshot": {"volume_id": vol["id"]}})["id"]
        snap = self.settled(lambda: self.api.get_snapshot(snap_id), ("creating",))
        self.assertEqual("available", snap["status"], snap)
        with self.node().client() as c:
            names = [s["name"] for s in c.snapshot_list(share=share["id"])]
        self.assertEqual([f"snapshot-{snap_id}"], names)

        grown = self.create_volume(size=2, snapshot_id=snap_id)
        clone = self.create_volume(size=1, source_volid=vol["id"])
        for made, size in ((grown, 2), (clone, 1)):
            s = self.share_of(made)
            self.assertEqual(size * GiB, s["size"])
            self.assertNotEqual(share["id"], s["id"])
            self.assertEqual(DATA, self._read(s["id"], 4096, len(DATA)))
        # The clone's temporary snapshot is gone: only the user's snapshot remains.
        with self.node().client() as c:
            self.assertEqual(1, len(c.snapshot_list(share=share["id"])))

        self.api.api_post(f"/volumes/{clone['id']}/action", {"os-extend": {"new_size": 3}})
        extended = self.settled(lambda: self.volume(clone["id"]), ("extending",))
        self.assertEqual(("available", 3), (extended["status"], extended["size"]))
        self.assertEqual(3 * GiB, self.share_of(clone)["size"])

        self.api.delete_snapshot(snap_id)
        self.until(lambda: self._gone(self.api.get_snapshot, snap_id), "snapshot deleted")
        for v in (vol, grown, clone):
            self.delete_volume(v["id"])
        with self.node().client() as c:
            self.assertEqual([], c.share_list())

    def test_a_multiattach_type_lands_here_as_a_multiattach_share(self) -> None:
        """The backend says ``multiattach: true``; a volume type asking for it passes
        CapabilitiesFilter and its volume is a multiattach share on the node."""
        self.api.api_post(
            "/types",
            {"volume_type": {"name": "shared", "extra_specs": {"multiattach": "<is> True"}}},
        )
        vol = self.create_volume(size=1, volume_type="shared")
        self.assertIs(True, vol["multiattach"])
        self.assertIs(True, self.share_of(vol)["multiattach"])
        plain = self.create_volume(size=1)
        self.assertIs(False, self.share_of(plain)["multiattach"])
        for v in (vol, plain):
            self.delete_volume(v["id"])

    def test_attach_through_the_attachments_api(self) -> None:
        """Nova's attach: attachment create (reserved), update with the connector (the
        connection_info Nova hands os-brick), a real iSCSI login with exactly it,
        os-complete (in-use), attachment delete (access ends)."""
        vol = self.create_volume(size=1)
        name = initiator("func")
        connector = {"host": "compute-1", "ip": "127.0.0.1", "initiator": name}
        att = self.api.api_post(
            "/attachments",
            {"attachment": {"volume_uuid": vol["id"], "instance_uuid": _INSTANCE, "mode": "rw"}},
        )["attachment"]
        self.assertEqual("reserved", att["status"])
        att = self.api.api_put(
            f"/attachments/{att['id']}",
            {"attachment": {"connector": connector}},
        )["attachment"]
        # The attachments API answers the driver's connection_info flattened (its
        # ``data`` merged with ``driver_volume_type``, plus the attachment's id), which is
        # what Nova reads.
        info: Dict[str, Any] = att["connection_info"]
        self.assertEqual("iscsi", info["driver_volume_type"])
        self.assertEqual(att["id"], info["attachment_id"])
        self.assertEqual(vol["id"], info["volume_id"])
        self.assertEqual("CHAP", info["auth_method"])
        self.assertEqual("rw", info["access_mode"])
        # tgt unmaps for this sparse volume, and the backend's stats said so.
        self.assertIs(True, info["discard"])
        self.assertIs(True, self.pools()[self.backends[0].host]["discard"])
        info = {"data": info}
        with self.node().client() as c:
            attached = c.attachment_list(share=self.share_of(vol)["id"])
        self.assertEqual([name], [a["initiator"] for a in attached])

        ok = login(info, name)
        self.assertEqual(0, ok.returncode, ok.stderr)
        self.assertEqual(1 * GiB, read_capacity(info, name))
        self.assertNotEqual(0, login(info, initiator("stranger")).returncode)

        self.api.api_post(
            f"/attachments/{att['id']}/action", {"os-complete": {}}, check_response_status=[204]
        )
        in_use = self.settled(lambda: self.volume(vol["id"]), ("attaching",))
        self.assertEqual("in-use", in_use["status"])

        # Nova deletes an in-use attachment with its service token (Cinder refuses a
        # user's delete since OSSA-2023-003). No Keystone runs here, so the API's check
        # for that token is what stands in for Nova's service identity.
        with mock.patch(SERVICE_REQUEST, return_value=True):
            self.api.api_delete(f"/attachments/{att['id']}")
        detached = self.settled(lambda: self.volume(vol["id"]), ("in-use", "detaching"))
        self.assertEqual("available", detached["status"])
        self.assertNotEqual(0, login(info, name).returncode)
        with self.node().client() as c:
            self.assertEqual([], c.attachment_list(share=self.share_of(vol)["id"]))
            self.assertEqual([], c.export_list(share=self.share_of(vol)["id"]))
        self.delete_volume(vol["id"])

    def _read(self, share_id: str, offset: int, length: int) -> bytes:
        with open(self.node().volume_file(share_id), "rb") as f:
            f.seek(offset)
            return f.read(length)
