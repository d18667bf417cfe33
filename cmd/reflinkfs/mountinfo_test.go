package main

import (
	"strings"
	"testing"
)

func TestParseMountInfo(t *testing.T) {
	const text = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
42 22 0:39 / /mnt/with\040space rw,nosuid,nodev,relatime shared:5 master:2 - fuse.reflinkfs /var/tmp/my\040img rw,user_id=0
43 22 0:40 / /mnt/x rw - fuse.reflinkfs /img/a rw
44 43 0:41 / /mnt/x rw - fuse.reflinkfs /img/b rw
`
	ents, err := parseMountInfo(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 4 {
		t.Fatalf("%d entries", len(ents))
	}
	m, ok := findMount(ents, "/mnt/with space")
	if !ok || m.Source != "/var/tmp/my img" || m.FsType != "fuse.reflinkfs" {
		t.Errorf("escaped entry: %+v, %v", m, ok)
	}
	// The topmost of stacked mounts wins.
	if m, ok := findMount(ents, "/mnt/x"); !ok || m.Source != "/img/b" {
		t.Errorf("stacked mount: %+v", m)
	}
	if _, ok := findMount(ents, "/mnt"); ok {
		t.Error("found a mount at /mnt")
	}
	if _, err := parseMountInfo(strings.NewReader("1 2 3\n")); err == nil {
		t.Error("malformed line accepted")
	}
}

func TestUnescapeMountField(t *testing.T) {
	for in, want := range map[string]string{
		`plain`: "plain", `a\040b`: "a b", `tab\011`: "tab\t", `back\134slash`: `back\slash`,
		`trailing\04`: `trailing\04`, `not\999`: `not\999`,
	} {
		if got := unescapeMountField(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}
