# The image-build library shared by image/build-appliance (the storage-node image) and
# image/vm/build (the VM tier's guest): a Debian bookworm tree from debootstrap, the
# kernel unpacked into it, and a busybox initramfs that mounts /dev/vda and hands over to
# an init in the tree. Sourced (not run); the scripts keep what differs: the package
# lists, what goes into the tree, and how the result is cached.
#
# Every function writes under a work directory the caller owns; img_cleanup removes it.

# img_cleanup WORK: unmount anything left mounted below WORK (a failed debootstrap can
# leave /proc and /sys mounted in the tree), then remove it without crossing into another
# filesystem.
img_cleanup() {
  local work=$1
  { findmnt -rn -o TARGET | grep "^$work/" || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$work"
}

# img_key FILE...: a 16-hex-digit key of the files' contents (stdin too when FILE is -).
img_key() {
  cat "$@" | sha256sum | cut -c1-16
}

# img_debootstrap ROOT MIRROR PKGS LOG: a minbase bookworm tree with the comma-separated
# PKGS in ROOT, apt's cache emptied; on failure the end of LOG goes to stderr.
img_debootstrap() {
  local root=$1 mirror=$2 pkgs=$3 log=$4
  debootstrap --variant=minbase --include="$pkgs" bookworm "$root" "$mirror" \
    > "$log" 2>&1 || { tail -30 "$log" >&2; return 1; }
  chroot "$root" apt-get clean
}

# img_install_kernel WORK ROOT VMLINUZ_OUT: the kernel bookworm's linux-image-amd64 points
# at, its modules copied into ROOT (so modprobe works there) and depmod'ed, its vmlinuz
# copied to VMLINUZ_OUT; no initramfs-tools. Prints the kernel version.
img_install_kernel() {
  local work=$1 root=$2 vmlinuz=$3 kpkg kver
  kpkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')"
  echo "image: kernel package $kpkg" >&2
  (cd "$work" && apt-get download "$kpkg" >/dev/null 2>&1)
  # Unpack aside and copy the modules into /usr/lib: unpacked straight into the merged-/usr
  # root, dpkg -x would replace the /lib -> usr/lib symlink with a directory.
  dpkg -x "$work"/linux-image-*.deb "$work/kernel"
  kver="$(ls "$work/kernel/lib/modules" | head -1)"
  mkdir -p "$root/usr/lib/modules"
  cp -a "$work/kernel/lib/modules/$kver" "$root/usr/lib/modules/"
  depmod -b "$root" "$kver"
  cp "$work/kernel/boot/vmlinuz-$kver" "$vmlinuz"
  echo "$kver"
}

# img_initrd WORK ROOT KVER INIT OUT: a gzip'd cpio initramfs at OUT holding the host's
# static busybox and the modules (with their dependencies, from ROOT's KVER) needed to
# mount the root (virtio, ext4); its /init mounts /dev/vda and switch_roots to INIT.
img_initrd() {
  local work=$1 root=$2 kver=$3 init=$4 out=$5 ird="$1/initrd" m
  mkdir -p "$ird"/{bin,dev,proc,sys,newroot,mods}
  cp /bin/busybox "$ird/bin/busybox"
  : > "$ird/modules"
  for m in crc32c_generic virtio_pci virtio_blk ext4; do
    modprobe -d "$root" -S "$kver" --show-depends "$m" | while read -r what path _; do
      [ "$what" = insmod ] || continue
      base="$(basename "$path")"
      # modprobe -d prints paths with the base directory in front.
      [ -f "$path" ] || path="$root$path"
      grep -qx "$base" "$ird/modules" || { cp "$path" "$ird/mods/$base"; echo "$base" >> "$ird/modules"; }
    done
  done
  cat > "$ird/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in \$(cat /modules); do
  case "\$m" in *.xz) xz -dc "/mods/\$m" > /tmp.ko && insmod /tmp.ko && rm /tmp.ko ;;
               *) insmod "/mods/\$m" ;; esac
done
i=0
while [ ! -b /dev/vda ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i+1)); done
mount -t ext4 /dev/vda /newroot || { echo "initrd: cannot mount /dev/vda"; poweroff -f; }
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot $init
INIT
  chmod +x "$ird/init"
  (cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) > "$out"
}

# img_rootfs ROOT SIZE LABEL OUT: a raw ext4 image of SIZE made from the tree with
# `mkfs.ext4 -d`, without mounting anything.
img_rootfs() {
  local root=$1 size=$2 label=$3 out=$4
  truncate -s "$size" "$out"
  mkfs.ext4 -q -F -L "$label" -d "$root" "$out"
}
