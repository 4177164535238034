package local

import (
	"bytes"
	"os"
	"testing"
)

// TestRootKeyInLockedMemory: the root key a Store holds, read from
// root.key or derived from a passphrase, lives in locked memory left out
// of core dumps, and Close zeroes it.
func TestRootKeyInLockedMemory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to be sure mlock is allowed (RLIMIT_MEMLOCK)")
	}
	for name, mod := range map[string]func(*Options){
		"root.key":   func(*Options) {},
		"passphrase": func(o *Options) { o.Passphrase = []byte("correct horse") },
	} {
		t.Run(name, func(t *testing.T) {
			dir := privateDir(t)
			s := openStore(t, dir, newTestClock(), mod)
			mustCreateKey(t, s, CreateKeyInput{}) // writes the keystore: the root key is loaded
			s.Close()
			// Reopened: the root key is read (or derived) from scratch.
			s = openStore(t, dir, newTestClock(), mod)
			mustCreateKey(t, s, CreateKeyInput{})
			s.fileMu.Lock() // guards rootKey and mem
			k := s.rootKey
			locked := s.mem != nil && s.mem.Locked(k)
			s.fileMu.Unlock()
			if len(k) != rootKeySize || !locked {
				t.Fatalf("root key of %d bytes, in locked memory: %v", len(k), locked)
			}
			s.Close()
			if !bytes.Equal(k, make([]byte, rootKeySize)) {
				t.Error("Close left the root key in memory")
			}
		})
	}
}
