package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reflinkfs/reflinkfs/internal/fusefs"
)

func TestParseSize(t *testing.T) {
	good := map[string]int64{
		"4096": 4096, "1K": 1 << 10, "1k": 1 << 10, "512M": 512 << 20, "64G": 64 << 30,
		"64GiB": 64 << 30, "64gb": 64 << 30, "2T": 2 << 40, "1.5G": 3 << 29, "100B": 100,
		"0.5K": 512,
	}
	for in, want := range good {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	bad := map[string]string{
		"":                     "not a size",
		"G":                    "not a size",
		"-1G":                  "not a size",
		"1.2.3":                "not a size",
		"12Q":                  `unknown unit "Q"`,
		"1 G":                  `unknown unit " G"`,
		"0":                    "greater than zero",
		"0K":                   "greater than zero",
		"9E":                   `unknown unit "E"`,
		"8192P":                "too large",
		"99999999999999999999": "too large",
		"1e3":                  `unknown unit "e3"`,
	}
	for in, want := range bad {
		_, err := parseSize(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseSize(%q) error = %v; want one containing %q", in, err, want)
		}
	}
}

func TestParseCacheSize(t *testing.T) {
	const ram = 24 << 30
	good := map[string]int64{
		"25%":   6 << 30,
		"100%":  ram,
		"12.5%": 3 << 30,
		"1G":    1 << 30,
		"5000":  4096, // rounded down to whole blocks
	}
	for in, want := range good {
		got, err := parseCacheSize(in, ram)
		if err != nil || got != want {
			t.Errorf("parseCacheSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	bad := map[string]string{
		"0%":        "above 0%",
		"101%":      "at most 100%",
		"-5%":       "above 0%",
		"x%":        "not a percentage",
		"%":         "not a percentage",
		"abc":       "or a percentage",
		"100":       "smaller than one 4 KiB block",
		"0.000001%": "smaller than one 4 KiB block",
	}
	for in, want := range bad {
		_, err := parseCacheSize(in, ram)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseCacheSize(%q) error = %v; want one containing %q", in, err, want)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.00 KiB", 8 << 20: "8.00 MiB", 24 << 20: "24.0 MiB",
		256 << 20: "256 MiB", 3 << 29: "1.50 GiB", -2048: "-2.00 KiB",
	} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestParseMountOptions(t *testing.T) {
	var o mountOptions
	err := parseMountOptions([]string{
		"defaults,rw,noatime,nosuid,nodev,exec,allow_other,default_permissions,_netdev,noauto,user,x-systemd.automount",
		"size=8G,cache_size=25%,fsname=myimg,subtype=rfs2,ro,,debug",
	}, &o)
	if err != nil {
		t.Fatal(err)
	}
	want := mountOptions{ReadOnly: true, Debug: true, Size: 8 << 30, CacheSize: "25%", FsName: "myimg", Subtype: "rfs2"}
	if o.ReadOnly != want.ReadOnly || o.Debug != want.Debug || o.Size != want.Size || o.CacheSize != want.CacheSize ||
		o.FsName != want.FsName || o.Subtype != want.Subtype || len(o.Warnings) != 0 {
		t.Fatalf("got %+v, want %+v", o, want)
	}

	// rw after ro wins: options apply left to right.
	o = mountOptions{}
	if err := parseMountOptions([]string{"ro,rw"}, &o); err != nil || o.ReadOnly {
		t.Errorf("ro,rw: ReadOnly=%v err=%v; want false, nil", o.ReadOnly, err)
	}

	// remount is recognised (it changes an existing mount's flags).
	o = mountOptions{}
	if err := parseMountOptions([]string{"remount,ro"}, &o); err != nil || !o.Remount || !o.ReadOnly {
		t.Errorf("remount,ro: %+v, err %v", o, err)
	}

	// atime policies: the last one wins; "atime" is relatime, as mount(8).
	for in, want := range map[string]string{"": "", "noatime": "noatime", "strictatime,relatime": "relatime",
		"relatime,strictatime": "strictatime", "noatime,atime": "relatime"} {
		o = mountOptions{}
		if err := parseMountOptions([]string{in}, &o); err != nil || o.Atime != want {
			t.Errorf("%q: atime policy %q, err %v; want %q", in, o.Atime, err, want)
		}
		if _, ok := atimePolicies[o.Atime]; !ok {
			t.Errorf("%q: policy %q has no engine policy", in, o.Atime)
		}
	}

	// suid/dev/exec flags are passed on to mount(2), in order.
	o = mountOptions{}
	if err := parseMountOptions([]string{"noexec,suid,nodev"}, &o); err != nil || strings.Join(o.VFSFlags, ",") != "noexec,suid,nodev" || len(o.Warnings) != 0 {
		t.Errorf("noexec,suid,nodev: flags %q, warnings %q, err %v", o.VFSFlags, o.Warnings, err)
	}

	// What mount(8) passes for `mount -o remount,ro MOUNTPOINT`: the
	// mount's options from /proc/self/mountinfo, then the user's.
	o = mountOptions{}
	if err := parseMountOptions([]string{"ro,nosuid,nodev,relatime,remount,user_id=0,group_id=0,default_permissions,allow_other,max_read=1048576"}, &o); err != nil ||
		!o.Remount || !o.ReadOnly || strings.Join(o.VFSFlags, ",") != "nosuid,nodev" {
		t.Errorf("mount(8)'s remount options: %+v, err %v", o, err)
	}

	// An empty subtype is allowed (the type is then "fuse" alone).
	o = mountOptions{Subtype: "x"}
	if err := parseMountOptions([]string{"subtype="}, &o); err != nil || o.Subtype != "" || !o.SubtypeGiven {
		t.Errorf("subtype=: %+v, err %v", o, err)
	}

	o = mountOptions{}
	if err := parseMountOptions([]string{"copyshare=off"}, &o); err != nil || !o.NoCopyShare {
		t.Errorf("copyshare=off: %+v, err %v", o, err)
	}
	if err := parseMountOptions([]string{"copyshare=on"}, &o); err != nil || o.NoCopyShare {
		t.Errorf("copyshare=on after off: %+v, err %v", o, err)
	}

	bad := map[string]string{
		"copyshare=maybe":    "copyshare=maybe: want on or off",
		"user_id=0":          "user_id=0: set by reflinkfs itself (accepted only with remount",
		"remount,max_read=x": "max_read=x: not a number",
		"size=lots":          "mount option size=lots: not a size",
		"cache_size=200%":    "mount option cache_size=200%: percentage",
		"frobnicate":         `unknown mount option "frobnicate"`,
		"size":               `unknown mount option "size"`,
		"fsname=":            "empty name",
		"subtype=a,b":        "", // "a" ok, then unknown option "b"
		"subtype=a/b":        "subtype may not contain",
	}
	for in, want := range bad {
		var o mountOptions
		err := parseMountOptions([]string{in}, &o)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseMountOptions(%q) error = %v; want one containing %q", in, err, want)
		}
		if !isUsageError(err) {
			t.Errorf("parseMountOptions(%q): %v is not a usage error", in, err)
		}
	}
}

func flagsFor(image, mp string, options []string, set map[string]string) *mountFlags {
	f := &mountFlags{
		size: defaultImageSize, cacheSize: defaultCacheSize, subtype: defaultSubtype,
		options: options, image: image, mountPointIn: mp,
		changed: func(name string) bool { _, ok := set[name]; return ok },
	}
	for k, v := range set {
		switch k {
		case "size":
			f.size = v
		case "cache-size":
			f.cacheSize = v
		case "fsname":
			f.fsName = v
		case "subtype":
			f.subtype = v
		}
	}
	return f
}

func TestResolveMountConfig(t *testing.T) {
	ram, err := physicalMemory()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := resolveMountConfig(flagsFor("img", "/mnt/x", nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	cwd, _ := os.Getwd()
	if cfg.Image != filepath.Join(cwd, "img") || cfg.MountPoint != "/mnt/x" || cfg.FsName != cfg.Image ||
		cfg.Subtype != "reflinkfs" || cfg.Size != 64<<30 || cfg.SizeGiven || cfg.CacheBytes != (ram/4)&^4095 {
		t.Errorf("defaults: %+v", cfg)
	}

	// -o values apply; explicit flags win over them.
	cfg, err = resolveMountConfig(flagsFor("/i", "/m", []string{"size=1G,cache_size=64M,fsname=o,subtype=s"},
		map[string]string{"cache-size": "32M", "fsname": "flag"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Size != 1<<30 || !cfg.SizeGiven || cfg.CacheBytes != 32<<20 || cfg.FsName != "flag" || cfg.Subtype != "s" {
		t.Errorf("flags over options: %+v", cfg)
	}

	for _, f := range []*mountFlags{
		flagsFor("/i", "/m", nil, map[string]string{"subtype": ""}),
		flagsFor("/i", "/m", []string{"subtype="}, nil),
	} {
		if cfg, err := resolveMountConfig(f); err != nil || cfg.Subtype != "" {
			t.Errorf("empty subtype: %q, %v; want \"\"", cfg.Subtype, err)
		}
	}

	bad := []struct {
		f    *mountFlags
		want string
	}{
		{flagsFor("/i", "/m", nil, map[string]string{"size": "12X"}), `--size "12X": unknown unit "X"`},
		{flagsFor("/i", "/m", nil, map[string]string{"cache-size": "0%"}), `--cache-size "0%": percentage`},
		{flagsFor("/i", "/m", []string{"cache_size=lots"}, nil), "mount option cache_size=lots: not a size"},
		{flagsFor("/i", "/i/m", nil, nil), "mount point /i/m: inside the image directory /i"},
		{flagsFor("/i", "/i", nil, nil), "inside the image directory"},
		{flagsFor("/m/img", "/m", nil, nil), "image /m/img: inside the mount point /m"},
		{flagsFor("/i", "/m", nil, map[string]string{"subtype": "a b"}), `--subtype "a b"`},
		{flagsFor("/i", "/m", nil, map[string]string{"fsname": ""}), "--fsname: empty name"},
	}
	for _, b := range bad {
		_, err := resolveMountConfig(b.f)
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("error = %v; want one containing %q", err, b.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("error %q spans several lines", err)
		}
	}
}

func TestDaemonArgsRoundTrip(t *testing.T) {
	cfg := mountConfig{Image: "/var/tmp/a b.img", MountPoint: "/mnt/-x", Size: 1 << 30, SizeGiven: true,
		CacheBytes: 64 << 20, FsName: "/var/tmp/a b.img", Subtype: "reflinkfs", ReadOnly: true, Debug: true, Metrics: ":9100",
		Atime: "strictatime"}
	args := daemonArgs(cfg)
	// Parse them as the daemon will.
	cmd := newRootCommand()
	mountCmd, rest, err := cmd.Find(args)
	if err != nil {
		t.Fatal(err)
	}
	if err := mountCmd.ParseFlags(rest); err != nil {
		t.Fatal(err)
	}
	pos := mountCmd.Flags().Args()
	if len(pos) != 2 || pos[0] != cfg.Image || pos[1] != cfg.MountPoint {
		t.Fatalf("positional args %q", pos)
	}
	get := func(name string) string { return mountCmd.Flags().Lookup(name).Value.String() }
	if get("ready-fd") != "3" || get("cache-size") != "67108864" || get("size") != "1073741824" ||
		get("fsname") != cfg.FsName || get("metrics-addr") != ":9100" {
		t.Errorf("daemon args %q parse to unexpected flags", args)
	}
	if opts, _ := mountCmd.Flags().GetStringArray("options"); len(opts) != 1 || opts[0] != "ro,debug,strictatime" {
		t.Errorf("-o %q, want [ro,debug,strictatime]", opts)
	}
	// share= and copyshare= reach the daemon too.
	cfg.Share, cfg.NoCopyShare = fusefs.ShareOff, true
	if got := strings.Join(daemonArgs(cfg), " "); !strings.Contains(got, "-o ro,debug,strictatime,share=off,copyshare=off ") {
		t.Errorf("daemon args %q lack share=off,copyshare=off", got)
	}
	if mountCmd.Flags().Changed("daemon") {
		t.Error("daemon would fork again")
	}
}

// The share= policy given to `mount -d` reaches the daemon.
func TestDaemonArgsShare(t *testing.T) {
	for _, mode := range []fusefs.ShareMode{fusefs.ShareReadOnly, fusefs.ShareExec, fusefs.ShareAll, fusefs.ShareOff} {
		cfg := mountConfig{Image: "/i", MountPoint: "/m", Share: mode}
		cmd := newRootCommand()
		mountCmd, rest, err := cmd.Find(daemonArgs(cfg))
		if err != nil {
			t.Fatal(err)
		}
		if err := mountCmd.ParseFlags(rest); err != nil {
			t.Fatal(err)
		}
		opts, _ := mountCmd.Flags().GetStringArray("options")
		var got mountOptions
		if err := parseMountOptions(opts, &got); err != nil {
			t.Fatal(err)
		}
		if want := mode.String(); got.Share != want && !(mode == fusefs.ShareReadOnly && got.Share == "") {
			t.Errorf("share=%v: the daemon gets share=%q", mode, got.Share)
		}
	}
}

func TestMountHelperArgs(t *testing.T) {
	// -f (fake) validates everything and exits without mounting.
	img, mp := t.TempDir(), t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{img, mp, "-f", "-o", "rw,size=1G,cache_size=10%,noatime,_netdev"}, exitOK},
		{[]string{"-f", "-n", "-s", "-v", "-t", "fuse.reflinkfs", img, mp, "-orw"}, exitOK},
		{[]string{img, mp, "-f", "-o", "remount"}, exitOK},
		{[]string{img, mp, "-f", "-o", "bogus"}, exitUsage},
		{[]string{img, mp, "-f", "-o"}, exitUsage},
		{[]string{img, "-f"}, exitUsage},
		{[]string{img, mp, "extra", "-f"}, exitUsage},
		{[]string{img, mp, "-x"}, exitUsage},
		{[]string{img, mp, "-N", "ns"}, exitUsage},
	} {
		var stdout, stderr strings.Builder
		if code := runMountHelper(tc.args, &stdout, &stderr); code != tc.code {
			t.Errorf("mount.fuse.reflinkfs %q: exit %d, want %d (stderr %q)", tc.args, code, tc.code, stderr.String())
		} else if code != exitOK && !strings.HasPrefix(stderr.String(), helperName+": ") {
			t.Errorf("mount.fuse.reflinkfs %q: stderr %q does not say who failed", tc.args, stderr.String())
		}
	}
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
	}{
		{nil, exitUsage}, // no command: nothing to do
		{[]string{"fiemap", dir}, exitFailure},
		{[]string{"version"}, exitOK},
		{[]string{"mount", "--help"}, exitOK},
		{[]string{"--help"}, exitOK},
		{[]string{"nosuchcommand"}, exitUsage},
		{[]string{"mount", "only-one"}, exitUsage},
		{[]string{"mount", "--bogus", "a", "b"}, exitUsage},
		{[]string{"mount", "--size", "x", "a", "b"}, exitUsage},
		{[]string{"mkfs", dir + "/img"}, exitUsage}, // --size is required
		{[]string{"mkfs", "--size", "1G"}, exitUsage},
		{[]string{"clone", "a"}, exitUsage},
		{[]string{"clone", dir, dir + "/x"}, exitUsage}, // a directory without -r
		{[]string{"dedupe", "a"}, exitUsage},
		{[]string{"version", "extra"}, exitUsage},
		{[]string{"fiemap", dir + "/missing"}, exitFailure},
		{[]string{"stats", dir}, exitFailure}, // neither a mount point nor a mounted image
		{[]string{"umount", dir}, exitFailure},
		{[]string{"fsck", dir + "/missing"}, exitFailure},
	} {
		var stdout, stderr strings.Builder
		code := run(tc.args, &stdout, &stderr)
		if code != tc.code {
			t.Errorf("reflinkfs %q: exit %d, want %d (stderr %q)", tc.args, code, tc.code, stderr.String())
		}
		if len(tc.args) == 2 && tc.args[0] == "fiemap" && tc.args[1] == dir && !strings.Contains(stderr.String(), dir+": is a directory") {
			t.Errorf("reflinkfs fiemap DIR: stderr %q; want it to say it is a directory", stderr.String())
		}
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		switch {
		case code == exitOK && stderr.Len() != 0:
			t.Errorf("reflinkfs %q: stderr %q on success", tc.args, stderr.String())
		case code == exitFailure && (len(lines) != 1 || !strings.HasPrefix(lines[0], "reflinkfs: ")):
			t.Errorf("reflinkfs %q: stderr %q; want one line", tc.args, stderr.String())
		case code == exitUsage && !strings.Contains(stderr.String(), "--help' for usage"):
			t.Errorf("reflinkfs %q: stderr %q; want a pointer to --help", tc.args, stderr.String())
		}
	}
}

// TestEveryCommandHasExample keeps --help useful.
func TestEveryCommandHasExample(t *testing.T) {
	for _, c := range newRootCommand().Commands() {
		if c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		if c.Example == "" {
			t.Errorf("%s has no Example", c.Name())
		}
	}
}
