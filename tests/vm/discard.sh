# Discard end to end through LIO, sourced by guest.sh (same boot, same shelfd, its helpers
# pass/fail/check/ctl/wait_for): a real initiator writes, then discards with `blkdiscard`,
# and the volume's allocation is looked at on the target's side: `stat -c %b` of a file
# pool's volume file, `data_percent` of a thin LV. guest.sh calls lio_discard while LIO
# holds port 3260 (tgtd stopped); nvme.sh checks NVMe/TCP's deallocate the same way with
# the helpers below. See docs/vm-tier.md.

ISCSI_CONNECTOR="{\"host\": \"shelfvm\", \"ip\": \"127.0.0.1\", \"initiator\": \"$INITIATOR\"}"
LIO_CORE=/sys/kernel/config/target/core

# gt A B: A > B (decimals: lvs' data_percent).
gt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 > b + 0) }'; }
# blocks FILE: the 512-byte blocks allocated to FILE.
blocks() { stat -c %b "$1"; }
# lv_data LV: the thin LV shelfvg/LV's data_percent.
lv_data() { lvs --noheadings -o data_percent "shelfvg/$1" | tr -d ' '; }
# unmap_attrs NAME: "TPU TPWS" of LIO backstore NAME (any HBA).
unmap_attrs() {
  local d
  for d in $LIO_CORE/*/"$1"; do
    [ -d "$d/attrib" ] && { echo "$(cat "$d/attrib/emulate_tpu") $(cat "$d/attrib/emulate_tpws")"; return 0; }
  done
  echo "no backstore $1"
  return 1
}
# attach_info SHARE POOL PROTOCOL CONNECTOR: share.attach's reply.
attach_info() {
  ctl call share.attach "{\"share\": \"$1\", \"pool\": \"$2\", \"protocol\": \"$3\", \"connector\": $4}" 2>&1
}
detach() {
  ctl call share.detach "{\"share\": \"$1\", \"pool\": \"$2\", \"protocol\": \"$3\", \"connector\": $4}" >/dev/null 2>&1
}
# info_discard REPLY WANT: the reply's connection_info.data.discard is WANT.
info_discard() { echo "$1" | jq -e --argjson w "$2" '.connection_info.data.discard == $w' >/dev/null; }
# iscsi_dev IQN: the SCSI disk of the logged-in session to IQN (found in sysfs).
iscsi_dev() {
  local s b
  for s in /sys/class/iscsi_session/session*; do
    [ "$(cat "$s/targetname" 2>/dev/null)" = "$1" ] || continue
    for b in "$s"/device/target*/*/block/*; do
      [ -b "/dev/$(basename "$b")" ] && { basename "$b"; return 0; }
    done
  done
  return 1
}
# iscsi_login IQN: log in (discovery first); the disk's name in $SDEV.
iscsi_login() {
  SDEV=
  iscsiadm -m discovery -t st -p $PORTAL >/dev/null 2>&1
  iscsiadm -m node -T "$1" -p $PORTAL --login >/dev/null 2>&1 || return 1
  wait_for iscsi_dev "$1" && SDEV=$(iscsi_dev "$1")
}
iscsi_logout() { iscsiadm -m node -T "$1" -p $PORTAL --logout >/dev/null 2>&1; }
# queue_discards DEV: the initiator's block layer takes discards for DEV (sd found LBPME
# and the Logical Block Provisioning page; nvme found Dataset Management).
queue_discards() { gt "$(cat "/sys/block/$1/queue/discard_max_bytes")" 0; }

# write_then_discard PREFIX DEV MEASURE ARG OFFSET_MIB: 16 MiB written at OFFSET_MIB
# through DEV must raise `MEASURE ARG` (blocks FILE, lv_data LV), and a blkdiscard of the
# same range must bring it back down to what it was before.
write_then_discard() {
  local p=$1 dev=$2 m=$3 arg=$4 off=$5 before written after out
  before=$($m "$arg")
  dd if=/dev/urandom of="$dev" bs=1M count=16 seek="$off" oflag=direct status=none
  written=$($m "$arg")
  if gt "$written" "$before"; then pass "$p-write-allocates"
  else fail "$p-write-allocates" "$m $arg: $before before, $written after writing 16 MiB"; fi
  if ! out=$(blkdiscard -o $((off << 20)) -l $((16 << 20)) "$dev" 2>&1); then
    fail "$p-discard-frees" "blkdiscard $dev: $out"; return
  fi
  after=$($m "$arg")
  if gt "$written" "$after" && ! gt "$after" "$before"; then pass "$p-discard-frees"
  else fail "$p-discard-frees" "$m $arg: $before before, $written written, $after after blkdiscard"; fi
  echo "discard $p: $m $before -> $written -> $after"
}

# lio_discard_thin_lv SHARE ID IQN: the LVM share SHARE (id ID), exported through LIO as IQN.
lio_discard_thin_lv() {
  local share=$1 id=$2 iqn=$3 info f
  check lio-thin-lv-unmap-attributes test "$(unmap_attrs "shelf-$id")" = "1 1"
  info=$(attach_info "$share" thin iscsi "$ISCSI_CONNECTOR")
  check lio-thin-lv-connection-info-discard info_discard "$info" true
  if iscsi_login "$iqn"; then
    check lio-thin-lv-initiator-discards queue_discards "$SDEV"
    write_then_discard lio-thin-lv "/dev/$SDEV" lv_data "shelf-$id" 32
    iscsi_logout "$iqn"
  else
    fail lio-thin-lv-initiator-discards "login to $iqn failed"
  fi
  # Reconcile puts the attributes back when something turned them off.
  for f in $LIO_CORE/*/"shelf-$id"/attrib/emulate_tpu; do echo 0 > "$f"; done
  check lio-verify-sees-unmap-drift sh -c "$B/shelfctl --json verify | jq -e '.differences | any(.area == \"lio\" and .kind == \"drifted\")'"
  ctl reconcile >/dev/null 2>&1
  check lio-reconcile-restores-unmap test "$(unmap_attrs "shelf-$id")" = "1 1"
  detach "$share" thin iscsi "$ISCSI_CONNECTOR"
}

# lio_discard_files: a sparse share of the file pool through LIO. (A preallocated share's
# backstore is left as LIO makes it, both attributes 0: lio/discard.rs's tests; each LIO
# export costs the guest about ten targetcli start-ups, so none is made for it here.)
lio_discard_files() {
  local id file info iqn
  id=$(ctl share create ld1 64M --pool files | jq -r .share.id)
  file=/srv/files/pool/shares/$id/volume
  iqn=$(ctl export create ld1 iscsi --pool files --driver lio --client $INITIATOR --no-chap | jq -r .export.target)
  check lio-file-unmap-attributes test "$(unmap_attrs "shelf-$id")" = "1 1"
  info=$(attach_info ld1 files iscsi "$ISCSI_CONNECTOR")
  check lio-file-connection-info-discard info_discard "$info" true
  if iscsi_login "$iqn"; then
    check lio-file-initiator-discards queue_discards "$SDEV"
    write_then_discard lio-file "/dev/$SDEV" blocks "$file" 8
    iscsi_logout "$iqn"
  else
    fail lio-file-initiator-discards "login to $iqn failed"
  fi
  # A resize re-creates the fileio backstore (its size is fixed at creation).
  ctl share resize ld1 96M --pool files >/dev/null
  check lio-unmap-kept-across-resize test "$(unmap_attrs "shelf-$id")" = "1 1"
  detach ld1 files iscsi "$ISCSI_CONNECTOR"
  ctl export delete ld1 iscsi >/dev/null
  ctl share delete ld1 --pool files >/dev/null
}
