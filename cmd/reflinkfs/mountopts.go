package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/reflinkfs/reflinkfs/internal/fusefs"
)

// mountOptions is what -o (and mount(8)'s -o) can set.
type mountOptions struct {
	ReadOnly  bool
	Debug     bool   // FUSE request logging
	Size      int64  // size=: image size on first use; 0 if not given
	CacheSize string // cache_size=: as --cache-size; "" if not given
	FsName    string // fsname=: the mount's source; default the image path
	Subtype   string // subtype=: type shown as fuse.SUBTYPE; default reflinkfs
	// SubtypeGiven tells an empty subtype= (type "fuse" alone) from none.
	SubtypeGiven bool
	// VFSFlags are suid/nosuid, dev/nodev, exec/noexec in the order given
	// (the last of a pair wins); they become mount(2) flags.
	VFSFlags []string
	// Share is share=: which opens share the kernel's page cache through
	// FUSE passthrough (readonly, exec, all, off); "" if not given.
	Share string
	// Atime is the atime policy: "relatime" (the default when empty),
	// "strictatime" or "noatime"; the last one given wins.
	Atime string
	// NoCopyShare is copyshare=off: blocks written equal to blocks the
	// writer just read are written, not shared (copyshare=on, the default).
	NoCopyShare bool
	// Remount changes the flags of an existing mount (ro/rw, suid, dev,
	// exec) instead of mounting.
	Remount bool
	// Warnings name options that were accepted but cannot take effect.
	Warnings []string
	// kernelSet are the FUSE options the daemon gives the kernel itself
	// (user_id=, group_id=, ...), as given; only remount accepts them.
	kernelSet []string
}

// kernelSetOptions are FUSE kernel options the daemon chooses itself. They
// show in /proc/mounts, so mount(8) passes them back on `mount -o remount`;
// there they change nothing (the kernel cannot change them on a live mount).
var kernelSetOptions = map[string]bool{"user_id": true, "group_id": true, "max_read": true, "rootmode": true, "blksize": true}

// vfsFlags are the mount(2) flags the FUSE frontend applies; the mount is
// nosuid,nodev,exec unless they say otherwise.
var vfsFlags = map[string]bool{"suid": true, "nosuid": true, "dev": true, "nodev": true, "exec": true, "noexec": true}

// Options accepted and handled by mount(8) or meaningless to the daemon.
var mountOptionsIgnored = map[string]bool{
	"defaults": true, "auto": true, "noauto": true, "user": true, "nouser": true,
	"users": true, "_netdev": true, "nofail": true,
	// always on: the kernel checks permissions and other users may enter
	"allow_other": true, "default_permissions": true,
	"nodiratime": true, "diratime": true, "async": true,
}

// parseMountOptions applies comma-separated option lists to o.
func parseMountOptions(lists []string, o *mountOptions) error {
	for _, list := range lists {
		for _, opt := range strings.Split(list, ",") {
			if err := applyMountOption(strings.TrimSpace(opt), o); err != nil {
				return err
			}
		}
	}
	if len(o.kernelSet) > 0 && !o.Remount {
		return usagef("mount option %s: set by reflinkfs itself (accepted only with remount, where mount(8) passes it back)", o.kernelSet[0])
	}
	return nil
}

func applyMountOption(opt string, o *mountOptions) error {
	name, value, hasValue := strings.Cut(opt, "=")
	switch {
	case opt == "":
		return nil
	case strings.HasPrefix(name, "x-") || mountOptionsIgnored[opt]:
		return nil
	case opt == "rw":
		o.ReadOnly = false
	case opt == "ro":
		o.ReadOnly = true
	case opt == "debug":
		o.Debug = true
	case opt == "remount":
		o.Remount = true
	case opt == "noatime" || opt == "relatime" || opt == "strictatime":
		// The engine keeps atime (FUSE inodes are S_NOATIME in the kernel).
		o.Atime = opt
	case opt == "atime":
		o.Atime = "relatime" // as mount(8): atime updates, relatime rule
	case vfsFlags[opt]:
		o.VFSFlags = append(o.VFSFlags, opt)
	case hasValue && kernelSetOptions[name]:
		if _, err := strconv.ParseUint(value, 10, 32); err != nil {
			return usagef("mount option %s: not a number", opt)
		}
		o.kernelSet = append(o.kernelSet, opt)
	case hasValue && name == "size":
		n, err := parseSize(value)
		if err != nil {
			return usagef("mount option size=%s: %v", value, err)
		}
		o.Size = n
	case hasValue && name == "cache_size":
		if _, err := parseCacheSize(value, 1<<40); err != nil {
			return usagef("mount option cache_size=%s: %v", value, err)
		}
		o.CacheSize = value
	case hasValue && name == "share":
		if _, err := fusefs.ParseShareMode(value); err != nil {
			return usagef("mount option %v", err)
		}
		o.Share = value
	case hasValue && name == "copyshare":
		switch value {
		case "on":
			o.NoCopyShare = false
		case "off":
			o.NoCopyShare = true
		default:
			return usagef("mount option copyshare=%s: want on or off", value)
		}
	case hasValue && name == "fsname":
		if value == "" {
			return usagef("mount option fsname=: empty name")
		}
		o.FsName = value
	case hasValue && name == "subtype":
		if err := checkSubtype(value); err != nil {
			return usagef("mount option subtype=%s: %v", value, err)
		}
		o.Subtype, o.SubtypeGiven = value, true
	default:
		return usagef("unknown mount option %q", opt)
	}
	return nil
}

// checkSubtype rejects names that would break the "fuse.SUBTYPE" file system
// type in /proc/self/mountinfo. An empty one is allowed, as libfuse allows
// it: the type is then "fuse" alone.
func checkSubtype(s string) error {
	if strings.ContainsAny(s, " \t\n,=\\/") {
		return fmt.Errorf("subtype may not contain spaces, commas, '=', '/' or '\\'")
	}
	return nil
}
