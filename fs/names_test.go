package fs

import (
	"errors"
	"testing"
)

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		root     bool
		name     string
		reserved bool
	}{
		{true, "kmsfs.conf", true},
		{true, "kmsfs.conf.tmp-123", true},
		{true, "kmsfs.conf.", true},
		{false, "kmsfs.conf", false},
		{false, "kmsfs.conf.tmp-1", false},
		{true, "kmsfs.con", false},
		{true, "kmsfs.confx", false},
		{true, "a", false},
		{true, ".kmsfs.conf", false},
	} {
		b, err := backingName(tc.root, tc.name)
		if tc.reserved {
			if !errors.Is(err, errReservedName) {
				t.Errorf("backingName(%v, %q) = %q, %v; want errReservedName", tc.root, tc.name, b, err)
			}
		} else if err != nil || b != tc.name {
			t.Errorf("backingName(%v, %q) = %q, %v; want identity", tc.root, tc.name, b, err)
		}
		p, ok := plainName(tc.root, tc.name)
		if ok == tc.reserved || (ok && p != tc.name) {
			t.Errorf("plainName(%v, %q) = %q, %v", tc.root, tc.name, p, ok)
		}
		if !tc.reserved {
			// Round trip: plain -> backing -> plain.
			if back, ok := plainName(tc.root, b); !ok || back != tc.name {
				t.Errorf("round trip of %q gave %q, %v", tc.name, back, ok)
			}
		}
	}
}

func TestBackingPath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "."}, {".", "."}, {"/", "."}, {"a", "a"}, {"a/b/c", "a/b/c"}, {"/a/b/", "a/b"},
		{"sub/kmsfs.conf", "sub/kmsfs.conf"},
		{"kmsfs.conf", ""}, {"a//b", ""}, {"a/../b", ""}, {"a/./b", ""},
	} {
		got, err := BackingPath(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("BackingPath(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("BackingPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
