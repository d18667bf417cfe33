package main

import (
	"fmt"
	"strings"
)

// mountOptions is what -o (and mount(8)'s -o) can set.
type mountOptions struct {
	ReadOnly  bool
	Debug     bool   // FUSE request logging
	Size      int64  // size=: image size on first use; 0 if not given
	CacheSize string // cache_size=: as --cache-size; "" if not given
	FsName    string // fsname=: the mount's source; default the image path
	Subtype   string // subtype=: type shown as fuse.SUBTYPE; default reflinkfs
	// Warnings name options that were accepted but cannot take effect.
	Warnings []string
}

// Options accepted and handled by mount(8) or meaningless to the daemon.
var mountOptionsIgnored = map[string]bool{
	"defaults": true, "auto": true, "noauto": true, "user": true, "nouser": true,
	"users": true, "_netdev": true, "nofail": true,
	// always on: the kernel checks permissions and other users may enter
	"allow_other": true, "default_permissions": true,
	// go-fuse mounts with nosuid,nodev and without noexec by default
	"nosuid": true, "nodev": true, "exec": true,
	// atime is kept by the engine; the kernel flag does not change it
	"noatime": true, "relatime": true, "atime": true, "strictatime": true,
	"nodiratime": true, "diratime": true, "async": true,
}

// VFS flags the FUSE frontend cannot pass to mount(2) yet: accepted so
// fstab lines work, with a warning because the user asked for something.
var mountOptionsNotApplied = map[string]string{
	"noexec": "files stay executable",
	"suid":   "the mount stays nosuid",
	"dev":    "the mount stays nodev",
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
		return usagef("mount option remount: not supported yet (unmount and mount again) (EINVAL)")
	case mountOptionsNotApplied[opt] != "":
		o.Warnings = append(o.Warnings, fmt.Sprintf("mount option %s is not applied yet: %s", opt, mountOptionsNotApplied[opt]))
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
	case hasValue && name == "fsname":
		if value == "" {
			return usagef("mount option fsname=: empty name")
		}
		o.FsName = value
	case hasValue && name == "subtype":
		if err := checkSubtype(value); err != nil {
			return usagef("mount option subtype=%s: %v", value, err)
		}
		o.Subtype = value
	default:
		return usagef("unknown mount option %q", opt)
	}
	return nil
}

// checkSubtype rejects names that would break the "fuse.SUBTYPE" file system
// type in /proc/self/mountinfo.
func checkSubtype(s string) error {
	if s == "" {
		return fmt.Errorf("empty subtype")
	}
	if strings.ContainsAny(s, " \t\n,=\\/") {
		return fmt.Errorf("subtype may not contain spaces, commas, '=', '/' or '\\'")
	}
	return nil
}
