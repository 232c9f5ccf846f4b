# snapshot.send / snapshot.receive on LVM thin pools, sourced by guest.sh (same boot; its
# helpers pass/fail/check/ctl/wait_for). A second shelfd ("node b", its own state directory,
# socket and volume group on a loop device, so neither node sees the other's LVs) receives
# what the first sends: a full stream, an incremental with a discarded range, a chain of
# three, a repeat, LVM to file pool and file pool to LVM, a corrupted and a cut stream, and
# a receive killed with node b's shelfd. Data is compared by sha256 of whole devices; the
# bytes of every stream are printed. See docs/vm-tier.md and docs/replication.md §5.

echo "--- send/receive between LVM thin pools ($(now))"
NB_SOCK=/run/shelf-b/shelf.sock
ctlb() { "$B/shelfctl" --socket "$NB_SOCK" --json "$@"; }
# sx_sum PATH [BYTES]: sha256 of the first BYTES (default all) of PATH.
sx_sum() { if [ -n "${2:-}" ]; then head -c "$2" "$1"; else cat "$1"; fi | sha256sum | cut -d' ' -f1; }
# sx_size FILE: its size in bytes.
sx_size() { stat -c %s "$1"; }
# sx_lv_active VG LV: whether the LV is active (the fifth attribute column).
sx_lv_active() { [ "$(lvs --noheadings -o lv_attr "$1/$2" 2>/dev/null | tr -d ' ' | cut -c5)" = a ]; }
# sx_no_staging VG: no receive's staging LV is left in VG.
sx_no_staging() {
  local left; left=$(lvs --noheadings -o lv_name "$1" | tr -d ' ' | grep '^shelf-recv-')
  [ -z "$left" ] || { echo "left over: $left"; return 1; }
}
# sx_no_held_root: the thin pool of node a holds no metadata snapshot (the status line's
# "held metadata root" is "-").
sx_no_held_root() {
  local st; st=$(dmsetup status shelfvg-tp-tpool)
  [ "$(echo "$st" | awk '{print $7}')" = "-" ] || { echo "status: $st"; return 1; }
}
# sx_share_id NODECTL NAME: the id of share NAME.
sx_share_id() { "$1" share list | jq -r --arg n "$2" '.[] | select(.name == $n) | .id'; }
# sx_send NAME SNAP [--from BASE]: node a's stream into /tmp/NAME.stream, timed.
sx_send() {
  local n=$1 t; shift; t=$(date +%s%N)
  "$B/shelfctl" send "$@" > "/tmp/$n.stream" 2> "/tmp/$n.send.err" || { cat "/tmp/$n.send.err"; return 1; }
  echo "send $n: $(sx_size "/tmp/$n.stream") stream bytes, $(( ($(date +%s%N) - t) / 1000000 )) ms ($*)" >> /tmp/send-times.txt
}
# sx_receive NAME TARGET POOL: /tmp/NAME.stream into node b's share TARGET; the answer in
# /tmp/NAME.answer.
sx_receive() {
  local t; t=$(date +%s%N)
  "$B/shelfctl" --socket "$NB_SOCK" --json receive "$2" --pool "$3" < "/tmp/$1.stream" > "/tmp/$1.answer" 2> "/tmp/$1.receive.err" \
    || { cat "/tmp/$1.answer" "/tmp/$1.receive.err"; return 1; }
  echo "receive $1: $(( ($(date +%s%N) - t) / 1000000 )) ms into $3/$2" >> /tmp/send-times.txt
}

# Node b: its own VG on a loop device (on the guest's root filesystem, sparse; no udevd,
# so the loop driver is loaded here).
modprobe loop
truncate -s 1100M /var/tmp/shelfvg2.img
NB_LOOP=$(losetup -f --show /var/tmp/shelfvg2.img)
pvcreate -y "$NB_LOOP" >/dev/null && vgcreate shelfvg2 "$NB_LOOP" >/dev/null \
  && lvcreate --type thin-pool -L 1G -n tp2 shelfvg2 >/dev/null \
  || fail send-lvm-node-b-setup "its volume group could not be made"
mkdir -p /var/lib/shelf-b /run/shelf-b /srv/files/pool-b
cat > /etc/shelf/node-b.toml <<TOML
state_dir = "/var/lib/shelf-b"
socket = "$NB_SOCK"
command_timeout = 120
reconcile_interval = 0
node_name = "node-b"
[pools.thin2]
kind = "lvm"
volume_group = "shelfvg2"
thin_pool = "tp2"
[pools.filesb]
kind = "file"
path = "/srv/files/pool-b"
[iscsi]
iqn_prefix = "iqn.2026-12.com.example.nodeb"
portal = "127.0.0.1:3261"
tgt_control_port = 7
[nfs]
exports_file = "/etc/exports.d/node-b.exports"
[nvme]
nqn_prefix = "nqn.2026-12.com.example.nodeb"
portal = "127.0.0.1:4421"
configfs = "/var/tmp/no-nvmet"
TOML
start_node_b() {
  "$B/shelfd" --config /etc/shelf/node-b.toml >> /tmp/shelfd-b.log 2>&1 &
  NB_PID=$!
  wait_for ctlb hello
}
if start_node_b; then pass send-lvm-node-b-start; else fail send-lvm-node-b-start "$(tail -20 /tmp/shelfd-b.log)"; fi

# Node a's share: 16 MiB at 0 and 4 MiB at 100 MiB written, the rest never mapped.
SX=$(ctl share create sx 256M --pool thin | jq -r .share.id)
SXL=/dev/shelfvg/shelf-$SX
dd if=/dev/urandom of="$SXL" bs=1M count=16 oflag=direct status=none
dd if=/dev/urandom of="$SXL" bs=1M count=4 seek=100 oflag=direct status=none
SX1=$(ctl snapshot create sx sx1 | jq -r .snapshot.id)
SUM1=$(sx_sum "$SXL")

# sx_floor NAME CMD...: the time to run CMD into sha256sum (what a send of the same bytes
# must at least do: read them from the device and hash them).
sx_floor() {
  local n=$1 t; shift; t=$(date +%s%N)
  "$@" | sha256sum >/dev/null
  echo "floor $n: $(( ($(date +%s%N) - t) / 1000000 )) ms (read + sha256 of what it carries)" >> /tmp/send-times.txt
}
full_floor() {
  dd if="$SXL" bs=1M count=16 iflag=direct status=none
  dd if="$SXL" bs=1M skip=100 count=4 iflag=direct status=none
}

echo "--- full stream ($(now))"
check send-lvm-full-sent sx_send full sx@sx1
sx_floor full full_floor
check send-lvm-full-received sx_receive full replica thin2
NBR=$(sx_share_id ctlb replica)
check send-lvm-full-data-identical test "$(sx_sum /dev/shelfvg2/shelf-$NBR)" = "$SUM1"
FULL=$(sx_size /tmp/full.stream)
check send-lvm-full-carries-only-mapped-blocks test "$FULL" -ge $((20 << 20)) -a "$FULL" -lt $((21 << 20))
check send-lvm-receiver-keeps-snapshot-id sh -c "lvs --noheadings -o lv_name shelfvg2 | grep -q shelf-snap-$SX1"
check send-lvm-received-snapshot-inactive sh -c "! lvs --noheadings -o lv_attr shelfvg2/shelf-snap-$SX1 | tr -d ' ' | cut -c5 | grep -q a"
check send-lvm-sender-snapshot-deactivated wait_for sh -c "! lvs --noheadings -o lv_attr shelfvg/shelf-snap-$SX1 | tr -d ' ' | cut -c5 | grep -q a"
check send-lvm-no-metadata-snapshot-held sx_no_held_root
check send-lvm-receiver-no-staging-left sx_no_staging shelfvg2
check send-lvm-origin-node-reported sh -c "jq -e '.origin_node != null' /tmp/full.answer"

echo "--- incremental: 2 MiB written, the 4 MiB at 100 MiB discarded ($(now))"
dd if=/dev/urandom of="$SXL" bs=1M count=2 seek=50 oflag=direct status=none
blkdiscard -o $((100 << 20)) -l $((4 << 20)) "$SXL"
SX2=$(ctl snapshot create sx sx2 | jq -r .snapshot.id)
SUM2=$(sx_sum "$SXL")
# The live thin pool's own thin_delta and thin_dump output, for the parser tests.
mkdir -p "$S/fixtures/thin"
if dmsetup message shelfvg-tp-tpool 0 reserve_metadata_snap; then
  # (one lvs per LV: lvs sorts its rows by name, not in the order asked)
  T1=$(lvs --noheadings -o thin_id shelfvg/shelf-snap-$SX1 | tr -d ' ')
  T2=$(lvs --noheadings -o thin_id shelfvg/shelf-snap-$SX2 | tr -d ' ')
  echo "thin ids of sx1 and sx2: $T1 $T2"
  thin_delta --metadata-snap --snap1 "$T1" --snap2 "$T2" /dev/mapper/shelfvg-tp_tmeta > "$S/fixtures/thin/live-delta.xml"
  thin_dump --metadata-snap --dev-id "$T1" /dev/mapper/shelfvg-tp_tmeta > "$S/fixtures/thin/live-dump.xml"
  dmsetup message shelfvg-tp-tpool 0 release_metadata_snap
fi
check send-lvm-incremental-sent sx_send inc1 sx@sx2 --from sx1
sx_floor inc1 dd if="$SXL" bs=1M skip=50 count=2 iflag=direct status=none
check send-lvm-incremental-received sx_receive inc1 replica thin2
INC=$(sx_size /tmp/inc1.stream)
check send-lvm-incremental-carries-only-the-change test "$INC" -ge $((2 << 20)) -a "$INC" -lt $((3 << 20))
check send-lvm-incremental-data-identical test "$(sx_sum /dev/shelfvg2/shelf-$NBR)" = "$SUM2"
# 18 MiB mapped of 256 MiB is 7.03%; had the hole been written with zeros, 22 MiB, 8.59%.
check send-lvm-incremental-hole-stays-unmapped sh -c \
  "lvs --noheadings -o data_percent shelfvg2/shelf-$NBR | awk '{exit !(\$1 < 8.0)}'"
check send-lvm-incremental-changed sh -c "jq -e '.changed == true' /tmp/inc1.answer"

echo "--- a chain of three, and a repeat ($(now))"
dd if=/dev/urandom of="$SXL" bs=1M count=1 seek=200 oflag=direct status=none
SX3=$(ctl snapshot create sx sx3 | jq -r .snapshot.id)
SUM3=$(sx_sum "$SXL")
check send-lvm-chain-sent sx_send inc2 sx@sx3 --from sx2
check send-lvm-chain-received sx_receive inc2 replica thin2
check send-lvm-chain-data-identical test "$(sx_sum /dev/shelfvg2/shelf-$NBR)" = "$SUM3"
check send-lvm-chain-three-snapshots test "$(ctlb snapshot list | jq --arg s "$NBR" '[.[] | select(.share == $s)] | length')" = 3
check send-lvm-repeat-received sx_receive inc2 replica thin2
check send-lvm-repeat-unchanged sh -c "jq -e '.changed == false' /tmp/inc2.answer"

echo "--- between kinds of pool ($(now))"
# (another share: a node holds a snapshot id on one share only)
SY=$(ctl share create sy 64M --pool thin | jq -r .share.id)
dd if=/dev/urandom of=/dev/shelfvg/shelf-$SY bs=1M count=8 seek=4 oflag=direct status=none
ctl snapshot create sy sy1 >/dev/null
YSUM=$(sx_sum /dev/shelfvg/shelf-$SY)
check send-lvm-to-file-pool-sent sx_send yfull sy@sy1
check send-lvm-to-file-pool-received sx_receive yfull fromlvm filesb
NBF=$(sx_share_id ctlb fromlvm)
check send-lvm-to-file-pool-identical test "$(sx_sum /srv/files/pool-b/shares/$NBF/volume)" = "$YSUM"
FX=$(ctl share create fx 64M --pool files | jq -r .share.id)
dd if=/dev/urandom of=/srv/files/pool/shares/$FX/volume bs=1M count=8 seek=8 conv=notrunc,fsync status=none
ctl snapshot create fx fx1 >/dev/null
FSUM=$(sx_sum /srv/files/pool/shares/$FX/volume)
check send-file-to-lvm-sent sx_send ffull fx@fx1
check send-file-to-lvm-received sx_receive ffull fromfile thin2
check send-file-to-lvm-identical test "$(sx_sum /dev/shelfvg2/shelf-$(sx_share_id ctlb fromfile))" = "$FSUM"

echo "--- a file-pool incremental with a hole that is not whole thin-pool blocks ($(now))"
# 204 KiB from 8 MiB + 4 KiB punched in the file share: on node b's thin pool (64 KiB blocks)
# two whole blocks are discarded and the two partial ones at the edges written with zeros.
fallocate -p -o $(((8 << 20) + 4096)) -l $((204 << 10)) /srv/files/pool/shares/$FX/volume
ctl snapshot create fx fx2 >/dev/null
FSUM2=$(sx_sum /srv/files/pool/shares/$FX/volume)
check send-file-to-lvm-incremental-sent sx_send finc fx@fx2 --from fx1
check send-file-to-lvm-incremental-received sx_receive finc fromfile thin2
check send-file-to-lvm-partial-hole-identical test "$(sx_sum /dev/shelfvg2/shelf-$(sx_share_id ctlb fromfile))" = "$FSUM2"

echo "--- a share grown between two snapshots, written past its size ($(now))"
# A 10 MiB share is a 12 MiB LV (4 MiB extents), and all 12 MiB are written through it, as
# an initiator of its export can. Grown to 20 MiB, its next snapshot shares those 2 MiB
# with the first: the incremental must carry them (the first stream stopped at 10 MiB).
GX=$(ctl share create gx 10M --pool thin | jq -r .share.id)
dd if=/dev/urandom of=/dev/shelfvg/shelf-$GX bs=1M count=12 oflag=direct status=none
ctl snapshot create gx gx1 >/dev/null
check send-lvm-grown-full-sent sx_send gfull gx@gx1
check send-lvm-grown-full-received sx_receive gfull grown thin2
ctl share resize gx 20M --pool thin >/dev/null
ctl snapshot create gx gx2 >/dev/null
GSUM=$(sx_sum /dev/shelfvg/shelf-$GX $((20 << 20)))
check send-lvm-grown-incremental-sent sx_send ginc gx@gx2 --from gx1
check send-lvm-grown-incremental-received sx_receive ginc grown thin2
check send-lvm-grown-identical test "$(sx_sum /dev/shelfvg2/shelf-$(sx_share_id ctlb grown) $((20 << 20)))" = "$GSUM"

echo "--- a corrupted, a cut and a killed receive leave nothing ($(now))"
# A snapshot node b does not have yet (a node takes a snapshot id onto one share only, so
# any stream above would be refused at its header instead).
ctl snapshot create sx sx4 >/dev/null
check send-lvm-fresh-sent sx_send fresh sx@sx4
cp /tmp/fresh.stream /tmp/bad.stream
printf 'X' | dd of=/tmp/bad.stream bs=1 seek=$((8 << 20)) conv=notrunc status=none
if sx_receive bad corrupt thin2 >/dev/null; then fail send-lvm-corrupt-refused "accepted"
elif grep -q checksum /tmp/bad.receive.err; then pass send-lvm-corrupt-refused
else fail send-lvm-corrupt-refused "not for its checksum: $(cat /tmp/bad.receive.err)"; fi
check send-lvm-corrupt-no-staging-left sx_no_staging shelfvg2
check send-lvm-corrupt-no-share test -z "$(sx_share_id ctlb corrupt)"
head -c $((5 << 20)) /tmp/fresh.stream > /tmp/cut.stream
if sx_receive cut cut thin2 >/dev/null; then fail send-lvm-cut-refused "accepted"
elif grep -q already_exists /tmp/cut.receive.err; then fail send-lvm-cut-refused "$(cat /tmp/cut.receive.err)"
else pass send-lvm-cut-refused; cat /tmp/cut.receive.err; fi
check send-lvm-cut-no-share test -z "$(sx_share_id ctlb cut)"
check send-lvm-cut-no-staging-left sx_no_staging shelfvg2
# Killed: half the stream in, then node b's shelfd killed (SIGKILL) and started again.
( head -c $((10 << 20)) /tmp/fresh.stream; sleep 60 ) \
  | "$B/shelfctl" --socket "$NB_SOCK" receive killed --pool thin2 > /tmp/killed.out 2>&1 &
KPIPE=$!
if wait_for sh -c "lvs --noheadings -o lv_name shelfvg2 | grep -q shelf-recv-"; then
  pass send-lvm-killed-staging-made
else
  fail send-lvm-killed-staging-made "no staging LV appeared: $(cat /tmp/killed.out)"
fi
kill -KILL "$NB_PID"; wait "$NB_PID" 2>/dev/null
kill "$KPIPE" 2>/dev/null; wait "$KPIPE" 2>/dev/null
if start_node_b; then pass send-lvm-killed-restart; else fail send-lvm-killed-restart "$(tail -20 /tmp/shelfd-b.log)"; fi
check send-lvm-killed-no-staging-left sx_no_staging shelfvg2
check send-lvm-killed-no-share test -z "$(sx_share_id ctlb killed)"
check send-lvm-fresh-received-after-all sx_receive fresh fresh thin2
check send-lvm-fresh-identical test "$(sx_sum /dev/shelfvg2/shelf-$(sx_share_id ctlb fresh))" = "$SUM3"
check send-lvm-killed-replica-intact test "$(sx_sum /dev/shelfvg2/shelf-$NBR)" = "$SUM3"
check send-lvm-node-b-verify-clean sh -c "$B/shelfctl --socket $NB_SOCK --json verify | jq -e .clean"
check send-lvm-node-a-verify-clean sh -c "$B/shelfctl --json verify | jq -e .clean"

echo "--- send/receive teardown ($(now))"
cat /tmp/send-times.txt
kill -TERM "$NB_PID"; wait "$NB_PID" 2>/dev/null
grep -E "receive|send" /tmp/shelfd-b.log | tail -20
ctl share delete sx --pool thin --recursive >/dev/null 2>&1 || fail send-lvm-teardown "share sx not deleted"
ctl share delete sy --pool thin --recursive >/dev/null 2>&1 || fail send-lvm-teardown "share sy not deleted"
ctl share delete gx --pool thin --recursive >/dev/null 2>&1 || fail send-lvm-teardown "share gx not deleted"
ctl share delete fx --pool files --recursive >/dev/null 2>&1 || fail send-lvm-teardown "share fx not deleted"
vgremove -ff shelfvg2 >/dev/null 2>&1; losetup -d "$NB_LOOP"; rm -f /var/tmp/shelfvg2.img
