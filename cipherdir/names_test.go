package cipherdir

import (
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/names"
)

func TestIsInternalName(t *testing.T) {
	for _, c := range []struct {
		root bool
		name string
		want bool
	}{{true, "kmsfs.conf", true}, {true, "kmsfs.conf.tmp-1", true}, {true, ConfigCopyName, true}, {false, "kmsfs.conf", false}, {false, ".kmsfs-rekey-0011", true}, {true, "a", false}, {true, "kmsfs.dirid", false}} {
		if got := IsInternalName(false, c.root, c.name); got != c.want {
			t.Errorf("IsInternalName(false, %v, %q) = %v", c.root, c.name, got)
		}
	}
}

// TestIsInternalNameV2 checks the v2 rule of names/FORMAT.md, "Internal
// names": only the shapes of user entries are not internal, in every
// directory.
func TestIsInternalNameV2(t *testing.T) {
	short := "IbaLUVpfAlSPybjWBaojYgYOU7C2S7s4F4AvgxYWzpQ" // FORMAT.md's hello.txt
	long := names.LongNamePrefix + "Us3KdwN-YsZQNYkuYZLUXj2lCGSwAk2Fc3TJ7CVwzHY"
	for _, c := range []struct {
		name string
		want bool
	}{
		{short, false},
		{long, false},
		{long + names.SidecarSuffix, true},
		{names.DirIDFileName, true},
		{names.TempPrefix + "00112233445566778899aabbccddeeff", true},
		{names.TargetsDirName, true},
		{ConfigName, true},
		{ConfigCopyName, true},
		{ConfigName + ".tmp-123", true},
		{"IbaLUVpfAlSPybjWBaojYgYOU7C2S7s4F4AvgxYWzpQ" + RekeyTempMarker + "1", true},
		{"a", true},                      // not an encoded name: foreign, hidden
		{"hello.txt", true},              // a plaintext name in a v2 tree
		{short[:42], true},               // not a whole number of blocks
		{strings.Repeat("A", 256), true}, // longer than any backing name
	} {
		for _, root := range []bool{true, false} {
			if got := IsInternalName(true, root, c.name); got != c.want {
				t.Errorf("IsInternalName(true, %v, %q) = %v, want %v", root, c.name, got, c.want)
			}
		}
		v2 := Config{FormatVersion: ConfigFormatV2}
		if got := v2.IsInternal(false, c.name); got != c.want {
			t.Errorf("v2 config IsInternal(false, %q) = %v, want %v", c.name, got, c.want)
		}
	}
	// The v1 rule is unchanged: kmsfs.dirid and encoded-looking names are
	// user names in a v1 tree.
	v1 := Config{FormatVersion: ConfigFormatV1}
	if v1.IsInternal(true, names.DirIDFileName) || v1.IsInternal(false, "hello.txt") || !v1.IsInternal(true, ConfigName) {
		t.Error("v1 config IsInternal changed")
	}
}
