#!/bin/bash
# The VM tier's scenario, run as root inside the guest by image/vm/run (see docs/vm-tier.md).
# /share holds bin/shelfd and bin/shelfctl built on the host. Every check prints
# "PASS name" or "FAIL name: why"; the script exits 1 if any check failed. It also records
# real `lvs` JSON output into /share/fixtures/ for the parser tests.
set -u -o pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export SHELF_SOCKET=/run/shelf/shelf.sock
S=/share
B=$S/bin
fails=0
T0=$(date +%s%N)
now() { echo $(( ($(date +%s%N) - T0) / 1000000 ))ms; }
pass() { echo "PASS $1 ($(now))"; }
fail() { echo "FAIL $1: $2"; fails=$((fails + 1)); }
# check NAME CMD...: pass if CMD succeeds, else fail with its output.
check() { local n=$1 out; shift; if out=$("$@" 2>&1); then pass "$n"; else fail "$n" "$out"; fi; }
ctl() { "$B/shelfctl" --json "$@"; }
wait_for() { local i; for i in $(seq 1 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done; return 1; }
INITIATOR=iqn.2026-11.org.example.shelfvm:initiator
PORTAL=127.0.0.1:3260
NVME_PREFIX=nqn.2026-11.com.example.shelf
NVME_PORT=4420
mkdir -p $S/fixtures /etc/shelf /etc/exports.d /var/lib/shelf /run/shelf /mnt/nfs

echo "--- setup ($(now))"
# No udevd in the guest: load the drivers it would have loaded (SCSI disks for iSCSI
# logins, LIO's core, iSCSI target and backstores).
modprobe dm-thin-pool
modprobe sd_mod; modprobe iscsi_tcp
modprobe target_core_mod; modprobe iscsi_target_mod
modprobe target_core_iblock; modprobe target_core_file
# The NVMe/TCP target (nvmet, its TCP transport) and initiator (nvme-fabrics, nvme-tcp).
modprobe nvmet; modprobe nvmet-tcp; modprobe nvme-fabrics; modprobe nvme-tcp
# No systemd either: mount configfs, where LIO lives (its iscsi fabric directory appears
# when shelf's LIO driver first makes a target there).
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
pvcreate -y /dev/vdb >/dev/null && vgcreate shelfvg /dev/vdb >/dev/null \
  && lvcreate --type thin-pool -L 1G -n tp shelfvg >/dev/null \
  && lvcreate -L 512M -n files shelfvg >/dev/null && mkfs.xfs -q /dev/shelfvg/files \
  && mkdir -p /srv/files && mount /dev/shelfvg/files /srv/files \
  || { echo "FAIL setup: LVM/XFS setup failed"; exit 1; }
# tgtd for the tgt driver; iscsid for the initiator; a system dbus for targetcli (lio.sh
# times the old driver's targetcli sequence); nfsd.
tgtd --iscsi portal=$PORTAL
wait_for tgtadm --op show --mode sys || fail tgtd "did not start"
iscsid
mkdir -p /run/dbus && dbus-daemon --system --fork
mkdir -p /proc/fs/nfsd /run/rpc_pipefs
mount -t nfsd nfsd /proc/fs/nfsd && mount -t rpc_pipefs sunrpc /run/rpc_pipefs
rpcbind -w && rpc.mountd && rpc.nfsd 4 || fail nfsd "kernel nfsd did not start"

cat > /etc/shelf/shelf.toml <<TOML
state_dir = "/var/lib/shelf"
socket = "$SHELF_SOCKET"
command_timeout = 120
reconcile_interval = 0
[pools.thin]
kind = "lvm"
volume_group = "shelfvg"
thin_pool = "tp"
data_threshold_percent = 50
metadata_threshold_percent = 80
[pools.files]
kind = "file"
path = "/srv/files/pool"
[iscsi]
driver = "tgt"
iqn_prefix = "iqn.2026-11.com.example.shelf"
portal = "$PORTAL"
[nfs]
driver = "kernel"
exports_file = "/etc/exports.d/shelf.exports"
host = "127.0.0.1"
[nvme]
nqn_prefix = "$NVME_PREFIX"
portal = "127.0.0.1:$NVME_PORT"
configfs = "/sys/kernel/config/nvmet"
TOML
start_shelfd() {
  "$B/shelfd" --config /etc/shelf/shelf.toml >> /tmp/shelfd.log 2>&1 &
  SHELFD=$!
  wait_for ctl hello || { fail shelfd-start "$(tail -20 /tmp/shelfd.log)"; exit 1; }
}
stop_shelfd() { kill -TERM "$SHELFD"; wait "$SHELFD"; }
start_shelfd
pass shelfd-start-with-lvm-pool
# SHELF_VM_ONLY=a,b on the host (tests/vm.rs): only the set-up and the parts
# tests/vm/a.sh, tests/vm/b.sh (each self-contained after the set-up), for working on them.
# SHELF_VM_CSI_ONLY=1 is the same as SHELF_VM_ONLY=csi.
if [ -s "$S/only" ]; then
  for part in $(tr ',' ' ' < "$S/only"); do
    echo "--- only: $part ($(now))"
    . "$S/$part.sh"
  done
  stop_shelfd
  echo "RESULT $fails failed ($(now))"
  [ "$fails" -eq 0 ]; exit
fi

echo "--- LVM shares ($(now))"
S1=$(ctl share create s1 2G --pool thin --meta owner=vm-test | jq -r .share.id)
LV1=/dev/shelfvg/shelf-$S1
check lvm-share-create-thin-lv test "$(lvs --noheadings -o lv_attr shelfvg/shelf-$S1 | tr -d ' ' | cut -c1)" = V
check lvm-share-tags-carry-name sh -c "lvs --noheadings -o lv_tags shelfvg/shelf-$S1 | grep -q shelf.name.0.rs1"
out=$($B/shelfctl share create p1 1G --pool thin --preallocate 2>&1) && fail lvm-refuses-preallocated "accepted: $out" \
  || { echo "$out" | grep -q unsupported && pass lvm-refuses-preallocated || fail lvm-refuses-preallocated "$out"; }
yes A | head -c 1048576 > /tmp/a.bin; yes B | head -c 1048576 > /tmp/b.bin
dd if=/tmp/a.bin of=$LV1 bs=1M count=1 oflag=direct status=none
SN1=$(ctl snapshot create s1 snap1 | jq -r .snapshot.id)
check lvm-snapshot-is-thin-snapshot sh -c "lvs --noheadings -o origin shelfvg/shelf-snap-$SN1 | grep -q shelf-$S1"
dd if=/tmp/b.bin of=$LV1 bs=1M count=1 oflag=direct status=none
C1=$(ctl share clone "$SN1" c1 | jq -r .share.id)
check lvm-clone-holds-snapshot-data cmp -n 1048576 /tmp/a.bin /dev/shelfvg/shelf-$C1
check lvm-share-keeps-new-data cmp -n 1048576 /tmp/b.bin $LV1
ctl share resize s1 3G >/dev/null
check lvm-resize-lvextend test "$(blockdev --getsize64 $LV1)" = 3221225472
check lvm-resize-retags sh -c "lvs --noheadings -o lv_tags shelfvg/shelf-$S1 | grep -q shelf.size.0.r3221225472"
check lvm-pool-show sh -c "$B/shelfctl --json pool show thin | jq -e '.kind == \"lvm\" and .size == 1073741824'"
check lvm-verify-clean sh -c "$B/shelfctl --json verify | jq -e .clean"
lvs --reportformat json --units b --nosuffix \
  -o lv_name,lv_attr,lv_size,lv_tags,pool_lv,origin,data_percent,metadata_percent,lv_metadata_size,vg_extent_size \
  shelfvg > $S/fixtures/lvs-shelfvg.json
out=$($B/shelfctl export create s1 nfs --pool thin --client 127.0.0.1 2>&1) && fail lvm-nfs-refused "accepted: $out" \
  || { echo "$out" | grep -q unsupported && pass lvm-nfs-refused || fail lvm-nfs-refused "$out"; }

echo "--- iSCSI of an LVM share through tgtd ($(now))"
login_and_compare() { # NAME IQN EXPECTED_FILE
  local n=$1 iqn=$2 want=$3 dev
  iscsiadm -m discovery -t st -p $PORTAL >/dev/null 2>&1
  if ! out=$(iscsiadm -m node -T "$iqn" -p $PORTAL --login 2>&1); then fail "$n" "login: $out"; return; fi
  wait_for sh -c "iscsiadm -m session -P 3 | grep -q 'Attached scsi disk'"
  dev=$(iscsiadm -m session -P 3 | awk '/Attached scsi disk/ {print $4; exit}')
  wait_for test -b /dev/$dev
  if cmp -n 1048576 "$want" /dev/$dev; then pass "$n"; else fail "$n" "data on /dev/$dev differs"; fi
  iscsiadm -m node -T "$iqn" -p $PORTAL --logout >/dev/null 2>&1 || fail "$n-logout" "logout failed"
}
IQN1=$(ctl export create s1 iscsi --pool thin --client $INITIATOR --no-chap | jq -r .export.target)
check tgt-backing-is-block-device sh -c "tgtadm --op show --mode target | grep -q 'Backing store path: /dev/shelfvg/shelf-$S1'"
login_and_compare tgt-iscsiadm-login-reads-lvm-share "$IQN1" /tmp/b.bin

. "$S/discard.sh"

. "$S/lio.sh"

. "$S/nvme.sh"

echo "--- kernel NFS of a file-pool share ($(now))"
F1=$(ctl share create f1 64M --pool files | jq -r .share.id)
EXPORT_PATH=$(ctl export create f1 nfs --pool files --client 127.0.0.1 --no-root-squash | jq -r .export.target)
check nfs-exportfs-lists-share sh -c "exportfs -v | grep -q '$EXPORT_PATH'"
if out=$(mount -t nfs -o vers=4.2 "127.0.0.1:$EXPORT_PATH" /mnt/nfs 2>&1); then
  pass nfs-mount-v4.2
  check nfs-volume-visible test "$(stat -c %s /mnt/nfs/volume)" = 67108864
  dd if=/tmp/b.bin of=/mnt/nfs/volume bs=1M count=1 conv=notrunc,fsync status=none
  # The stamp over NFSv4.2 (RFC 8276 xattrs): the client sees none of it, and what it can
  # write (user.*) is never read back; the rebuild below must keep the name f1.
  check nfs-client-sees-no-stamp sh -c "! getfattr -d -m - /mnt/nfs/volume 2>&1 | grep -q shelf"
  check nfs-client-writes-user-xattr setfattr -n user.shelf.name -v forged /mnt/nfs/volume
  check nfs-client-cannot-write-trusted sh -c "! setfattr -n trusted.shelf.name -v forged /mnt/nfs/volume 2>/dev/null"
  check nfs-forgery-reaches-server sh -c "getfattr --only-values -n user.shelf.name $EXPORT_PATH/volume | grep -qx forged"
  check nfs-stamp-intact sh -c "getfattr --only-values -n trusted.shelf.name $EXPORT_PATH/volume | grep -qx f1"
  umount /mnt/nfs
  check nfs-write-reaches-pool cmp -n 1048576 /tmp/b.bin "$EXPORT_PATH/volume"
else
  fail nfs-mount-v4.2 "$out"
fi
check nfs-mount-v3 sh -c "mount -t nfs -o vers=3,nolock 127.0.0.1:$EXPORT_PATH /mnt/nfs && umount /mnt/nfs"

echo "--- formatted (xfs) share on the LVM thin pool ($(now))"
FS1=$(ctl share create fs1 320M --pool thin --filesystem xfs | jq -r .share.id)
MP=/var/lib/shelf/mounts/$FS1
check lvm-fs-share-mounted mountpoint -q "$MP"
echo "written before the snapshot" > "$MP/hello.txt"
check lvm-fs-snapshot-frozen-and-thawed sh -c "$B/shelfctl --socket $SHELF_SOCKET snapshot create fs1 fsnap >/dev/null && touch $MP/after-snapshot"
FEXP=$(ctl export create fs1 nfs --pool thin --client 127.0.0.1 --no-root-squash | jq -r .export.target)
check lvm-fs-export-is-the-mount test "$FEXP" = "$MP"
if out=$(mount -t nfs -o vers=4.2 "127.0.0.1:$MP" /mnt/nfs 2>&1); then
  check lvm-fs-nfs-reads-file grep -q "written before the snapshot" /mnt/nfs/hello.txt
  umount /mnt/nfs
else
  fail lvm-fs-nfs-reads-file "$out"
fi
check lvm-fs-delete-unmounts sh -c "$B/shelfctl --socket $SHELF_SOCKET share delete fs1 --pool thin --recursive --force >/dev/null && ! mountpoint -q $MP"

echo "--- capacity threshold ($(now))"
dd if=/dev/zero of=/dev/shelfvg/shelf-$C1 bs=1M count=600 oflag=direct status=none
lvs --reportformat json --units b --nosuffix \
  -o lv_name,lv_attr,lv_size,lv_tags,pool_lv,origin,data_percent,metadata_percent,lv_metadata_size,vg_extent_size \
  shelfvg/tp > $S/fixtures/lvs-thin-pool-full.json
out=$($B/shelfctl share create big 1G --pool thin 2>&1) && fail lvm-refuses-above-data-threshold "accepted: $out" \
  || { echo "$out" | grep -q threshold && pass lvm-refuses-above-data-threshold || fail lvm-refuses-above-data-threshold "$out"; }
out=$($B/shelfctl snapshot create s1 snap-late 2>&1) && fail lvm-refuses-snapshot-above-threshold "accepted: $out" \
  || pass lvm-refuses-snapshot-above-threshold
check lvm-share-delete ctl share delete c1 --pool thin
check lvm-share-delete-removes-lv sh -c "! lvs shelfvg/shelf-$C1 2>/dev/null"
check lvm-accepts-after-space-freed ctl share create s2 1G --pool thin

echo "--- rebuild-db from LV tags ($(now))"
ctl share list | jq -S '[.[] | {id, name, pool, size, metadata}] | sort_by(.id)' > /tmp/before.json
ctl snapshot list | jq -S '[.[] | {id, name, share}] | sort_by(.id)' > /tmp/snaps-before.json
stop_shelfd
"$B/shelfd" --config /etc/shelf/shelf.toml recover --rebuild-db --force > /tmp/rebuild.log 2>&1 \
  && pass rebuild-db-runs || fail rebuild-db-runs "$(cat /tmp/rebuild.log)"
cat /tmp/rebuild.log
start_shelfd
ctl share list | jq -S '[.[] | {id, name, pool, size, metadata}] | sort_by(.id)' > /tmp/after.json
ctl snapshot list | jq -S '[.[] | {id, name, share}] | sort_by(.id)' > /tmp/snaps-after.json
check rebuild-restores-lvm-shares diff /tmp/before.json /tmp/after.json
check rebuild-restores-lvm-snapshots diff /tmp/snaps-before.json /tmp/snaps-after.json
check rebuild-restores-tgt-export sh -c "$B/shelfctl --json export list s1 | jq -e '.[0].target == \"$IQN1\"'"
check rebuild-verify-clean sh -c "$B/shelfctl --json verify | jq -e .clean"
check rebuild-ignores-nfs-forged-name sh -c "$B/shelfctl --json share list | jq -e 'any(.[]; .name == \"f1\")'"
check start-up-keeps-the-trusted-stamp sh -c "getfattr --only-values -n trusted.shelf.name $EXPORT_PATH/volume | grep -qx f1"

. "$S/revert.sh"

. "$S/send.sh"

. "$S/csi.sh"

echo "--- teardown ($(now))"
ctl export delete s1 iscsi >/dev/null 2>&1
ctl export delete f1 nfs >/dev/null 2>&1
check lvm-snapshot-delete ctl snapshot delete "$SN1"
stop_shelfd
if [ "$fails" -gt 0 ]; then
  echo "--- shelfd log"; tail -60 /tmp/shelfd.log
fi
echo "RESULT $fails failed ($(now))"
[ "$fails" -eq 0 ]
