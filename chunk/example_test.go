package chunk_test

import (
	"crypto/rand"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/kmsfs/kmsfs/chunk"
)

// Example creates an encrypted file, writes past its end (leaving a hole),
// and reopens it the way a reader must: parse the header, build the Cipher
// from the file's DEK, verify the header, then read.
func Example() {
	dir, err := os.MkdirTemp("", "chunk-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "backing")

	dek := make([]byte, chunk.DEKSize) // in kmsfs, from the key service
	rand.Read(dek)

	h, err := chunk.NewHeader(chunk.DefaultChunkSize)
	if err != nil {
		log.Fatal(err)
	}
	c, err := chunk.NewCipher(dek, h, nil) // nil: no codecs, for a file without compression
	if err != nil {
		log.Fatal(err)
	}
	w, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		log.Fatal(err)
	}
	f := chunk.NewFile(w, c)
	if _, err := f.WriteAt([]byte("hello, world"), 10000); err != nil {
		log.Fatal(err)
	}
	w.Close()

	// Reopen.
	r, err := os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	hb := make([]byte, chunk.HeaderSize)
	if _, err := r.ReadAt(hb, 0); err != nil {
		log.Fatal(err)
	}
	h2, err := chunk.ParseHeader(hb)
	if err != nil {
		log.Fatal(err)
	}
	c2, err := chunk.NewCipher(dek, h2, nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := c2.VerifyHeader(hb); err != nil {
		log.Fatal(err)
	}
	f2 := chunk.NewFile(r, c2)
	size, _ := f2.Size()
	p := make([]byte, 5)
	f2.ReadAt(p, 10000)
	fi, _ := r.Stat()
	fmt.Println(size, string(p), fi.Size() == chunk.CiphertextSize(size, chunk.DefaultChunkSize))
	// Output: 10012 hello true
}
