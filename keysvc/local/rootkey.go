package local

import (
	"github.com/kmsfs/kmsfs/internal/secmem"
	"github.com/kmsfs/kmsfs/keysvc"
)

// setRootKey makes a copy of k, in locked memory left out of core dumps
// (package secmem), the root key of s, and zeroes k. The previous key is
// zeroed. nil drops the key and releases the memory (Close). s.mu is held
// exclusively.
func (s *Store) setRootKey(k []byte) {
	if s.mem == nil {
		s.mem = secmem.New(secmem.Options{Logger: s.log})
	}
	s.mem.Free(s.rootKey)
	s.rootKey = nil
	if k == nil {
		s.mem.Close()
		return
	}
	s.rootKey = s.mem.Copy(k)
	keysvc.Zero(k)
}
