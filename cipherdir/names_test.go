package cipherdir

import "testing"

func TestIsInternalName(t *testing.T) {
	for _, c := range []struct {
		root bool
		name string
		want bool
	}{{true, "kmsfs.conf", true}, {true, "kmsfs.conf.tmp-1", true}, {false, "kmsfs.conf", false}, {false, ".kmsfs-rekey-0011", true}, {true, "a", false}} {
		if got := IsInternalName(c.root, c.name); got != c.want {
			t.Errorf("IsInternalName(%v, %q) = %v", c.root, c.name, got)
		}
	}
}
